// CertificateService: the X.509 lifecycle RPCs of iotauth.identity.v1 — CA proof of
// possession, explicit revocations, CRL upload, the per-tenant issuing CA, device
// certificate issuance and renewal. Reads and writes the registry through its
// storage interface (so a revocation is in the change log, and in every identity
// mirror, as soon as the RPC returns); verification of device connections stays in
// X509CertificateVerifier.
//
// Secrets: the issuing CA's private key only ever travels between the store and
// the signing code; it is never logged, audited, put in a status message, or
// returned by an RPC.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/identity/v1/certificates.grpc.pb.h"
#include "services/audit/audit_gate.h"
#include "services/audit/sink_interface.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/certificate.h"
#include "services/identity/x509/chain_verifier.h"
#include "services/registry/store.h"

namespace iotauth::identity::x509 {

struct CertificateServiceConfig {
  // Validity of an issued device certificate when the request names none.
  absl::Duration default_validity = absl::Hours(24 * 30);
  // Longest validity a request may ask for.
  absl::Duration max_validity = absl::Hours(24 * 365);
  // notBefore of issued certificates is backdated by this much (clock skew).
  absl::Duration backdate = absl::Minutes(5);
  // Default and longest validity of a generated issuing CA.
  absl::Duration issuing_ca_validity = absl::Hours(24 * 365 * 5);
  absl::Duration max_issuing_ca_validity = absl::Hours(24 * 365 * 20);
  // Input bounds (hostile input).
  size_t max_certificate_bytes = 16 * 1024;
  size_t max_csr_bytes = 16 * 1024;
  size_t max_crl_bytes = 4 << 20;
  // Path validation of the current chain presented to RenewCertificate, and the
  // key algorithms accepted in CSRs and imported issuing CAs.
  ChainPolicy renewal_policy;
};

class CertificateService final : public iotauth::identity::v1::CertificateService::Service {
 public:
  struct Options {
    // Required. Not owned; must outlive the service.
    iotauth::registry::RegistryStore* store = nullptr;
    // Required (validity windows, CA checks, audit times).
    const Clock* clock = nullptr;
    // Required; audit::NullAuditSink to disable auditing.
    audit::AuditSink* audit = nullptr;
    // Required; AllowAllCallerResolver when caller authentication is off.
    const CallerResolver* caller_resolver = nullptr;
    // Optional (audit.when_unwritable=refuse): while the audit log cannot record
    // them, every call (each writes an audit event) is UNAVAILABLE before it acts.
    // Must outlive the service.
    const audit::AuditGate* audit_gate = nullptr;
    CertificateServiceConfig config;
  };

  // INVALID_ARGUMENT when a required option is missing or the config is inconsistent.
  static absl::StatusOr<std::unique_ptr<CertificateService>> Create(Options options);

  // ---- gRPC handlers (thin: resolve caller, call the Do* logic, audit, map status) ----
  grpc::Status VerifyCaPossession(grpc::ServerContext* ctx,
                                  const iotauth::identity::v1::VerifyCaPossessionRequest* req,
                                  iotauth::registry::v1::CaCertificate* resp) override;
  grpc::Status RegenerateVerificationCode(
      grpc::ServerContext* ctx, const iotauth::identity::v1::RegenerateVerificationCodeRequest* req,
      iotauth::registry::v1::CaCertificate* resp) override;
  grpc::Status RevokeCertificate(grpc::ServerContext* ctx,
                                 const iotauth::identity::v1::RevokeCertificateRequest* req,
                                 iotauth::registry::v1::CertificateRevocation* resp) override;
  grpc::Status DeleteRevocation(grpc::ServerContext* ctx,
                                const iotauth::identity::v1::DeleteRevocationRequest* req,
                                iotauth::identity::v1::DeleteRevocationResponse* resp) override;
  grpc::Status UploadCrl(grpc::ServerContext* ctx,
                         const iotauth::identity::v1::UploadCrlRequest* req,
                         iotauth::registry::v1::CertificateRevocationList* resp) override;
  grpc::Status CreateIssuingCa(grpc::ServerContext* ctx,
                               const iotauth::identity::v1::CreateIssuingCaRequest* req,
                               iotauth::registry::v1::CaCertificate* resp) override;
  grpc::Status IssueCertificate(grpc::ServerContext* ctx,
                                const iotauth::identity::v1::IssueCertificateRequest* req,
                                iotauth::identity::v1::IssuedCertificate* resp) override;
  grpc::Status RenewCertificate(grpc::ServerContext* ctx,
                                const iotauth::identity::v1::RenewCertificateRequest* req,
                                iotauth::identity::v1::IssuedCertificate* resp) override;

