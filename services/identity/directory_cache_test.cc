#include "services/identity/directory_cache.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {
namespace {

std::unique_ptr<DirectoryCache> NewCache() {
  auto c = DirectoryCache::Create({});
  EXPECT_TRUE(c.ok());
  return *std::move(c);
}

registry::Device MakeDevice(const std::string& tenant, const std::string& id) {
  registry::Device d;
  d.set_tenant_id(tenant);
  d.set_device_id(id);
  d.set_product_key("pk");
  d.set_status(registry::DEVICE_STATUS_ENABLED);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key("cGFzc3dvcmQ=");
  return d;
}

// True when `k` was scheduled from the raw key `raw` (same MAC as the EVP path).
bool IsKey(const PrecomputedHmacSha256& k, absl::string_view raw) {
  const absl::string_view parts[] = {"probe"};
  MacValue want;
  if (!HmacCompute(HmacAlgorithm::kSha256, raw, "probe", &want).ok()) return false;
  return k.Verify(parts, want.view());
}

TEST(DirectoryCacheTest, TenantsByIdAndHost) {
  auto cache = NewCache();
  registry::Tenant t;
  t.set_id("t1");
  t.set_hub_host("Hub1.Example.com");
  auto* p = t.add_policies();
  p->set_name("svc");
  p->set_primary_key("cGFzc3dvcmQ=");
  ASSERT_TRUE(cache->UpsertTenant(t).ok());
  ASSERT_NE(cache->FindTenant("t1"), nullptr);
  auto by_host = cache->FindTenantByHubHost("HUB1.example.COM");
  ASSERT_NE(by_host, nullptr);
  EXPECT_EQ(by_host->id, "t1");
  ASSERT_NE(by_host->FindPolicy("svc"), nullptr);
  EXPECT_TRUE(IsKey(by_host->FindPolicy("svc")->primary_key, "password"));  // decoded
  EXPECT_FALSE(by_host->FindPolicy("svc")->secondary_key.has_key());
  EXPECT_EQ(by_host->FindPolicy("other"), nullptr);

  // Changing the host drops the old mapping.
  t.set_hub_host("hub2.example.com");
  ASSERT_TRUE(cache->UpsertTenant(t).ok());
  EXPECT_EQ(cache->FindTenantByHubHost("hub1.example.com"), nullptr);
  EXPECT_NE(cache->FindTenantByHubHost("hub2.example.com"), nullptr);
  cache->RemoveTenant("t1");
  EXPECT_EQ(cache->FindTenant("t1"), nullptr);
  EXPECT_EQ(cache->FindTenantByHubHost("hub2.example.com"), nullptr);
}

TEST(DirectoryCacheTest, DevicesAreScopedByTenantAndKeysDecoded) {
  auto cache = NewCache();
  ASSERT_TRUE(cache->UpsertDevice(MakeDevice("t1", "d1")).ok());
  auto d = cache->FindDevice("t1", "d1");
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(IsKey(d->primary_key, "password"));
  EXPECT_FALSE(IsKey(d->primary_key, "passwore"));
  EXPECT_EQ(d->triple_secret, "cGFzc3dvcmQ=");
  EXPECT_TRUE(IsKey(d->triple_key, "cGFzc3dvcmQ="));
  EXPECT_EQ(cache->FindDevice("t2", "d1"), nullptr);
  // No ambiguity between ("t1", "d1") and ("t", "1d1")-style splits.
  EXPECT_EQ(cache->FindDevice("t", "1\0d1"), nullptr);

  // A reader holding the old record keeps a consistent view across an update.
  auto held = cache->FindDevice("t1", "d1");
  auto disabled = MakeDevice("t1", "d1");
  disabled.set_status(registry::DEVICE_STATUS_DISABLED);
  ASSERT_TRUE(cache->UpsertDevice(disabled).ok());
  EXPECT_EQ(held->status, registry::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(cache->FindDevice("t1", "d1")->status, registry::DEVICE_STATUS_DISABLED);
  cache->RemoveDevice("t1", "d1");
  EXPECT_EQ(cache->FindDevice("t1", "d1"), nullptr);
  EXPECT_EQ(cache->GetStats().devices, 0U);
}

TEST(DirectoryCacheTest, ARegistrarsWriteNeverUndoesTheChangeStream) {
  auto cache = NewCache();
  auto at = [](registry::Device d, int64_t etag, registry::DeviceStatus status) {
    d.set_etag(absl::StrCat(etag));
    d.set_status(status);
    return d;
  };
  const registry::Device d1 = MakeDevice("t1", "d1");
  // The registrar created it at version 5; the stream then disabled it (version 6)
  // before the registrar's own write arrived: that write must not re-enable it.
  ASSERT_TRUE(cache->UpsertDevice(at(d1, 6, registry::DEVICE_STATUS_DISABLED)).ok());
  EXPECT_EQ(cache->UpsertRegisteredDevice(at(d1, 5, registry::DEVICE_STATUS_ENABLED)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->FindDevice("t1", "d1")->status, registry::DEVICE_STATUS_DISABLED);
  // A newer version than the cache's goes in.
  ASSERT_TRUE(cache->UpsertRegisteredDevice(at(d1, 7, registry::DEVICE_STATUS_ENABLED)).ok());
  EXPECT_EQ(cache->FindDevice("t1", "d1")->version, 7);
  // Deleted by the stream: the registrar's late write does not bring it back.
  cache->RemoveDevice("t1", "d1");
  EXPECT_EQ(cache->UpsertRegisteredDevice(at(d1, 8, registry::DEVICE_STATUS_ENABLED)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->FindDevice("t1", "d1"), nullptr);
  // The stream itself always wins (a re-created device).
  ASSERT_TRUE(cache->UpsertDevice(at(d1, 9, registry::DEVICE_STATUS_ENABLED)).ok());
  EXPECT_NE(cache->FindDevice("t1", "d1"), nullptr);
  // A device the cache never had goes in.
  ASSERT_TRUE(
      cache->UpsertRegisteredDevice(at(MakeDevice("t1", "d2"), 3, registry::DEVICE_STATUS_ENABLED))
          .ok());
  EXPECT_NE(cache->FindDevice("t1", "d2"), nullptr);
}

TEST(DirectoryCacheTest, ARemovalIsRememberedForKRemovedMemoryOnTheInjectedClock) {
  FakeClock clock;
  DirectoryCache::Options o;
  o.clock = &clock;
  auto cache = *DirectoryCache::Create(o);
  registry::Device d1 = MakeDevice("t1", "d1");
  d1.set_etag("4");
  ASSERT_TRUE(cache->UpsertDevice(d1).ok());
  cache->RemoveDevice("t1", "d1");
  d1.set_etag("5");
  // A registrar's write that was under way when the device was deleted.
  clock.Advance(DirectoryCache::kRemovedMemory);
  EXPECT_EQ(cache->UpsertRegisteredDevice(d1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->FindDevice("t1", "d1"), nullptr);
  // Past the memory, a new enrollment of the same id is a new device.
  clock.Advance(absl::Nanoseconds(1));
  EXPECT_TRUE(cache->UpsertRegisteredDevice(d1).ok());
  EXPECT_NE(cache->FindDevice("t1", "d1"), nullptr);
}

TEST(DirectoryCacheTest, InvalidKeyIsStoredEmptyAndReportedWithoutValue) {
  auto cache = NewCache();
  auto d = MakeDevice("t1", "d1");
  d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key("s3cr3t!!");
  absl::Status s = cache->UpsertDevice(d);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().find("s3cr3t"), absl::string_view::npos);
  auto rec = cache->FindDevice("t1", "d1");
  ASSERT_NE(rec, nullptr);
  EXPECT_FALSE(rec->secondary_key.has_key());
  EXPECT_TRUE(IsKey(rec->primary_key, "password"));
}

TEST(DirectoryCacheTest, ProductsAndGroups) {
  auto cache = NewCache();
  registry::Product p;
  p.set_tenant_id("t1");
  p.set_product_key("pk");
  p.add_allowed_credential_types(registry::CREDENTIAL_TYPE_SAS);
  ASSERT_TRUE(cache->UpsertProduct(p).ok());
  auto pr = cache->FindProduct("pk");
  ASSERT_NE(pr, nullptr);
  EXPECT_TRUE(pr->Allows(registry::CREDENTIAL_TYPE_SAS));
  EXPECT_FALSE(pr->Allows(registry::CREDENTIAL_TYPE_DEVICE_TRIPLE));

  registry::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g2");
  g.set_group_key("cGFzc3dvcmQ=");
  g.set_enabled(true);
  ASSERT_TRUE(cache->UpsertEnrollmentGroup(g).ok());
  g.set_id("g1");
  ASSERT_TRUE(cache->UpsertEnrollmentGroup(g).ok());
  g.set_id("g3");
  g.set_enabled(false);
  ASSERT_TRUE(cache->UpsertEnrollmentGroup(g).ok());
  auto groups = cache->FindEnrollmentGroups("t1", "reg");
  ASSERT_EQ(groups->size(), 2U);
  EXPECT_EQ((*groups)[0]->id, "g1");
  // The group key is held scheduled: it MACs as the decoded key does.
  MacValue held;
  MacValue expected;
  ASSERT_TRUE((*groups)[0]->group_key.Compute({"reg"}, &held));
  ASSERT_TRUE(PrecomputedHmacSha256::ForKey("password").Compute({"reg"}, &expected));
  EXPECT_EQ(held.view(), expected.view());
  cache->RemoveEnrollmentGroup("t1", "g1");
  EXPECT_EQ(cache->FindEnrollmentGroups("t1", "reg")->size(), 1U);
  EXPECT_TRUE(cache->FindEnrollmentGroups("t2", "reg")->empty());
}

// A full resync (BeginSnapshot, upsert what the registry has, EndSnapshot) keeps
// every record readable until the end, then drops exactly what was not upserted.
TEST(DirectoryCacheTest, SnapshotKeepsRecordsReadableAndSweepsTheRest) {
  auto cache = NewCache();
  registry::Tenant t1;
  t1.set_id("t1");
  t1.set_hub_host("hub1.example.com");
  registry::Tenant t2;
  t2.set_id("t2");
  t2.set_hub_host("hub2.example.com");
  registry::Product p1;
  p1.set_tenant_id("t1");
  p1.set_product_key("pk1");
  registry::Product p2 = p1;
  p2.set_product_key("pk2");
  registry::EnrollmentGroup g1;
  g1.set_tenant_id("t1");
  g1.set_id("g1");
  g1.set_group_key("cGFzc3dvcmQ=");
  g1.set_enabled(true);
  registry::EnrollmentGroup g2 = g1;
  g2.set_id("g2");
  for (const auto& t : {t1, t2}) ASSERT_TRUE(cache->UpsertTenant(t).ok());
  for (const auto& p : {p1, p2}) ASSERT_TRUE(cache->UpsertProduct(p).ok());
  for (const auto& g : {g1, g2}) ASSERT_TRUE(cache->UpsertEnrollmentGroup(g).ok());
  for (const char* d : {"d1", "d2"}) ASSERT_TRUE(cache->UpsertDevice(MakeDevice("t1", d)).ok());

  cache->BeginSnapshot();
  // The registry now has t1, pk1, g1 and d1 only.
  ASSERT_TRUE(cache->UpsertTenant(t1).ok());
  ASSERT_TRUE(cache->UpsertProduct(p1).ok());
  ASSERT_TRUE(cache->UpsertEnrollmentGroup(g1).ok());
  ASSERT_TRUE(cache->UpsertDevice(MakeDevice("t1", "d1")).ok());
  // A device registered on its first connect while the snapshot runs.
  ASSERT_TRUE(cache->UpsertDevice(MakeDevice("t1", "d3")).ok());
  // Until the end, nothing is missing.
  EXPECT_NE(cache->FindDevice("t1", "d2"), nullptr);
  EXPECT_NE(cache->FindTenantByHubHost("hub2.example.com"), nullptr);
  EXPECT_EQ(cache->FindEnrollmentGroups("t1", "reg")->size(), 2U);

  cache->EndSnapshot();
  EXPECT_NE(cache->FindDevice("t1", "d1"), nullptr);
  EXPECT_NE(cache->FindDevice("t1", "d3"), nullptr);
  EXPECT_EQ(cache->FindDevice("t1", "d2"), nullptr);
  EXPECT_NE(cache->FindProduct("pk1"), nullptr);
  EXPECT_EQ(cache->FindProduct("pk2"), nullptr);
  EXPECT_NE(cache->FindTenant("t1"), nullptr);
  EXPECT_NE(cache->FindTenantByHubHost("hub1.example.com"), nullptr);
  EXPECT_EQ(cache->FindTenant("t2"), nullptr);
  EXPECT_EQ(cache->FindTenantByHubHost("hub2.example.com"), nullptr);
  auto groups = cache->FindEnrollmentGroups("t1", "reg");
  ASSERT_EQ(groups->size(), 1U);
  EXPECT_EQ((*groups)[0]->id, "g1");
  DirectoryCache::Stats st = cache->GetStats();
  EXPECT_EQ(st.devices, 2U);
  EXPECT_EQ(st.tenants, 1U);
  EXPECT_EQ(st.products, 1U);

  // Without BeginSnapshot, EndSnapshot removes nothing.
  cache->EndSnapshot();
  EXPECT_EQ(cache->GetStats().devices, 2U);
  // A snapshot that brings nothing empties the cache.
  cache->BeginSnapshot();
  cache->EndSnapshot();
  st = cache->GetStats();
  EXPECT_EQ(st.devices + st.tenants + st.products, 0U);
  EXPECT_TRUE(cache->FindEnrollmentGroups("t1", "reg")->empty());
}

TEST(DirectoryCacheTest, ConcurrentReadersAndWriters) {
  auto cache = NewCache();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(cache->UpsertDevice(MakeDevice("t", absl::StrCat(i))).ok());
  }
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int n = 0; n < 20000; ++n) {
        const std::string id = absl::StrCat(n % 1000);
        if (t == 0 && n % 10 == 0) {
          cache->UpsertDevice(MakeDevice("t", id)).IgnoreError();
        } else {
          auto d = cache->FindDevice("t", id);
          ASSERT_NE(d, nullptr);
          ASSERT_EQ(d->device_id, id);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  auto stats = cache->GetStats();
  EXPECT_EQ(stats.devices, 1000U);
  EXPECT_GT(stats.bytes_per_device(), 200.0);
  EXPECT_LT(stats.bytes_per_device(), 2000.0);
}

}  // namespace
}  // namespace iotauth::identity
