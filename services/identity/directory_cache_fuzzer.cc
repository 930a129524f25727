// libFuzzer target: the identity service's DirectoryCache under a script of registry
// changes (tenants, products, devices; the change stream's upserts and removals,
// registrar writes of devices enrolled on first connect, full resyncs), checked after
// every step against a model of what the registry holds. The cache is what
// Authenticate trusts without a database round trip, so it must be exact:
//  - FindTenant, FindProduct and FindDevice find exactly the model's records, with
//    their current hub host, owner, status and version (a disabled or deleted device
//    is never found enabled; a key regeneration is never lost);
//  - FindTenantByHubHost (case-insensitive) names exactly the tenant that holds the
//    host now, or nothing;
//  - a registrar write never replaces a device version at least as new, and never
//    brings back a device removed up to kRemovedMemory ago (on the injected clock);
//  - after BeginSnapshot ... EndSnapshot, what the snapshot did not copy is gone and
//    what it copied (or a registrar wrote meanwhile) stays.
// As the registry does, hub hosts are unique among tenants (lower-cased).
//
// Input: a sequence of operations, an opcode byte and small operand bytes. Opcodes
// (mod 11): 0-8 as in Step, 9 a clock step, 10 a clear.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/clock.h"
#include "services/common/fuzz_check.h"
#include "services/identity/directory_cache.h"

