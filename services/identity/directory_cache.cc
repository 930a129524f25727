#include "services/identity/directory_cache.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"
#include "services/identity/composite_key.h"

namespace iotauth::identity {
namespace {

// Lowercases `s` into a stack buffer when it fits.
class LowerKey {
 public:
  explicit LowerKey(absl::string_view s) {
    char* p = buf_;
    if (s.size() > sizeof(buf_)) {
      heap_.resize(s.size());
      p = heap_.data();
    }
    for (size_t i = 0; i < s.size(); ++i) {
      p[i] = absl::ascii_tolower(static_cast<unsigned char>(s[i]));
    }
    view_ = absl::string_view(p, s.size());
  }
  LowerKey(const LowerKey&) = delete;
  LowerKey& operator=(const LowerKey&) = delete;
  absl::string_view view() const { return view_; }

 private:
  char buf_[128];
  std::string heap_;
  absl::string_view view_;
};

// Decodes an optional base64 key into `out`; an invalid key leaves `out` empty and is
// reported by field name only.
void DecodeKey(absl::string_view b64, absl::string_view field, std::string* out,
               absl::Status* status) {
  out->clear();
  if (b64.empty()) return;
  auto raw = crypto::Base64Decode(b64);
  if (!raw.ok() || raw->empty()) {
    if (status->ok()) {
      *status = absl::InvalidArgumentError(absl::StrCat(field, " is not valid base64"));
    }
    return;
  }
  *out = *std::move(raw);
}

// The same, scheduled for HMAC-SHA256 (no key when empty or invalid).
void DecodeKey(absl::string_view b64, absl::string_view field, PrecomputedHmacSha256* out,
               absl::Status* status) {
  std::string raw;
  DecodeKey(b64, field, &raw, status);
  *out = raw.empty() ? PrecomputedHmacSha256() : PrecomputedHmacSha256::ForKey(raw);
  OPENSSL_cleanse(raw.data(), raw.size());
}

// The triple secret's text scheduled for hmacsha256 (no key when empty).
PrecomputedHmacSha256 TripleKey(absl::string_view text) {
  return text.empty() ? PrecomputedHmacSha256() : PrecomputedHmacSha256::ForKey(text);
}

size_t StringBytes(const std::string& s) {
  // Heap block when the string is not stored inline (libstdc++ SSO holds 15 bytes).
  return s.capacity() > 15 ? s.capacity() + 1 : 0;
}

size_t RulesBytes(const std::vector<registry::AccessRule>& rules) {
  size_t n = rules.capacity() * sizeof(registry::AccessRule);
  for (const auto& r : rules) n += r.SpaceUsedLong() - sizeof(registry::AccessRule);
  return n;
}

}  // namespace

const TenantRecord::Policy* TenantRecord::FindPolicy(absl::string_view name) const {
  for (const auto& p : policies) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

size_t DeviceRecord::ApproximateBytes() const {
  return sizeof(DeviceRecord) + StringBytes(tenant_id) + StringBytes(device_id) +
         StringBytes(product_key) + StringBytes(triple_secret) +
         StringBytes(triple_secret_secondary) + StringBytes(enrollment_group_id) +
         StringBytes(primary_thumbprint) + StringBytes(secondary_thumbprint) + RulesBytes(rules);
}

absl::Status MakeTenantRecord(const registry::Tenant& t, TenantRecord* out) {
  absl::Status status;
  out->id = t.id();
  out->hub_host = absl::AsciiStrToLower(t.hub_host());
  out->policies.clear();
  out->policies.reserve(t.policies_size());
  for (const auto& p : t.policies()) {
    TenantRecord::Policy policy;
    policy.name = p.name();
    DecodeKey(p.primary_key(), "policy primary_key", &policy.primary_key, &status);
    DecodeKey(p.secondary_key(), "policy secondary_key", &policy.secondary_key, &status);
    out->policies.push_back(std::move(policy));
  }
  return status;
}

absl::Status MakeProductRecord(const registry::Product& p, ProductRecord* out) {
  out->tenant_id = p.tenant_id();
  out->product_key = p.product_key();
  out->product_secret = p.product_secret();
  out->dynamic_activation = p.dynamic_activation();
  out->allow_weak_sign_methods = p.allow_weak_sign_methods();
  out->allowed_types_mask = 0;
  for (int t : p.allowed_credential_types()) {
    if (t > 0 && t < 32) out->allowed_types_mask |= 1U << t;
  }
  out->default_rules.assign(p.default_rules().begin(), p.default_rules().end());
  return absl::OkStatus();
}

absl::Status MakeDeviceRecord(const registry::Device& d, DeviceRecord* out) {
  absl::Status status;
  if (!absl::SimpleAtoi(d.etag(), &out->version)) out->version = 0;
  out->tenant_id = d.tenant_id();
  out->device_id = d.device_id();
  out->product_key = d.product_key();
  out->status = d.status();
  const auto& keys = d.credentials().symmetric_key();
  DecodeKey(keys.primary_key(), "device primary_key", &out->primary_key, &status);
  DecodeKey(keys.secondary_key(), "device secondary_key", &out->secondary_key, &status);
  out->triple_secret = keys.primary_key();
  out->triple_secret_secondary = keys.secondary_key();
  out->triple_key = TripleKey(out->triple_secret);
  out->triple_key_secondary = TripleKey(out->triple_secret_secondary);
  out->rules.assign(d.rules().begin(), d.rules().end());
  out->enrollment_group_id = d.enrollment_group_id();
  out->primary_thumbprint = d.credentials().primary_thumbprint();
  out->secondary_thumbprint = d.credentials().secondary_thumbprint();
  out->ca_signed_allowed = d.credentials().ca_signed_allowed();
  out->activated = d.tags().count(kActivatedTag) > 0;
  return status;
}

absl::Status MakeEnrollmentGroupRecord(const registry::EnrollmentGroup& g,
                                       EnrollmentGroupRecord* out) {
  absl::Status status;
  out->tenant_id = g.tenant_id();
  out->id = g.id();
  DecodeKey(g.group_key(), "enrollment group_key", &out->group_key, &status);
  out->product_key = g.product_key();
  out->initial_rules.assign(g.initial_rules().begin(), g.initial_rules().end());
  out->enabled = g.enabled();
  return status;
}

absl::StatusOr<std::unique_ptr<DirectoryCache>> DirectoryCache::Create(Options options) {
  if (options.shards == 0 || options.shards > (1U << 16)) {
    return absl::InvalidArgumentError("DirectoryCache shards must be 1..65536");
  }
  return std::make_unique<DirectoryCache>(options);
}

DirectoryCache::DirectoryCache(Options options)
    : clock_(options.clock != nullptr ? options.clock : &RealClock::Get()),
      tenants_(std::max<size_t>(1, options.shards / 4)),
      tenants_by_host_(std::max<size_t>(1, options.shards / 4)),
      products_(std::max<size_t>(1, options.shards / 4)),
      devices_(std::max<size_t>(1, options.shards)),
      groups_by_tenant_(std::max<size_t>(1, options.shards / 4)),
      groups_(std::max<size_t>(1, options.shards / 4)) {}

std::shared_ptr<const TenantRecord> DirectoryCache::FindTenant(absl::string_view id) const {
  return tenants_.Find(id);
}

std::shared_ptr<const TenantRecord> DirectoryCache::FindTenantByHubHost(
    absl::string_view host) const {
  LowerKey key(host);
  return tenants_by_host_.Find(key.view());
}

std::shared_ptr<const ProductRecord> DirectoryCache::FindProduct(absl::string_view key) const {
  return products_.Find(key);
}

std::shared_ptr<const DeviceRecord> DirectoryCache::FindDevice(absl::string_view tenant_id,
                                                               absl::string_view device_id) const {
  CompositeKey key(tenant_id, device_id);
  return devices_.Find(key.view());
}

std::shared_ptr<const EnrollmentGroupList> DirectoryCache::FindEnrollmentGroups(
    absl::string_view tenant_id, absl::string_view /*registration_id*/) const {
  static const auto* empty =
      new std::shared_ptr<const EnrollmentGroupList>(std::make_shared<const EnrollmentGroupList>());
  auto list = groups_by_tenant_.Find(tenant_id);
  return list != nullptr ? list : *empty;
}

absl::Status DirectoryCache::UpsertTenant(const registry::Tenant& tenant) {
  if (tenant.id().empty()) return absl::InvalidArgumentError("tenant id is empty");
  auto record = std::make_shared<TenantRecord>();
  absl::Status status = MakeTenantRecord(tenant, record.get());
  absl::MutexLock lock(&write_mu_);
  auto old = tenants_.Put(record->id, record);
  if (old != nullptr && old->hub_host != record->hub_host) UnmapHost(*old);
  if (!record->hub_host.empty()) tenants_by_host_.Put(record->hub_host, record);
  return status;
}

void DirectoryCache::RemoveTenant(absl::string_view tenant_id) {
  absl::MutexLock lock(&write_mu_);
  auto old = tenants_.Erase(tenant_id);
  if (old != nullptr) UnmapHost(*old);
}

void DirectoryCache::UnmapHost(const TenantRecord& old) {
  if (old.hub_host.empty()) return;
  auto mapped = tenants_by_host_.Find(old.hub_host);
  if (mapped != nullptr && mapped->id == old.id) tenants_by_host_.Erase(old.hub_host);
}

absl::Status DirectoryCache::UpsertProduct(const registry::Product& product) {
  if (product.product_key().empty()) return absl::InvalidArgumentError("product_key is empty");
  auto record = std::make_shared<ProductRecord>();
  absl::Status status = MakeProductRecord(product, record.get());
  const std::string key = record->product_key;
  products_.Put(key, std::move(record));
  return status;
}

void DirectoryCache::RemoveProduct(absl::string_view product_key) { products_.Erase(product_key); }

absl::Status DirectoryCache::UpsertDevice(const registry::Device& device) {
  return PutDevice(device, /*from_registrar=*/false);
}

void DirectoryCache::RemoveDevice(absl::string_view tenant_id, absl::string_view device_id) {
  CompositeKey key(tenant_id, device_id);
  RememberRemoved(std::string(key.view()));
  auto old = devices_.Erase(key.view());
  if (old != nullptr) ForgetDeviceBytes(*old);
}

void DirectoryCache::RememberRemoved(std::string key) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&removed_mu_);
  while (!removed_order_.empty() && (removed_order_.front().second + kRemovedMemory < now ||
                                     removed_order_.size() >= kMaxRemovedRemembered)) {
    auto it = removed_.find(removed_order_.front().first);
    if (it != removed_.end() && it->second == removed_order_.front().second) removed_.erase(it);
    removed_order_.pop_front();
  }
  removed_[key] = now;
  removed_order_.emplace_back(std::move(key), now);
}

