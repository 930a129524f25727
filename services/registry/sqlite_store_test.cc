#include "services/registry/sqlite_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/registry/test_store.h"
#include "services/registry/validation.h"

namespace iotauth::registry {
namespace {

std::shared_ptr<const SecretBox> MakeBox(char fill, std::vector<std::string> previous = {}) {
  auto box = SecretBox::Create(std::string(32, fill), std::move(previous));
  EXPECT_TRUE(box.ok());
  return std::shared_ptr<const SecretBox>(std::move(*box));
}

std::string Key(char fill, size_t n = 32) { return crypto::Base64Encode(std::string(n, fill)); }

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/store_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string cmd = "rm -rf '" + dir_ + "' && mkdir -p '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    path_ = dir_ + "/registry.db";
    box_ = MakeBox('m');
    Reopen();
  }

  void Reopen(int target = SqliteStore::kLatestSchemaVersion) {
    store_.reset();
    SqliteStore::Options o;
    o.path = path_;
    o.secret_box = box_;
    o.clock = &clock_;
    o.target_schema_version = target;
    auto s = SqliteStore::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  void Seed() {
    v1::Tenant t;
    t.set_id("t1");
    t.set_display_name("Tenant one");
    ASSERT_TRUE(store_->CreateTenant(t).ok());
    for (const char* key : {"p1", "p2"}) {
      v1::Product p;
      p.set_tenant_id("t1");
      p.set_product_key(key);
      ASSERT_TRUE(store_->CreateProduct(p).ok());
    }
  }

  static v1::Device MakeDevice(const std::string& id, const std::string& product = "p1") {
    v1::Device d;
    d.set_tenant_id("t1");
    d.set_device_id(id);
    d.set_product_key(product);
    auto* k = d.mutable_credentials()->mutable_symmetric_key();
    k->set_primary_key(Key('a'));
    k->set_secondary_key(Key('b'));
    return d;
  }

  std::string dir_;
  std::string path_;
  FakeClock clock_;
  std::shared_ptr<const SecretBox> box_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, EachTenantHasItsOwnHubHost) {
  // SAS tokens resolve their tenant from the hub host: two tenants must not share one.
  v1::Tenant a;
  a.set_id("a");
  a.set_hub_host("hub.example.net");
  ASSERT_TRUE(store_->CreateTenant(a).ok());
  v1::Tenant b;
  b.set_id("b");
  b.set_hub_host("HUB.example.net");
  absl::Status taken = store_->CreateTenant(b).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kFailedPrecondition) << taken;
  EXPECT_NE(taken.message().find("hub.example.net"), absl::string_view::npos) << taken;
  EXPECT_EQ(store_->GetTenant("b", Secrets::kOmit).status().code(), absl::StatusCode::kNotFound);
  b.set_hub_host("other.example.net");
  ASSERT_TRUE(store_->CreateTenant(b).ok());
  b.set_hub_host("hub.example.net");
  EXPECT_EQ(store_->UpdateTenant(b, "").status().code(), absl::StatusCode::kFailedPrecondition);
  a.set_display_name("renamed, same host");
  EXPECT_TRUE(store_->UpdateTenant(a, "").ok());  // a tenant keeps its own host
  v1::Tenant c;                                   // no hub host: nothing to share
  c.set_id("c");
  EXPECT_TRUE(store_->CreateTenant(c).ok());
  c.set_id("d");
  EXPECT_TRUE(store_->CreateTenant(c).ok());
}

