// DirectoryCache: the in-memory Directory the identity service authenticates from.
// Kept exact by the registry's change stream (through DirectoryWriter), so a cache hit
// never touches the database. Reads take one shard's reader lock; writes block one
// shard. Keys are stored decoded so verification does no base64 work.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/clock.h"
#include "services/identity/directory.h"
#include "services/identity/sharded_map.h"

namespace iotauth::identity {

class DirectoryCache final : public Directory, public DirectoryWriter {
 public:
  struct Options {
    // Device shards; more shards, less writer interference. Tenants, products and
    // groups use a quarter as many.
    size_t shards = 256;
    // For how long a removal is remembered (kRemovedMemory); the real clock if null.
    // Must outlive the cache.
    const Clock* clock = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<DirectoryCache>> Create(Options options);
  explicit DirectoryCache(Options options);

  // Directory
  std::shared_ptr<const TenantRecord> FindTenant(absl::string_view tenant_id) const override;
  std::shared_ptr<const TenantRecord> FindTenantByHubHost(absl::string_view host) const override;
  std::shared_ptr<const ProductRecord> FindProduct(absl::string_view product_key) const override;
  std::shared_ptr<const DeviceRecord> FindDevice(absl::string_view tenant_id,
                                                 absl::string_view device_id) const override;
  std::shared_ptr<const EnrollmentGroupList> FindEnrollmentGroups(
      absl::string_view tenant_id, absl::string_view registration_id) const override;

  // DirectoryWriter
  absl::Status UpsertTenant(const registry::Tenant& tenant) override;
  void RemoveTenant(absl::string_view tenant_id) override;
  absl::Status UpsertProduct(const registry::Product& product) override;
  void RemoveProduct(absl::string_view product_key) override;
  absl::Status UpsertDevice(const registry::Device& device) override;
  void RemoveDevice(absl::string_view tenant_id, absl::string_view device_id) override;
  absl::Status UpsertRegisteredDevice(const registry::Device& device) override;
  // How long a removed device refuses UpsertRegisteredDevice (longer than any
  // registrar call, whose deadline is 2 s).
  static constexpr absl::Duration kRemovedMemory = absl::Seconds(10);
  // At most this many removals are remembered (the oldest forgotten first).
  static constexpr size_t kMaxRemovedRemembered = 100000;
  absl::Status UpsertEnrollmentGroup(const registry::EnrollmentGroup& group) override;
  void RemoveEnrollmentGroup(absl::string_view tenant_id, absl::string_view group_id) override;
  void Clear() override;
  void BeginSnapshot() override;
  void EndSnapshot() override;

  struct Stats {
    size_t tenants = 0;
    size_t products = 0;
    size_t devices = 0;
    // Bytes held for devices: records, keys, shared_ptr control blocks and table slots.
    size_t device_bytes = 0;
    double bytes_per_device() const {
      return devices == 0 ? 0.0 : static_cast<double>(device_bytes) / devices;
    }
  };
  Stats GetStats() const;

 private:
  // Drops the hub-host mapping of a tenant record being replaced or removed, if it
  // still points at that tenant.
  void UnmapHost(const TenantRecord& old) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Rebuilds the tenant's list of enabled groups without `group_id`.
  void DropFromGroupList(absl::string_view tenant_id, absl::string_view group_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void ForgetDeviceBytes(const DeviceRecord& old);
  // UpsertDevice (from_registrar false) and UpsertRegisteredDevice (true).
  absl::Status PutDevice(const registry::Device& device, bool from_registrar);
  // Devices removed within kRemovedMemory, by key (see UpsertRegisteredDevice).
  void RememberRemoved(std::string key);
  bool RecentlyRemoved(absl::string_view key);
  absl::Mutex removed_mu_;
  const Clock* const clock_;
  absl::flat_hash_map<std::string, absl::Time> removed_ ABSL_GUARDED_BY(removed_mu_);
  std::deque<std::pair<std::string, absl::Time>> removed_order_ ABSL_GUARDED_BY(removed_mu_);

  internal::ShardedMap<TenantRecord> tenants_;
  internal::ShardedMap<TenantRecord> tenants_by_host_;
  internal::ShardedMap<ProductRecord> products_;
  internal::ShardedMap<DeviceRecord> devices_;
  // Per tenant, copy-on-write list of enabled groups; the full set in `groups_`.
  internal::ShardedMap<EnrollmentGroupList> groups_by_tenant_;
  internal::ShardedMap<EnrollmentGroupRecord> groups_;
  // Serialises multi-map updates (tenant + host index, group lists). Readers never
  // take it.
  absl::Mutex write_mu_;
  std::atomic<int64_t> device_record_bytes_{0};
  // The maps' stamps started by the last BeginSnapshot (0: none pending).
  struct SnapshotStamps {
    uint64_t tenants = 0;
    uint64_t products = 0;
    uint64_t devices = 0;
    uint64_t groups = 0;
  };
  SnapshotStamps snapshot_ ABSL_GUARDED_BY(write_mu_);
};

}  // namespace iotauth::identity
