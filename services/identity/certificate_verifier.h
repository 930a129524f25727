// Seam for X.509 client-certificate authentication (a later issue implements it:
// tenant CA chains, self-signed thumbprints, revocation, JIT registration). The
// authenticator hands it the presented chain and takes over from the resolved identity
// (device lookup, status, product policy, access rules, audit).
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/identity/verdict.h"

namespace iotauth::identity {

class CertificateVerifier {
 public:
  struct Result {
    // Pass, or UNTRUSTED_ISSUER, EXPIRED, NOT_YET_VALID, REVOKED, WRONG_KEY_USAGE,
    // CONSTRAINT_VIOLATED, MALFORMED, ... with a non-secret detail.
    Verdict verdict;
    std::string tenant_id;
    std::string device_id;
    // CREDENTIAL_TYPE_X509_CA or CREDENTIAL_TYPE_X509_SELF_SIGNED.
    iotauth::registry::v1::CredentialType credential_type =
        iotauth::registry::v1::CREDENTIAL_TYPE_UNSPECIFIED;
    absl::Time not_after = absl::InfiniteFuture();
    // Non-secret, for example `x509:sha256:<hex of the leaf DER>`.
    std::string fingerprint;
    // Leaf subject CN, for the `${cert_cn}` placeholder.
    std::string cert_cn;
  };

  virtual ~CertificateVerifier() = default;
  // `chain` is leaf first, each entry DER or PEM, as received; `tenant_hint` may be
  // empty. Must treat the chain as hostile (bounded work, no crash). Thread-safe.
  virtual Result Verify(absl::Span<const absl::string_view> chain, absl::string_view tenant_hint,
                        absl::Time now) const = 0;
};

}  // namespace iotauth::identity
