#include "services/identity/x509/csr.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "services/common/error_info.h"
#include "services/common/openssl_ptr.h"
#include "services/common/status_macros.h"
#include "services/identity/x509/certificate.h"
#include "services/registry/validation.h"

namespace iotauth::identity::x509 {
namespace {

using ::iotauth::registry::InvalidField;

absl::Status Invalid(absl::string_view reason, absl::string_view message) {
  return WithErrorReason(absl::InvalidArgumentError(message), reason);
}
absl::Status Internal(absl::string_view what) {
  ERR_clear_error();
  return absl::InternalError(absl::StrCat("openssl: ", what));
}

// Never prompt for (or accept) a passphrase.
int NoPassword(char* /*unused*/, int /*unused*/, int /*unused*/, void* /*unused*/) { return -1; }

// MD5/SHA-1 (and SHA-224 unless allowed) signatures are refused.
absl::Status CheckSignatureDigest(int sig_nid, const AlgorithmPolicy& policy) {
  int md_nid = NID_undef;
  int pk_nid = NID_undef;
  if (OBJ_find_sigid_algs(sig_nid, &md_nid, &pk_nid) != 1) {
    return Invalid("WEAK_ALGORITHM", "unknown signature algorithm");
  }
  if (md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_md4 ||
      (md_nid == NID_sha224 && !policy.allow_sha224)) {
    return Invalid("WEAK_ALGORITHM", "signature digest not allowed");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<X509ReqPtr> ParseCsr(absl::string_view data, size_t max_bytes) {
  if (data.empty()) return InvalidField("csr", "is required");
  if (data.size() > max_bytes) return InvalidField("csr", "is too large");
  X509ReqPtr req;
  if (LooksLikePem(data)) {
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    if (!bio) return Internal("BIO_new_mem_buf");
    req.reset(PEM_read_bio_X509_REQ(bio.get(), nullptr, NoPassword, nullptr));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const unsigned char* end = p + data.size();
    req.reset(d2i_X509_REQ(nullptr, &p, static_cast<long>(data.size())));
    if (req && p != end) req.reset();
  }
  ERR_clear_error();
  if (!req) return InvalidField("csr", "is not a PEM or DER PKCS#10 request");
  return req;
}

absl::Status CheckKeyAlgorithm(EVP_PKEY* key, const AlgorithmPolicy& policy) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
      if (EVP_PKEY_get_bits(key) < policy.min_rsa_bits) {
        return Invalid("WEAK_ALGORITHM",
                       absl::StrCat("RSA keys need at least ", policy.min_rsa_bits, " bits"));
      }
      return absl::OkStatus();
    case EVP_PKEY_EC: {
      char group[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1) {
        return Invalid("WEAK_ALGORITHM", "unknown EC curve");
      }
      absl::string_view g(group, len);
      if ((g == "prime256v1" && policy.allow_p256) || (g == "secp384r1" && policy.allow_p384) ||
          (g == "secp521r1" && policy.allow_p521)) {
        return absl::OkStatus();
      }
      return Invalid("WEAK_ALGORITHM", "EC curve not allowed");
    }
    case EVP_PKEY_ED25519:
      if (policy.allow_ed25519) return absl::OkStatus();
      return Invalid("WEAK_ALGORITHM", "Ed25519 not allowed");
    default:
      return Invalid("WEAK_ALGORITHM", "key algorithm not allowed");
  }
}

std::string SingleCommonName(const X509_NAME* name) {
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) return "";
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
  if (len < 0) {
    ERR_clear_error();
    return "";
  }
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

absl::StatusOr<std::string> VerifyCsr(X509_REQ* req, const AlgorithmPolicy& policy) {
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req);
  if (pub == nullptr) {
    ERR_clear_error();
    return InvalidField("csr", "has no usable public key");
  }
  IOTAUTH_RETURN_IF_ERROR(CheckKeyAlgorithm(pub, policy));
  if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_ED25519) {
    IOTAUTH_RETURN_IF_ERROR(CheckSignatureDigest(X509_REQ_get_signature_nid(req), policy));
  }
  int ok = X509_REQ_verify(req, pub);
  ERR_clear_error();
  if (ok != 1) return Invalid("BAD_CSR_SIGNATURE", "the CSR's signature does not verify");
  return SingleCommonName(X509_REQ_get_subject_name(req));
}

bool VerifyPossessionSignature(EVP_PKEY* key, absl::string_view signature,
                               absl::string_view message) {
  if (key == nullptr) return false;
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  const EVP_MD* digest = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  const bool ok =
      md != nullptr && EVP_DigestVerifyInit(md.get(), nullptr, digest, nullptr, key) == 1 &&
      EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) == 1;
  ERR_clear_error();
  return ok;
}

}  // namespace iotauth::identity::x509
