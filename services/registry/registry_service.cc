#include "services/registry/registry_service.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/field_mask_util.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/openssl_ptr.h"
#include "services/common/proto_time.h"
#include "services/common/status_macros.h"
#include "services/common/utf8.h"
#include "services/registry/validation.h"

namespace iotauth::registry {
namespace {

using google::protobuf::FieldMask;
using google::protobuf::util::FieldMaskUtil;

constexpr size_t kMaxImportErrors = 1000;
constexpr char kPageTokenPrefix[] = "p1:";

// ---- Secrets ----

absl::StatusOr<std::string> NewKey() {
  IOTAUTH_ASSIGN_OR_RETURN(std::string raw, crypto::RandomBytes(32));
  std::string b64 = crypto::Base64Encode(raw);
  OPENSSL_cleanse(raw.data(), raw.size());
  return b64;
}

void StripSecrets(v1::Tenant* t) {
  for (v1::SharedAccessPolicy& p : *t->mutable_policies()) {
    p.clear_primary_key();
    p.clear_secondary_key();
  }
}
void StripSecrets(v1::Product* p) { p->clear_product_secret(); }
void StripSecrets(v1::Device* d) {
  if (d->has_credentials()) d->mutable_credentials()->clear_symmetric_key();
}
void StripSecrets(v1::EnrollmentGroup* g) { g->clear_group_key(); }

Secrets SecretsFor(bool include) { return include ? Secrets::kInclude : Secrets::kOmit; }

// ---- Page tokens: base64 of a version prefix and the last key. ----

std::string EncodePageToken(const std::string& last_key) {
  return crypto::Base64Encode(absl::StrCat(kPageTokenPrefix, last_key));
}

absl::StatusOr<PageRequest> MakePage(int32_t page_size, absl::string_view token) {
  PageRequest page;
  IOTAUTH_RETURN_IF_ERROR(ValidatePageSize("page_size", page_size, &page.page_size));
  if (!token.empty()) {
    absl::StatusOr<std::string> raw = crypto::Base64Decode(token);
    if (!raw.ok() || !absl::StartsWith(*raw, kPageTokenPrefix)) {
      return InvalidField("page_token", "is not a token this server issued");
    }
    page.after_key = raw->substr(sizeof(kPageTokenPrefix) - 1);
  }
  return page;
}

template <typename T>
std::string NextToken(const Page<T>& page) {
  return page.more ? EncodePageToken(page.last_key) : std::string();
}

// ---- Field masks ----

struct MaskSpec {
  // Paths a client may name.
  std::vector<std::string> allowed;
  // Paths an empty mask means (secret paths are added only when the request sets
  // them, so an update built from a List result never wipes a key).
  std::vector<std::string> defaults;
};

// Returns the paths to apply. INVALID_ARGUMENT naming the first bad path.
absl::StatusOr<FieldMask> ResolveMask(const FieldMask& requested, const MaskSpec& spec,
                                      const std::vector<std::pair<std::string, bool>>& secrets) {
  FieldMask out;
  if (requested.paths_size() == 0) {
    for (const std::string& p : spec.defaults) out.add_paths(p);
    for (const auto& [path, present] : secrets) {
      if (present) out.add_paths(path);
    }
    return out;
  }
  for (const std::string& p : requested.paths()) {
    if (std::find(spec.allowed.begin(), spec.allowed.end(), p) == spec.allowed.end()) {
      return InvalidField("update_mask",
                          absl::StrCat("path '", p.substr(0, 64), "' is not updatable"));
    }
    out.add_paths(p);
  }
  return out;
}

template <typename T>
void ApplyMask(const T& source, const FieldMask& mask, T* dest) {
  FieldMaskUtil::MergeOptions options;
  options.set_replace_message_fields(true);
  options.set_replace_repeated_fields(true);
  FieldMaskUtil::MergeMessageTo(source, mask, options, dest);
}

const MaskSpec& TenantMask() {
  static const auto* spec =
      new MaskSpec{{"display_name", "hub_host", "policies"}, {"display_name", "hub_host"}};
  return *spec;
}
const MaskSpec& ProductMask() {
  static const auto* spec =
      new MaskSpec{{"display_name", "product_secret", "dynamic_activation",
                    "allowed_credential_types", "default_rules", "allow_weak_sign_methods"},
                   {"display_name", "dynamic_activation", "allowed_credential_types",
                    "default_rules", "allow_weak_sign_methods"}};
  return *spec;
}
const MaskSpec& DeviceMask() {
  static const auto* spec = new MaskSpec{
      {"product_key", "status", "tags", "rules", "enrollment_group_id", "credentials",
       "credentials.symmetric_key", "credentials.primary_thumbprint",
       "credentials.secondary_thumbprint", "credentials.ca_signed_allowed"},
      {"product_key", "tags", "rules", "enrollment_group_id", "credentials.primary_thumbprint",
       "credentials.secondary_thumbprint", "credentials.ca_signed_allowed"}};
  return *spec;
}
const MaskSpec& GroupMask() {
  static const auto* spec = new MaskSpec{{"group_key", "product_key", "initial_rules", "enabled"},
                                         {"product_key", "initial_rules", "enabled"}};
  return *spec;
}
const MaskSpec& CaMask() {
  static const auto* spec =
      new MaskSpec{{"status", "jit_registration", "jit_product_key", "jit_auto_enable"},
                   {"status", "jit_registration", "jit_product_key", "jit_auto_enable"}};
  return *spec;
}

// VERIFIED means "the owner proved possession of the CA's key": only
// CertificateService.VerifyCaPossession (or CreateIssuingCa) can grant it. An admin may
// re-enable a CA that was proven before and disabled since.
absl::Status RequirePossessionForVerified(const v1::CaCertificate& ca) {
  if (ca.status() != v1::CA_STATUS_VERIFIED || ca.has_possession_verified_time()) {
    return absl::OkStatus();
  }
  return WithErrorReason(
      absl::FailedPreconditionError(
          "a CA becomes verified only by proof of possession of its key: get its code with "
          "`iotauthctl ca verification-code`, sign a certificate with that CN using the CA's "
          "key, and submit it with `iotauthctl ca verify` (CertificateService.VerifyCaPossession)"),
      "POSSESSION_NOT_PROVEN");
}

absl::Status EtagMismatch() {
  return WithErrorReason(absl::FailedPreconditionError("etag does not match the stored version"),
                         "ETAG_MISMATCH");
}

// Read, modify, conditional write. With a client etag the write is conditional on
// it; without one it is conditional on the version read and retried a few times
// when a concurrent writer wins.
template <typename T, typename Get, typename Modify, typename Put>
absl::StatusOr<T> ReadModifyWrite(Get get, Modify modify, Put put, absl::string_view etag) {
  for (int attempt = 0;; ++attempt) {
    IOTAUTH_ASSIGN_OR_RETURN(T current, get());
    if (!etag.empty() && current.etag() != etag) return EtagMismatch();
    std::string read_etag = current.etag();
    IOTAUTH_RETURN_IF_ERROR(modify(current));
    absl::StatusOr<T> written = put(current, etag.empty() ? read_etag : std::string(etag));
    if (written.ok() || !etag.empty() || attempt >= 4 ||
        ReasonOf(written.status()) != "ETAG_MISMATCH") {
      return written;
    }
  }
}

// ---- CA certificates ----

// Parses the PEM and fills fingerprint, subject and not_after; replaces the PEM with
// the certificate's own encoding (PEM_read_bio_X509 skips other blocks and text, which
// would otherwise be stored as uploaded and served to readers).
absl::Status DescribeCaCertificate(v1::CaCertificate* ca) {
  const std::string& pem = ca->certificate_pem();
  if (absl::StrContains(pem, "PRIVATE KEY-----")) {
    return InvalidField("ca.certificate_pem",
                        "holds a private key: upload the CA certificate alone (the key must "
                        "not leave the CA)");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return absl::InternalError("BIO_new_mem_buf failed");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return InvalidField("ca.certificate_pem", "is not a PEM certificate");
  X509Ptr extra(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (extra) return InvalidField("ca.certificate_pem", "must hold exactly one certificate");
  if (X509_check_ca(cert.get()) < 1) {
    return InvalidField("ca.certificate_pem", "is not a CA certificate (basicConstraints CA:TRUE)");
  }
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert.get(), &der);
  if (der_len <= 0) return absl::InternalError("i2d_X509 failed");
  ca->set_sha256_fingerprint(
      crypto::Sha256Hex(absl::string_view(reinterpret_cast<char*>(der), der_len)));
  OPENSSL_free(der);

  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out ||
      X509_NAME_print_ex(out.get(), X509_get_subject_name(cert.get()), 0, XN_FLAG_RFC2253) < 0) {
    return absl::InternalError("cannot print the certificate subject");
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(out.get(), &data);
  ca->set_subject(std::string(data, static_cast<size_t>(std::max(0L, len))).substr(0, 1024));

  struct tm tm_after {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm_after) != 1) {
    return InvalidField("ca.certificate_pem", "has an unreadable notAfter");
  }
  ca->mutable_not_after()->set_seconds(timegm(&tm_after));
  ca->mutable_not_after()->set_nanos(0);

  BioPtr canonical(BIO_new(BIO_s_mem()));
  if (!canonical || PEM_write_bio_X509(canonical.get(), cert.get()) != 1) {
    return absl::InternalError("cannot encode the certificate");
  }
  len = BIO_get_mem_data(canonical.get(), &data);
  ca->set_certificate_pem(std::string(data, static_cast<size_t>(std::max(0L, len))));
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RegistryService>> RegistryService::Create(Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("store is required");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (options.audit == nullptr) return absl::InvalidArgumentError("audit sink is required");
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("caller_resolver is required");
  }
  if (options.import_batch_size <= 0 ||
      static_cast<size_t>(options.import_batch_size) > Limits::kMaxBatchSize) {
    return absl::InvalidArgumentError("import_batch_size must be 1 to 10000");
  }
  if (options.watch_poll_interval <= absl::ZeroDuration() ||
      options.watch_poll_interval > absl::Milliseconds(200)) {
    return absl::InvalidArgumentError("watch_poll_interval must be in (0, 200ms]");
  }
  if (options.watch_batch_size <= 0) return absl::InvalidArgumentError("watch_batch_size");
  return std::unique_ptr<RegistryService>(new RegistryService(std::move(options)));
}

Caller RegistryService::ResolveCaller(grpc::ServerContext* ctx) const {
  return options_.caller_resolver->Resolve(*ctx);
}

absl::Status RegistryService::RequireRoleAudited(const Caller& caller, Role role) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, role));
  if (caller.internal) return absl::OkStatus();
  return audit::AdmitAudited(options_.audit_gate);
}

