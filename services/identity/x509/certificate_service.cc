#include "services/identity/x509/certificate_service.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/openssl_ptr.h"
#include "services/common/proto_time.h"
#include "services/common/status_macros.h"
#include "services/common/utf8.h"
#include "services/identity/x509/csr.h"
#include "services/identity/x509/x509_certificate_verifier.h"
#include "services/registry/validation.h"

namespace iotauth::identity::x509 {
namespace {

namespace rv1 = iotauth::registry::v1;
namespace iv1 = iotauth::identity::v1;
using iotauth::registry::InvalidField;
using iotauth::registry::ReasonOf;
using iotauth::registry::Secrets;
using iotauth::registry::ValidateId;

// ---- Status helpers (messages never carry a secret) ----
absl::Status Precondition(absl::string_view reason, absl::string_view message) {
  return WithErrorReason(absl::FailedPreconditionError(message), reason);
}
absl::Status Denied(absl::string_view reason, absl::string_view message) {
  return WithErrorReason(absl::PermissionDeniedError(message), reason);
}
absl::Status Invalid(absl::string_view reason, absl::string_view message) {
  return WithErrorReason(absl::InvalidArgumentError(message), reason);
}
absl::Status Internal(absl::string_view what) {
  ERR_clear_error();
  return absl::InternalError(absl::StrCat("openssl: ", what));
}

// ---- Time ----
bool IsUnset(const google::protobuf::Duration& d) { return d.seconds() == 0 && d.nanos() == 0; }

absl::StatusOr<absl::Duration> ResolveValidity(absl::string_view field,
                                               const google::protobuf::Duration& requested,
                                               absl::Duration def, absl::Duration max) {
  if (IsUnset(requested)) return def;
  absl::Duration d = FromProtoDuration(requested);
  if (d < absl::Minutes(1)) return InvalidField(field, "must be at least one minute");
  if (d > max) return InvalidField(field, "exceeds the configured maximum");
  return d;
}

// ---- Parsing bounded, hostile input ----
int NoPassword(char* /*unused*/, int /*unused*/, int /*unused*/, void* /*unused*/) { return -1; }

absl::StatusOr<CertPtr> ParseOneCertificate(absl::string_view field, absl::string_view data,
                                            size_t max_bytes) {
  if (data.empty()) return InvalidField(field, "is required");
  ParseLimits limits;
  limits.max_certificates = 1;
  limits.max_entry_bytes = max_bytes;
  limits.max_total_bytes = max_bytes;
  absl::StatusOr<std::vector<CertPtr>> certs = ParseCertificates(data, limits);
  if (!certs.ok()) return InvalidField(field, certs.status().message());
  if (certs->size() != 1) return InvalidField(field, "must hold exactly one certificate");
  return (*certs)[0];
}

// The stored CA certificate (written by the registry after parsing; re-parsed here).
absl::StatusOr<CertPtr> ParseStoredCa(const rv1::CaCertificate& ca) {
  ParseLimits limits;
  limits.max_certificates = 1;
  limits.max_entry_bytes = size_t{64} * 1024;
  limits.max_total_bytes = size_t{64} * 1024;
  absl::StatusOr<std::vector<CertPtr>> certs = ParseCertificates(ca.certificate_pem(), limits);
  if (!certs.ok() || certs->size() != 1) {
    return absl::DataLossError("stored CA certificate does not parse");
  }
  return (*certs)[0];
}

// Digest to sign with `key`.
const EVP_MD* DigestFor(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519) return nullptr;
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256) {
    return EVP_sha384();
  }
  return EVP_sha256();
}

absl::StatusOr<EvpPkeyPtr> LoadPrivateKey(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Internal("BIO_new_mem_buf");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr));
  ERR_clear_error();
  if (!key) return absl::InvalidArgumentError("not an unencrypted PEM private key");
  return key;
}

// PKCS#8 PEM, built in secure heap memory.
absl::StatusOr<std::string> PrivateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return Internal("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(std::max(0L, len)));
}

absl::StatusOr<EvpPkeyPtr> GenerateKey(iv1::KeyAlgorithm alg) {
  EVP_PKEY* k = nullptr;
  switch (alg) {
    case iv1::KEY_ALGORITHM_UNSPECIFIED:
    case iv1::KEY_ALGORITHM_EC_P256:
      k = EVP_EC_gen("P-256");
      break;
    case iv1::KEY_ALGORITHM_EC_P384:
      k = EVP_EC_gen("P-384");
      break;
    case iv1::KEY_ALGORITHM_RSA_2048:
      k = EVP_RSA_gen(2048);
      break;
    case iv1::KEY_ALGORITHM_RSA_3072:
      k = EVP_RSA_gen(3072);
      break;
    case iv1::KEY_ALGORITHM_ED25519:
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
    default:
      return InvalidField("generate.key_algorithm", "unknown algorithm");
  }
  if (k == nullptr) return Internal("key generation");
  return EvpPkeyPtr(k);
}

// A random positive 127-bit serial (RFC 5280: at most 20 octets, unpredictable).
absl::Status SetRandomSerial(X509* x) {
  IOTAUTH_ASSIGN_OR_RETURN(std::string raw, crypto::RandomBytes(16));
  raw[0] = static_cast<char>((static_cast<unsigned char>(raw[0]) & 0x7f) | 0x01);
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()),
                         static_cast<int>(raw.size()), nullptr);
  if (bn == nullptr) return Internal("BN_bin2bn");
  ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
  BN_free(bn);
  if (serial == nullptr) return Internal("BN_to_ASN1_INTEGER");
  int ok = X509_set_serialNumber(x, serial);
  ASN1_INTEGER_free(serial);
  if (ok != 1) return Internal("X509_set_serialNumber");
  return absl::OkStatus();
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return Internal("X509V3_EXT_conf_nid");
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return Internal("X509_add_ext");
  return absl::OkStatus();
}

