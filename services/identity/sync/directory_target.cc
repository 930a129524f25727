#include "services/identity/sync/directory_target.h"

#include "services/common/log.h"

namespace iotauth::identity {

void DirectoryMirrorTarget::Check(const absl::Status& st, absl::string_view kind,
                                  absl::string_view id) {
  if (st.ok()) return;
  malformed_.fetch_add(1);
  // The status names the field, never its value.
  log::Warn(
      "malformed registry record mirrored",
      {{"kind", std::string(kind)}, {"id", std::string(id)}, {"error", std::string(st.message())}});
}

void DirectoryMirrorTarget::UpsertTenant(const iotauth::registry::v1::Tenant& t) {
  Check(writer_->UpsertTenant(t), "tenant", t.id());
}
void DirectoryMirrorTarget::RemoveTenant(const std::string& tenant_id) {
  writer_->RemoveTenant(tenant_id);
}
void DirectoryMirrorTarget::UpsertProduct(const iotauth::registry::v1::Product& p) {
  Check(writer_->UpsertProduct(p), "product", p.product_key());
}
void DirectoryMirrorTarget::RemoveProduct(const std::string& /*tenant_id*/,
                                          const std::string& product_key) {
  writer_->RemoveProduct(product_key);
}
void DirectoryMirrorTarget::UpsertDevice(const iotauth::registry::v1::Device& d) {
  Check(writer_->UpsertDevice(d), "device", d.device_id());
}
void DirectoryMirrorTarget::RemoveDevice(const std::string& tenant_id,
                                         const std::string& device_id) {
  writer_->RemoveDevice(tenant_id, device_id);
}
void DirectoryMirrorTarget::UpsertGroup(const iotauth::registry::v1::EnrollmentGroup& g) {
  Check(writer_->UpsertEnrollmentGroup(g), "enrollment_group", g.id());
}
void DirectoryMirrorTarget::RemoveGroup(const std::string& tenant_id, const std::string& group_id) {
  writer_->RemoveEnrollmentGroup(tenant_id, group_id);
}
void DirectoryMirrorTarget::Clear() { writer_->Clear(); }
void DirectoryMirrorTarget::BeginSnapshot() { writer_->BeginSnapshot(); }
void DirectoryMirrorTarget::EndSnapshot() { writer_->EndSnapshot(); }

}  // namespace iotauth::identity