void RegistryService::Audit(
    const Caller& caller, absl::string_view method, absl::string_view tenant_id,
    absl::string_view product_key, absl::string_view device_id, absl::string_view resource_id,
    const absl::Status& outcome,
    std::initializer_list<std::pair<const char*, std::string>> extra) const {
  if (audit::AuditGate::IsRefusal(outcome)) return;  // nothing done, nothing to record
  audit::v1::AuditEvent e;
  absl::Time now = options_.clock->Now();
  ToProtoTimestamp(now, e.mutable_time());
  e.set_type(audit::v1::EVENT_TYPE_ADMIN_MUTATION);
  e.set_tenant_id(std::string(tenant_id));
  e.set_product_key(std::string(product_key));
  e.set_device_id(std::string(device_id));
  e.set_outcome(outcome.ok() ? audit::v1::OUTCOME_SUCCESS : audit::v1::OUTCOME_FAILURE);
  e.set_reason(std::string(method));
  e.set_caller(caller.principal);
  e.set_peer_address(caller.peer);
  if (!resource_id.empty()) (*e.mutable_attributes())["resource_id"] = std::string(resource_id);
  if (!outcome.ok()) (*e.mutable_attributes())["error"] = ReasonOf(outcome);
  for (const auto& [k, v] : extra) (*e.mutable_attributes())[k] = v;
  options_.audit->Record(std::move(e));
}

// ---------------------------------------------------------------------------
// Tenants.