absl::Status SetValidity(X509* x, absl::Time not_before, absl::Time not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(x), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(x), absl::ToTimeT(not_after)) == nullptr) {
    return Internal("ASN1_TIME_set");
  }
  return absl::OkStatus();
}

absl::Status SetCn(X509_NAME* name, absl::string_view cn) {
  if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    return Internal("X509_NAME_add_entry_by_NID");
  }
  return absl::OkStatus();
}

// Fills the public description of a CA certificate as the registry does.
void DescribeCa(const ParsedCertificate& cert, rv1::CaCertificate* ca) {
  ca->set_certificate_pem(PemOf(cert.x509()));
  ca->set_sha256_fingerprint(cert.fingerprint_hex());
  ca->set_subject(cert.subject());
  ToProtoTimestamp(cert.not_after(), ca->mutable_not_after());
  // Same id rule as DeviceRegistry.CreateCaCertificate.
  ca->set_id(absl::StrCat("ca-", cert.fingerprint_hex().substr(0, 24)));
}

absl::StatusOr<std::string> NewVerificationCode() {
  IOTAUTH_ASSIGN_OR_RETURN(std::string raw, crypto::RandomBytes(16));
  return crypto::HexEncode(raw);
}

// Normalises a serial given by an operator: lowercase hex, no `0x`, no leading zeros.
absl::StatusOr<std::string> NormalizeSerial(absl::string_view in) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(in));
  if (absl::StartsWith(s, "0x")) s = s.substr(2);
  if (s.empty() || s.size() > 64) {
    return InvalidField("issuer_serial.serial_hex", "must be 1 to 64 hex digits");
  }
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return InvalidField("issuer_serial.serial_hex", "must be hex digits");
    }
  }
  size_t nz = s.find_first_not_of('0');
  return nz == std::string::npos ? std::string("0") : s.substr(nz);
}

// Compares two decimal cRLNumbers (no leading zeros, as ParsedCrl prints them).
int CompareDecimal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  return a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
}

std::string CrlPem(X509_CRL* crl) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_CRL(bio.get(), crl) != 1) return "";
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(std::max(0L, len)));
}

absl::Status ValidateReason(absl::string_view reason) {
  if (reason.size() > 256) return InvalidField("reason", "is longer than 256 characters");
  for (char c : reason) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidField("reason", "contains a control character");
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<CertificateService>> CertificateService::Create(Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("store is required");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (options.audit == nullptr) return absl::InvalidArgumentError("audit sink is required");
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("caller_resolver is required");
  }
  const CertificateServiceConfig& c = options.config;
  if (c.default_validity < absl::Minutes(1) || c.max_validity < c.default_validity) {
    return absl::InvalidArgumentError(
        "certificate validity: need 1m <= default_validity <= max_validity");
  }
  if (c.issuing_ca_validity < absl::Hours(1) || c.max_issuing_ca_validity < c.issuing_ca_validity) {
    return absl::InvalidArgumentError(
        "issuing CA validity: need 1h <= issuing_ca_validity <= max_issuing_ca_validity");
  }
  if (c.backdate < absl::ZeroDuration() || c.backdate > absl::Hours(1)) {
    return absl::InvalidArgumentError("backdate must be in [0, 1h]");
  }
  if (c.max_certificate_bytes == 0 || c.max_csr_bytes == 0 || c.max_crl_bytes == 0) {
    return absl::InvalidArgumentError("input size limits must be positive");
  }
  return std::unique_ptr<CertificateService>(new CertificateService(options));
}

std::string CertificateService::RevocationIdForFingerprint(absl::string_view fingerprint_hex) {
  return absl::StrCat(
      "rev-",
      crypto::Sha256Hex(absl::StrCat("fp:", absl::AsciiStrToLower(fingerprint_hex))).substr(0, 32));
}

std::string CertificateService::RevocationIdForIssuerSerial(
    absl::string_view issuer_fingerprint_hex, absl::string_view serial_hex) {
  return absl::StrCat(
      "rev-", crypto::Sha256Hex(absl::StrCat("is:", CaDirectory::IssuerSerialKey(
                                                        issuer_fingerprint_hex, serial_hex)))
                  .substr(0, 32));
}

absl::Status CertificateService::RequireRoleAudited(const Caller& caller, Role role) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, role));
  return audit::AdmitAudited(options_.audit_gate);
}

void CertificateService::Audit(const Caller& caller, audit::v1::EventType type,
                               absl::string_view method, absl::string_view tenant_id,
                               absl::string_view device_id, const absl::Status& outcome,
                               std::vector<std::pair<std::string, std::string>> attributes,
                               absl::string_view fingerprint) const {
  if (audit::AuditGate::IsRefusal(outcome)) return;  // nothing done, nothing to record
  audit::v1::AuditEvent e;
  ToProtoTimestamp(options_.clock->Now(), e.mutable_time());
  e.set_type(type);
  e.set_tenant_id(std::string(tenant_id));
  e.set_device_id(std::string(device_id));
  e.set_outcome(outcome.ok() ? audit::v1::OUTCOME_SUCCESS : audit::v1::OUTCOME_FAILURE);
  e.set_reason(std::string(method));
  e.set_caller(caller.principal);
  e.set_peer_address(caller.peer);
  if (!fingerprint.empty()) e.set_credential_fingerprint(std::string(fingerprint));
  auto& attrs = *e.mutable_attributes();
  for (auto& [k, v] : attributes) {
    if (!v.empty()) attrs[k] = std::move(v);
  }
  if (!outcome.ok()) attrs["error"] = ReasonOf(outcome);
  options_.audit->Record(std::move(e));
}

