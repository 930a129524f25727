// X509CertificateVerifier: the CertificateVerifier behind X.509 Authenticate. Parses
// the presented chain (through a bounded cache keyed by SHA-256 of each entry),
// validates it against the tenant's CaDirectory snapshot (VerifyChain), applies
// explicit revocations, resolves the device id from the certificate (leaf CN, or the
// CA's SAN pattern), then checks the device in the identity Directory: CA-signed
// allowed, or the self-signed thumbprint; JIT registration through a registrar.
// Chain outcomes are cached by a hash of the presented chain until the earliest
// notAfter / CRL nextUpdate, and invalidated by any CaDirectory change (generation).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/identity/certificate_verifier.h"
#include "services/identity/directory.h"
#include "services/identity/x509/bounded_cache.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/chain_verifier.h"

namespace iotauth::identity::x509 {

// Registers a device on its first valid connect with a certificate from a CA that
// enables JIT registration (AWS JITR/JITP-style). Implemented by the lead over the
// registry: create `device_id` in `ca.tenant_id` with product `ca.jit_product_key`,
// status ENABLED when `ca.jit_auto_enable` else PENDING_APPROVAL,
// credentials.ca_signed_allowed = true. Idempotent (returns the existing device).
// Thread-safe; called synchronously from Authenticate, rarely.
class CertificateDeviceRegistrar {
 public:
  virtual ~CertificateDeviceRegistrar() = default;
  virtual absl::StatusOr<iotauth::registry::v1::Device> RegisterFromCertificate(
      const CaInfo& ca, absl::string_view device_id, absl::string_view fingerprint) = 0;
};

struct X509VerifierConfig {
  ChainPolicy policy;
  ParseLimits limits;
  // Parsed chain entries kept (each ~2-4 KB).
  size_t parsed_cache_capacity = 65536;
  // Chain outcomes kept.
  size_t result_cache_capacity = 65536;
  // Longest a chain outcome is reused even when the certificates live longer.
  absl::Duration max_result_ttl = absl::Minutes(10);
  // Tenants tried for a chain presented without a tenant hint.
  size_t max_tenants_tried = 4;
};

// Matches `value` against `pattern` (literal text with `{tenant}` and `{device}`
// placeholders). On a match sets `*device` and returns true; `{tenant}` must equal
// `tenant_id`. Exposed for tests.
bool MatchDevicePattern(absl::string_view pattern, absl::string_view value,
                        absl::string_view tenant_id, std::string* device);

class X509CertificateVerifier final : public CertificateVerifier {
 public:
  struct Options {
    // Required.
    const CaDirectory* cas = nullptr;
    // Required: device records (thumbprints, ca_signed_allowed).
    const Directory* directory = nullptr;
    // Optional: without it a JIT-enabled CA's unknown device is UNKNOWN_DEVICE.
    CertificateDeviceRegistrar* registrar = nullptr;
    // Optional: a JIT-registered device is written here at once (as the
    // authenticator does for enrollment groups) so its FindDevice sees it.
    DirectoryWriter* directory_writer = nullptr;
    X509VerifierConfig config;
  };

  static absl::StatusOr<std::unique_ptr<X509CertificateVerifier>> Create(Options options);

  Result Verify(absl::Span<const absl::string_view> chain, absl::string_view tenant_hint,
                absl::Time now) const override;

  struct Stats {
    uint64_t parse_hits, parse_misses, result_hits, result_misses;
  };
  Stats stats() const;

 private:
  // The device-independent part of a verification (cacheable).
  struct ChainOutcome {
    Verdict verdict;
    std::string tenant_id;
    std::string device_id;
    iotauth::registry::v1::CredentialType credential_type =
        iotauth::registry::v1::CREDENTIAL_TYPE_UNSPECIFIED;
    std::string fingerprint;  // `x509:sha256:<hex>`
    std::string leaf_fingerprint_hex;
    std::string cert_cn;
    absl::Time not_after = absl::InfiniteFuture();
    // The registered CA that vouched for the chain (JIT policy); null if self-signed.
    std::shared_ptr<const CaInfo> ca;
  };
  struct CachedOutcome {
    std::shared_ptr<const ChainOutcome> outcome;
    uint64_t generation = 0;
    absl::Time valid_from, valid_until;
  };

  explicit X509CertificateVerifier(Options options);
  absl::StatusOr<std::vector<CertPtr>> Parse(absl::Span<const absl::string_view> chain) const;
  ChainOutcome VerifyUncached(const std::vector<CertPtr>& certs, absl::string_view tenant_hint,
                              absl::Time now, absl::Time* valid_from,
                              absl::Time* valid_until) const;
  ChainOutcome VerifyInTenant(const std::vector<CertPtr>& certs, const std::string& tenant_id,
                              absl::Time now, absl::Time* valid_from,
                              absl::Time* valid_until) const;
  Result CheckDevice(const ChainOutcome& o) const;

  Options options_;
  mutable BoundedCache<std::shared_ptr<const std::vector<CertPtr>>> parsed_;
  mutable BoundedCache<CachedOutcome> results_;
};

}  // namespace iotauth::identity::x509