grpc::Status RegistryService::CreateTenant(grpc::ServerContext* ctx,
                                           const v1::CreateTenantRequest* req, v1::Tenant* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Tenant> r = [&]() -> absl::StatusOr<v1::Tenant> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateTenant(req->tenant()));
    return options_.store->CreateTenant(req->tenant());
  }();
  Audit(caller, "CreateTenant", req->tenant().id(), "", "", req->tenant().id(), r.status());
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::GetTenant(grpc::ServerContext* ctx, const v1::GetTenantRequest* req,
                                        v1::Tenant* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Tenant> r = [&]() -> absl::StatusOr<v1::Tenant> {
    IOTAUTH_RETURN_IF_ERROR(
        RequireRole(caller, req->include_secrets() ? Role::kAdmin : Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    return options_.store->GetTenant(req->tenant_id(), SecretsFor(req->include_secrets()));
  }();
  if (req->include_secrets() && !caller.internal) {
    // Reading keys is worth an audit record even though it changes nothing (the
    // in-process identity mirror's reads, one per change event, are not).
    Audit(caller, "GetTenantWithSecrets", req->tenant_id(), "", "", req->tenant_id(), r.status());
  }
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::UpdateTenant(grpc::ServerContext* ctx,
                                           const v1::UpdateTenantRequest* req, v1::Tenant* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::Tenant& in = req->tenant();
  absl::StatusOr<v1::Tenant> r = [&]() -> absl::StatusOr<v1::Tenant> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant.id", in.id()));
    IOTAUTH_ASSIGN_OR_RETURN(FieldMask mask, ResolveMask(req->update_mask(), TenantMask(),
                                                         {{"policies", in.policies_size() > 0}}));
    return ReadModifyWrite<v1::Tenant>(
        [&] { return options_.store->GetTenant(in.id(), Secrets::kInclude); },
        [&](v1::Tenant& t) {
          ApplyMask(in, mask, &t);
          return ValidateTenant(t);
        },
        [&](const v1::Tenant& t, const std::string& etag) {
          return options_.store->UpdateTenant(t, etag);
        },
        req->etag());
  }();
  Audit(caller, "UpdateTenant", in.id(), "", "", in.id(), r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

grpc::Status RegistryService::DeleteTenant(grpc::ServerContext* ctx,
                                           const v1::DeleteTenantRequest* req,
                                           v1::DeleteResponse* /*resp*/) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    return options_.store->DeleteTenant(req->tenant_id(), req->etag());
  }();
  Audit(caller, "DeleteTenant", req->tenant_id(), "", "", req->tenant_id(), s);
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::ListTenants(grpc::ServerContext* ctx,
                                          const v1::ListTenantsRequest* req,
                                          v1::ListTenantsResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::Tenant> p, options_.store->ListTenants(page));
    for (v1::Tenant& t : p.items) {
      StripSecrets(&t);
      *resp->add_tenants() = std::move(t);
    }
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

// ---------------------------------------------------------------------------
// Products.

grpc::Status RegistryService::CreateProduct(grpc::ServerContext* ctx,
                                            const v1::CreateProductRequest* req,
                                            v1::Product* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::Product& in = req->product();
  absl::StatusOr<v1::Product> r = [&]() -> absl::StatusOr<v1::Product> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateProduct(in));
    v1::Product p = in;
    if (p.dynamic_activation() && p.product_secret().empty()) {
      IOTAUTH_ASSIGN_OR_RETURN(*p.mutable_product_secret(), NewKey());
    }
    return options_.store->CreateProduct(p);
  }();
  Audit(caller, "CreateProduct", in.tenant_id(), in.product_key(), "", in.product_key(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  // The creating admin receives a generated secret once, here.
  *resp = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status RegistryService::GetProduct(grpc::ServerContext* ctx, const v1::GetProductRequest* req,
                                         v1::Product* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Product> r = [&]() -> absl::StatusOr<v1::Product> {
    IOTAUTH_RETURN_IF_ERROR(
        RequireRole(caller, req->include_secrets() ? Role::kAdmin : Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("product_key", req->product_key()));
    return options_.store->GetProduct(req->tenant_id(), req->product_key(),
                                      SecretsFor(req->include_secrets()));
  }();
  if (req->include_secrets() && !caller.internal) {
    // Reading keys is worth an audit record even though it changes nothing (the
    // in-process identity mirror's reads, one per change event, are not).
    Audit(caller, "GetProductWithSecrets", req->tenant_id(), req->product_key(), "",
          req->product_key(), r.status());
  }
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::UpdateProduct(grpc::ServerContext* ctx,
                                            const v1::UpdateProductRequest* req,
                                            v1::Product* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::Product& in = req->product();
  absl::StatusOr<v1::Product> r = [&]() -> absl::StatusOr<v1::Product> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("product.tenant_id", in.tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("product.product_key", in.product_key()));
    IOTAUTH_ASSIGN_OR_RETURN(FieldMask mask,
                             ResolveMask(req->update_mask(), ProductMask(),
                                         {{"product_secret", !in.product_secret().empty()}}));
    return ReadModifyWrite<v1::Product>(
        [&] {
          return options_.store->GetProduct(in.tenant_id(), in.product_key(), Secrets::kInclude);
        },
        [&](v1::Product& p) {
          ApplyMask(in, mask, &p);
          return ValidateProduct(p);
        },
        [&](const v1::Product& p, const std::string& etag) {
          return options_.store->UpdateProduct(p, etag);
        },
        req->etag());
  }();
  Audit(caller, "UpdateProduct", in.tenant_id(), in.product_key(), "", in.product_key(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

grpc::Status RegistryService::DeleteProduct(grpc::ServerContext* ctx,
                                            const v1::DeleteProductRequest* req,
                                            v1::DeleteResponse* /*resp*/) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("product_key", req->product_key()));
    return options_.store->DeleteProduct(req->tenant_id(), req->product_key(), req->etag());
  }();
  Audit(caller, "DeleteProduct", req->tenant_id(), req->product_key(), "", req->product_key(), s);
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::ListProducts(grpc::ServerContext* ctx,
                                           const v1::ListProductsRequest* req,
                                           v1::ListProductsResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::Product> p,
                             options_.store->ListProducts(req->tenant_id(), page));
    for (v1::Product& item : p.items) {
      StripSecrets(&item);
      *resp->add_products() = std::move(item);
    }
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

// ---------------------------------------------------------------------------
// Devices.

namespace {

absl::Status GenerateKeysIfMissing(v1::Device* d) {
  v1::SymmetricKey* k = d->mutable_credentials()->mutable_symmetric_key();
  if (!k->primary_key().empty() || !k->secondary_key().empty()) return absl::OkStatus();
  IOTAUTH_ASSIGN_OR_RETURN(*k->mutable_primary_key(), NewKey());
  IOTAUTH_ASSIGN_OR_RETURN(*k->mutable_secondary_key(), NewKey());
  return absl::OkStatus();
}

void NormalizeDevice(v1::Device* d) {
  v1::DeviceCredentials* c = d->mutable_credentials();
  c->set_primary_thumbprint(NormalizeThumbprint(c->primary_thumbprint()));
  c->set_secondary_thumbprint(NormalizeThumbprint(c->secondary_thumbprint()));
}

}  // namespace

grpc::Status RegistryService::CreateDevice(grpc::ServerContext* ctx,
                                           const v1::CreateDeviceRequest* req, v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::Device& in = req->device();
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateDevice(in));
    v1::Device d = in;
    NormalizeDevice(&d);
    if (req->generate_keys()) IOTAUTH_RETURN_IF_ERROR(GenerateKeysIfMissing(&d));
    return options_.store->CreateDevice(d);
  }();
  Audit(caller, "CreateDevice", in.tenant_id(), in.product_key(), in.device_id(), in.device_id(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  // The creating admin receives (generated) keys once, here.
  *resp = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status RegistryService::GetDevice(grpc::ServerContext* ctx, const v1::GetDeviceRequest* req,
                                        v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(
        RequireRole(caller, req->include_secrets() ? Role::kAdmin : Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req->device_id()));
    return options_.store->GetDevice(req->tenant_id(), req->device_id(),
                                     SecretsFor(req->include_secrets()));
  }();
  if (req->include_secrets() && !caller.internal) {
    // Reading keys is worth an audit record even though it changes nothing (the
    // in-process identity mirror's reads, one per change event, are not).
    Audit(caller, "GetDeviceWithSecrets", req->tenant_id(), "", req->device_id(), req->device_id(),
          r.status());
  }
  return RespondWith(std::move(r), resp);
}

absl::Status RegistryService::DoBatchGetDevices(const Caller& caller,
                                                const v1::BatchGetDevicesRequest& req,
                                                v1::BatchGetDevicesResponse* resp) const {
  IOTAUTH_RETURN_IF_ERROR(
      RequireRole(caller, req.include_secrets() ? Role::kAdmin : Role::kReader));
  if (req.ids_size() > kBatchGetMaxIds) {
    return InvalidField("ids", absl::StrCat(req.ids_size(), " ids; at most ", kBatchGetMaxIds,
                                            " per call: split them"));
  }
  size_t bytes = 0;
  for (const v1::BatchGetDevicesRequest::DeviceId& id : req.ids()) {
    if (bytes >= kBatchGetBytes) break;  // the caller asks again for the rest
    v1::BatchGetDevicesResponse::Result* result = resp->add_results();
    absl::StatusOr<v1::Device> d = [&]() -> absl::StatusOr<v1::Device> {
      IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", id.tenant_id()));
      IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", id.device_id()));
      return options_.store->GetDevice(id.tenant_id(), id.device_id(),
                                       SecretsFor(req.include_secrets()));
    }();
    if (d.ok()) {
      *result->mutable_device() = *std::move(d);
    } else {
      const grpc::Status g = ToGrpcStatus(d.status());
      result->set_code(static_cast<int32_t>(g.error_code()));
      result->set_message(g.error_message());
      result->set_reason(ReasonOf(d.status()));
    }
    bytes += result->ByteSizeLong();
  }
  return absl::OkStatus();
}

grpc::Status RegistryService::BatchGetDevices(grpc::ServerContext* ctx,
                                              const v1::BatchGetDevicesRequest* req,
                                              v1::BatchGetDevicesResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  // DoBatchGetDevices fails only before it reads anything: no result to audit then.
  const absl::Status s = DoBatchGetDevices(caller, *req, resp);
  // As GetDevice: each read of keys is recorded (the in-process mirror's are not).
  if (!req->include_secrets() || caller.internal) return ToGrpcStatus(s);
  if (!s.ok()) {
    Audit(caller, "BatchGetDevicesWithSecrets", "", "", "", "", s);
    return ToGrpcStatus(s);
  }
  for (int i = 0; i < resp->results_size(); ++i) {
    const v1::BatchGetDevicesRequest::DeviceId& id = req->ids(i);
    const v1::BatchGetDevicesResponse::Result& r = resp->results(i);
    Audit(caller, "BatchGetDevicesWithSecrets", id.tenant_id(), "", id.device_id(), id.device_id(),
          r.code() == 0
              ? absl::OkStatus()
              : WithErrorReason(absl::Status(static_cast<absl::StatusCode>(r.code()), r.message()),
                                r.reason()));
  }
  return grpc::Status::OK;
}

namespace {

// The device RMW shared by UpdateDevice and the key/status operations.
// `unreadable_keys_ok`: a device whose stored keys do not open (DATA_LOSS) is
// handed to `modify` without keys and marked keys_unreadable, for a caller that
// writes a whole new pair; otherwise that read fails the call.
template <typename Modify>
absl::StatusOr<v1::Device> ModifyDevice(RegistryStore* store, absl::string_view tenant_id,
                                        absl::string_view device_id, absl::string_view etag,
                                        Modify modify, bool unreadable_keys_ok = false) {
  return ReadModifyWrite<v1::Device>(
      [&]() -> absl::StatusOr<v1::Device> {
        absl::StatusOr<v1::Device> d = store->GetDevice(tenant_id, device_id, Secrets::kInclude);
        if (!unreadable_keys_ok || d.status().code() != absl::StatusCode::kDataLoss) return d;
        absl::StatusOr<v1::Device> bare = store->GetDevice(tenant_id, device_id, Secrets::kOmit);
        if (!bare.ok()) return d.status();
        bare->set_keys_unreadable(true);
        return bare;
      },
      [&](v1::Device& d) -> absl::Status {
        IOTAUTH_RETURN_IF_ERROR(modify(d));
        NormalizeDevice(&d);
        return ValidateDevice(d);
      },
      [&](const v1::Device& d, const std::string& e) { return store->UpdateDevice(d, e); }, etag);
}

}  // namespace

grpc::Status RegistryService::UpdateDevice(grpc::ServerContext* ctx,
                                           const v1::UpdateDeviceRequest* req, v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::Device& in = req->device();
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device.tenant_id", in.tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device.device_id", in.device_id()));
    const v1::SymmetricKey& k = in.credentials().symmetric_key();
    IOTAUTH_ASSIGN_OR_RETURN(
        FieldMask mask, ResolveMask(req->update_mask(), DeviceMask(),
                                    {{"credentials.symmetric_key",
                                      !k.primary_key().empty() || !k.secondary_key().empty()},
                                     {"status", in.status() != v1::DEVICE_STATUS_UNSPECIFIED}}));
    return ModifyDevice(options_.store, in.tenant_id(), in.device_id(), req->etag(),
                        [&](v1::Device& d) -> absl::Status {
                          ApplyMask(in, mask, &d);
                          if (d.status() == v1::DEVICE_STATUS_UNSPECIFIED) {
                            return InvalidField("device.status", "is required");
                          }
                          return absl::OkStatus();
                        });
  }();
  Audit(caller, "UpdateDevice", in.tenant_id(), in.product_key(), in.device_id(), in.device_id(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

grpc::Status RegistryService::DeleteDevice(grpc::ServerContext* ctx,
                                           const v1::DeleteDeviceRequest* req,
                                           v1::DeleteResponse* /*resp*/) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req->device_id()));
    return options_.store->DeleteDevice(req->tenant_id(), req->device_id(), req->etag());
  }();
  Audit(caller, "DeleteDevice", req->tenant_id(), "", req->device_id(), req->device_id(), s);
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::ListDevices(grpc::ServerContext* ctx,
                                          const v1::ListDevicesRequest* req,
                                          v1::ListDevicesResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    DeviceFilter filter;
    if (!req->product_key().empty()) {
      IOTAUTH_RETURN_IF_ERROR(ValidateId("product_key", req->product_key()));
      filter.product_key = req->product_key();
    }
    if (!v1::DeviceStatus_IsValid(req->status())) return InvalidField("status", "unknown status");
    filter.status = req->status();
    IOTAUTH_RETURN_IF_ERROR(ValidateTags("tags", req->tags()));
    filter.tags.insert(req->tags().begin(), req->tags().end());
    // Never secrets in a list.
    IOTAUTH_ASSIGN_OR_RETURN(
        Page<v1::Device> p,
        options_.store->ListDevices(req->tenant_id(), filter, page, Secrets::kOmit));
    for (v1::Device& d : p.items) {
      StripSecrets(&d);
      *resp->add_devices() = std::move(d);
    }
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::RegenerateDeviceKey(grpc::ServerContext* ctx,
                                                  const v1::RegenerateDeviceKeyRequest* req,
                                                  v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req->device_id()));
    if (req->slot() != v1::KEY_SLOT_PRIMARY && req->slot() != v1::KEY_SLOT_SECONDARY) {
      return InvalidField("slot", "must be PRIMARY or SECONDARY");
    }
    return ModifyDevice(
        options_.store, req->tenant_id(), req->device_id(), req->etag(),
        [&](v1::Device& d) -> absl::Status {
          v1::SymmetricKey* k = d.mutable_credentials()->mutable_symmetric_key();
          // Keys that do not open are lost: the device gets a whole new pair.
          if (d.keys_unreadable()) k->Clear();
          d.clear_keys_unreadable();
          IOTAUTH_ASSIGN_OR_RETURN(std::string key, NewKey());
          if (req->slot() == v1::KEY_SLOT_PRIMARY) {
            k->set_primary_key(std::move(key));
          } else {
            k->set_secondary_key(std::move(key));
          }
          // A device without keys gets a full pair.
          if (k->primary_key().empty()) {
            IOTAUTH_ASSIGN_OR_RETURN(*k->mutable_primary_key(), NewKey());
          }
          if (k->secondary_key().empty()) {
            IOTAUTH_ASSIGN_OR_RETURN(*k->mutable_secondary_key(), NewKey());
          }
          return absl::OkStatus();
        },
        /*unreadable_keys_ok=*/true);
  }();
  Audit(caller, "RegenerateDeviceKey", req->tenant_id(), "", req->device_id(), req->device_id(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);  // the admin asked for the new key: it is returned
  return grpc::Status::OK;
}

grpc::Status RegistryService::SetDeviceThumbprints(grpc::ServerContext* ctx,
                                                   const v1::SetDeviceThumbprintsRequest* req,
                                                   v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req->device_id()));
    if (!req->primary_thumbprint().empty()) {
      IOTAUTH_RETURN_IF_ERROR(ValidateThumbprint("primary_thumbprint", req->primary_thumbprint()));
    }
    if (!req->secondary_thumbprint().empty()) {
      IOTAUTH_RETURN_IF_ERROR(
          ValidateThumbprint("secondary_thumbprint", req->secondary_thumbprint()));
    }
    return ModifyDevice(
        options_.store, req->tenant_id(), req->device_id(), req->etag(),
        [&](v1::Device& d) -> absl::Status {
          d.mutable_credentials()->set_primary_thumbprint(req->primary_thumbprint());
          d.mutable_credentials()->set_secondary_thumbprint(req->secondary_thumbprint());
          return absl::OkStatus();
        });
  }();
  Audit(caller, "SetDeviceThumbprints", req->tenant_id(), "", req->device_id(), req->device_id(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

grpc::Status RegistryService::SetDeviceStatus(grpc::ServerContext* ctx,
                                              const v1::SetDeviceStatusRequest* req,
                                              v1::Device* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::Device> r = [&]() -> absl::StatusOr<v1::Device> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("device_id", req->device_id()));
    if (req->status() == v1::DEVICE_STATUS_UNSPECIFIED ||
        !v1::DeviceStatus_IsValid(req->status())) {
      return InvalidField("status", "must be ENABLED, DISABLED or PENDING_APPROVAL");
    }
    return ModifyDevice(options_.store, req->tenant_id(), req->device_id(), req->etag(),
                        [&](v1::Device& d) -> absl::Status {
                          d.set_status(req->status());
                          return absl::OkStatus();
                        });
  }();
  Audit(caller, "SetDeviceStatus", req->tenant_id(), "", req->device_id(), req->device_id(),
        r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// Enrollment groups.

grpc::Status RegistryService::CreateEnrollmentGroup(grpc::ServerContext* ctx,
                                                    const v1::CreateEnrollmentGroupRequest* req,
                                                    v1::EnrollmentGroup* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::EnrollmentGroup& in = req->group();
  absl::StatusOr<v1::EnrollmentGroup> r = [&]() -> absl::StatusOr<v1::EnrollmentGroup> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateEnrollmentGroup(in));
    v1::EnrollmentGroup g = in;
    if (g.group_key().empty()) {
      if (!req->generate_key()) {
        return InvalidField("group.group_key", "is required unless generate_key is set");
      }
      IOTAUTH_ASSIGN_OR_RETURN(*g.mutable_group_key(), NewKey());
    }
    return options_.store->CreateEnrollmentGroup(g);
  }();
  Audit(caller, "CreateEnrollmentGroup", in.tenant_id(), in.product_key(), "", in.id(), r.status());
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::GetEnrollmentGroup(grpc::ServerContext* ctx,
                                                 const v1::GetEnrollmentGroupRequest* req,
                                                 v1::EnrollmentGroup* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::EnrollmentGroup> r = [&]() -> absl::StatusOr<v1::EnrollmentGroup> {
    IOTAUTH_RETURN_IF_ERROR(
        RequireRole(caller, req->include_secrets() ? Role::kAdmin : Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("group_id", req->group_id()));
    return options_.store->GetEnrollmentGroup(req->tenant_id(), req->group_id(),
                                              SecretsFor(req->include_secrets()));
  }();
  if (req->include_secrets() && !caller.internal) {
    // Reading keys is worth an audit record even though it changes nothing (the
    // in-process identity mirror's reads, one per change event, are not).
    Audit(caller, "GetEnrollmentGroupWithSecrets", req->tenant_id(), "", "", req->group_id(),
          r.status());
  }
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::UpdateEnrollmentGroup(grpc::ServerContext* ctx,
                                                    const v1::UpdateEnrollmentGroupRequest* req,
                                                    v1::EnrollmentGroup* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::EnrollmentGroup& in = req->group();
  absl::StatusOr<v1::EnrollmentGroup> r = [&]() -> absl::StatusOr<v1::EnrollmentGroup> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("group.tenant_id", in.tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("group.id", in.id()));
    IOTAUTH_ASSIGN_OR_RETURN(FieldMask mask, ResolveMask(req->update_mask(), GroupMask(),
                                                         {{"group_key", !in.group_key().empty()}}));
    return ReadModifyWrite<v1::EnrollmentGroup>(
        [&] {
          return options_.store->GetEnrollmentGroup(in.tenant_id(), in.id(), Secrets::kInclude);
        },
        [&](v1::EnrollmentGroup& g) -> absl::Status {
          ApplyMask(in, mask, &g);
          if (g.group_key().empty()) return InvalidField("group.group_key", "is required");
          return ValidateEnrollmentGroup(g);
        },
        [&](const v1::EnrollmentGroup& g, const std::string& etag) {
          return options_.store->UpdateEnrollmentGroup(g, etag);
        },
        req->etag());
  }();
  Audit(caller, "UpdateEnrollmentGroup", in.tenant_id(), in.product_key(), "", in.id(), r.status());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  StripSecrets(resp);
  return grpc::Status::OK;
}

grpc::Status RegistryService::DeleteEnrollmentGroup(grpc::ServerContext* ctx,
                                                    const v1::DeleteEnrollmentGroupRequest* req,
                                                    v1::DeleteResponse* /*resp*/) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("group_id", req->group_id()));
    return options_.store->DeleteEnrollmentGroup(req->tenant_id(), req->group_id(), req->etag());
  }();
  Audit(caller, "DeleteEnrollmentGroup", req->tenant_id(), "", "", req->group_id(), s);
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::ListEnrollmentGroups(grpc::ServerContext* ctx,
                                                   const v1::ListEnrollmentGroupsRequest* req,
                                                   v1::ListEnrollmentGroupsResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::EnrollmentGroup> p,
                             options_.store->ListEnrollmentGroups(req->tenant_id(), page));
    for (v1::EnrollmentGroup& g : p.items) {
      StripSecrets(&g);
      *resp->add_groups() = std::move(g);
    }
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