// ---------------------------------------------------------------------------
// Proof of possession.

absl::StatusOr<rv1::CaCertificate> CertificateService::DoVerifyCaPossession(
    const Caller& caller, const iv1::VerifyCaPossessionRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req.ca_id()));
  IOTAUTH_ASSIGN_OR_RETURN(rv1::CaCertificate ca,
                           options_.store->GetCaCertificate(req.tenant_id(), req.ca_id()));
  if (ca.status() == rv1::CA_STATUS_DISABLED) {
    return Precondition("CA_DISABLED", "the CA is disabled; enable it before verifying");
  }
  if (ca.status() == rv1::CA_STATUS_VERIFIED) return ca;  // idempotent
  IOTAUTH_ASSIGN_OR_RETURN(
      CertPtr proof, ParseOneCertificate("verification_certificate", req.verification_certificate(),
                                         options_.config.max_certificate_bytes));
  IOTAUTH_ASSIGN_OR_RETURN(CertPtr ca_cert, ParseStoredCa(ca));
  if (ca.verification_code().empty()) {
    return Precondition("POSSESSION_NOT_PROVEN",
                        "the CA has no verification code; regenerate one first");
  }
  if (!crypto::ConstantTimeEquals(proof->subject_cn(), ca.verification_code())) {
    return Precondition("POSSESSION_NOT_PROVEN",
                        "the certificate's subject CN is not the CA's verification code");
  }
  EVP_PKEY* ca_key = X509_get0_pubkey(ca_cert->x509());
  int ok = ca_key == nullptr ? 0 : X509_verify(proof->x509(), ca_key);
  ERR_clear_error();
  if (ok != 1) {
    return Precondition("POSSESSION_NOT_PROVEN", "the certificate is not signed by the CA's key");
  }
  absl::Time now = options_.clock->Now();
  if (now < proof->not_before() || now > proof->not_after()) {
    return Precondition("POSSESSION_NOT_PROVEN", "the verification certificate is not valid now");
  }
  // A fresh code: the proof cannot be replayed after a later disable/re-upload.
  IOTAUTH_ASSIGN_OR_RETURN(std::string next_code, NewVerificationCode());
  return options_.store->SetCaVerification(req.tenant_id(), req.ca_id(), rv1::CA_STATUS_VERIFIED,
                                           next_code, ca.etag());
}

absl::StatusOr<rv1::CaCertificate> CertificateService::DoRegenerateVerificationCode(
    const Caller& caller, const iv1::RegenerateVerificationCodeRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req.ca_id()));
  IOTAUTH_ASSIGN_OR_RETURN(rv1::CaCertificate ca,
                           options_.store->GetCaCertificate(req.tenant_id(), req.ca_id()));
  IOTAUTH_ASSIGN_OR_RETURN(std::string code, NewVerificationCode());
  return options_.store->SetCaVerification(req.tenant_id(), req.ca_id(), rv1::CA_STATUS_UNSPECIFIED,
                                           code, ca.etag());
}

// ---------------------------------------------------------------------------
// Revocation.

absl::StatusOr<rv1::CertificateRevocation> CertificateService::DoRevokeCertificate(
    const Caller& caller, const iv1::RevokeCertificateRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  if (!req.device_id().empty()) IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req.device_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateReason(req.reason()));
  rv1::CertificateRevocation r;
  r.set_tenant_id(req.tenant_id());
  r.set_reason(req.reason());
  r.set_device_id(req.device_id());
  switch (req.target_case()) {
    case iv1::RevokeCertificateRequest::kCertificate: {
      IOTAUTH_ASSIGN_OR_RETURN(CertPtr cert,
                               ParseOneCertificate("certificate", req.certificate(),
                                                   options_.config.max_certificate_bytes));
      r.set_fingerprint(cert->fingerprint_hex());
      r.set_tbs_fingerprint(cert->tbs_fingerprint_hex());
      r.set_id(RevocationIdForFingerprint(r.fingerprint()));
      break;
    }
    case iv1::RevokeCertificateRequest::kFingerprint:
      IOTAUTH_RETURN_IF_ERROR(
          ::iotauth::registry::ValidateThumbprint("fingerprint", req.fingerprint()));
      r.set_fingerprint(::iotauth::registry::NormalizeThumbprint(req.fingerprint()));
      r.set_id(RevocationIdForFingerprint(r.fingerprint()));
      break;
    case iv1::RevokeCertificateRequest::kIssuerSerial: {
      IOTAUTH_RETURN_IF_ERROR(ValidateId("issuer_serial.ca_id", req.issuer_serial().ca_id()));
      IOTAUTH_ASSIGN_OR_RETURN(std::string serial,
                               NormalizeSerial(req.issuer_serial().serial_hex()));
      absl::StatusOr<rv1::CaCertificate> ca =
          options_.store->GetCaCertificate(req.tenant_id(), req.issuer_serial().ca_id());
      if (ca.status().code() == absl::StatusCode::kNotFound) {
        return Precondition("UNKNOWN_CA", "issuer_serial.ca_id names no CA of the tenant");
      }
      if (!ca.ok()) return ca.status();
      r.set_issuer_fingerprint(ca->sha256_fingerprint());
      r.set_serial_hex(serial);
      r.set_id(RevocationIdForIssuerSerial(r.issuer_fingerprint(), serial));
      break;
    }
    default:
      return InvalidField("target", "one of certificate, fingerprint, issuer_serial is required");
  }
  return options_.store->CreateRevocation(r);
}

absl::Status CertificateService::DoDeleteRevocation(const Caller& caller,
                                                    const iv1::DeleteRevocationRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("revocation_id", req.revocation_id()));
  return options_.store->DeleteRevocation(req.tenant_id(), req.revocation_id(), "");
}