  // ---- The logic, callable without gRPC. Each checks the caller's role. Errors
  // carry a stable reason (registry::ReasonOf): POSSESSION_NOT_PROVEN,
  // BAD_CSR_SIGNATURE, SUBJECT_MISMATCH, UNKNOWN_DEVICE, DEVICE_DISABLED,
  // CA_SIGNED_NOT_ALLOWED, NO_ISSUING_CA, ISSUING_CA_UNAVAILABLE, WEAK_ALGORITHM,
  // CRL_BAD_SIGNATURE, CRL_ISSUER_MISMATCH, CRL_NOT_NEWER, CA_DISABLED,
  // CURRENT_CERTIFICATE_INVALID, BAD_KEY_SIGNATURE, INVALID_<FIELD>, ...
  absl::StatusOr<iotauth::registry::v1::CaCertificate> DoVerifyCaPossession(
      const Caller& caller, const iotauth::identity::v1::VerifyCaPossessionRequest& req) const;
  absl::StatusOr<iotauth::registry::v1::CaCertificate> DoRegenerateVerificationCode(
      const Caller& caller,
      const iotauth::identity::v1::RegenerateVerificationCodeRequest& req) const;
  absl::StatusOr<iotauth::registry::v1::CertificateRevocation> DoRevokeCertificate(
      const Caller& caller, const iotauth::identity::v1::RevokeCertificateRequest& req) const;
  absl::Status DoDeleteRevocation(const Caller& caller,
                                  const iotauth::identity::v1::DeleteRevocationRequest& req) const;
  absl::StatusOr<iotauth::registry::v1::CertificateRevocationList> DoUploadCrl(
      const Caller& caller, const iotauth::identity::v1::UploadCrlRequest& req) const;
  absl::StatusOr<iotauth::registry::v1::CaCertificate> DoCreateIssuingCa(
      const Caller& caller, const iotauth::identity::v1::CreateIssuingCaRequest& req) const;
  absl::StatusOr<iotauth::identity::v1::IssuedCertificate> DoIssueCertificate(
      const Caller& caller, const iotauth::identity::v1::IssueCertificateRequest& req);
  absl::StatusOr<iotauth::identity::v1::IssuedCertificate> DoRenewCertificate(
      const Caller& caller, const iotauth::identity::v1::RenewCertificateRequest& req);

  // Id of the revocation of a certificate by fingerprint / by issuer and serial
  // (deterministic, so a repeat is ALREADY_EXISTS). Exposed for tests and the CLI.
  static std::string RevocationIdForFingerprint(absl::string_view fingerprint_hex);
  static std::string RevocationIdForIssuerSerial(absl::string_view issuer_fingerprint_hex,
                                                 absl::string_view serial_hex);

 private:
  explicit CertificateService(Options options) : options_(std::move(options)) {}

  // Signs a certificate for `device_id` over the CSR's public key with the
  // tenant's issuing CA; checks the device. `csr_der` was verified by the caller.
  absl::StatusOr<iotauth::identity::v1::IssuedCertificate> Issue(
      absl::string_view tenant_id, absl::string_view device_id, X509_REQ* csr,
      const google::protobuf::Duration& requested_validity) const;
  // The tenant's VERIFIED CAs and their CRLs as a trust store; `cas` gets the
  // VERIFIED CAs, `revocations` the DISABLED CAs (disabled_by_tbs) and the explicit
  // revocations, keyed as the identity service's CaDirectory keys them.
  absl::StatusOr<std::shared_ptr<const TrustStore>> LoadTenantTrust(
      absl::string_view tenant_id,
      std::vector<std::pair<CertPtr, iotauth::registry::v1::CaCertificate>>* cas,
      TenantTrust* revocations) const;

  // RequireRole, then the audit gate: every call of this service is audited.
  absl::Status RequireRoleAudited(const Caller& caller, Role role) const;
  void Audit(const Caller& caller, iotauth::audit::v1::EventType type, absl::string_view method,
             absl::string_view tenant_id, absl::string_view device_id, const absl::Status& outcome,
             std::vector<std::pair<std::string, std::string>> attributes,
             absl::string_view fingerprint = "") const;

  Options options_;
};

}  // namespace iotauth::identity::x509