// ---------------------------------------------------------------------------
// CA certificates.

grpc::Status RegistryService::CreateCaCertificate(grpc::ServerContext* ctx,
                                                  const v1::CreateCaCertificateRequest* req,
                                                  v1::CaCertificate* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::CaCertificate& in = req->ca();
  absl::StatusOr<v1::CaCertificate> r = [&]() -> absl::StatusOr<v1::CaCertificate> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateCaCertificate(in));
    v1::CaCertificate ca = in;
    IOTAUTH_RETURN_IF_ERROR(DescribeCaCertificate(&ca));
    // Ids derive from the fingerprint: stable, and a re-upload is ALREADY_EXISTS.
    ca.set_id(absl::StrCat("ca-", ca.sha256_fingerprint().substr(0, 24)));
    IOTAUTH_ASSIGN_OR_RETURN(std::string code, crypto::RandomBytes(16));
    ca.set_verification_code(crypto::HexEncode(code));
    // Only the certificate service's CreateIssuingCa registers an issuing CA.
    ca.set_issuing(false);
    ca.clear_possession_verified_time();
    if (ca.status() == v1::CA_STATUS_UNSPECIFIED) ca.set_status(v1::CA_STATUS_UNVERIFIED);
    IOTAUTH_RETURN_IF_ERROR(RequirePossessionForVerified(ca));
    return options_.store->CreateCaCertificate(ca);
  }();
  Audit(caller, "CreateCaCertificate", in.tenant_id(), in.jit_product_key(), "",
        r.ok() ? r->id() : "", r.status());
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::GetCaCertificate(grpc::ServerContext* ctx,
                                               const v1::GetCaCertificateRequest* req,
                                               v1::CaCertificate* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::CaCertificate> r = [&]() -> absl::StatusOr<v1::CaCertificate> {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req->ca_id()));
    return options_.store->GetCaCertificate(req->tenant_id(), req->ca_id());
  }();
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::ListCaCertificates(grpc::ServerContext* ctx,
                                                 const v1::ListCaCertificatesRequest* req,
                                                 v1::ListCaCertificatesResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::CaCertificate> p,
                             options_.store->ListCaCertificates(req->tenant_id(), page));
    for (v1::CaCertificate& c : p.items) *resp->add_cas() = std::move(c);
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::UpdateCaCertificate(grpc::ServerContext* ctx,
                                                  const v1::UpdateCaCertificateRequest* req,
                                                  v1::CaCertificate* resp) {
  Caller caller = ResolveCaller(ctx);
  const v1::CaCertificate& in = req->ca();
  absl::StatusOr<v1::CaCertificate> r = [&]() -> absl::StatusOr<v1::CaCertificate> {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("ca.tenant_id", in.tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("ca.id", in.id()));
    IOTAUTH_ASSIGN_OR_RETURN(FieldMask mask, ResolveMask(req->update_mask(), CaMask(), {}));
    return ReadModifyWrite<v1::CaCertificate>(
        [&] { return options_.store->GetCaCertificate(in.tenant_id(), in.id()); },
        [&](v1::CaCertificate& c) -> absl::Status {
          ApplyMask(in, mask, &c);
          if (c.status() == v1::CA_STATUS_UNSPECIFIED) {
            return InvalidField("ca.status", "is required");
          }
          IOTAUTH_RETURN_IF_ERROR(RequirePossessionForVerified(c));
          return ValidateCaCertificate(c);
        },
        [&](const v1::CaCertificate& c, const std::string& etag) {
          return options_.store->UpdateCaCertificate(c, etag);
        },
        req->etag());
  }();
  Audit(caller, "UpdateCaCertificate", in.tenant_id(), in.jit_product_key(), "", in.id(),
        r.status());
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::DeleteCaCertificate(grpc::ServerContext* ctx,
                                                  const v1::DeleteCaCertificateRequest* req,
                                                  v1::DeleteResponse* /*resp*/) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req->ca_id()));
    return options_.store->DeleteCaCertificate(req->tenant_id(), req->ca_id(), req->etag());
  }();
  Audit(caller, "DeleteCaCertificate", req->tenant_id(), "", "", req->ca_id(), s);
  return ToGrpcStatus(s);
}