absl::StatusOr<rv1::CertificateRevocationList> CertificateService::DoUploadCrl(
    const Caller& caller, const iv1::UploadCrlRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req.ca_id()));
  if (req.crl().empty()) return InvalidField("crl", "is required");
  if (req.crl().size() > options_.config.max_crl_bytes) return InvalidField("crl", "is too large");
  absl::StatusOr<rv1::CaCertificate> ca =
      options_.store->GetCaCertificate(req.tenant_id(), req.ca_id());
  if (ca.status().code() == absl::StatusCode::kNotFound) {
    return Precondition("UNKNOWN_CA", "ca_id names no CA of the tenant");
  }
  if (!ca.ok()) return ca.status();
  absl::StatusOr<CrlPtr> crl = ParsedCrl::Parse(req.crl(), options_.config.max_crl_bytes);
  if (!crl.ok()) return InvalidField("crl", crl.status().message());
  IOTAUTH_ASSIGN_OR_RETURN(CertPtr ca_cert, ParseStoredCa(*ca));
  if (X509_NAME_cmp(X509_CRL_get_issuer((*crl)->crl()), X509_get_subject_name(ca_cert->x509())) !=
      0) {
    return Precondition("CRL_ISSUER_MISMATCH", "the CRL's issuer is not the CA's subject");
  }
  EVP_PKEY* ca_key = X509_get0_pubkey(ca_cert->x509());
  int ok = ca_key == nullptr ? 0 : X509_CRL_verify((*crl)->crl(), ca_key);
  ERR_clear_error();
  if (ok != 1) return Precondition("CRL_BAD_SIGNATURE", "the CRL is not signed by the CA's key");
  // One CRL is kept per CA and read as the complete list: a delta stored over the
  // base would drop every revocation the delta does not repeat.
  if (void* delta = X509_CRL_get_ext_d2i((*crl)->crl(), NID_delta_crl, nullptr, nullptr)) {
    ASN1_INTEGER_free(static_cast<ASN1_INTEGER*>(delta));
    return InvalidField("crl", "is a delta CRL (deltaCRLIndicator); upload the CA's complete CRL");
  }
  // A CRL whose authority key identifier names another certificate of the CA (one
  // re-issued with the same key) is one OpenSSL would never apply to this CA's
  // certificates: refused here rather than stored and silently unused.
  {
    auto* akid = static_cast<AUTHORITY_KEYID*>(
        X509_CRL_get_ext_d2i((*crl)->crl(), NID_authority_key_identifier, nullptr, nullptr));
    const int akid_check = akid == nullptr ? X509_V_OK : X509_check_akid(ca_cert->x509(), akid);
    AUTHORITY_KEYID_free(akid);
    if (akid_check != X509_V_OK) {
      return Precondition("CRL_ISSUER_MISMATCH",
                          "the CRL's authority key identifier names another certificate than "
                          "the CA's (re-issued?): register the certificate the CRL names, or "
                          "have the CA sign a CRL for this one");
    }
  }

  std::string expected_etag;
  absl::StatusOr<rv1::CertificateRevocationList> stored =
      options_.store->GetCrl(req.tenant_id(), req.ca_id());
  if (stored.ok()) {
    bool newer;
    if (!stored->crl_number().empty() && !(*crl)->crl_number().empty()) {
      newer = CompareDecimal((*crl)->crl_number(), stored->crl_number()) > 0;
    } else {
      newer = absl::ToUnixSeconds((*crl)->this_update()) > stored->this_update().seconds();
    }
    if (!newer) {
      return Precondition("CRL_NOT_NEWER", "the CRL is not newer than the stored one");
    }
    expected_etag = stored->etag();
  } else if (stored.status().code() != absl::StatusCode::kNotFound) {
    return stored.status();
  }
  rv1::CertificateRevocationList out;
  out.set_tenant_id(req.tenant_id());
  out.set_ca_id(req.ca_id());
  out.set_crl_pem(CrlPem((*crl)->crl()));
  if (out.crl_pem().empty()) return Internal("PEM_write_bio_X509_CRL");
  // Stored (and mirrored) as PEM, a third larger than DER: the limit holds for
  // what is stored, so every reader of it stays inside its message limits.
  if (out.crl_pem().size() > options_.config.max_crl_bytes) {
    return InvalidField(
        "crl", absl::StrCat("is too large: ", out.crl_pem().size(),
                            " bytes as PEM, over the limit of ", options_.config.max_crl_bytes));
  }
  ToProtoTimestamp((*crl)->this_update(), out.mutable_this_update());
  if ((*crl)->next_update() != absl::InfiniteFuture()) {
    ToProtoTimestamp((*crl)->next_update(), out.mutable_next_update());
  }
  out.set_crl_number((*crl)->crl_number());
  out.set_revoked_count((*crl)->revoked_count());
  // Conditional on what was compared against, so a concurrent older upload cannot win.
  return options_.store->PutCrl(out, expected_etag);
}

// ---------------------------------------------------------------------------
// Issuing CA and issuance.