TEST_F(SqliteStoreTest, TenantCrudAndEtags) {
  v1::Tenant t;
  t.set_id("t1");
  t.set_display_name("one");
  auto* p = t.add_policies();
  p->set_name("service");
  p->set_primary_key(Key('x'));
  p->set_secondary_key(Key('y'));
  auto created = store_->CreateTenant(t);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_FALSE(created->etag().empty());
  EXPECT_EQ(created->create_time().seconds(), 1700000000);
  EXPECT_EQ(store_->CreateTenant(t).status().code(), absl::StatusCode::kAlreadyExists);

  auto hidden = store_->GetTenant("t1", Secrets::kOmit);
  ASSERT_TRUE(hidden.ok());
  EXPECT_EQ(hidden->policies(0).name(), "service");
  EXPECT_TRUE(hidden->policies(0).primary_key().empty());
  auto shown = store_->GetTenant("t1", Secrets::kInclude);
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->policies(0).primary_key(), Key('x'));
  EXPECT_EQ(shown->policies(0).secondary_key(), Key('y'));

  clock_.Advance(absl::Seconds(5));
  v1::Tenant upd = *shown;
  upd.set_display_name("uno");
  EXPECT_EQ(store_->UpdateTenant(upd, "bogus").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto updated = store_->UpdateTenant(upd, created->etag());
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_NE(updated->etag(), created->etag());
  EXPECT_EQ(updated->create_time().seconds(), 1700000000);
  EXPECT_EQ(updated->update_time().seconds(), 1700000005);
  // The old etag no longer matches.
  EXPECT_EQ(store_->UpdateTenant(upd, created->etag()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->DeleteTenant("t1", created->etag()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->DeleteTenant("t1", updated->etag()).ok());
  EXPECT_EQ(store_->GetTenant("t1", Secrets::kOmit).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteTenant("t1", "").code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, ProductAndDeviceRules) {
  Seed();
  v1::Product other;
  other.set_tenant_id("t1");
  other.set_product_key("p1");
  EXPECT_EQ(store_->CreateProduct(other).status().code(), absl::StatusCode::kAlreadyExists);
  other.set_tenant_id("nope");
  other.set_product_key("p9");
  auto s = store_->CreateProduct(other).status();
  EXPECT_EQ(ReasonOf(s), "UNKNOWN_TENANT");

  EXPECT_EQ(ReasonOf(store_->CreateDevice(MakeDevice("d1", "p9")).status()), "UNKNOWN_PRODUCT");
  auto d = store_->CreateDevice(MakeDevice("d1"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->status(), v1::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(store_->CreateDevice(MakeDevice("d1")).status().code(),
            absl::StatusCode::kAlreadyExists);

  // Scoped by tenant: another tenant's product is not found.
  EXPECT_EQ(store_->GetProduct("t2", "p1", Secrets::kOmit).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->FindProduct("p1", Secrets::kOmit).ok());

  EXPECT_EQ(ReasonOf(store_->DeleteProduct("t1", "p1", "")), "PRODUCT_IN_USE");
  EXPECT_EQ(ReasonOf(store_->DeleteTenant("t1", "")), "TENANT_NOT_EMPTY");
  EXPECT_TRUE(store_->DeleteProduct("t1", "p2", "").ok());

  auto hidden = store_->GetDevice("t1", "d1", Secrets::kOmit);
  ASSERT_TRUE(hidden.ok());
  EXPECT_FALSE(hidden->credentials().has_symmetric_key());
  auto shown = store_->GetDevice("t1", "d1", Secrets::kInclude);
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->credentials().symmetric_key().primary_key(), Key('a'));
  EXPECT_EQ(shown->credentials().symmetric_key().secondary_key(), Key('b'));

  EXPECT_EQ(store_->DeleteDevice("t1", "d1", "wrong").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->GetDevice("t1", "d1", Secrets::kOmit).ok());
  EXPECT_TRUE(store_->DeleteDevice("t1", "d1", shown->etag()).ok());
  EXPECT_EQ(store_->GetDevice("t1", "d1", Secrets::kOmit).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SqliteStoreTest, GroupsAndCas) {
  Seed();
  v1::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g1");
  g.set_product_key("p1");
  g.set_group_key(Key('g'));
  g.set_enabled(true);
  auto created = store_->CreateEnrollmentGroup(g);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(store_->GetEnrollmentGroup("t1", "g1", Secrets::kOmit)->group_key().empty());
  EXPECT_EQ(store_->GetEnrollmentGroup("t1", "g1", Secrets::kInclude)->group_key(), Key('g'));
  g.set_enabled(false);
  auto updated = store_->UpdateEnrollmentGroup(g, created->etag());
  ASSERT_TRUE(updated.ok());
  EXPECT_FALSE(updated->enabled());
  auto list = store_->ListEnrollmentGroups("t1", PageRequest{10, ""});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_TRUE(list->items[0].group_key().empty());

  v1::CaCertificate ca;
  ca.set_tenant_id("t1");
  ca.set_id("ca1");
  ca.set_certificate_pem("-----BEGIN CERTIFICATE-----...");
  ca.set_sha256_fingerprint(std::string(64, 'a'));
  ca.set_status(v1::CA_STATUS_UNVERIFIED);
  auto c = store_->CreateCaCertificate(ca);
  ASSERT_TRUE(c.ok()) << c.status();
  ca.set_id("ca2");  // same fingerprint
  EXPECT_EQ(store_->CreateCaCertificate(ca).status().code(), absl::StatusCode::kAlreadyExists);
  v1::CaCertificate verify = *c;
  verify.set_status(v1::CA_STATUS_VERIFIED);
  verify.set_certificate_pem("tampered");
  auto v = store_->UpdateCaCertificate(verify, c->etag());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->status(), v1::CA_STATUS_VERIFIED);
  EXPECT_EQ(v->certificate_pem(), ca.certificate_pem());  // immutable
  EXPECT_TRUE(store_->DeleteCaCertificate("t1", "ca1", v->etag()).ok());
}

TEST_F(SqliteStoreTest, PaginationVisitsEveryDeviceOnceInOrder) {
  Seed();
  std::vector<v1::Device> batch;
  batch.reserve(25);
  for (int i = 0; i < 25; ++i) batch.push_back(MakeDevice(absl::StrCat("dev-", 100 + i)));
  auto r = store_->CreateDevices("t1", batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inserted, 25);
  std::vector<std::string> seen;
  PageRequest page{10, ""};
  int pages = 0;
  for (;;) {
    auto p = store_->ListDevices("t1", DeviceFilter(), page, Secrets::kOmit);
    ASSERT_TRUE(p.ok()) << p.status();
    ++pages;
    for (const auto& d : p->items) {
      seen.push_back(d.device_id());
      EXPECT_FALSE(d.credentials().has_symmetric_key());
    }
    if (!p->more) break;
    page.after_key = p->last_key;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) EXPECT_EQ(seen[i], absl::StrCat("dev-", 100 + i));
  // Exactly one page when the count equals the page size.
  auto exact = store_->ListDevices("t1", DeviceFilter(), PageRequest{25, ""}, Secrets::kOmit);
  ASSERT_TRUE(exact.ok());
  EXPECT_FALSE(exact->more);
}

TEST_F(SqliteStoreTest, Filters) {
  Seed();
  v1::Device a = MakeDevice("a", "p1");
  (*a.mutable_tags())["site"] = "north";
  (*a.mutable_tags())["floor"] = "1";
  v1::Device b = MakeDevice("b", "p2");
  (*b.mutable_tags())["site"] = "north";
  v1::Device c = MakeDevice("c", "p1");
  c.set_status(v1::DEVICE_STATUS_DISABLED);
  (*c.mutable_tags())["site"] = "south";
  for (const auto& d : {a, b, c}) ASSERT_TRUE(store_->CreateDevice(d).ok());

  auto ids = [&](const DeviceFilter& f) {
    std::vector<std::string> out;
    auto p = store_->ListDevices("t1", f, PageRequest{100, ""}, Secrets::kOmit);
    EXPECT_TRUE(p.ok()) << p.status();
    for (const auto& d : p->items) out.push_back(d.device_id());
    return out;
  };
  DeviceFilter f;
  f.product_key = "p1";
  EXPECT_EQ(ids(f), (std::vector<std::string>{"a", "c"}));
  f = DeviceFilter();
  f.status = v1::DEVICE_STATUS_DISABLED;
  EXPECT_EQ(ids(f), (std::vector<std::string>{"c"}));
  f = DeviceFilter();
  f.tags["site"] = "north";
  EXPECT_EQ(ids(f), (std::vector<std::string>{"a", "b"}));
  f.tags["floor"] = "1";
  EXPECT_EQ(ids(f), (std::vector<std::string>{"a"}));
  f = DeviceFilter();
  f.product_key = "p1";
  f.tags["site"] = "north";
  f.status = v1::DEVICE_STATUS_ENABLED;
  EXPECT_EQ(ids(f), (std::vector<std::string>{"a"}));

  // Tags follow updates.
  auto cur = store_->GetDevice("t1", "a", Secrets::kInclude);
  ASSERT_TRUE(cur.ok());
  (*cur->mutable_tags())["site"] = "east";
  ASSERT_TRUE(store_->UpdateDevice(*cur, cur->etag()).ok());
  f = DeviceFilter();
  f.tags["site"] = "north";
  EXPECT_EQ(ids(f), (std::vector<std::string>{"b"}));
  // Another tenant sees nothing.
  auto other = store_->ListDevices("t2", DeviceFilter(), PageRequest{100, ""}, Secrets::kOmit);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->items.empty());
}

TEST_F(SqliteStoreTest, BatchInsertReportsPerItemErrors) {
  Seed();
  ASSERT_TRUE(store_->CreateDevice(MakeDevice("exists")).ok());
  std::vector<v1::Device> batch = {MakeDevice("n1"), MakeDevice("exists"), MakeDevice("n2"),
                                   MakeDevice("n1"), MakeDevice("n3", "nope")};
  auto r = store_->CreateDevices("t1", batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inserted, 2);
  ASSERT_EQ(r->errors.size(), 3u);
  EXPECT_EQ(r->errors[0].index, 1u);
  EXPECT_EQ(ReasonOf(r->errors[0].status), "ALREADY_EXISTS");
  EXPECT_EQ(r->errors[1].index, 3u);
  EXPECT_EQ(ReasonOf(r->errors[1].status), "ALREADY_EXISTS");
  EXPECT_EQ(r->errors[2].index, 4u);
  EXPECT_EQ(ReasonOf(r->errors[2].status), "UNKNOWN_PRODUCT");
  EXPECT_TRUE(store_->GetDevice("t1", "n2", Secrets::kOmit).ok());
  auto secrets = store_->GetDevice("t1", "n1", Secrets::kInclude);
  ASSERT_TRUE(secrets.ok());
  EXPECT_EQ(secrets->credentials().symmetric_key().primary_key(), Key('a'));
}

TEST_F(SqliteStoreTest, ConcurrentUpdatesOnOneEtagExactlyOneWins) {
  Seed();
  auto d = store_->CreateDevice(MakeDevice("race"));
  ASSERT_TRUE(d.ok());
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    auto cur = store_->GetDevice("t1", "race", Secrets::kInclude);
    ASSERT_TRUE(cur.ok());
    std::atomic<int> ok{0};
    std::atomic<int> conflict{0};
    std::atomic<int> other{0};
    absl::Notification go;
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        v1::Device mine = *cur;
        (*mine.mutable_tags())["writer"] = absl::StrCat(i);
        go.WaitForNotification();
        auto r = store_->UpdateDevice(mine, cur->etag());
        if (r.ok()) {
          ++ok;
        } else if (r.status().code() == absl::StatusCode::kFailedPrecondition) {
          ++conflict;
        } else {
          ++other;
        }
      });
    }
    go.Notify();
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 1) << "round " << round;
    EXPECT_EQ(conflict.load(), kThreads - 1);
    EXPECT_EQ(other.load(), 0);
  }
}