// ---------------------------------------------------------------------------
// Revocations and CRLs (written by the identity CertificateService; read here).

grpc::Status RegistryService::GetRevocation(grpc::ServerContext* ctx,
                                            const v1::GetRevocationRequest* req,
                                            v1::CertificateRevocation* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::CertificateRevocation> r = [&]() -> absl::StatusOr<v1::CertificateRevocation> {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("revocation_id", req->revocation_id()));
    return options_.store->GetRevocation(req->tenant_id(), req->revocation_id());
  }();
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::ListRevocations(grpc::ServerContext* ctx,
                                              const v1::ListRevocationsRequest* req,
                                              v1::ListRevocationsResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::CertificateRevocation> p,
                             options_.store->ListRevocations(req->tenant_id(), page));
    for (v1::CertificateRevocation& r : p.items) *resp->add_revocations() = std::move(r);
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::GetCrl(grpc::ServerContext* ctx, const v1::GetCrlRequest* req,
                                     v1::CertificateRevocationList* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::StatusOr<v1::CertificateRevocationList> r =
      [&]() -> absl::StatusOr<v1::CertificateRevocationList> {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("ca_id", req->ca_id()));
    return options_.store->GetCrl(req->tenant_id(), req->ca_id());
  }();
  return RespondWith(std::move(r), resp);
}