absl::StatusOr<rv1::CaCertificate> CertificateService::DoCreateIssuingCa(
    const Caller& caller, const iv1::CreateIssuingCaRequest& req) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  {
    absl::StatusOr<rv1::IssuingCa> existing =
        options_.store->GetIssuingCa(req.tenant_id(), Secrets::kOmit);
    if (existing.ok()) {
      return WithErrorReason(absl::AlreadyExistsError("the tenant already has an issuing CA"),
                             "ALREADY_EXISTS");
    }
    if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
  }
  const AlgorithmPolicy& algs = options_.config.renewal_policy.algorithms;
  absl::Time now = options_.clock->Now();
  X509Ptr cert;
  EvpPkeyPtr key;
  bool generated = false;
  switch (req.source_case()) {
    case iv1::CreateIssuingCaRequest::kGenerate: {
      const iv1::GenerateIssuingCa& g = req.generate();
      IOTAUTH_ASSIGN_OR_RETURN(
          absl::Duration validity,
          ResolveValidity("generate.validity", g.validity(), options_.config.issuing_ca_validity,
                          options_.config.max_issuing_ca_validity));
      // X.520 caps a CN at 64 characters: a long tenant id is cut from the default.
      std::string cn = g.common_name().empty()
                           ? absl::StrCat("iotauth issuing CA ", req.tenant_id()).substr(0, 64)
                           : g.common_name();
      if (cn.size() > 64) return InvalidField("generate.common_name", "is longer than 64 bytes");
      IOTAUTH_ASSIGN_OR_RETURN(key, GenerateKey(g.key_algorithm()));
      cert.reset(X509_new());
      if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return Internal("X509_new");
      IOTAUTH_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
      IOTAUTH_RETURN_IF_ERROR(SetCn(X509_get_subject_name(cert.get()), cn));
      IOTAUTH_RETURN_IF_ERROR(SetCn(X509_get_issuer_name(cert.get()), cn));
      IOTAUTH_RETURN_IF_ERROR(
          SetValidity(cert.get(), now - options_.config.backdate, now + validity));
      if (X509_set_pubkey(cert.get(), key.get()) != 1) return Internal("X509_set_pubkey");
      IOTAUTH_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_basic_constraints,
                                           "critical,CA:TRUE,pathlen:0"));
      IOTAUTH_RETURN_IF_ERROR(
          AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
      IOTAUTH_RETURN_IF_ERROR(
          AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
      IOTAUTH_RETURN_IF_ERROR(
          AddExtension(cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always"));
      if (X509_sign(cert.get(), key.get(), DigestFor(key.get())) <= 0) return Internal("X509_sign");
      generated = true;
      break;
    }
    case iv1::CreateIssuingCaRequest::kImport: {
      const iv1::ImportIssuingCa& im = req.import();
      IOTAUTH_ASSIGN_OR_RETURN(CertPtr parsed,
                               ParseOneCertificate("import.certificate_pem", im.certificate_pem(),
                                                   options_.config.max_certificate_bytes));
      if (X509_check_ca(parsed->x509()) < 1) {
        return InvalidField("import.certificate_pem", "is not a CA certificate");
      }
      uint32_t ku = X509_get_key_usage(parsed->x509());
      if ((ku & KU_KEY_CERT_SIGN) == 0) {
        return InvalidField("import.certificate_pem", "keyUsage lacks keyCertSign");
      }
      if (now < parsed->not_before() || now >= parsed->not_after()) {
        return InvalidField("import.certificate_pem", "is not valid now");
      }
      if (im.private_key_pem().empty() || im.private_key_pem().size() > size_t{16} * 1024) {
        return InvalidField("import.private_key_pem", "is required (at most 16 KiB)");
      }
      absl::StatusOr<EvpPkeyPtr> k = LoadPrivateKey(im.private_key_pem());
      if (!k.ok()) return InvalidField("import.private_key_pem", k.status().message());
      key = *std::move(k);
      int match = X509_check_private_key(parsed->x509(), key.get());
      ERR_clear_error();
      if (match != 1) {
        return InvalidField("import.private_key_pem", "does not match the certificate");
      }
      X509_up_ref(parsed->x509());
      cert.reset(parsed->x509());
      break;
    }
    default:
      return InvalidField("source", "generate or import is required");
  }
  IOTAUTH_RETURN_IF_ERROR(CheckKeyAlgorithm(key.get(), algs));
  IOTAUTH_ASSIGN_OR_RETURN(CertPtr ca_cert, ParsedCertificate::FromX509(std::move(cert)));

  rv1::CaCertificate ca;
  ca.set_tenant_id(req.tenant_id());
  DescribeCa(*ca_cert, &ca);
  ca.set_status(rv1::CA_STATUS_VERIFIED);
  // iotauth generated or was handed the key: possession is established.
  ca.mutable_possession_verified_time()->set_seconds(absl::ToUnixSeconds(options_.clock->Now()));
  ca.set_issuing(true);
  rv1::IssuingCa issuing;
  issuing.set_tenant_id(req.tenant_id());
  issuing.set_ca_id(ca.id());
  issuing.set_certificate_pem(ca.certificate_pem());
  issuing.set_generated(generated);
  IOTAUTH_ASSIGN_OR_RETURN(*issuing.mutable_private_key_pem(), PrivateKeyPem(key.get()));
  absl::StatusOr<rv1::IssuingCa> created = options_.store->CreateIssuingCa(issuing, ca);
  OPENSSL_cleanse(issuing.mutable_private_key_pem()->data(), issuing.private_key_pem().size());
  if (!created.ok()) return created.status();
  return options_.store->GetCaCertificate(req.tenant_id(), ca.id());
}

absl::StatusOr<iv1::IssuedCertificate> CertificateService::Issue(
    absl::string_view tenant_id, absl::string_view device_id, X509_REQ* csr,
    const google::protobuf::Duration& requested_validity) const {
  IOTAUTH_ASSIGN_OR_RETURN(
      absl::Duration validity,
      ResolveValidity("validity", requested_validity, options_.config.default_validity,
                      options_.config.max_validity));
  absl::StatusOr<rv1::Device> device =
      options_.store->GetDevice(tenant_id, device_id, Secrets::kOmit);
  if (device.status().code() == absl::StatusCode::kNotFound) {
    return Precondition("UNKNOWN_DEVICE", "the device does not exist in the tenant");
  }
  if (!device.ok()) return device.status();
  if (device->status() == rv1::DEVICE_STATUS_DISABLED) {
    return Precondition("DEVICE_DISABLED", "the device is disabled");
  }
  if (!device->credentials().ca_signed_allowed()) {
    return Precondition("CA_SIGNED_NOT_ALLOWED",
                        "the device does not allow CA-signed certificates");
  }
  absl::StatusOr<rv1::IssuingCa> issuing =
      options_.store->GetIssuingCa(tenant_id, Secrets::kInclude);
  if (issuing.status().code() == absl::StatusCode::kNotFound) {
    return Precondition("NO_ISSUING_CA", "the tenant has no issuing CA");
  }
  if (!issuing.ok()) return issuing.status();
  absl::StatusOr<EvpPkeyPtr> ca_key = LoadPrivateKey(issuing->private_key_pem());
  OPENSSL_cleanse(issuing->mutable_private_key_pem()->data(), issuing->private_key_pem().size());
  issuing->clear_private_key_pem();
  if (!ca_key.ok()) return absl::DataLossError("stored issuing CA key does not load");
  absl::StatusOr<rv1::CaCertificate> ca =
      options_.store->GetCaCertificate(tenant_id, issuing->ca_id());
  if (!ca.ok() || ca->status() != rv1::CA_STATUS_VERIFIED) {
    return Precondition("ISSUING_CA_UNAVAILABLE", "the issuing CA is disabled or deleted");
  }
  IOTAUTH_ASSIGN_OR_RETURN(CertPtr ca_cert, ParseStoredCa(*ca));
  absl::Time now = options_.clock->Now();
  absl::Time not_after = std::min(now + validity, ca_cert->not_after());
  if (not_after <= now) return Precondition("ISSUING_CA_UNAVAILABLE", "the issuing CA expired");

  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return Internal("X509_new");
  IOTAUTH_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  // Only the device id from the CSR's subject: nothing else the requester wrote.
  IOTAUTH_RETURN_IF_ERROR(SetCn(X509_get_subject_name(cert.get()), device_id));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert->x509())) != 1) {
    return Internal("X509_set_issuer_name");
  }
  IOTAUTH_RETURN_IF_ERROR(SetValidity(cert.get(), now - options_.config.backdate, not_after));
  if (X509_set_pubkey(cert.get(), X509_REQ_get0_pubkey(csr)) != 1) {
    return Internal("X509_set_pubkey");
  }
  X509* issuer = ca_cert->x509();
  IOTAUTH_RETURN_IF_ERROR(
      AddExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
  IOTAUTH_RETURN_IF_ERROR(
      AddExtension(cert.get(), issuer, NID_key_usage, "critical,digitalSignature"));
  IOTAUTH_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_ext_key_usage, "clientAuth"));
  IOTAUTH_RETURN_IF_ERROR(AddExtension(cert.get(), issuer, NID_subject_key_identifier, "hash"));
  IOTAUTH_RETURN_IF_ERROR(
      AddExtension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), ca_key->get(), DigestFor(ca_key->get())) <= 0) {
    return Internal("X509_sign");
  }
  IOTAUTH_ASSIGN_OR_RETURN(CertPtr leaf, ParsedCertificate::FromX509(std::move(cert)));
  iv1::IssuedCertificate out;
  out.set_certificate_pem(PemOf(leaf->x509()));
  out.set_issuer_pem(ca->certificate_pem());
  out.set_serial_hex(leaf->serial_hex());
  out.set_fingerprint(leaf->fingerprint_hex());
  ToProtoTimestamp(leaf->not_before(), out.mutable_not_before());
  ToProtoTimestamp(leaf->not_after(), out.mutable_not_after());
  out.set_device_id(std::string(device_id));
  return out;
}

