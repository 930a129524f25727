#include "services/identity/sync/registry_registrar.h"

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/crypto.h"
#include "services/common/grpc_status.h"
#include "services/common/status_macros.h"
#include "services/registry/validation.h"

namespace iotauth::identity {
namespace {

namespace rv1 = iotauth::registry::v1;

}  // namespace

RegistryRegistrar::RegistryRegistrar(std::shared_ptr<grpc::Channel> channel,
                                     std::string bearer_token)
    : stub_(rv1::DeviceRegistry::NewStub(channel)), token_(std::move(bearer_token)) {}

void RegistryRegistrar::Prepare(grpc::ClientContext* ctx) const {
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
  // Called on the Authenticate path: keep it short.
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
}

template <typename Request, typename Response>
absl::Status RegistryRegistrar::Call(Rpc<Request, Response> rpc, const Request& request,
                                     Response* response) const {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  return FromGrpcStatus((stub_.get()->*rpc)(&ctx, request, response));
}

absl::StatusOr<rv1::Device> RegistryRegistrar::RegisterFromEnrollmentGroup(
    const EnrollmentGroupRecord& group, absl::string_view device_id,
    absl::string_view derived_key_base64) {
  rv1::CreateDeviceRequest req;
  rv1::Device* d = req.mutable_device();
  d->set_tenant_id(group.tenant_id);
  d->set_device_id(std::string(device_id));
  d->set_product_key(group.product_key);
  d->set_status(rv1::DEVICE_STATUS_ENABLED);
  d->set_enrollment_group_id(group.id);
  for (const auto& r : group.initial_rules) *d->add_rules() = r;
  auto* key = d->mutable_credentials()->mutable_symmetric_key();
  key->set_primary_key(std::string(derived_key_base64));
  key->set_secondary_key(std::string(derived_key_base64));
  rv1::Device created;
  absl::Status s = Call(&Stub::CreateDevice, req, &created);
  if (s.ok()) return created;
  if (s.code() != absl::StatusCode::kAlreadyExists) return s;
  // A concurrent first connect won the race: take the stored device if it came
  // through the same group.
  rv1::GetDeviceRequest get;
  get.set_tenant_id(group.tenant_id);
  get.set_device_id(std::string(device_id));
  get.set_include_secrets(true);
  rv1::Device existing;
  IOTAUTH_RETURN_IF_ERROR(Call(&Stub::GetDevice, get, &existing));
  if (existing.enrollment_group_id() != group.id) {
    return absl::AlreadyExistsError("device exists outside this enrollment group");
  }
  // The derived key proves group membership only while the device still holds it:
  // an admin may have given it another key since.
  const auto& keys = existing.credentials().symmetric_key();
  if (!crypto::ConstantTimeEquals(keys.primary_key(), derived_key_base64) &&
      !crypto::ConstantTimeEquals(keys.secondary_key(), derived_key_base64)) {
    return absl::PermissionDeniedError("the device no longer holds its group-derived key");
  }
  return existing;
}

absl::StatusOr<DeviceRegistrar::Activation> RegistryRegistrar::ActivateDevice(
    const ProductRecord& product, absl::string_view device_name) {
  rv1::GetDeviceRequest get;
  get.set_tenant_id(product.tenant_id);
  get.set_device_id(std::string(device_name));
  rv1::Device existing;
  absl::Status s = Call(&Stub::GetDevice, get, &existing);
  Activation out;
  if (s.ok()) {
    if (existing.product_key() != product.product_key) {
      return absl::FailedPreconditionError("device belongs to another product");
    }
    if (existing.tags().count(kActivatedTag) > 0) {
      return absl::FailedPreconditionError("device already activated");
    }
    // An admin's disable stands, even when the caller's copy of the registry has
    // not seen it yet.
    if (existing.status() == rv1::DEVICE_STATUS_DISABLED) {
      return absl::PermissionDeniedError("device is disabled");
    }
    // The tag goes in last: refuse now rather than rotate the key and enable the
    // device on every attempt, then fail at the tag.
    if (existing.tags_size() >= static_cast<int>(::iotauth::registry::Limits::kMaxTags)) {
      return absl::ResourceExhaustedError("device has no room for the activation tag");
    }
    // Three writes, each conditional on the version the one before returned, so a
    // concurrent change to the device fails the activation rather than being
    // overwritten. The "activated" tag goes last: it is the commit point. A failure
    // before it leaves a device that is not activated, holding a key nobody was
    // given, and the device's next connect activates it again (tagged first, a
    // failed key generation left it activated with no secret, for good). A reply
    // lost after the tag committed still leaves that state: only an admin's
    // RegenerateDeviceKey and removal of the tag recover it.
    rv1::RegenerateDeviceKeyRequest regen;
    regen.set_tenant_id(product.tenant_id);
    regen.set_device_id(std::string(device_name));
    regen.set_slot(rv1::KEY_SLOT_PRIMARY);
    regen.set_etag(existing.etag());
    rv1::Device regenerated;
    IOTAUTH_RETURN_IF_ERROR(Call(&Stub::RegenerateDeviceKey, regen, &regenerated));
    out.device_secret = regenerated.credentials().symmetric_key().primary_key();
    rv1::SetDeviceStatusRequest st;
    st.set_tenant_id(product.tenant_id);
    st.set_device_id(std::string(device_name));
    st.set_status(rv1::DEVICE_STATUS_ENABLED);
    st.set_etag(regenerated.etag());
    rv1::Device enabled;
    IOTAUTH_RETURN_IF_ERROR(Call(&Stub::SetDeviceStatus, st, &enabled));
    IOTAUTH_RETURN_IF_ERROR(AddActivatedTag(product, enabled, &out.device));
    // The answer omits the keys; they are the ones generated above (each later
    // write was conditional on that version).
    *out.device.mutable_credentials()->mutable_symmetric_key() =
        regenerated.credentials().symmetric_key();
  } else if (s.code() == absl::StatusCode::kNotFound) {
    rv1::CreateDeviceRequest req;
    rv1::Device* d = req.mutable_device();
    d->set_tenant_id(product.tenant_id);
    d->set_device_id(std::string(device_name));
    d->set_product_key(product.product_key);
    d->set_status(rv1::DEVICE_STATUS_ENABLED);
    (*d->mutable_tags())[kActivatedTag] = "true";
    req.set_generate_keys(true);
    IOTAUTH_RETURN_IF_ERROR(Call(&Stub::CreateDevice, req, &out.device));
    out.device_secret = out.device.credentials().symmetric_key().primary_key();
  } else {
    return s;
  }
  if (out.device_secret.empty()) {
    return absl::InternalError("registry returned no generated device secret");
  }
  return out;
}

absl::Status RegistryRegistrar::MarkActivated(const ProductRecord& product,
                                              absl::string_view device_id) {
  rv1::GetDeviceRequest get;
  get.set_tenant_id(product.tenant_id);
  get.set_device_id(std::string(device_id));
  rv1::Device existing;
  IOTAUTH_RETURN_IF_ERROR(Call(&Stub::GetDevice, get, &existing));
  if (existing.product_key() != product.product_key) {
    return absl::FailedPreconditionError("device belongs to another product");
  }
  if (existing.tags().count(kActivatedTag) > 0) return absl::OkStatus();
  if (existing.tags_size() >= static_cast<int>(::iotauth::registry::Limits::kMaxTags)) {
    return absl::ResourceExhaustedError("device has no room for the activation tag");
  }
  // Conditional on the version read: a concurrent change (another connect marking
  // it, an admin's edit) fails this write, and the next connect tries again.
  rv1::Device updated;
  return AddActivatedTag(product, existing, &updated);
}

absl::Status RegistryRegistrar::AddActivatedTag(const ProductRecord& product,
                                                const rv1::Device& current,
                                                rv1::Device* updated) const {
  rv1::UpdateDeviceRequest upd;
  upd.mutable_device()->set_tenant_id(product.tenant_id);
  upd.mutable_device()->set_device_id(current.device_id());
  upd.mutable_device()->set_product_key(product.product_key);  // for the audit record
  *upd.mutable_device()->mutable_tags() = current.tags();
  (*upd.mutable_device()->mutable_tags())[kActivatedTag] = "true";
  upd.mutable_update_mask()->add_paths("tags");
  upd.set_etag(current.etag());
  return Call(&Stub::UpdateDevice, upd, updated);
}

}  // namespace iotauth::identity