namespace {

namespace reg = ::iotauth::registry::v1;
using iotauth::identity::DirectoryCache;

constexpr absl::string_view kTenants[] = {"t1", "t2", "t3"};
constexpr absl::string_view kHosts[] = {"hub1.example.net", "HUB1.example.net", "hub2.example.net",
                                        ""};
constexpr absl::string_view kProducts[] = {"p1", "p2", "p3"};
constexpr absl::string_view kDevices[] = {"d1", "d2", "d3"};
constexpr absl::string_view kKeys[] = {"cGFzc3dvcmQxcGFzc3dvcmQx", "c2Vjb25kYXJ5c2Vjb25kYXJ5", ""};

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  uint8_t Byte() { return p_ == end_ ? 0 : *p_++; }
  template <size_t N>
  absl::string_view Pick(const absl::string_view (&table)[N]) {
    return table[Byte() % N];
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

struct ModelDevice {
  reg::DeviceStatus status;
  int64_t version;
  std::string product_key;
  std::string primary_key;
};

struct Model {
  std::map<std::string, std::string> tenants;   // id -> hub host (lower case)
  std::map<std::string, std::string> products;  // key -> tenant
  std::map<std::pair<std::string, std::string>, ModelDevice> devices;
  std::map<std::pair<std::string, std::string>, absl::Time> removed_at;
  // Open snapshot: what it (or a registrar) has written since it began.
  bool in_snapshot = false;
  std::set<std::string> snap_tenants, snap_products;
  std::set<std::pair<std::string, std::string>> snap_devices;
};

reg::Device MakeDevice(Reader& in, absl::string_view tenant, absl::string_view id, ModelDevice* m) {
  reg::Device d;
  d.set_tenant_id(std::string(tenant));
  d.set_device_id(std::string(id));
  d.set_product_key(std::string(in.Pick(kProducts)));
  const uint8_t flags = in.Byte();
  d.set_status((flags & 1) != 0 ? reg::DEVICE_STATUS_DISABLED : reg::DEVICE_STATUS_ENABLED);
  const int64_t version = in.Byte() % 8;
  if (version != 0) d.set_etag(absl::StrCat(version));
  const absl::string_view key = in.Pick(kKeys);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(std::string(key));
  *m = {d.status(), version, d.product_key(), std::string(key)};
  return d;
}

// The cache against the model, for every name the input can use.
void CheckAll(const DirectoryCache& cache, const Model& m) {
  for (absl::string_view t : kTenants) {
    auto rec = cache.FindTenant(t);
    auto it = m.tenants.find(std::string(t));
    IOTAUTH_FUZZ_CHECK((rec != nullptr) == (it != m.tenants.end()),
                       "tenant present as in the registry");
    if (rec != nullptr) {
      IOTAUTH_FUZZ_CHECK(rec->hub_host == it->second, "tenant's current hub host");
    }
  }
  for (absl::string_view h : kHosts) {
    if (h.empty()) continue;
    const std::string lower = absl::AsciiStrToLower(h);
    std::string holder;
    for (const auto& [id, host] : m.tenants) {
      if (host == lower) holder = id;
    }
    auto rec = cache.FindTenantByHubHost(lower);
    IOTAUTH_FUZZ_CHECK((rec != nullptr) == !holder.empty(), "hub host mapped exactly while held");
    if (rec != nullptr) {
      IOTAUTH_FUZZ_CHECK(rec->id == holder && rec->hub_host == lower, "hub host names its holder");
    }
  }
  for (absl::string_view p : kProducts) {
    auto rec = cache.FindProduct(p);
    auto it = m.products.find(std::string(p));
    IOTAUTH_FUZZ_CHECK((rec != nullptr) == (it != m.products.end()),
                       "product present as in the registry");
    if (rec != nullptr) IOTAUTH_FUZZ_CHECK(rec->tenant_id == it->second, "product's tenant");
  }
  for (absl::string_view t : kTenants) {
    for (absl::string_view d : kDevices) {
      auto rec = cache.FindDevice(t, d);
      auto it = m.devices.find({std::string(t), std::string(d)});
      IOTAUTH_FUZZ_CHECK((rec != nullptr) == (it != m.devices.end()),
                         "device present as in the registry");
      if (rec == nullptr) continue;
      IOTAUTH_FUZZ_CHECK(rec->tenant_id == t && rec->device_id == d, "the device asked for");
      IOTAUTH_FUZZ_CHECK(rec->status == it->second.status, "device status (disable takes effect)");
      IOTAUTH_FUZZ_CHECK(rec->version == it->second.version, "device version");
      IOTAUTH_FUZZ_CHECK(rec->product_key == it->second.product_key, "device product");
      IOTAUTH_FUZZ_CHECK(rec->primary_key.has_key() == !it->second.primary_key.empty(),
                         "device key present exactly when set (regeneration not lost)");
    }
  }
}

void Step(Reader& in, iotauth::FakeClock* clock, DirectoryCache* cache, Model* m) {
  switch (in.Byte() % 11) {
    case 0: {  // the change stream: a tenant created or updated
      const std::string id(in.Pick(kTenants));
      const std::string host = absl::AsciiStrToLower(in.Pick(kHosts));
      for (const auto& [other, h] : m->tenants) {
        if (other != id && !host.empty() && h == host) return;  // the registry refuses
      }
      reg::Tenant t;
      t.set_id(id);
      t.set_hub_host(host);
      (void)cache->UpsertTenant(t);
      m->tenants[id] = host;
      if (m->in_snapshot) m->snap_tenants.insert(id);
      break;
    }
    case 1: {
      const std::string id(in.Pick(kTenants));
      cache->RemoveTenant(id);
      m->tenants.erase(id);
      break;
    }
    case 2: {
      const std::string key(in.Pick(kProducts));
      reg::Product p;
      p.set_product_key(key);
      p.set_tenant_id(std::string(in.Pick(kTenants)));
      (void)cache->UpsertProduct(p);
      m->products[key] = p.tenant_id();
      if (m->in_snapshot) m->snap_products.insert(key);
      break;
    }
    case 3: {
      const std::string key(in.Pick(kProducts));
      cache->RemoveProduct(key);
      m->products.erase(key);
      break;
    }
    case 4: {  // the change stream: a device created, updated, disabled, re-keyed
      const std::string t(in.Pick(kTenants));
      const std::string d(in.Pick(kDevices));
      ModelDevice md;
      const reg::Device dev = MakeDevice(in, t, d, &md);
      (void)cache->UpsertDevice(dev);
      m->devices[{t, d}] = md;
      if (m->in_snapshot) m->snap_devices.insert({t, d});
      break;
    }
    case 5: {
      const std::string t(in.Pick(kTenants));
      const std::string d(in.Pick(kDevices));
      cache->RemoveDevice(t, d);
      m->devices.erase({t, d});
      m->removed_at[{t, d}] = clock->Now();
      break;
    }
    case 6: {  // the registrar: a device enrolled on its first connect
      const std::string t(in.Pick(kTenants));
      const std::string d(in.Pick(kDevices));
      ModelDevice md;
      const reg::Device dev = MakeDevice(in, t, d, &md);
      const absl::Status st = cache->UpsertRegisteredDevice(dev);
      auto it = m->devices.find({t, d});
      auto removed = m->removed_at.find({t, d});
      const bool refused = (removed != m->removed_at.end() &&
                            removed->second + DirectoryCache::kRemovedMemory >= clock->Now()) ||
                           (it != m->devices.end() && it->second.version >= md.version);
      IOTAUTH_FUZZ_CHECK(absl::IsFailedPrecondition(st) == refused,
                         "registrar write refused exactly when removed lately or not newer");
      IOTAUTH_FUZZ_CHECK(st.ok() || refused, "a valid device is written");
      if (absl::IsFailedPrecondition(st)) break;
      m->devices[{t, d}] = md;
      if (m->in_snapshot) m->snap_devices.insert({t, d});
      break;
    }
    case 7:
      cache->BeginSnapshot();
      m->in_snapshot = true;
      m->snap_tenants.clear();
      m->snap_products.clear();
      m->snap_devices.clear();
      break;
    case 8: {
      cache->EndSnapshot();
      if (!m->in_snapshot) break;  // no BeginSnapshot: nothing removed
      m->in_snapshot = false;
      for (auto it = m->devices.begin(); it != m->devices.end();) {
        it = m->snap_devices.count(it->first) != 0 ? std::next(it) : m->devices.erase(it);
      }
      for (auto it = m->products.begin(); it != m->products.end();) {
        it = m->snap_products.count(it->first) != 0 ? std::next(it) : m->products.erase(it);
      }
      for (auto it = m->tenants.begin(); it != m->tenants.end();) {
        it = m->snap_tenants.count(it->first) != 0 ? std::next(it) : m->tenants.erase(it);
      }
      break;
    }
    case 9:  // the clock moves on: 0 to 15 s (a removal is remembered 10 s)
      clock->Advance(absl::Seconds(in.Byte() % 16));
      break;
    default: {
      cache->Clear();
      m->tenants.clear();
      m->products.clear();
      m->devices.clear();
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  Reader in(data, size);
  iotauth::FakeClock clock;
  DirectoryCache::Options options;
  options.shards = 4;
  options.clock = &clock;
  DirectoryCache cache(options);
  Model m;
  while (!in.empty()) {
    Step(in, &clock, &cache, &m);
    CheckAll(cache, m);
  }
  return 0;
}