absl::StatusOr<iv1::IssuedCertificate> CertificateService::DoIssueCertificate(
    const Caller& caller, const iv1::IssueCertificateRequest& req) {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req.device_id()));
  IOTAUTH_ASSIGN_OR_RETURN(X509ReqPtr csr, ParseCsr(req.csr(), options_.config.max_csr_bytes));
  IOTAUTH_ASSIGN_OR_RETURN(std::string cn,
                           VerifyCsr(csr.get(), options_.config.renewal_policy.algorithms));
  if (cn != req.device_id()) {
    return Invalid("SUBJECT_MISMATCH", "the CSR's subject CN must equal device_id");
  }
  return Issue(req.tenant_id(), req.device_id(), csr.get(), req.validity());
}

absl::StatusOr<std::shared_ptr<const TrustStore>> CertificateService::LoadTenantTrust(
    absl::string_view tenant_id, std::vector<std::pair<CertPtr, rv1::CaCertificate>>* cas,
    TenantTrust* revocations) const {
  std::vector<CertPtr> anchors;
  std::vector<CrlPtr> crls;
  // Registered CAs' DER fingerprints -> tbs fingerprints (how a revocation by issuer
  // and serial names its issuer, and how the check names it).
  absl::flat_hash_map<std::string, std::string> tbs_by_fingerprint;
  ::iotauth::registry::PageRequest page{1000, ""};
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(::iotauth::registry::Page<rv1::CaCertificate> p,
                             options_.store->ListCaCertificates(tenant_id, page));
    for (rv1::CaCertificate& c : p.items) {
      absl::StatusOr<CertPtr> parsed = ParseStoredCa(c);
      if (!parsed.ok()) continue;  // a bad stored CA trusts nothing
      tbs_by_fingerprint[(*parsed)->fingerprint_hex()] = (*parsed)->tbs_fingerprint_hex();
      if (c.status() == rv1::CA_STATUS_DISABLED) {
        revocations->disabled_by_tbs[(*parsed)->tbs_sha256()] = nullptr;
      }
      if (c.status() != rv1::CA_STATUS_VERIFIED) continue;
      anchors.push_back(*parsed);
      cas->emplace_back(*parsed, std::move(c));
    }
    if (!p.more) break;
    page.after_key = p.last_key;
  }
  page.after_key.clear();
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(::iotauth::registry::Page<rv1::CertificateRevocation> p,
                             options_.store->ListRevocations(tenant_id, page));
    for (const rv1::CertificateRevocation& r : p.items) {
      revocations->AddRevocation(r, tbs_by_fingerprint);
    }
    if (!p.more) break;
    page.after_key = p.last_key;
  }
  page.after_key.clear();
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(::iotauth::registry::Page<rv1::CertificateRevocationList> p,
                             options_.store->ListCrls(tenant_id, page));
    for (const rv1::CertificateRevocationList& c : p.items) {
      absl::StatusOr<CrlPtr> parsed = ParsedCrl::Parse(c.crl_pem());
      if (parsed.ok()) crls.push_back(*parsed);
    }
    if (!p.more) break;
    page.after_key = p.last_key;
  }
  return TrustStore::Create(std::move(anchors), {}, std::move(crls));
}

