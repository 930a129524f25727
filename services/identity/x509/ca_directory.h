// CaDirectory: the identity process's in-memory view of every tenant's X.509 trust —
// registered CAs (any status; only VERIFIED ones are trusted), explicit revocations
// and uploaded CRLs — fed from the registry mirror, read on every X.509 Authenticate.
// Each tenant's state is an immutable snapshot (with a prepared OpenSSL trust store)
// swapped on change; every change bumps a generation counter that invalidates cached
// verification results at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/identity/x509/certificate.h"
#include "services/identity/x509/chain_verifier.h"

namespace iotauth::identity::x509 {

// One registered CA, parsed.
struct CaInfo {
  std::string tenant_id;
  std::string id;
  iotauth::registry::v1::CaStatus status = iotauth::registry::v1::CA_STATUS_UNSPECIFIED;
  bool jit_registration = false;
  std::string jit_product_key;
  bool jit_auto_enable = false;
  // Empty: leaf CN is the device id; else a SAN pattern with {tenant} and {device}.
  std::string device_id_pattern;
  bool issuing = false;
  CertPtr cert;
};

// Immutable per-tenant snapshot.
struct TenantTrust {
  std::string tenant_id;
  // Every registered CA by id.
  absl::flat_hash_map<std::string, std::shared_ptr<const CaInfo>> cas;
  // VERIFIED CAs by raw SHA-256 of their tbsCertificate (ParsedCertificate::
  // tbs_sha256: a copy with a re-encoded signature is the same CA).
  absl::flat_hash_map<std::string, std::shared_ptr<const CaInfo>> trusted_by_tbs;
  // DISABLED CAs, keyed the same way: a chain through one is refused even when it
  // reaches a verified anchor (an intermediate disabled under a trusted root), and
  // re-encoding its signature does not make it another certificate.
  absl::flat_hash_map<std::string, std::shared_ptr<const CaInfo>> disabled_by_tbs;
  // Anchors: VERIFIED CAs (and their CRLs). Null when the tenant trusts no CA.
  std::shared_ptr<const TrustStore> store;
  // Revoked certificates: by DER fingerprint (lowercase hex), by tbsCertificate
  // fingerprint (when revoked by certificate), and `issuer tbs fingerprint
  // hex/serial hex` (IssuerSerialKey; the issuer is a registered CA, named by its tbs
  // fingerprint, or by its DER fingerprint when it is no longer registered).
  absl::flat_hash_set<std::string> revoked_fingerprints;
  absl::flat_hash_set<std::string> revoked_tbs;
  absl::flat_hash_set<std::string> revoked_issuer_serials;

  // Indexes one explicit revocation. `tbs_by_fingerprint` maps the tenant's
  // registered CAs' DER fingerprints to their tbs fingerprints (how the check names
  // the issuer of an issuer+serial revocation).
  void AddRevocation(const iotauth::registry::v1::CertificateRevocation& r,
                     const absl::flat_hash_map<std::string, std::string>& tbs_by_fingerprint);

  // Whether `cert` is revoked by an explicit revocation (not a CRL); `issuer` is the
  // next certificate up its verified path (null for the last).
  bool Revoked(const ParsedCertificate& cert, const ParsedCertificate* issuer) const;
};

class CaDirectory {
 public:
  CaDirectory() = default;

  // ---- write side (registry mirror; thread-safe) ----
  // INVALID_ARGUMENT when the PEM does not parse (the CA is then dropped).
  absl::Status UpsertCa(const iotauth::registry::v1::CaCertificate& ca);
  void RemoveCa(absl::string_view tenant_id, absl::string_view ca_id);
  absl::Status UpsertRevocation(const iotauth::registry::v1::CertificateRevocation& revocation);
  void RemoveRevocation(absl::string_view tenant_id, absl::string_view revocation_id);
  // INVALID_ARGUMENT when the CRL does not parse.
  absl::Status UpsertCrl(const iotauth::registry::v1::CertificateRevocationList& crl);
  void RemoveCrl(absl::string_view tenant_id, absl::string_view ca_id);
  // The CA's CRL exists but cannot be used (it does not parse, or could not be
  // read): the CA counts as DISABLED until a usable CRL is upserted or the CRL is
  // removed. UpsertCrl does this itself for a CRL that does not parse.
  void MarkCrlUnusable(absl::string_view tenant_id, absl::string_view ca_id);
  void RemoveTenant(absl::string_view tenant_id);
  void Clear();
  // A full resync that never leaves a tenant's trust missing: after BeginSnapshot(),
  // Upsert every CA, revocation and CRL the registry has; EndSnapshot() then removes
  // whatever was not upserted since (deleted while nobody was following).
  void BeginSnapshot();
  void EndSnapshot();

  // ---- read side (hot path; thread-safe, never blocks for long) ----
  std::shared_ptr<const TenantTrust> Find(absl::string_view tenant_id) const;
  // Tenants with a VERIFIED CA whose subject equals `issuer` (for chains presented
  // without a tenant hint), at most `limit`.
  std::vector<std::string> TenantsForIssuer(const X509_NAME* issuer, size_t limit) const;
  // Bumped by every change.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  static std::string IssuerSerialKey(absl::string_view issuer_fingerprint_hex,
                                     absl::string_view serial_hex);

 private:
  // Mutable source state of one tenant (under mu_).
  struct Source {
    absl::flat_hash_map<std::string, std::shared_ptr<const CaInfo>> cas;
    absl::flat_hash_map<std::string, iotauth::registry::v1::CertificateRevocation> revocations;
    absl::flat_hash_map<std::string, CrlPtr> crls;  // by CA id; nullptr: unusable
  };
  // Rebuilds the tenant's snapshot from its source and publishes it.
  void Rebuild(const std::string& tenant_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // What a snapshot in progress has upserted, per tenant.
  struct Seen {
    absl::flat_hash_set<std::string> cas;
    absl::flat_hash_set<std::string> revocations;
    absl::flat_hash_set<std::string> crls;  // by CA id
  };

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Source> sources_ ABSL_GUARDED_BY(mu_);
  bool in_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, Seen> seen_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<const TenantTrust>> snapshots_
      ABSL_GUARDED_BY(mu_);
  // X509_NAME hash of a VERIFIED CA's subject -> tenants.
  absl::flat_hash_map<unsigned long, std::vector<std::string>> issuer_index_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{1};
};

}  // namespace iotauth::identity::x509