grpc::Status RegistryService::ListCrls(grpc::ServerContext* ctx, const v1::ListCrlsRequest* req,
                                       v1::ListCrlsResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = [&]() -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireRole(caller, Role::kReader));
    IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req->tenant_id()));
    IOTAUTH_ASSIGN_OR_RETURN(PageRequest page, MakePage(req->page_size(), req->page_token()));
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::CertificateRevocationList> p,
                             options_.store->ListCrls(req->tenant_id(), page));
    for (v1::CertificateRevocationList& c : p.items) *resp->add_crls() = std::move(c);
    resp->set_next_page_token(NextToken(p));
    return absl::OkStatus();
  }();
  return ToGrpcStatus(s);
}

// ---------------------------------------------------------------------------
// Streams.

namespace {

class ReaderSource final : public RegistryService::DeviceSource {
 public:
  explicit ReaderSource(grpc::ServerReader<v1::ImportDevicesRequest>* r) : r_(r) {}
  bool Next(v1::ImportDevicesRequest* msg) override { return r_->Read(msg); }

 private:
  grpc::ServerReader<v1::ImportDevicesRequest>* r_;
};

template <typename T>
class WriterSink final : public RegistryService::Sink<T> {
 public:
  WriterSink(grpc::ServerContext* ctx, grpc::ServerWriter<T>* w) : ctx_(ctx), w_(w) {}
  bool Write(const T& msg) override { return w_->Write(msg); }
  bool Cancelled() override { return ctx_->IsCancelled(); }
  // The response headers carry the cursor, so a client that waits for them knows
  // its stream will see every later change (see WatchChangesRequest.cursor).
  void Started(absl::string_view cursor) override {
    ctx_->AddInitialMetadata(std::string(kChangeCursorHeader), std::string(cursor));
    w_->SendInitialMetadata();
  }

 private:
  grpc::ServerContext* ctx_;
  grpc::ServerWriter<T>* w_;
};

void AddImportError(v1::ImportDevicesResponse* resp, int64_t index, const std::string& device_id,
                    const absl::Status& status) {
  resp->set_rejected(resp->rejected() + 1);
  if (static_cast<size_t>(resp->errors_size()) >= kMaxImportErrors) return;
  v1::ImportError* e = resp->add_errors();
  e->set_index(index);
  // Cut at a character boundary: a cut inside one would make the response
  // unparsable for the client.
  e->set_device_id(std::string(TruncateUtf8(device_id, Limits::kMaxIdLength)));
  e->set_reason(ReasonOf(status));
  e->set_message(std::string(status.message()));
}

}  // namespace

