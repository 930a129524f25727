// Parsed X.509 certificates and CRLs for the device-certificate path: a bounded,
// hostile-input-safe parser for chain entries (DER, or one or more PEM blocks) and
// immutable, shareable parsed objects that caches hand out to concurrent verifiers.
#pragma once

#include <openssl/x509.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "services/common/openssl_ptr.h"

namespace iotauth::identity::x509 {

// The package's owning pointers (services/common/openssl_ptr.h).
using ::iotauth::X509CrlPtr;
using ::iotauth::X509Ptr;

// One parsed certificate with the facts the verifier needs precomputed. Immutable
// after construction; `x509()` may be passed to OpenSSL from several threads (OpenSSL
// only reads it once its extension cache is filled, which Parse does).
class ParsedCertificate {
 public:
  ParsedCertificate(const ParsedCertificate&) = delete;
  ParsedCertificate& operator=(const ParsedCertificate&) = delete;

  X509* x509() const { return x509_.get(); }
  const std::string& der() const { return der_; }
  // Raw 32-byte SHA-256 of the DER, and its lowercase hex.
  const std::string& sha256() const { return sha256_; }
  const std::string& fingerprint_hex() const { return fingerprint_hex_; }
  // Raw SHA-256 of the tbsCertificate (the signed part), and its lowercase hex. Unlike
  // the DER's, it does not change when only the signature is re-encoded (an ECDSA
  // signature (r, s) also verifies as (r, n - s), with no key needed), so it is what
  // names a certificate for revocation and CA status.
  const std::string& tbs_sha256() const { return tbs_sha256_; }
  const std::string& tbs_fingerprint_hex() const { return tbs_fingerprint_hex_; }
  absl::Time not_before() const { return not_before_; }
  absl::Time not_after() const { return not_after_; }
  // The subject's only commonName (UTF-8); empty when absent or repeated.
  const std::string& subject_cn() const { return subject_cn_; }
  // RFC 2253 subject, for messages.
  const std::string& subject() const { return subject_; }
  // Lowercase hex serial without leading zeros ("0" for zero; "-" prefix if negative).
  const std::string& serial_hex() const { return serial_hex_; }
  // URI and DNS subjectAltNames (at most 32 of each kind).
  const std::vector<std::string>& san_uris() const { return san_uris_; }
  const std::vector<std::string>& san_dns() const { return san_dns_; }
  // Subject and issuer names are equal (a root or a self-signed device certificate).
  bool self_issued() const { return self_issued_; }
  // basicConstraints CA:TRUE, or anything else OpenSSL's X509_check_ca takes for a CA
  // (a v1 self-signed root, keyCertSign without basicConstraints).
  bool is_ca() const { return is_ca_; }

  // Parses exactly one DER certificate (trailing bytes are refused).
  static absl::StatusOr<std::shared_ptr<const ParsedCertificate>> FromDer(absl::string_view der);
  // Takes ownership of an already decoded certificate.
  static absl::StatusOr<std::shared_ptr<const ParsedCertificate>> FromX509(X509Ptr x509);

 private:
  ParsedCertificate() = default;
  X509Ptr x509_;
  std::string der_, sha256_, fingerprint_hex_, tbs_sha256_, tbs_fingerprint_hex_, subject_cn_,
      subject_, serial_hex_;
  std::vector<std::string> san_uris_, san_dns_;
  absl::Time not_before_, not_after_;
  bool self_issued_ = false;
  bool is_ca_ = false;
};
using CertPtr = std::shared_ptr<const ParsedCertificate>;

struct ParseLimits {
  // Certificates in a whole chain (leaf included).
  size_t max_certificates = 10;
  // Bytes of one chain entry and of the whole chain.
  size_t max_entry_bytes = 32 * 1024;
  size_t max_total_bytes = 64 * 1024;
};

// Whether `data` looks like PEM (leading whitespace, then `-----BEGIN`).
bool LooksLikePem(absl::string_view data);

// A copy of `cert` with its ECDSA signature (r, s) written as (r, n - s), n the order
// of `signer_key`'s curve: the same certificate, just as valid, with another DER
// encoding, that anyone can produce without a key. nullptr when `signer_key` is not
// an EC key or the signature does not decode as ECDSA.
X509Ptr WithEcdsaSignatureVariant(X509* cert, EVP_PKEY* signer_key);

// The DER fingerprint (lowercase hex SHA-256) of WithEcdsaSignatureVariant(cert,
// signer's key). Empty when there is no such variant. A revocation by DER fingerprint
// checks both.
std::string SignatureVariantFingerprintHex(const ParsedCertificate& cert,
                                           const ParsedCertificate& signer);

// Parses one chain entry: one DER certificate, or one or more PEM CERTIFICATE blocks.
// INVALID_ARGUMENT with a short non-secret message for anything else (empty input,
// garbage, other PEM types, trailing bytes, over the limits).
absl::StatusOr<std::vector<CertPtr>> ParseCertificates(absl::string_view entry,
                                                       const ParseLimits& limits);

// Parses a whole chain (leaf first), applying `limits` to the total.
absl::StatusOr<std::vector<CertPtr>> ParseChain(absl::Span<const absl::string_view> chain,
                                                const ParseLimits& limits);

// A parsed CRL, immutable.
class ParsedCrl {
 public:
  X509_CRL* crl() const { return crl_.get(); }
  absl::Time this_update() const { return this_update_; }
  // InfiniteFuture when the CRL has no nextUpdate.
  absl::Time next_update() const { return next_update_; }
  // Decimal cRLNumber; empty when absent.
  const std::string& crl_number() const { return crl_number_; }
  int64_t revoked_count() const { return revoked_count_; }

  // PEM `X509 CRL` or DER.
  static absl::StatusOr<std::shared_ptr<const ParsedCrl>> Parse(absl::string_view data,
                                                                size_t max_bytes = 4 << 20);

 private:
  X509CrlPtr crl_;
  absl::Time this_update_, next_update_ = absl::InfiniteFuture();
  std::string crl_number_;
  int64_t revoked_count_ = 0;
};
using CrlPtr = std::shared_ptr<const ParsedCrl>;

// Helpers shared by the package.
absl::StatusOr<absl::Time> Asn1TimeToAbsl(const ASN1_TIME* t);
std::string DerOf(X509* x);
std::string PemOf(X509* x);
std::string NameToString(const X509_NAME* name);

}  // namespace iotauth::identity::x509
