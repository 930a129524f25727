#include "services/common/dev_pki.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "services/common/openssl_ptr.h"
#include "services/common/posix_file.h"
#include "services/common/status_macros.h"

namespace iotauth {
namespace {

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat("dev PKI: ", what, " failed"));
}

absl::StatusOr<EvpPkeyPtr> NewEcKey() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("EC key generation");
  return key;
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return OpenSslError(absl::StrCat("extension ", value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? absl::OkStatus() : OpenSslError("X509_add_ext");
}

struct CertSpec {
  std::string cn;
  std::string ou;
  bool is_ca = false;
  bool server = false;
  absl::Duration validity;
};

absl::StatusOr<X509Ptr> MakeCert(const CertSpec& spec, EVP_PKEY* key, X509* issuer,
                                 EVP_PKEY* issuer_key, absl::Time now) {
  X509Ptr cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return OpenSslError("RAND_bytes");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(now - absl::Hours(1)));
  ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(now + spec.validity));
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("iotauth development"), -1, -1,
                             0);
  if (!spec.ou.empty()) {
    X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(spec.ou.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert));
  X509_set_pubkey(cert.get(), key);
  if (spec.is_ca) {
    IOTAUTH_RETURN_IF_ERROR(
        AddExt(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    IOTAUTH_RETURN_IF_ERROR(
        AddExt(cert.get(), issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    IOTAUTH_RETURN_IF_ERROR(
        AddExt(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:FALSE"));
    IOTAUTH_RETURN_IF_ERROR(
        AddExt(cert.get(), issuer_cert, NID_key_usage, "critical,digitalSignature,keyAgreement"));
    IOTAUTH_RETURN_IF_ERROR(AddExt(cert.get(), issuer_cert, NID_ext_key_usage,
                                   spec.server ? "serverAuth" : "clientAuth"));
    if (spec.server) {
      IOTAUTH_RETURN_IF_ERROR(AddExt(cert.get(), issuer_cert, NID_subject_alt_name,
                                     "DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1"));
    }
  }
  IOTAUTH_RETURN_IF_ERROR(AddExt(cert.get(), issuer_cert, NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return OpenSslError("X509_sign");
  return cert;
}

// How a development PKI file that cannot be written is reported (an ErrnoError of
// posix_file::ReplaceFile): what failed on which file, and what to check.
absl::Status PkiFileError(absl::string_view what, absl::string_view path) {
  const int err = errno;
  const char* hint = "";
  if (err == ENOSPC || err == EDQUOT) {
    hint = " (free space on the data directory's volume)";
  } else if (err == EACCES || err == EROFS) {
    hint = " (check that the data directory is writable)";
  }
  return absl::InternalError(
      absl::StrCat("cannot ", what, " '", path, "': ", std::strerror(err), hint));
}

std::string CertPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, len);
  BIO_free(bio);
  return out;
}

std::string KeyPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, len);
  BIO_free(bio);
  return out;
}

}  // namespace

DevPkiPaths DevPkiLayout(const std::string& dir) {
  DevPkiPaths p;
  p.dir = dir;
  auto f = [&](const char* name) { return absl::StrCat(dir, "/", name); };
  p.ca_cert = f("ca.pem");
  p.ca_key = f("ca.key");
  p.server_cert = f("server.pem");
  p.server_key = f("server.key");
  p.admin_cert = f("admin.pem");
  p.admin_key = f("admin.key");
  p.gateway_cert = f("gateway.pem");
  p.gateway_key = f("gateway.key");
  p.reader_cert = f("reader.pem");
  p.reader_key = f("reader.key");
  return p;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<bool> EnsureDevPki(const std::string& dir, absl::Time now) {
  DevPkiPaths p = DevPkiLayout(dir);
  if (::access(p.ca_cert.c_str(), R_OK) == 0) return false;
  // Split-mode processes started together on one data directory would each make a
  // CA and overwrite one another's files, leaving certificates of one CA beside the
  // other's ca.pem. One makes it; the others wait, then find it made.
  IOTAUTH_ASSIGN_OR_RETURN(std::unique_ptr<posix_file::FileLock> lock,
                           posix_file::FileLock::Acquire(posix_file::LockPathFor(dir),
                                                         "the development PKI", /*wait=*/true));
  if (::access(p.ca_cert.c_str(), R_OK) == 0) return false;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot create '", dir, "': ", std::strerror(errno)));
  }
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return PkiFileError("open", dir);
  absl::Cleanup close_dir = [dir_fd] { ::close(dir_fd); };
  // Whole files, each synced with its directory.
  auto write_file = [dir_fd](const std::string& path, const std::string& data, mode_t mode) {
    return posix_file::ReplaceFile(path, data, /*sync=*/true, dir_fd, PkiFileError, mode);
  };
  IOTAUTH_ASSIGN_OR_RETURN(EvpPkeyPtr ca_key, NewEcKey());
  IOTAUTH_ASSIGN_OR_RETURN(
      X509Ptr ca, MakeCert({"iotauth development CA", "", true, false, absl::Hours(24 * 3650)},
                           ca_key.get(), nullptr, ca_key.get(), now));
  struct Leaf {
    CertSpec spec;
    std::string cert_path, key_path;
  };
  const Leaf leaves[] = {
      {{"localhost", "", false, true, absl::Hours(24 * 825)}, p.server_cert, p.server_key},
      {{"iotauth-admin", "admin", false, false, absl::Hours(24 * 825)}, p.admin_cert, p.admin_key},
      {{"iotauth-gateway", "gateway", false, false, absl::Hours(24 * 825)},
       p.gateway_cert,
       p.gateway_key},
      {{"iotauth-reader", "reader", false, false, absl::Hours(24 * 825)},
       p.reader_cert,
       p.reader_key},
  };
  for (const Leaf& leaf : leaves) {
    IOTAUTH_ASSIGN_OR_RETURN(EvpPkeyPtr key, NewEcKey());
    IOTAUTH_ASSIGN_OR_RETURN(X509Ptr cert,
                             MakeCert(leaf.spec, key.get(), ca.get(), ca_key.get(), now));
    IOTAUTH_RETURN_IF_ERROR(write_file(leaf.key_path, KeyPem(key.get()), 0600));
    IOTAUTH_RETURN_IF_ERROR(write_file(leaf.cert_path, CertPem(cert.get()), 0644));
  }
  IOTAUTH_RETURN_IF_ERROR(write_file(p.ca_key, KeyPem(ca_key.get()), 0600));
  // ca.pem last: its presence marks a complete PKI.
  IOTAUTH_RETURN_IF_ERROR(write_file(p.ca_cert, CertPem(ca.get()), 0644));
  return true;
}

}  // namespace iotauth