absl::Status RegistryService::DoImportDevices(const Caller& caller, DeviceSource& source,
                                              v1::ImportDevicesResponse* resp,
                                              std::string* tenant_out) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  std::string tenant_id;
  std::vector<v1::Device> batch;
  std::vector<int64_t> batch_index;
  batch.reserve(options_.import_batch_size);
  batch_index.reserve(options_.import_batch_size);
  int64_t index = 0;

  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    IOTAUTH_ASSIGN_OR_RETURN(BatchResult result, options_.store->CreateDevices(tenant_id, batch));
    resp->set_imported(resp->imported() + result.inserted);
    for (const BatchItemError& e : result.errors) {
      AddImportError(resp, batch_index[e.index], batch[e.index].device_id(), e.status);
    }
    batch.clear();
    batch_index.clear();
    return absl::OkStatus();
  };

  v1::ImportDevicesRequest msg;
  bool first = true;
  while (source.Next(&msg)) {
    if (first) {
      IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", msg.tenant_id()));
      tenant_id = msg.tenant_id();
      if (tenant_out != nullptr) *tenant_out = tenant_id;
      first = false;
    } else if (!msg.tenant_id().empty() && msg.tenant_id() != tenant_id) {
      return InvalidField("tenant_id", "must be the same in every message of the stream");
    }
    if (static_cast<size_t>(msg.devices_size()) > Limits::kMaxBatchSize) {
      return InvalidField(
          "devices", absl::StrCat("more than ", Limits::kMaxBatchSize, " devices in one message"));
    }
    for (v1::Device& d : *msg.mutable_devices()) {
      int64_t i = index++;
      resp->set_received(resp->received() + 1);
      if (d.tenant_id().empty()) d.set_tenant_id(tenant_id);
      absl::Status s = d.tenant_id() == tenant_id
                           ? ValidateDevice(d)
                           : InvalidField("device.tenant_id", "differs from the stream's tenant");
      if (s.ok()) {
        NormalizeDevice(&d);
        if (msg.generate_keys()) s = GenerateKeysIfMissing(&d);
      }
      if (!s.ok()) {
        AddImportError(resp, i, d.device_id(), s);
        continue;
      }
      batch.push_back(std::move(d));
      batch_index.push_back(i);
      if (batch.size() >= static_cast<size_t>(options_.import_batch_size)) {
        IOTAUTH_RETURN_IF_ERROR(flush());
      }
    }
  }
  return flush();
}

grpc::Status RegistryService::ImportDevices(grpc::ServerContext* ctx,
                                            grpc::ServerReader<v1::ImportDevicesRequest>* reader,
                                            v1::ImportDevicesResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  ReaderSource source(reader);
  std::string tenant_id;
  absl::Status s = DoImportDevices(caller, source, resp, &tenant_id);
  // One event per import stream (not per device): counts, never keys.
  Audit(caller, "ImportDevices", tenant_id, "", "", "", s,
        {{"received", absl::StrCat(resp->received())},
         {"imported", absl::StrCat(resp->imported())},
         {"rejected", absl::StrCat(resp->rejected())}});
  return ToGrpcStatus(s);
}

absl::Status RegistryService::DoExportDevices(const Caller& caller,
                                              const v1::ExportDevicesRequest& req,
                                              Sink<v1::Device>& sink,
                                              std::vector<std::string>* unreadable_out) const {
  IOTAUTH_RETURN_IF_ERROR(
      RequireRole(caller, req.include_secrets() ? Role::kAdmin : Role::kReader));
  IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  PageRequest page;
  page.page_size = 500;
  for (;;) {
    if (sink.Cancelled()) return absl::CancelledError("client cancelled the export");
    IOTAUTH_ASSIGN_OR_RETURN(Page<v1::Device> p,
                             options_.store->ListDevices(req.tenant_id(), DeviceFilter(), page,
                                                         SecretsFor(req.include_secrets())));
    for (const v1::Device& d : p.items) {
      if (d.keys_unreadable() && unreadable_out != nullptr) {
        unreadable_out->push_back(d.device_id());
      }
      if (!sink.Write(d)) return absl::CancelledError("client went away during the export");
    }
    if (!p.more) return absl::OkStatus();
    page.after_key = p.last_key;
  }
}

namespace {

// Gathers an export's devices into DeviceBatch messages: one goes out when it holds
// kExportBatchDevices devices or about kExportBatchBytes, and the rest at Flush().
class BatchingSink final : public RegistryService::Sink<v1::Device> {
 public:
  explicit BatchingSink(RegistryService::Sink<v1::DeviceBatch>* out) : out_(out) {}
  bool Write(const v1::Device& device) override {
    bytes_ += device.ByteSizeLong();
    *batch_.add_devices() = device;
    if (batch_.devices_size() >= RegistryService::kExportBatchDevices ||
        bytes_ >= RegistryService::kExportBatchBytes) {
      return Flush();
    }
    return true;
  }
  bool Cancelled() override { return out_->Cancelled(); }
  bool Flush() {
    if (batch_.devices_size() == 0) return true;
    const bool ok = out_->Write(batch_);
    batch_.Clear();
    bytes_ = 0;
    return ok;
  }

 private:
  RegistryService::Sink<v1::DeviceBatch>* out_;
  v1::DeviceBatch batch_;
  size_t bytes_ = 0;
};

}  // namespace

absl::Status RegistryService::DoExportDeviceBatches(
    const Caller& caller, const v1::ExportDevicesRequest& req, Sink<v1::DeviceBatch>& sink,
    std::vector<std::string>* unreadable_out) const {
  BatchingSink batching(&sink);
  IOTAUTH_RETURN_IF_ERROR(DoExportDevices(caller, req, batching, unreadable_out));
  if (!batching.Flush()) return absl::CancelledError("client went away during the export");
  return absl::OkStatus();
}

grpc::Status RegistryService::ExportDevices(grpc::ServerContext* ctx,
                                            const v1::ExportDevicesRequest* req,
                                            grpc::ServerWriter<v1::Device>* writer) {
  Caller caller = ResolveCaller(ctx);
  WriterSink<v1::Device> sink(ctx, writer);
  std::vector<std::string> unreadable;
  absl::Status s = DoExportDevices(caller, *req, sink, &unreadable);
  AuditExport(caller, *req, s, unreadable);
  return ToGrpcStatus(s);
}

grpc::Status RegistryService::ExportDeviceBatches(grpc::ServerContext* ctx,
                                                  const v1::ExportDevicesRequest* req,
                                                  grpc::ServerWriter<v1::DeviceBatch>* writer) {
  Caller caller = ResolveCaller(ctx);
  WriterSink<v1::DeviceBatch> sink(ctx, writer);
  std::vector<std::string> unreadable;
  absl::Status s = DoExportDeviceBatches(caller, *req, sink, &unreadable);
  AuditExport(caller, *req, s, unreadable);
  return ToGrpcStatus(s);
}

void RegistryService::AuditExport(const Caller& caller, const v1::ExportDevicesRequest& req,
                                  const absl::Status& s,
                                  const std::vector<std::string>& unreadable) const {
  if (!req.include_secrets()) return;
  // Exporting keys is worth an audit record even though it changes nothing. It
  // names (up to 20 of) the devices whose keys did not open: ids, never keys.
  if (unreadable.empty()) {
    Audit(caller, "ExportDevicesWithSecrets", req.tenant_id(), "", "", "", s);
    return;
  }
  const auto named = static_cast<std::ptrdiff_t>(std::min<size_t>(unreadable.size(), 20));
  Audit(caller, "ExportDevicesWithSecrets", req.tenant_id(), "", "", "", s,
        {{"keys_unreadable", absl::StrCat(unreadable.size())},
         {"keys_unreadable_devices",
          absl::StrJoin(unreadable.begin(), unreadable.begin() + named, ",")}});
}

