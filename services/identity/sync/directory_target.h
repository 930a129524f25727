// Feeds the identity DirectoryCache from the RegistryMirror. Malformed records
// (for example an invalid stored key) are stored as far as possible and counted;
// their content is never logged.
#pragma once

#include <atomic>
#include <string>

#include "services/identity/directory.h"
#include "services/identity/sync/registry_mirror.h"

namespace iotauth::identity {

class DirectoryMirrorTarget final : public MirrorTarget {
 public:
  explicit DirectoryMirrorTarget(DirectoryWriter* writer) : writer_(writer) {}

  void UpsertTenant(const iotauth::registry::v1::Tenant& tenant) override;
  void RemoveTenant(const std::string& tenant_id) override;
  void UpsertProduct(const iotauth::registry::v1::Product& product) override;
  void RemoveProduct(const std::string& tenant_id, const std::string& product_key) override;
  void UpsertDevice(const iotauth::registry::v1::Device& device) override;
  void RemoveDevice(const std::string& tenant_id, const std::string& device_id) override;
  void UpsertGroup(const iotauth::registry::v1::EnrollmentGroup& group) override;
  void RemoveGroup(const std::string& tenant_id, const std::string& group_id) override;
  void Clear() override;
  void BeginSnapshot() override;
  void EndSnapshot() override;

  int64_t malformed_records() const { return malformed_.load(); }

 private:
  void Check(const absl::Status& st, absl::string_view kind, absl::string_view id);
  DirectoryWriter* writer_;
  std::atomic<int64_t> malformed_{0};
};

}  // namespace iotauth::identity
