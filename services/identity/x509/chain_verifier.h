// Path validation of device certificate chains with OpenSSL 3 against a prepared
// trust store (one per tenant: its registered and verified CAs, registered
// intermediates and uploaded CRLs), plus the project's algorithm and key-usage
// policy, mapped to stable deny reasons. No identity or device logic here.
#pragma once

#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "services/identity/verdict.h"
#include "services/identity/x509/certificate.h"

namespace iotauth::identity::x509 {

// What to do with a CRL past its nextUpdate.
enum class StaleCrlPolicy {
  // Deny (DENY_REASON_REVOKED, "revocation status unknown: CRL expired"). Default:
  // fail closed, as RFC 5280 and OpenSSL do.
  kReject,
  // Accept while now <= nextUpdate + stale_crl_grace, then deny.
  kGrace,
  // Keep using the stale CRL indefinitely (revocations in it still apply).
  kUseStale,
};

struct AlgorithmPolicy {
  int min_rsa_bits = 2048;
  bool allow_p256 = true;
  bool allow_p384 = true;
  bool allow_p521 = false;
  bool allow_ed25519 = true;
  // MD5 and SHA-1 signatures are always refused; SHA-224 unless this is set.
  bool allow_sha224 = false;
};

struct ChainPolicy {
  // Maximum number of intermediate CA certificates between the leaf and the trust
  // anchor (OpenSSL's verify depth).
  int max_depth = 5;
  // OpenSSL's X509_V_FLAG_X509_STRICT (RFC 5280 profile checks: critical
  // basicConstraints on CAs, AKID/SKID presence, ...).
  bool strict = true;
  // Any certificate of the trust store is an anchor, not only self-signed roots
  // (tenants may register an intermediate).
  bool partial_chain = true;
  // OpenSSL purpose checked along the chain: X509_PURPOSE_SSL_CLIENT (EKU clientAuth
  // when the extension is present), X509_PURPOSE_SSL_SERVER, or 0 for none.
  int purpose = X509_PURPOSE_SSL_CLIENT;
  // A device certificate must not be a CA (basicConstraints CA:TRUE on the leaf,
  // whatever its keyUsage says), also when the leaf is itself a trust anchor.
  bool reject_ca_leaf = true;
  // RFC 5280 profile on every certificate below the anchor: version 3, serial
  // positive and at most 20 octets, every extension of a known type decodes,
  // policyConstraints critical, nameConstraints with a non-empty subtree (MALFORMED
  // otherwise); and no nameConstraints on the leaf (CONSTRAINT_VIOLATED).
  bool check_profile = true;
  // The leaf's keyUsage, when present, must include digitalSignature.
  bool require_digital_signature = true;
  AlgorithmPolicy algorithms;
  // Check uploaded CRLs for every certificate of the chain whose issuer has one.
  bool check_crls = true;
  // Deny when an issuer in the chain has no CRL (off: CRLs are optional per CA).
  bool require_crls = false;
  StaleCrlPolicy stale_crl = StaleCrlPolicy::kReject;
  absl::Duration stale_crl_grace = absl::Hours(24);
};

// Immutable trust material, safe to share between threads.
class TrustStore {
 public:
  ~TrustStore();
  TrustStore(const TrustStore&) = delete;
  TrustStore& operator=(const TrustStore&) = delete;

  // `anchors` are trusted; `intermediates` are candidates for path building only.
  static absl::StatusOr<std::shared_ptr<const TrustStore>> Create(
      std::vector<CertPtr> anchors, std::vector<CertPtr> intermediates, std::vector<CrlPtr> crls);

  X509_STORE* store() const { return store_; }
  const std::vector<CertPtr>& anchors() const { return anchors_; }
  const std::vector<CertPtr>& intermediates() const { return intermediates_; }
  const std::vector<CrlPtr>& crls() const { return crls_; }
  // The parsed certificate behind an X509 pointer of this store, or null.
  CertPtr Find(const X509* x) const;
  // Earliest nextUpdate over the CRLs (InfiniteFuture when none).
  absl::Time earliest_crl_next_update() const { return earliest_next_update_; }

 private:
  TrustStore() = default;
  X509_STORE* store_ = nullptr;
  std::vector<CertPtr> anchors_, intermediates_;
  std::vector<CrlPtr> crls_;
  absl::flat_hash_map<const X509*, CertPtr> by_pointer_;
  absl::Time earliest_next_update_ = absl::InfiniteFuture();
};

struct ChainResult {
  Verdict verdict;
  // OpenSSL's X509_V_ERR_* (X509_V_OK when it passed or failed on our policy) and the
  // depth it was reported at (0 = leaf).
  int openssl_error = 0;
  int error_depth = -1;
  // The validated path, leaf first, anchor last (set when the verdict passed).
  std::vector<CertPtr> path;
  // Validity window of the whole path: latest notBefore, earliest notAfter.
  absl::Time valid_from = absl::InfinitePast();
  absl::Time valid_until = absl::InfiniteFuture();
};

// Maps an X509_V_ERR_* code to a deny reason. Exposed for tests.
DenyReason ReasonForX509Error(int error);

// Checks one certificate's key and signature algorithm against `policy`.
// `check_signature` is false for the trust anchor (its self-signature is not relied on).
Verdict CheckAlgorithms(const ParsedCertificate& cert, const AlgorithmPolicy& policy,
                        bool check_signature);

// Verifies `leaf` with `intermediates` (from the request, untrusted) against
// `trust` at `now`. Pure function of its inputs; thread-safe.
ChainResult VerifyChain(const TrustStore& trust, const CertPtr& leaf,
                        absl::Span<const CertPtr> intermediates, absl::Time now,
                        const ChainPolicy& policy);

}  // namespace iotauth::identity::x509