absl::Status RegistryService::DoWatchChanges(const Caller& caller,
                                             const v1::WatchChangesRequest& req,
                                             Sink<v1::ChangeEvent>& sink) const {
  IOTAUTH_RETURN_IF_ERROR(
      RequireRole(caller, req.tenant_id().empty() ? Role::kAdmin : Role::kReader));
  if (!req.tenant_id().empty()) IOTAUTH_RETURN_IF_ERROR(ValidateId("tenant_id", req.tenant_id()));
  const StreamSlots::Slot slot(&watch_slots_);
  if (!slot.ok()) {
    return WithErrorReason(
        absl::ResourceExhaustedError(absl::StrCat(
            "too many WatchChanges streams open (", watch_slots_.capacity(),
            "): cancel idle ones (a client that reconnects should cancel its old stream first), "
            "then retry")),
        "TOO_MANY_STREAMS");
  }
  int64_t cursor = 0;
  if (req.cursor().empty()) {
    cursor = options_.store->LatestCursor();
  } else if (!absl::SimpleAtoi(req.cursor(), &cursor) || cursor < 0) {
    return InvalidField("cursor", "is not a cursor this server issued");
  }
  if (req.has_cursor_time() && cursor > 0) {
    IOTAUTH_ASSIGN_OR_RETURN(std::optional<absl::Time> at, options_.store->ChangeTime(cursor));
    if (at.has_value() && *at != FromProtoTimestamp(req.cursor_time())) {
      return WithErrorReason(
          absl::OutOfRangeError("change cursor belongs to another change log (was "
                                "the registry restored or replaced?); "
                                "resynchronise and watch from now"),
          "CURSOR_UNKNOWN");
    }
  }
  absl::Duration heartbeat = absl::ZeroDuration();
  if (req.has_heartbeat_interval()) {
    heartbeat = std::clamp(FromProtoDuration(req.heartbeat_interval()), absl::Milliseconds(100),
                           absl::Seconds(60));
  }
  sink.Started(absl::StrCat(cursor));
  absl::Time last_sent = absl::Now();
  while (!sink.Cancelled()) {
    IOTAUTH_ASSIGN_OR_RETURN(
        ChangeBatch batch,
        options_.store->ReadChanges(cursor, options_.watch_batch_size, req.tenant_id()));
    for (const v1::ChangeEvent& e : batch.events) {
      if (!sink.Write(e)) return absl::OkStatus();  // client gone
    }
    cursor = batch.next_cursor;
    if (!batch.events.empty()) last_sent = absl::Now();
    if (static_cast<int32_t>(batch.events.size()) == options_.watch_batch_size) continue;
    if (heartbeat > absl::ZeroDuration() && absl::Now() - last_sent >= heartbeat) {
      v1::ChangeEvent beat;
      beat.set_type(v1::CHANGE_TYPE_HEARTBEAT);
      beat.set_cursor(absl::StrCat(cursor));
      if (!sink.Write(beat)) return absl::OkStatus();
      last_sent = absl::Now();
    }
    absl::Duration wait = options_.watch_poll_interval;
    if (heartbeat > absl::ZeroDuration()) {
      wait = std::min(wait, std::max(absl::ZeroDuration(), last_sent + heartbeat - absl::Now()));
    }
    options_.store->notifier().WaitFor(cursor, wait);
  }
  return absl::OkStatus();
}

grpc::Status RegistryService::WatchChanges(grpc::ServerContext* ctx,
                                           const v1::WatchChangesRequest* req,
                                           grpc::ServerWriter<v1::ChangeEvent>* writer) {
  Caller caller = ResolveCaller(ctx);
  WriterSink<v1::ChangeEvent> sink(ctx, writer);
  return ToGrpcStatus(DoWatchChanges(caller, *req, sink));
}

grpc::Status RegistryService::GetChangeCursor(grpc::ServerContext* ctx,
                                              const v1::GetChangeCursorRequest* /*req*/,
                                              v1::GetChangeCursorResponse* resp) {
  Caller caller = ResolveCaller(ctx);
  absl::Status s = RequireRole(caller, Role::kReader);
  if (s.ok()) {
    const int64_t latest = options_.store->LatestCursor();
    resp->set_cursor(absl::StrCat(latest));
    if (latest > 0) {
      absl::StatusOr<std::optional<absl::Time>> at = options_.store->ChangeTime(latest);
      if (at.ok() && at->has_value()) ToProtoTimestamp(**at, resp->mutable_cursor_time());
    }
  }
  return ToGrpcStatus(s);
}

absl::Status RegistryService::DoRewrapSecrets(const Caller& caller,
                                              const v1::RewrapSecretsRequest& req,
                                              Sink<v1::RewrapSecretsProgress>& sink,
                                              v1::RewrapSecretsProgress* final_progress) const {
  IOTAUTH_RETURN_IF_ERROR(RequireRoleAudited(caller, Role::kAdmin));
  if (req.batch_size() < 0 || static_cast<size_t>(req.batch_size()) > Limits::kMaxBatchSize) {
    return InvalidField("batch_size", absl::StrCat("must be 0 to ", Limits::kMaxBatchSize));
  }
  if (options_.secret_box == nullptr) {
    return WithErrorReason(
        absl::FailedPreconditionError("this server was started without its secret box"),
        "NO_SECRET_BOX");
  }
  v1::RewrapSecretsProgress last;
  // Once the client is gone, stop writing but finish the run: a half-done run is
  // harmless, yet abandoning it would only make the operator start again.
  bool client_gone = false;
  absl::Status s = options_.store->RewrapSecrets(options_.secret_box, req.batch_size(),
                                                 [&](const RewrapProgress& p) {
                                                   last.set_rows_done(p.rows_done);
                                                   last.set_rows_total(p.rows_total);
                                                   if (!client_gone && !sink.Write(last)) {
                                                     client_gone = true;
                                                   }
                                                 });
  if (final_progress != nullptr) *final_progress = last;
  IOTAUTH_RETURN_IF_ERROR(s);
  last.set_done(true);
  if (final_progress != nullptr) *final_progress = last;
  if (!client_gone) sink.Write(last);
  return absl::OkStatus();
}

grpc::Status RegistryService::RewrapSecrets(grpc::ServerContext* ctx,
                                            const v1::RewrapSecretsRequest* req,
                                            grpc::ServerWriter<v1::RewrapSecretsProgress>* writer) {
  Caller caller = ResolveCaller(ctx);
  WriterSink<v1::RewrapSecretsProgress> sink(ctx, writer);
  v1::RewrapSecretsProgress last;
  absl::Status s = DoRewrapSecrets(caller, *req, sink, &last);
  // Key ids are safe to log; keys never are.
  Audit(caller, "RewrapSecrets", "", "", "", "", s,
        {{"rows_done", absl::StrCat(last.rows_done())},
         {"rows_total", absl::StrCat(last.rows_total())},
         {"primary_key_id",
          options_.secret_box != nullptr ? options_.secret_box->primary_key_id() : ""}});
  return ToGrpcStatus(s);
}

}  // namespace iotauth::registry