absl::StatusOr<iv1::IssuedCertificate> CertificateService::DoRenewCertificate(
    const Caller& caller, const iv1::RenewCertificateRequest& req) {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kGateway));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  if (req.current_chain().empty()) return InvalidField("current_chain", "is required");
  if (req.current_key_signature().empty() || req.current_key_signature().size() > 2048) {
    return InvalidField("current_key_signature", "is required (at most 2048 bytes)");
  }
  const CertificateServiceConfig& config = options_.config;
  ParseLimits limits;
  std::vector<absl::string_view> entries(req.current_chain().begin(), req.current_chain().end());
  absl::StatusOr<std::vector<CertPtr>> chain = ParseChain(entries, limits);
  if (!chain.ok()) return InvalidField("current_chain", chain.status().message());
  if (chain->empty()) return InvalidField("current_chain", "is required");

  // The current certificate must authenticate today: same trust as Authenticate
  // (the tenant's verified CAs and CRLs) plus the explicit revocations.
  std::vector<std::pair<CertPtr, rv1::CaCertificate>> cas;
  TenantTrust revocations;
  IOTAUTH_ASSIGN_OR_RETURN(std::shared_ptr<const TrustStore> trust,
                           LoadTenantTrust(req.tenant_id(), &cas, &revocations));
  if (cas.empty()) {
    return Denied("CURRENT_CERTIFICATE_INVALID", "the tenant has no verified CA");
  }
  absl::Time now = options_.clock->Now();
  std::vector<CertPtr> intermediates(chain->begin() + 1, chain->end());
  ChainResult result = VerifyChain(*trust, (*chain)[0], intermediates, now, config.renewal_policy);
  if (!result.verdict.ok()) {
    return Denied("CURRENT_CERTIFICATE_INVALID",
                  absl::StrCat("current certificate: ",
                               iotauth::identity::v1::DenyReason_Name(result.verdict.reason), ": ",
                               result.verdict.detail));
  }
  // As Authenticate decides: a DISABLED CA anywhere in the path, or an explicit
  // revocation of any certificate in it (named by tbs fingerprint too, so that a
  // re-encoded signature does not escape it).
  for (size_t i = 0; i < result.path.size(); ++i) {
    if (i > 0 && revocations.disabled_by_tbs.contains(result.path[i]->tbs_sha256())) {
      return Denied("CURRENT_CERTIFICATE_INVALID",
                    absl::StrCat("the CA at depth ", i, " is disabled"));
    }
    if (revocations.Revoked(*result.path[i],
                            i + 1 < result.path.size() ? result.path[i + 1].get() : nullptr)) {
      return Denied("CURRENT_CERTIFICATE_INVALID", "current certificate is revoked");
    }
  }
  // The device the current certificate names, by Authenticate's rule: the closest
  // registered CA above the leaf decides (its pattern, or the leaf CN). Taking the
  // anchor's rule instead let a leaf whose CN and SAN name different devices renew
  // into the device Authenticate would not have given it.
  const CertPtr& leaf = (*chain)[0];
  std::string pattern;
  bool decided = false;
  for (size_t i = 1; i < result.path.size() && !decided; ++i) {
    for (const auto& [cert, ca] : cas) {
      if (cert->tbs_sha256() == result.path[i]->tbs_sha256()) {
        pattern = ca.device_id_pattern();
        decided = true;
        break;
      }
    }
  }
  std::string device_id;
  if (pattern.empty()) {
    device_id = leaf->subject_cn();
  } else {
    for (const auto* names : {&leaf->san_uris(), &leaf->san_dns()}) {
      for (const std::string& v : *names) {
        std::string d;
        if (device_id.empty() && MatchDevicePattern(pattern, v, req.tenant_id(), &d)) device_id = d;
      }
    }
  }
  if (device_id.empty() || !ValidateId("device_id", device_id).ok()) {
    return Denied("CURRENT_CERTIFICATE_INVALID", "the current certificate names no device");
  }

  IOTAUTH_ASSIGN_OR_RETURN(X509ReqPtr csr, ParseCsr(req.csr(), config.max_csr_bytes));
  IOTAUTH_ASSIGN_OR_RETURN(std::string cn, VerifyCsr(csr.get(), config.renewal_policy.algorithms));
  if (cn != device_id) {
    return Invalid("SUBJECT_MISMATCH", "the CSR's subject CN must name the current device");
  }
  // Possession of the current key: its signature over the CSR's DER.
  unsigned char* der = nullptr;
  int der_len = i2d_X509_REQ(csr.get(), &der);
  if (der_len <= 0) return Internal("i2d_X509_REQ");
  const bool ok = VerifyPossessionSignature(
      X509_get0_pubkey(leaf->x509()), req.current_key_signature(),
      absl::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(der_len)));
  OPENSSL_free(der);
  ERR_clear_error();
  if (!ok) {
    return Denied("BAD_KEY_SIGNATURE",
                  "current_key_signature does not verify with the current certificate's key");
  }
  return Issue(req.tenant_id(), device_id, csr.get(), req.validity());
}