TEST_F(SqliteStoreTest, MigrationsApplyOnceAndOnReopen) {
  // Start over with a file at schema version 1, as an older binary left it.
  store_.reset();
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path_ + suffix).c_str());
  Reopen(/*target=*/1);
  EXPECT_EQ(*store_->SchemaVersion(), 1);
  Seed();
  Reopen();
  EXPECT_EQ(*store_->SchemaVersion(), SqliteStore::kLatestSchemaVersion);
  EXPECT_TRUE(store_->GetTenant("t1", Secrets::kOmit).ok());
  Reopen();
  EXPECT_EQ(*store_->SchemaVersion(), SqliteStore::kLatestSchemaVersion);
  // The change cursor survives reopening: new cursors keep increasing.
  int64_t before = store_->LatestCursor();
  EXPECT_GT(before, 0);
  ASSERT_TRUE(store_->CreateDevice(MakeDevice("after-reopen")).ok());
  EXPECT_EQ(store_->LatestCursor(), before + 1);

  // A file from a newer binary is refused.
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "INSERT INTO schema_version(version, applied_us) VALUES(99, 0)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  SqliteStore::Options o;
  o.path = path_;
  o.secret_box = box_;
  o.clock = &clock_;
  EXPECT_EQ(SqliteStore::Open(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteStoreTest, ChangeLogOrderTypesAndTenantFilter) {
  int64_t start = store_->LatestCursor();
  Seed();  // tenant + 2 products
  auto d = store_->CreateDevice(MakeDevice("d1"));
  ASSERT_TRUE(d.ok());
  v1::Device upd = *d;
  upd.set_status(v1::DEVICE_STATUS_DISABLED);
  auto u1 = store_->UpdateDevice(upd, d->etag());
  ASSERT_TRUE(u1.ok());
  upd = *u1;
  upd.mutable_credentials()->mutable_symmetric_key()->set_primary_key(Key('z'));
  auto u2 = store_->UpdateDevice(upd, "");
  ASSERT_TRUE(u2.ok());
  upd = *u2;
  upd.set_status(v1::DEVICE_STATUS_ENABLED);
  auto u3 = store_->UpdateDevice(upd, "");
  ASSERT_TRUE(u3.ok());
  (*upd.mutable_tags())["x"] = "y";
  auto u4 = store_->UpdateDevice(upd, "");
  ASSERT_TRUE(u4.ok());
  ASSERT_TRUE(store_->DeleteDevice("t1", "d1", "").ok());
  v1::Tenant t2;
  t2.set_id("t2");
  ASSERT_TRUE(store_->CreateTenant(t2).ok());

  auto all = store_->ReadChanges(start, 100, "");
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<v1::ChangeType> types;
  int64_t prev = start;
  for (const auto& e : all->events) {
    int64_t c = std::stoll(e.cursor());
    EXPECT_GT(c, prev);
    prev = c;
    types.push_back(e.type());
  }
  using CT = v1::ChangeType;
  EXPECT_EQ(types, (std::vector<CT>{v1::CHANGE_TYPE_CREATED, v1::CHANGE_TYPE_CREATED,
                                    v1::CHANGE_TYPE_CREATED, v1::CHANGE_TYPE_CREATED,
                                    v1::CHANGE_TYPE_DISABLED, v1::CHANGE_TYPE_CREDENTIALS_CHANGED,
                                    v1::CHANGE_TYPE_ENABLED, v1::CHANGE_TYPE_UPDATED,
                                    v1::CHANGE_TYPE_DELETED, v1::CHANGE_TYPE_CREATED}));
  EXPECT_EQ(all->events[3].resource_type(), v1::RESOURCE_TYPE_DEVICE);
  EXPECT_EQ(all->events[3].resource_id(), "d1");
  EXPECT_EQ(all->events[3].etag(), d->etag());
  EXPECT_EQ(all->events[8].etag(), "");
  EXPECT_EQ(all->next_cursor, store_->LatestCursor());

  // Limits page through the log.
  auto first = store_->ReadChanges(start, 3, "");
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->events.size(), 3u);
  auto rest = store_->ReadChanges(first->next_cursor, 100, "");
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->events.size(), all->events.size() - 3);

  // Tenant filter: only t2's event, and the cursor moves past everything examined.
  auto t2only = store_->ReadChanges(start, 100, "t2");
  ASSERT_TRUE(t2only.ok());
  ASSERT_EQ(t2only->events.size(), 1u);
  EXPECT_EQ(t2only->events[0].tenant_id(), "t2");
  EXPECT_EQ(t2only->next_cursor, store_->LatestCursor());
  auto none = store_->ReadChanges(store_->LatestCursor(), 100, "");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->events.empty());
  EXPECT_EQ(none->next_cursor, store_->LatestCursor());
  // A cursor this log never issued (another database's, say before a restore) is
  // refused, so the reader resyncs instead of waiting for the log to catch up.
  auto ahead = store_->ReadChanges(store_->LatestCursor() + 1, 100, "");
  EXPECT_EQ(ahead.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ReasonOf(ahead.status()), "CURSOR_UNKNOWN");

  // A failed mutation writes no change.
  int64_t latest = store_->LatestCursor();
  EXPECT_FALSE(store_->CreateTenant(t2).ok());
  EXPECT_EQ(store_->LatestCursor(), latest);
  EXPECT_TRUE(store_->ReadChanges(latest, 10, "")->events.empty());
}