bool DirectoryCache::RecentlyRemoved(absl::string_view key) {
  absl::MutexLock lock(&removed_mu_);
  auto it = removed_.find(key);
  return it != removed_.end() && it->second + kRemovedMemory >= clock_->Now();
}

absl::Status DirectoryCache::UpsertRegisteredDevice(const registry::Device& device) {
  return PutDevice(device, /*from_registrar=*/true);
}

absl::Status DirectoryCache::PutDevice(const registry::Device& device, bool from_registrar) {
  if (device.tenant_id().empty() || device.device_id().empty()) {
    return absl::InvalidArgumentError("device tenant_id and device_id must be set");
  }
  auto record = std::make_shared<DeviceRecord>();
  absl::Status status = MakeDeviceRecord(device, record.get());
  CompositeKey key(record->tenant_id, record->device_id);
  if (from_registrar && RecentlyRemoved(key.view())) {
    return absl::FailedPreconditionError("the device was removed since: left to the change stream");
  }
  const auto bytes = static_cast<int64_t>(record->ApproximateBytes());
  const int64_t version = record->version;
  std::shared_ptr<const DeviceRecord> old;
  // The change stream always wins; a registrar's write never replaces a version at
  // least as new.
  const bool written = devices_.PutUnless(
      key.view(), std::move(record),
      [from_registrar, version](const DeviceRecord& held) {
        return from_registrar && held.version >= version;
      },
      &old);
  if (!written) {
    return absl::FailedPreconditionError(
        "the cache holds a newer version of the device: left to the change stream");
  }
  device_record_bytes_.fetch_add(
      bytes - (old != nullptr ? static_cast<int64_t>(old->ApproximateBytes()) : 0),
      std::memory_order_relaxed);
  return status;
}

