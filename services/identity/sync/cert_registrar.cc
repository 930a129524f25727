#include "services/identity/sync/cert_registrar.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/grpc_status.h"

namespace iotauth::identity {
namespace {

namespace rv1 = iotauth::registry::v1;

}  // namespace

RegistryCertificateRegistrar::RegistryCertificateRegistrar(std::shared_ptr<grpc::Channel> channel,
                                                           std::string bearer_token,
                                                           absl::Duration timeout)
    : stub_(rv1::DeviceRegistry::NewStub(channel)),
      token_(std::move(bearer_token)),
      timeout_(timeout) {}

void RegistryCertificateRegistrar::Prepare(grpc::ClientContext* ctx) const {
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
}

absl::StatusOr<rv1::Device> RegistryCertificateRegistrar::RegisterFromCertificate(
    const x509::CaInfo& ca, absl::string_view device_id, absl::string_view fingerprint) {
  if (ca.jit_product_key.empty()) {
    return absl::FailedPreconditionError("the CA enables JIT registration without a product");
  }
  rv1::CreateDeviceRequest req;
  rv1::Device* d = req.mutable_device();
  d->set_tenant_id(ca.tenant_id);
  d->set_device_id(std::string(device_id));
  d->set_product_key(ca.jit_product_key);
  d->set_status(ca.jit_auto_enable ? rv1::DEVICE_STATUS_ENABLED
                                   : rv1::DEVICE_STATUS_PENDING_APPROVAL);
  d->mutable_credentials()->set_ca_signed_allowed(true);
  (*d->mutable_tags())[kJitCaTag] = ca.id;
  // The leaf's SHA-256 hex (64 characters, within the tag value limit).
  if (!fingerprint.empty()) (*d->mutable_tags())[kJitFingerprintTag] = std::string(fingerprint);
  rv1::Device created;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status s = stub_->CreateDevice(&ctx, req, &created);
  if (s.ok()) return created;
  if (s.error_code() != grpc::StatusCode::ALREADY_EXISTS) return FromGrpcStatus(s);
  // A concurrent first connect (or an operator) created it: the verifier decides
  // from the stored record (status, ca_signed_allowed).
  grpc::ClientContext gctx;
  Prepare(&gctx);
  rv1::GetDeviceRequest get;
  get.set_tenant_id(ca.tenant_id);
  get.set_device_id(std::string(device_id));
  rv1::Device existing;
  s = stub_->GetDevice(&gctx, get, &existing);
  if (!s.ok()) return FromGrpcStatus(s);
  return existing;
}

}  // namespace iotauth::identity
