#include "services/common/tls_files.h"

#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/openssl_ptr.h"
#include "services/common/posix_file.h"

namespace iotauth {
namespace {

// Larger files are refused: a certificate chain or key is a few KiB, and a path
// pointing at something endless must not eat the memory.
constexpr size_t kMaxFileBytes = 1u << 20;

// strerror(errno) alone: ReadCapped words the rest.
absl::Status ReadError(absl::string_view /*what*/, absl::string_view /*path*/) {
  return absl::InvalidArgumentError(std::strerror(errno));
}

absl::StatusOr<std::string> ReadCapped(const std::string& path, absl::string_view what) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " ", path, ": ", std::strerror(err)));
  }
  absl::StatusOr<std::string> out = posix_file::ReadToEnd(fd, path, ReadError, kMaxFileBytes);
  close(fd);
  if (absl::IsOutOfRange(out.status())) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is larger than 1 MiB"));
  }
  if (!out.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " ", path, ": ", out.status().message()));
  }
  return out;
}

BioPtr MemBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Refuses a passphrase instead of prompting on the terminal (OpenSSL's default).
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

// True when the last PEM read stopped because no further object starts: the normal
// end of a file. Anything else means an object was cut short or damaged.
bool CleanEnd() {
  const unsigned long e = ERR_peek_last_error();
  return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

// Every certificate in `pem`, in order; `what` names the file in errors.
absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(absl::string_view pem,
                                                      absl::string_view what) {
  if (pem.size() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is larger than 16 MiB"));
  }
  BioPtr bio = MemBio(pem);
  if (!bio) return absl::ResourceExhaustedError("out of memory reading PEM");
  std::vector<X509Ptr> out;
  ERR_clear_error();
  for (;;) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
    if (!cert) break;
    out.push_back(std::move(cert));
  }
  const bool clean = CleanEnd();
  ERR_clear_error();
  if (!clean) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " holds a PEM certificate that is cut short or damaged (", out.size(),
                     " read before it); write the whole file again"));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")"));
  }
  return out;
}

std::string SubjectOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return "";
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len > 0 ? len : 0)).substr(0, 512);
}

std::string SerialOf(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn);
  BN_free(bn);
  if (hex == nullptr) return "";
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

absl::StatusOr<absl::Time> TimeOf(const ASN1_TIME* t, absl::string_view which) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the certificate file's first certificate has an unreadable ", which));
  }
  return absl::FromUnixSeconds(timegm(&tm));
}

// The certificate chain and its key.
absl::StatusOr<TlsCertificateInfo> CheckIdentity(const TlsFiles& files) {
  absl::StatusOr<std::vector<X509Ptr>> chain =
      ReadCertificates(files.cert_chain, "the certificate file");
  if (!chain.ok()) return chain.status();

  if (files.private_key.size() > (1u << 20)) {
    return absl::InvalidArgumentError("the private key file is larger than 1 MiB");
  }
  BioPtr key_bio = MemBio(files.private_key);
  if (!key_bio) return absl::ResourceExhaustedError("out of memory reading PEM");
  ERR_clear_error();
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (!key) {
    // OpenSSL's reasons would not add anything an operator can act on, and they
    // must never quote key material: one message says what to check.
    return absl::InvalidArgumentError(
        "the private key file holds no readable PEM private key (is it cut short, "
        "or encrypted with a passphrase? encrypted keys are not supported)");
  }

  X509* leaf = chain->front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        "the private key does not belong to the certificate (the first one in the "
        "certificate file): write the matching pair");
  }

  TlsCertificateInfo info;
  info.subject = SubjectOf(leaf);
  info.serial_hex = SerialOf(leaf);
  absl::StatusOr<absl::Time> nb = TimeOf(X509_get0_notBefore(leaf), "notBefore");
  if (!nb.ok()) return nb.status();
  absl::StatusOr<absl::Time> na = TimeOf(X509_get0_notAfter(leaf), "notAfter");
  if (!na.ok()) return na.status();
  info.not_before = *nb;
  info.not_after = *na;
  info.chain_length = static_cast<int>(chain->size());
  return info;
}

}  // namespace

absl::StatusOr<TlsCertificateInfo> CheckTlsFiles(const TlsFiles& files) {
  TlsCertificateInfo info;
  if (files.with_identity) {
    absl::StatusOr<TlsCertificateInfo> identity = CheckIdentity(files);
    if (!identity.ok()) return identity.status();
    info = *identity;
  } else if (!files.with_ca) {
    return absl::InvalidArgumentError("neither a certificate and key nor a CA file is configured");
  }
  if (files.with_ca) {
    absl::StatusOr<std::vector<X509Ptr>> cas = ReadCertificates(files.ca_bundle, "the CA file");
    if (!cas.ok()) return cas.status();
    info.ca_count = static_cast<int>(cas->size());
  }
  return info;
}

absl::StatusOr<TlsFiles> ReadTlsFiles(const TlsSourcePaths& paths) {
  TlsFiles f;
  f.with_identity = !paths.cert_file.empty();
  if (f.with_identity) {
    absl::StatusOr<std::string> cert = ReadCapped(paths.cert_file, "the certificate file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadCapped(paths.key_file, "the private key file");
    if (!key.ok()) return key.status();
    f.cert_chain = std::move(*cert);
    f.private_key = std::move(*key);
  }
  if (!paths.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadCapped(paths.ca_file, "the CA file");
    if (!ca.ok()) return ca.status();
    f.with_ca = true;
    f.ca_bundle = std::move(*ca);
  }
  return f;
}

}  // namespace iotauth