void DirectoryCache::ForgetDeviceBytes(const DeviceRecord& old) {
  device_record_bytes_.fetch_sub(static_cast<int64_t>(old.ApproximateBytes()),
                                 std::memory_order_relaxed);
}

namespace {

// Rebuilds one tenant's list of enabled groups from the full set (ordered by id).
std::shared_ptr<const EnrollmentGroupList> WithGroup(
    const std::shared_ptr<const EnrollmentGroupList>& current, absl::string_view group_id,
    std::shared_ptr<const EnrollmentGroupRecord> replacement) {
  auto next = std::make_shared<EnrollmentGroupList>();
  if (current != nullptr) {
    for (const auto& g : *current) {
      if (g->id != group_id) next->push_back(g);
    }
  }
  if (replacement != nullptr && replacement->enabled) next->push_back(std::move(replacement));
  std::sort(next->begin(), next->end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  return next;
}

}  // namespace

absl::Status DirectoryCache::UpsertEnrollmentGroup(const registry::EnrollmentGroup& group) {
  if (group.tenant_id().empty() || group.id().empty()) {
    return absl::InvalidArgumentError("enrollment group tenant_id and id must be set");
  }
  auto record = std::make_shared<EnrollmentGroupRecord>();
  absl::Status status = MakeEnrollmentGroupRecord(group, record.get());
  absl::MutexLock lock(&write_mu_);
  CompositeKey key(record->tenant_id, record->id);
  groups_.Put(key.view(), record);
  auto list = WithGroup(groups_by_tenant_.Find(record->tenant_id), record->id, record);
  groups_by_tenant_.Put(record->tenant_id, std::move(list));
  return status;
}

void DirectoryCache::RemoveEnrollmentGroup(absl::string_view tenant_id,
                                           absl::string_view group_id) {
  absl::MutexLock lock(&write_mu_);
  CompositeKey key(tenant_id, group_id);
  if (groups_.Erase(key.view()) == nullptr) return;
  DropFromGroupList(tenant_id, group_id);
}

void DirectoryCache::DropFromGroupList(absl::string_view tenant_id, absl::string_view group_id) {
  auto list = WithGroup(groups_by_tenant_.Find(tenant_id), group_id, nullptr);
  if (list->empty()) {
    groups_by_tenant_.Erase(tenant_id);
  } else {
    groups_by_tenant_.Put(tenant_id, std::move(list));
  }
}

void DirectoryCache::Clear() {
  absl::MutexLock lock(&write_mu_);
  tenants_.Clear();
  tenants_by_host_.Clear();
  products_.Clear();
  devices_.Clear();
  groups_by_tenant_.Clear();
  groups_.Clear();
  device_record_bytes_.store(0, std::memory_order_relaxed);
}

void DirectoryCache::BeginSnapshot() {
  absl::MutexLock lock(&write_mu_);
  snapshot_.tenants = tenants_.NewStamp();
  snapshot_.products = products_.NewStamp();
  snapshot_.devices = devices_.NewStamp();
  snapshot_.groups = groups_.NewStamp();
}

void DirectoryCache::EndSnapshot() {
  SnapshotStamps st;
  {
    absl::MutexLock lock(&write_mu_);
    st = snapshot_;
    snapshot_ = SnapshotStamps{};
  }
  if (st.devices == 0) return;  // no BeginSnapshot
  // Children first, as the registry deletes them. An entry upserted since
  // BeginSnapshot (by the snapshot, or a device registered on its first connect)
  // carries the new stamp and stays.
  for (const std::string& key : devices_.KeysStampedBefore(st.devices)) {
    auto old = devices_.EraseIfStampedBefore(key, st.devices);
    if (old != nullptr) ForgetDeviceBytes(*old);
  }
  for (const std::string& key : products_.KeysStampedBefore(st.products)) {
    products_.EraseIfStampedBefore(key, st.products);
  }
  absl::MutexLock lock(&write_mu_);
  for (const std::string& key : groups_.KeysStampedBefore(st.groups)) {
    auto old = groups_.EraseIfStampedBefore(key, st.groups);
    if (old != nullptr) DropFromGroupList(old->tenant_id, old->id);
  }
  for (const std::string& key : tenants_.KeysStampedBefore(st.tenants)) {
    auto old = tenants_.EraseIfStampedBefore(key, st.tenants);
    if (old != nullptr) UnmapHost(*old);
  }
}

DirectoryCache::Stats DirectoryCache::GetStats() const {
  Stats s;
  s.tenants = tenants_.size();
  s.products = products_.size();
  s.devices = devices_.size();
  // Record + key bytes tracked on upsert, plus per-device control block (make_shared:
  // two counts and a vtable pointer), the map key's heap block and the table slots.
  const size_t per_device_fixed = 16 + 8 + 32;  // control block + key heap (typical)
  s.device_bytes = static_cast<size_t>(std::max<int64_t>(0, device_record_bytes_.load())) +
                   s.devices * per_device_fixed + devices_.TableBytes();
  return s;
}

}  // namespace iotauth::identity