TEST_F(SqliteStoreTest, PrunedCursorsExpire) {
  Seed();  // 3 changes at t0
  int64_t old_cursor = store_->LatestCursor() - 1;
  clock_.Advance(absl::Hours(2));
  ASSERT_TRUE(store_->CreateDevice(MakeDevice("late")).ok());
  auto pruned = store_->PruneChanges(clock_.Now() - absl::Hours(1));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 3);
  auto expired = store_->ReadChanges(old_cursor, 10, "");
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ReasonOf(expired.status()), "CURSOR_EXPIRED");
  auto retained = store_->ReadChanges(0, 10, "");
  ASSERT_TRUE(retained.ok()) << retained.status();
  ASSERT_EQ(retained->events.size(), 1u);
  EXPECT_EQ(retained->events[0].resource_id(), "late");
  EXPECT_EQ(*store_->PruneChanges(clock_.Now() - absl::Hours(1)), 0);
}

TEST_F(SqliteStoreTest, NotifierWakesWaitersPromptly) {
  Seed();
  int64_t cursor = store_->LatestCursor();
  std::atomic<int> listener_calls{0};
  int64_t id = store_->notifier().AddListener([&](int64_t) { ++listener_calls; });
  absl::Time woke;
  std::thread waiter([&] {
    EXPECT_TRUE(store_->notifier().WaitFor(cursor, absl::Seconds(10)));
    woke = absl::Now();
  });
  absl::SleepFor(absl::Milliseconds(50));
  absl::Time wrote = absl::Now();
  ASSERT_TRUE(store_->CreateDevice(MakeDevice("wake")).ok());
  waiter.join();
  EXPECT_LT(woke - wrote, absl::Milliseconds(500));
  EXPECT_EQ(listener_calls.load(), 1);
  store_->notifier().RemoveListener(id);
  EXPECT_FALSE(store_->notifier().WaitFor(store_->LatestCursor(), absl::Milliseconds(20)));
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(SqliteStoreTest, NoPlaintextSecretInDatabaseFiles) {
  Seed();
  // Distinctive secrets, each checked as base64 text and as raw decoded bytes.
  std::vector<std::string> secrets;
  for (int i = 0; i < 20; ++i) {
    std::string raw = absl::StrCat("RAWKEY-", i, "-", std::string(20, 'Q'));
    v1::Device d = MakeDevice(absl::StrCat("sec-", i));
    d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(crypto::Base64Encode(raw));
    d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(
        crypto::Base64Encode(raw + "2"));
    ASSERT_TRUE(store_->CreateDevice(d).ok());
    secrets.push_back(raw);
    secrets.push_back(crypto::Base64Encode(raw));
    secrets.push_back(crypto::Base64Encode(raw + "2"));
  }
  v1::Product p;
  p.set_tenant_id("t1");
  p.set_product_key("p-secret");
  p.set_product_secret(crypto::Base64Encode("PRODUCT-SECRET-RAW-BYTES"));
  ASSERT_TRUE(store_->CreateProduct(p).ok());
  secrets.push_back(p.product_secret());
  v1::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g");
  g.set_product_key("p1");
  g.set_group_key(crypto::Base64Encode("GROUP-KEY-RAW-BYTES-0123"));
  ASSERT_TRUE(store_->CreateEnrollmentGroup(g).ok());
  secrets.push_back(g.group_key());

  // Read the files while the store is open (the -wal holds recent commits), then
  // again after closing (checkpointed into the main file).
  for (int pass = 0; pass < 2; ++pass) {
    std::string bytes = ReadFileBytes(path_) + ReadFileBytes(path_ + "-wal");
    ASSERT_FALSE(bytes.empty());
    EXPECT_NE(bytes.find("sec-7"), std::string::npos) << "sanity: ids are stored in clear";
    for (const std::string& s : secrets) {
      EXPECT_EQ(bytes.find(s), std::string::npos) << "pass " << pass << " found a secret";
    }
    store_.reset();
  }
  Reopen();
  auto d = store_->GetDevice("t1", "sec-3", Secrets::kInclude);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->credentials().symmetric_key().primary_key(), secrets[9 + 1]);
}