// ---------------------------------------------------------------------------
// gRPC adapters.

grpc::Status CertificateService::VerifyCaPossession(grpc::ServerContext* ctx,
                                                    const iv1::VerifyCaPossessionRequest* req,
                                                    rv1::CaCertificate* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<rv1::CaCertificate> r = DoVerifyCaPossession(caller, *req);
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "VerifyCaPossession", req->tenant_id(), "",
        r.status(), {{"ca_id", req->ca_id()}});
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::RegenerateVerificationCode(
    grpc::ServerContext* ctx, const iv1::RegenerateVerificationCodeRequest* req,
    rv1::CaCertificate* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<rv1::CaCertificate> r = DoRegenerateVerificationCode(caller, *req);
  Audit(caller, audit::v1::EVENT_TYPE_ADMIN_MUTATION, "RegenerateVerificationCode",
        req->tenant_id(), "", r.status(), {{"ca_id", req->ca_id()}});
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::RevokeCertificate(grpc::ServerContext* ctx,
                                                   const iv1::RevokeCertificateRequest* req,
                                                   rv1::CertificateRevocation* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<rv1::CertificateRevocation> r = DoRevokeCertificate(caller, *req);
  std::vector<std::pair<std::string, std::string>> attrs;
  if (r.ok()) {
    attrs = {{"revocation_id", r->id()},
             {"issuer_fingerprint", r->issuer_fingerprint()},
             {"serial_hex", r->serial_hex()},
             {"revocation_reason", std::string(TruncateUtf8(r->reason(), 64))}};
  }
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "RevokeCertificate", req->tenant_id(),
        req->device_id(), r.status(), std::move(attrs),
        r.ok() && !r->fingerprint().empty() ? absl::StrCat("x509:sha256:", r->fingerprint())
                                            : std::string());
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::DeleteRevocation(grpc::ServerContext* ctx,
                                                  const iv1::DeleteRevocationRequest* req,
                                                  iv1::DeleteRevocationResponse* /*response*/) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::Status s = DoDeleteRevocation(caller, *req);
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "DeleteRevocation", req->tenant_id(), "", s,
        {{"revocation_id", req->revocation_id()}});
  return ToGrpcStatus(s);
}

grpc::Status CertificateService::UploadCrl(grpc::ServerContext* ctx,
                                           const iv1::UploadCrlRequest* req,
                                           rv1::CertificateRevocationList* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<rv1::CertificateRevocationList> r = DoUploadCrl(caller, *req);
  std::vector<std::pair<std::string, std::string>> attrs = {{"ca_id", req->ca_id()}};
  if (r.ok()) {
    attrs.emplace_back("crl_number", r->crl_number());
    attrs.emplace_back("revoked_count", absl::StrCat(r->revoked_count()));
  }
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "UploadCrl", req->tenant_id(), "", r.status(),
        std::move(attrs));
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::CreateIssuingCa(grpc::ServerContext* ctx,
                                                 const iv1::CreateIssuingCaRequest* req,
                                                 rv1::CaCertificate* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<rv1::CaCertificate> r = DoCreateIssuingCa(caller, *req);
  std::vector<std::pair<std::string, std::string>> attrs = {
      {"source", req->has_import() ? "import" : "generate"}};
  if (r.ok()) attrs.emplace_back("ca_id", r->id());
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "CreateIssuingCa", req->tenant_id(), "", r.status(),
        std::move(attrs),
        r.ok() ? absl::StrCat("x509:sha256:", r->sha256_fingerprint()) : std::string());
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::IssueCertificate(grpc::ServerContext* ctx,
                                                  const iv1::IssueCertificateRequest* req,
                                                  iv1::IssuedCertificate* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<iv1::IssuedCertificate> r = DoIssueCertificate(caller, *req);
  std::vector<std::pair<std::string, std::string>> attrs;
  if (r.ok()) {
    attrs = {{"serial_hex", r->serial_hex()},
             {"not_after", absl::StrCat(r->not_after().seconds())}};
  }
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "IssueCertificate", req->tenant_id(),
        req->device_id(), r.status(), std::move(attrs),
        r.ok() ? absl::StrCat("x509:sha256:", r->fingerprint()) : std::string());
  return RespondWith(std::move(r), resp);
}

grpc::Status CertificateService::RenewCertificate(grpc::ServerContext* ctx,
                                                  const iv1::RenewCertificateRequest* req,
                                                  iv1::IssuedCertificate* resp) {
  Caller caller = options_.caller_resolver->Resolve(*ctx);
  absl::StatusOr<iv1::IssuedCertificate> r = DoRenewCertificate(caller, *req);
  std::vector<std::pair<std::string, std::string>> attrs;
  if (r.ok()) {
    attrs = {{"serial_hex", r->serial_hex()},
             {"not_after", absl::StrCat(r->not_after().seconds())}};
  }
  Audit(caller, audit::v1::EVENT_TYPE_ISSUANCE, "RenewCertificate", req->tenant_id(),
        r.ok() ? r->device_id() : "", r.status(), std::move(attrs),
        r.ok() ? absl::StrCat("x509:sha256:", r->fingerprint()) : std::string());
  return RespondWith(std::move(r), resp);
}

}  // namespace iotauth::identity::x509