TEST_F(SqliteStoreTest, CiphertextMovedToAnotherRowDoesNotOpen) {
  Seed();
  ASSERT_TRUE(store_->CreateDevice(MakeDevice("victim")).ok());
  v1::Device attacker = MakeDevice("attacker");
  attacker.mutable_credentials()->mutable_symmetric_key()->set_primary_key(Key('e'));
  ASSERT_TRUE(store_->CreateDevice(attacker).ok());
  store_.reset();
  ASSERT_TRUE(testing::CopySealedDeviceKey(path_, "primary_key", "attacker", "victim").ok());
  Reopen();
  EXPECT_EQ(store_->GetDevice("t1", "victim", Secrets::kInclude).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(store_->GetDevice("t1", "victim", Secrets::kOmit).ok());

  // A list with secrets (what ExportDevices reads) does not fail on the one row: the
  // victim comes marked, without keys; every other device comes with its keys.
  auto list = store_->ListDevices("t1", DeviceFilter(), PageRequest{100, ""}, Secrets::kInclude);
  ASSERT_TRUE(list.ok()) << list.status();
  int seen = 0;
  for (const v1::Device& d : list->items) {
    const v1::SymmetricKey& k = d.credentials().symmetric_key();
    if (d.device_id() == "victim") {
      ++seen;
      EXPECT_TRUE(d.keys_unreadable());
      EXPECT_TRUE(k.primary_key().empty());
      EXPECT_TRUE(k.secondary_key().empty());
      EXPECT_EQ(d.product_key(), "p1");  // the rest of the record is intact
    } else {
      EXPECT_FALSE(d.keys_unreadable()) << d.device_id();
      EXPECT_FALSE(k.primary_key().empty()) << d.device_id();
    }
    if (d.device_id() == "attacker") {
      ++seen;
      EXPECT_EQ(k.primary_key(), Key('e'));
    }
  }
  EXPECT_EQ(seen, 2);
  // Without secrets nothing is opened, so nothing is marked.
  auto bare = store_->ListDevices("t1", DeviceFilter(), PageRequest{100, ""}, Secrets::kOmit);
  ASSERT_TRUE(bare.ok()) << bare.status();
  for (const v1::Device& d : bare->items) EXPECT_FALSE(d.keys_unreadable()) << d.device_id();
}

TEST_F(SqliteStoreTest, RewrapMovesEverySecretToTheNewKey) {
  Seed();
  v1::Tenant t = *store_->GetTenant("t1", Secrets::kInclude);
  auto* pol = t.add_policies();
  pol->set_name("svc");
  pol->set_primary_key(Key('1'));
  pol->set_secondary_key(Key('2'));
  ASSERT_TRUE(store_->UpdateTenant(t, "").ok());
  std::vector<v1::Device> batch;
  batch.reserve(250);
  for (int i = 0; i < 250; ++i) batch.push_back(MakeDevice(absl::StrCat("r", i)));
  ASSERT_TRUE(store_->CreateDevices("t1", batch).ok());
  v1::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g");
  g.set_product_key("p1");
  g.set_group_key(Key('g'));
  ASSERT_TRUE(store_->CreateEnrollmentGroup(g).ok());

  auto rotated = MakeBox('n', {std::string(32, 'm')});
  std::vector<RewrapProgress> progress;
  ASSERT_TRUE(
      store_->RewrapSecrets(rotated, 100, [&](const RewrapProgress& p) { progress.push_back(p); })
          .ok());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().rows_done, progress.back().rows_total);
  EXPECT_EQ(progress.back().rows_total, 1 + 2 + 250 + 1);

  // Only the new key from now on.
  box_ = MakeBox('n');
  Reopen();
  EXPECT_EQ(store_->GetDevice("t1", "r17", Secrets::kInclude)
                ->credentials()
                .symmetric_key()
                .secondary_key(),
            Key('b'));
  EXPECT_EQ(store_->GetTenant("t1", Secrets::kInclude)->policies(0).secondary_key(), Key('2'));
  EXPECT_EQ(store_->GetEnrollmentGroup("t1", "g", Secrets::kInclude)->group_key(), Key('g'));
  // A box without the current key is refused before anything changes.
  EXPECT_EQ(store_->RewrapSecrets(MakeBox('q'), 100, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- Revocations, CRLs and the issuing CA (schema v4). ----

v1::CaCertificate MakeCa(const std::string& id, char fp) {
  v1::CaCertificate ca;
  ca.set_tenant_id("t1");
  ca.set_id(id);
  ca.set_certificate_pem("-----BEGIN CERTIFICATE-----...");
  ca.set_sha256_fingerprint(std::string(64, fp));
  ca.set_status(v1::CA_STATUS_UNVERIFIED);
  return ca;
}

// Events after `after` as "TYPE/RESOURCE/id" strings.
std::vector<std::string> EventsAfter(SqliteStore& store, int64_t after) {
  std::vector<std::string> out;
  auto batch = store.ReadChanges(after, 100, "t1");
  EXPECT_TRUE(batch.ok()) << batch.status();
  if (!batch.ok()) return out;
  for (const auto& e : batch->events) {
    out.push_back(absl::StrCat(v1::ChangeType_Name(e.type()), "/",
                               v1::ResourceType_Name(e.resource_type()), "/", e.resource_id()));
  }
  return out;
}

TEST_F(SqliteStoreTest, RevocationsCrudWithChangeEvents) {
  Seed();
  int64_t start = store_->LatestCursor();
  v1::CertificateRevocation r;
  r.set_tenant_id("t1");
  r.set_id("rev-1");
  r.set_fingerprint(std::string(64, 'f'));
  r.set_reason("keyCompromise");
  auto created = store_->CreateRevocation(r);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->create_time().seconds(), 1700000000);
  EXPECT_EQ(store_->CreateRevocation(r).status().code(), absl::StatusCode::kAlreadyExists);
  r.set_id("rev-2");
  r.set_fingerprint("");
  r.set_issuer_fingerprint(std::string(64, 'i'));
  r.set_serial_hex("1f");
  ASSERT_TRUE(store_->CreateRevocation(r).ok());
  v1::CertificateRevocation orphan = r;
  orphan.set_tenant_id("nope");
  EXPECT_EQ(store_->CreateRevocation(orphan).status().code(),
            absl::StatusCode::kFailedPrecondition);

  auto got = store_->GetRevocation("t1", "rev-2");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->serial_hex(), "1f");
  auto page1 = store_->ListRevocations("t1", PageRequest{1, ""});
  ASSERT_TRUE(page1.ok());
  ASSERT_EQ(page1->items.size(), 1u);
  EXPECT_TRUE(page1->more);
  auto page2 = store_->ListRevocations("t1", PageRequest{1, page1->last_key});
  ASSERT_TRUE(page2.ok());
  ASSERT_EQ(page2->items.size(), 1u);
  EXPECT_EQ(page2->items[0].id(), "rev-2");
  EXPECT_FALSE(page2->more);

  EXPECT_EQ(store_->DeleteRevocation("t1", "rev-1", "bogus").code(),
            absl::StatusCode::kFailedPrecondition);
  // The tenant is not empty while it owns revocations.
  EXPECT_EQ(ReasonOf(store_->DeleteTenant("t1", "")), "TENANT_NOT_EMPTY");
  ASSERT_TRUE(store_->DeleteRevocation("t1", "rev-1", created->etag()).ok());
  EXPECT_EQ(store_->GetRevocation("t1", "rev-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(EventsAfter(*store_, start),
            (std::vector<std::string>{"CHANGE_TYPE_CREATED/RESOURCE_TYPE_REVOCATION/rev-1",
                                      "CHANGE_TYPE_CREATED/RESOURCE_TYPE_REVOCATION/rev-2",
                                      "CHANGE_TYPE_DELETED/RESOURCE_TYPE_REVOCATION/rev-1"}));
}

TEST_F(SqliteStoreTest, CrlsOnePerCaReplacedAndDeletedWithTheCa) {
  Seed();
  v1::CertificateRevocationList crl;
  crl.set_tenant_id("t1");
  crl.set_ca_id("ca1");
  crl.set_crl_pem("-----BEGIN X509 CRL-----...");
  crl.set_crl_number("1");
  EXPECT_EQ(ReasonOf(store_->PutCrl(crl, "").status()), "UNKNOWN_CA");
  ASSERT_TRUE(store_->CreateCaCertificate(MakeCa("ca1", 'a')).ok());
  int64_t start = store_->LatestCursor();
  EXPECT_EQ(store_->PutCrl(crl, "1").status().code(), absl::StatusCode::kFailedPrecondition);
  auto first = store_->PutCrl(crl, "");
  ASSERT_TRUE(first.ok()) << first.status();
  crl.set_crl_number("2");
  EXPECT_EQ(store_->PutCrl(crl, "bogus").status().code(), absl::StatusCode::kFailedPrecondition);
  auto second = store_->PutCrl(crl, first->etag());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(store_->GetCrl("t1", "ca1")->crl_number(), "2");
  auto list = store_->ListCrls("t1", PageRequest{10, ""});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(list->items[0].etag(), second->etag());

  auto ca = store_->GetCaCertificate("t1", "ca1");
  ASSERT_TRUE(store_->DeleteCaCertificate("t1", "ca1", ca->etag()).ok());
  EXPECT_EQ(store_->GetCrl("t1", "ca1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(EventsAfter(*store_, start),
            (std::vector<std::string>{"CHANGE_TYPE_CREATED/RESOURCE_TYPE_CRL/ca1",
                                      "CHANGE_TYPE_UPDATED/RESOURCE_TYPE_CRL/ca1",
                                      "CHANGE_TYPE_DELETED/RESOURCE_TYPE_CA_CERTIFICATE/ca1",
                                      "CHANGE_TYPE_DELETED/RESOURCE_TYPE_CRL/ca1"}));
}

TEST_F(SqliteStoreTest, SetCaVerificationIsConditionalAndEmitsEnabled) {
  Seed();
  auto ca = store_->CreateCaCertificate(MakeCa("ca1", 'a'));
  ASSERT_TRUE(ca.ok());
  int64_t start = store_->LatestCursor();
  auto coded = store_->SetCaVerification("t1", "ca1", v1::CA_STATUS_UNSPECIFIED, "code-1", "");
  ASSERT_TRUE(coded.ok()) << coded.status();
  EXPECT_EQ(coded->verification_code(), "code-1");
  EXPECT_EQ(coded->status(), v1::CA_STATUS_UNVERIFIED);
  // The etag read before the new code no longer matches.
  EXPECT_EQ(store_->SetCaVerification("t1", "ca1", v1::CA_STATUS_VERIFIED, "", ca->etag())
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  auto verified =
      store_->SetCaVerification("t1", "ca1", v1::CA_STATUS_VERIFIED, "code-2", coded->etag());
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(store_->GetCaCertificate("t1", "ca1")->status(), v1::CA_STATUS_VERIFIED);
  EXPECT_EQ(store_->GetCaCertificate("t1", "ca1")->certificate_pem(), ca->certificate_pem());
  EXPECT_EQ(store_->SetCaVerification("t1", "nope", v1::CA_STATUS_VERIFIED, "", "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(EventsAfter(*store_, start),
            (std::vector<std::string>{"CHANGE_TYPE_UPDATED/RESOURCE_TYPE_CA_CERTIFICATE/ca1",
                                      "CHANGE_TYPE_ENABLED/RESOURCE_TYPE_CA_CERTIFICATE/ca1"}));
}

TEST_F(SqliteStoreTest, IssuingCaKeySealedBoundToRowAndRewrapped) {
  Seed();
  const std::string key_pem =
      "-----BEGIN PRIVATE KEY-----\nISSUING-CA-PRIVATE-KEY-MATERIAL-0123456789\n"
      "-----END PRIVATE KEY-----\n";
  v1::IssuingCa issuing;
  issuing.set_tenant_id("t1");
  issuing.set_ca_id("ca-issuing");
  issuing.set_certificate_pem("-----BEGIN CERTIFICATE-----...");
  issuing.set_private_key_pem(key_pem);
  issuing.set_generated(true);
  v1::CaCertificate ca = MakeCa("ca-issuing", 'c');
  ca.set_status(v1::CA_STATUS_VERIFIED);
  ca.set_issuing(true);
  v1::CaCertificate mismatched = ca;
  mismatched.set_issuing(false);
  EXPECT_EQ(store_->CreateIssuingCa(issuing, mismatched).status().code(),
            absl::StatusCode::kInvalidArgument);
  int64_t start = store_->LatestCursor();
  auto created = store_->CreateIssuingCa(issuing, ca);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->private_key_pem().empty());
  EXPECT_EQ(store_->GetCaCertificate("t1", "ca-issuing")->status(), v1::CA_STATUS_VERIFIED);
  v1::CaCertificate other = MakeCa("ca-other", 'd');
  other.set_issuing(true);
  v1::IssuingCa second = issuing;
  second.set_ca_id("ca-other");
  EXPECT_EQ(store_->CreateIssuingCa(second, other).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->GetCaCertificate("t1", "ca-other").status().code(),
            absl::StatusCode::kNotFound);  // rolled back with it
  EXPECT_TRUE(store_->GetIssuingCa("t1", Secrets::kOmit)->private_key_pem().empty());
  EXPECT_EQ(store_->GetIssuingCa("t1", Secrets::kInclude)->private_key_pem(), key_pem);
  EXPECT_EQ(EventsAfter(*store_, start),
            (std::vector<std::string>{"CHANGE_TYPE_CREATED/RESOURCE_TYPE_CA_CERTIFICATE/ca-issuing",
                                      "CHANGE_TYPE_CREATED/RESOURCE_TYPE_ISSUING_CA/ca-issuing"}));

  // Never in clear on disk.
  for (int pass = 0; pass < 2; ++pass) {
    std::string bytes = ReadFileBytes(path_) + ReadFileBytes(path_ + "-wal");
    EXPECT_EQ(bytes.find("ISSUING-CA-PRIVATE-KEY-MATERIAL"), std::string::npos);
    store_.reset();
  }
  Reopen();
  // Re-wrapped with the other secrets.
  auto rotated = MakeBox('n', {std::string(32, 'm')});
  ASSERT_TRUE(store_->RewrapSecrets(rotated, 100, nullptr).ok());
  box_ = MakeBox('n');
  Reopen();
  EXPECT_EQ(store_->GetIssuingCa("t1", Secrets::kInclude)->private_key_pem(), key_pem);

  // Deleting the CA certificate deletes the issuing CA and its key.
  auto stored = store_->GetCaCertificate("t1", "ca-issuing");
  ASSERT_TRUE(store_->DeleteCaCertificate("t1", "ca-issuing", stored->etag()).ok());
  EXPECT_EQ(store_->GetIssuingCa("t1", Secrets::kOmit).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace iotauth::registry
