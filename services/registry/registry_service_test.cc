#include "services/registry/registry_service.h"

#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/test_store.h"
#include "services/registry/validation.h"

namespace iotauth::registry {
namespace {

class FakeResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& /*context*/) const override {
    absl::MutexLock lock(&mu_);
    return caller_;
  }
  void Set(bool authenticated, uint32_t roles) {
    absl::MutexLock lock(&mu_);
    caller_.authenticated = authenticated;
    caller_.principal = authenticated ? "ops@example" : "";
    caller_.roles = roles;
    caller_.internal = false;
  }
  void SetCaller(Caller c) {
    absl::MutexLock lock(&mu_);
    caller_ = std::move(c);
  }

 private:
  mutable absl::Mutex mu_;
  Caller caller_;
};

class RecordingSink final : public audit::AuditSink {
 public:
  void Record(audit::v1::AuditEvent&& e) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }
  std::vector<audit::v1::AuditEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<audit::v1::AuditEvent> events_;
};

constexpr uint32_t kAdmin = static_cast<uint32_t>(Role::kAdmin);
constexpr uint32_t kReader = static_cast<uint32_t>(Role::kReader);

// A caller that presented a credential holding `roles`.
Caller Authenticated(uint32_t roles) {
  Caller c;
  c.authenticated = true;
  c.roles = roles;
  return c;
}

class RegistryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = testing::OpenTestStore(&clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    resolver_.Set(true, kAdmin);
    auto svc = RegistryService::Create(ServiceOptions());
    ASSERT_TRUE(svc.ok()) << svc.status();
    svc_ = std::move(*svc);
  }

  // The fixture's collaborators; import batches of 2.
  RegistryService::Options ServiceOptions() {
    RegistryService::Options o;
    o.store = store_.get();
    o.clock = &clock_;
    o.audit = &audit_;
    o.caller_resolver = &resolver_;
    o.import_batch_size = 2;
    return o;
  }

  void Seed() {
    grpc::ServerContext ctx;
    v1::CreateTenantRequest t;
    t.mutable_tenant()->set_id("t1");
    v1::Tenant tout;
    ASSERT_TRUE(svc_->CreateTenant(&ctx, &t, &tout).ok());
    for (const char* key : {"p1", "p2"}) {
      grpc::ServerContext c;
      v1::CreateProductRequest p;
      p.mutable_product()->set_tenant_id("t1");
      p.mutable_product()->set_product_key(key);
      v1::Product pout;
      ASSERT_TRUE(svc_->CreateProduct(&c, &p, &pout).ok());
    }
  }

  grpc::Status CreateDevice(const std::string& id, v1::Device* out, bool generate = true) {
    grpc::ServerContext ctx;
    v1::CreateDeviceRequest req;
    req.mutable_device()->set_tenant_id("t1");
    req.mutable_device()->set_device_id(id);
    req.mutable_device()->set_product_key("p1");
    req.set_generate_keys(generate);
    return svc_->CreateDevice(&ctx, &req, out);
  }

  FakeClock clock_;
  FakeResolver resolver_;
  RecordingSink audit_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<RegistryService> svc_;
};

TEST_F(RegistryServiceTest, CreateRejectsMissingCollaborators) {
  RegistryService::Options o;
  EXPECT_EQ(RegistryService::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.store = store_.get();
  o.clock = &clock_;
  o.audit = &audit_;
  EXPECT_EQ(RegistryService::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.caller_resolver = &resolver_;
  o.watch_poll_interval = absl::Seconds(1);
  EXPECT_EQ(RegistryService::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryServiceTest, RolesGuardReadsMutationsAndSecrets) {
  Seed();
  v1::Device d;
  ASSERT_TRUE(CreateDevice("d1", &d).ok());

  resolver_.Set(false, 0);
  {
    grpc::ServerContext ctx;
    v1::GetDeviceRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    v1::Device out;
    EXPECT_EQ(svc_->GetDevice(&ctx, &req, &out).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(CreateDevice("d2", &d).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  resolver_.Set(true, kReader);
  EXPECT_EQ(CreateDevice("d2", &d).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ServerContext ctx;
    v1::GetDeviceRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    v1::Device out;
    ASSERT_TRUE(svc_->GetDevice(&ctx, &req, &out).ok());
    EXPECT_FALSE(out.credentials().has_symmetric_key());
    req.set_include_secrets(true);
    grpc::ServerContext ctx2;
    EXPECT_EQ(svc_->GetDevice(&ctx2, &req, &out).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ServerContext ctx;
    v1::DeleteDeviceRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    v1::DeleteResponse out;
    EXPECT_EQ(svc_->DeleteDevice(&ctx, &req, &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // Denied mutations are audited as failures.
  auto events = audit_.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().reason(), "DeleteDevice");
  EXPECT_EQ(events.back().outcome(), audit::v1::OUTCOME_FAILURE);
  EXPECT_EQ(events.back().type(), audit::v1::EVENT_TYPE_ADMIN_MUTATION);

  resolver_.Set(true, kAdmin);
  grpc::ServerContext ctx;
  v1::GetDeviceRequest req;
  req.set_tenant_id("t1");
  req.set_device_id("d1");
  req.set_include_secrets(true);
  v1::Device out;
  ASSERT_TRUE(svc_->GetDevice(&ctx, &req, &out).ok());
  EXPECT_EQ(out.credentials().symmetric_key().primary_key(),
            d.credentials().symmetric_key().primary_key());
  // Reading keys leaves an audit record (the denied attempt above too), without them.
  events = audit_.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().reason(), "GetDeviceWithSecrets");
  EXPECT_EQ(events.back().device_id(), "d1");
  EXPECT_EQ(events.back().outcome(), audit::v1::OUTCOME_SUCCESS);
  EXPECT_EQ(events.back().SerializeAsString().find(d.credentials().symmetric_key().primary_key()),
            std::string::npos);
  const auto denied_reads = std::count_if(events.begin(), events.end(), [](const auto& e) {
    return e.reason() == "GetDeviceWithSecrets" && e.outcome() == audit::v1::OUTCOME_FAILURE;
  });
  EXPECT_EQ(denied_reads, 1);

  // Only this process's own in-process calls skip that record: a caller whose
  // certificate or token merely carries the internal name is audited.
  auto secret_reads = [this] {
    const auto all = audit_.events();
    return std::count_if(all.begin(), all.end(),
                         [](const auto& e) { return e.reason() == "GetDeviceWithSecrets"; });
  };
  Caller named{.authenticated = true,
               .principal = std::string(kInternalPrincipal),
               .roles = kAdmin,
               .peer = "ipv4:10.0.0.9:4000",
               .internal = false};
  resolver_.SetCaller(named);
  const auto before = secret_reads();
  {
    grpc::ServerContext c;
    ASSERT_TRUE(svc_->GetDevice(&c, &req, &out).ok());
  }
  EXPECT_EQ(secret_reads(), before + 1);
  named.internal = true;
  resolver_.SetCaller(named);
  {
    grpc::ServerContext c;
    ASSERT_TRUE(svc_->GetDevice(&c, &req, &out).ok());
  }
  EXPECT_EQ(secret_reads(), before + 1);
}

TEST_F(RegistryServiceTest, MutationsAreRefusedWhileTheAuditLogCannotRecordThem) {
  Seed();
  v1::Device d1;
  ASSERT_TRUE(CreateDevice("d1", &d1).ok());
  audit::AuditGate gate;
  RegistryService::Options o = ServiceOptions();
  o.audit_gate = &gate;
  auto svc = RegistryService::Create(o);
  ASSERT_TRUE(svc.ok()) << svc.status();
  svc_ = std::move(*svc);
  gate.SetWritable(false);
  const size_t recorded = audit_.events().size();

  // A mutation: refused before it acts, and not recorded.
  v1::Device d2;
  const grpc::Status create = CreateDevice("d2", &d2);
  EXPECT_EQ(create.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(create.error_message().find("audit.when_unwritable=refuse"), std::string::npos)
      << create.error_message();
  auto get = [this](const std::string& id, bool secrets, v1::Device* out) {
    grpc::ServerContext ctx;
    v1::GetDeviceRequest req;
    req.set_tenant_id("t1");
    req.set_device_id(id);
    req.set_include_secrets(secrets);
    return svc_->GetDevice(&ctx, &req, out);
  };
  v1::Device out;
  EXPECT_EQ(get("d2", false, &out).error_code(), grpc::StatusCode::NOT_FOUND);  // not created
  {
    grpc::ServerContext ctx;
    v1::DeleteDeviceRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    v1::DeleteResponse del;
    EXPECT_EQ(svc_->DeleteDevice(&ctx, &req, &del).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(audit_.events().size(), recorded);
  EXPECT_EQ(gate.refused(), 2U);
  // Reads are answered, reads of secrets too: a split-mode identity mirror reads a
  // device's keys with each change (here as a caller from outside the process),
  // and refusing it would hold back disables and key changes.
  ASSERT_TRUE(get("d1", false, &out).ok());
  {
    grpc::ServerContext ctx;
    v1::BatchGetDevicesRequest req;
    req.set_include_secrets(true);
    v1::BatchGetDevicesRequest::DeviceId* id = req.add_ids();
    id->set_tenant_id("t1");
    id->set_device_id("d1");
    v1::BatchGetDevicesResponse resp;
    ASSERT_TRUE(svc_->BatchGetDevices(&ctx, &req, &resp).ok());
    ASSERT_EQ(resp.results_size(), 1);
    EXPECT_EQ(resp.results(0).device().credentials().symmetric_key().primary_key(),
              d1.credentials().symmetric_key().primary_key());
  }
  EXPECT_EQ(audit_.events().size(), recorded + 1);  // recorded as ever (the GAP takes it)
  // A change made inside the process (a device registered by its first connect)
  // passes: the Authenticate that led to it was admitted.
  resolver_.SetCaller(Caller{.authenticated = true,
                             .principal = std::string(kInternalPrincipal),
                             .roles = kAdmin,
                             .internal = true});
  ASSERT_TRUE(CreateDevice("by-connect", &d2).ok());
  EXPECT_EQ(gate.refused(), 2U);

  // Writable again: mutations go through, and are recorded.
  resolver_.Set(true, kAdmin);
  gate.SetWritable(true);
  const size_t before = audit_.events().size();
  ASSERT_TRUE(CreateDevice("d2", &d2).ok());
  EXPECT_EQ(audit_.events().size(), before + 1);
}

TEST_F(RegistryServiceTest, GeneratedKeysAreReturnedOnceAndHiddenInLists) {
  Seed();
  v1::Device d;
  ASSERT_TRUE(CreateDevice("d1", &d).ok());
  const auto& k = d.credentials().symmetric_key();
  auto raw = crypto::Base64Decode(k.primary_key());
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), 32u);
  EXPECT_NE(k.primary_key(), k.secondary_key());

  grpc::ServerContext ctx;
  v1::ListDevicesRequest req;
  req.set_tenant_id("t1");
  v1::ListDevicesResponse resp;
  ASSERT_TRUE(svc_->ListDevices(&ctx, &req, &resp).ok());
  ASSERT_EQ(resp.devices_size(), 1);
  EXPECT_FALSE(resp.devices(0).credentials().has_symmetric_key());

  // No audit event carries a key.
  for (const auto& e : audit_.events()) {
    std::string bytes = e.SerializeAsString();
    EXPECT_EQ(bytes.find(k.primary_key()), std::string::npos);
    EXPECT_EQ(bytes.find(k.secondary_key()), std::string::npos);
  }
  EXPECT_EQ(audit_.events().back().reason(), "CreateDevice");
  EXPECT_EQ(audit_.events().back().device_id(), "d1");
  EXPECT_EQ(audit_.events().back().caller(), "ops@example");
}

TEST_F(RegistryServiceTest, ValidationNamesTheField) {
  Seed();
  grpc::ServerContext ctx;
  v1::CreateDeviceRequest req;
  req.mutable_device()->set_tenant_id("t1");
  req.mutable_device()->set_device_id("bad id");
  req.mutable_device()->set_product_key("p1");
  v1::Device out;
  grpc::Status s = svc_->CreateDevice(&ctx, &req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().rfind("device.device_id", 0), 0u) << s.error_message();

  req.mutable_device()->set_device_id("ok");
  req.mutable_device()->mutable_credentials()->mutable_symmetric_key()->set_primary_key(
      "c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
  grpc::ServerContext ctx2;
  s = svc_->CreateDevice(&ctx2, &req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().find("c2VjcmV0"), std::string::npos) << "status echoes a key";
}

TEST_F(RegistryServiceTest, UpdateWithFieldMaskAndEtag) {
  Seed();
  v1::Device d;
  ASSERT_TRUE(CreateDevice("d1", &d).ok());
  v1::UpdateDeviceRequest req;
  req.mutable_device()->set_tenant_id("t1");
  req.mutable_device()->set_device_id("d1");
  (*req.mutable_device()->mutable_tags())["site"] = "north";
  req.mutable_device()->set_product_key("ignored-by-mask");
  req.mutable_update_mask()->add_paths("tags");
  req.set_etag(d.etag());
  v1::Device out;
  {
    grpc::ServerContext ctx;
    ASSERT_TRUE(svc_->UpdateDevice(&ctx, &req, &out).ok());
  }
  EXPECT_EQ(out.tags().at("site"), "north");
  EXPECT_EQ(out.product_key(), "p1");
  EXPECT_FALSE(out.credentials().has_symmetric_key());
  // Keys survive an update that did not name them.
  auto stored = store_->GetDevice("t1", "d1", Secrets::kInclude);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->credentials().symmetric_key().primary_key(),
            d.credentials().symmetric_key().primary_key());
  {
    // Stale etag.
    grpc::ServerContext ctx;
    EXPECT_EQ(svc_->UpdateDevice(&ctx, &req, &out).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    // Not updatable.
    grpc::ServerContext ctx;
    req.clear_etag();
    req.mutable_update_mask()->add_paths("device_id");
    grpc::Status s = svc_->UpdateDevice(&ctx, &req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message().rfind("update_mask", 0), 0u);
  }
  {
    // Empty mask: every updatable field; tags replaced as a whole.
    grpc::ServerContext ctx;
    v1::UpdateDeviceRequest all;
    *all.mutable_device() = stored.value();
    all.mutable_device()->mutable_credentials()->clear_symmetric_key();
    all.mutable_device()->mutable_tags()->clear();
    (*all.mutable_device()->mutable_tags())["floor"] = "2";
    all.mutable_device()->set_product_key("p2");
    ASSERT_TRUE(svc_->UpdateDevice(&ctx, &all, &out).ok());
    EXPECT_EQ(out.product_key(), "p2");
    EXPECT_EQ(out.tags().size(), 1u);
    EXPECT_EQ(out.tags().at("floor"), "2");
    auto again = store_->GetDevice("t1", "d1", Secrets::kInclude);
    EXPECT_EQ(again->credentials().symmetric_key().secondary_key(),
              d.credentials().symmetric_key().secondary_key());
  }
}

TEST_F(RegistryServiceTest, KeyOperationsAndStatus) {
  Seed();
  v1::Device d;
  ASSERT_TRUE(CreateDevice("d1", &d).ok());
  int64_t cursor = store_->LatestCursor();
  v1::Device out;
  {
    grpc::ServerContext ctx;
    v1::RegenerateDeviceKeyRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    req.set_slot(v1::KEY_SLOT_SECONDARY);
    ASSERT_TRUE(svc_->RegenerateDeviceKey(&ctx, &req, &out).ok());
    EXPECT_EQ(out.credentials().symmetric_key().primary_key(),
              d.credentials().symmetric_key().primary_key());
    EXPECT_NE(out.credentials().symmetric_key().secondary_key(),
              d.credentials().symmetric_key().secondary_key());
    req.set_slot(v1::KEY_SLOT_UNSPECIFIED);
    grpc::ServerContext ctx2;
    EXPECT_EQ(svc_->RegenerateDeviceKey(&ctx2, &req, &out).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ServerContext ctx;
    v1::SetDeviceThumbprintsRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    req.set_primary_thumbprint(std::string(64, 'A'));
    ASSERT_TRUE(svc_->SetDeviceThumbprints(&ctx, &req, &out).ok());
    EXPECT_EQ(out.credentials().primary_thumbprint(), std::string(64, 'a'));
    EXPECT_FALSE(out.credentials().has_symmetric_key());
  }
  {
    grpc::ServerContext ctx;
    v1::SetDeviceStatusRequest req;
    req.set_tenant_id("t1");
    req.set_device_id("d1");
    req.set_status(v1::DEVICE_STATUS_DISABLED);
    ASSERT_TRUE(svc_->SetDeviceStatus(&ctx, &req, &out).ok());
    EXPECT_EQ(out.status(), v1::DEVICE_STATUS_DISABLED);
  }
  auto changes = store_->ReadChanges(cursor, 10, "t1");
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->events.size(), 3u);
  EXPECT_EQ(changes->events[0].type(), v1::CHANGE_TYPE_CREDENTIALS_CHANGED);
  EXPECT_EQ(changes->events[1].type(), v1::CHANGE_TYPE_CREDENTIALS_CHANGED);
  EXPECT_EQ(changes->events[2].type(), v1::CHANGE_TYPE_DISABLED);
}

TEST_F(RegistryServiceTest, ListPagesWithOpaqueTokens) {
  Seed();
  v1::Device d;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(CreateDevice(absl::StrCat("d", i), &d).ok());
  std::vector<std::string> ids;
  std::string token;
  int pages = 0;
  do {
    grpc::ServerContext ctx;
    v1::ListDevicesRequest req;
    req.set_tenant_id("t1");
    req.set_page_size(2);
    req.set_page_token(token);
    v1::ListDevicesResponse resp;
    ASSERT_TRUE(svc_->ListDevices(&ctx, &req, &resp).ok());
    for (const auto& dev : resp.devices()) ids.push_back(dev.device_id());
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(ids, (std::vector<std::string>{"d0", "d1", "d2", "d3", "d4"}));
  grpc::ServerContext ctx;
  v1::ListDevicesRequest bad;
  bad.set_tenant_id("t1");
  bad.set_page_token("garbage!");
  v1::ListDevicesResponse resp;
  EXPECT_EQ(svc_->ListDevices(&ctx, &bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// An import message of `n` devices of about 33 KB each (64 tags with 512-byte
// values), ids t100, t101, ... of product p1, keys generated.
v1::ImportDevicesRequest LargeDevices(int n) {
  v1::ImportDevicesRequest req;
  req.set_generate_keys(true);
  for (int i = 0; i < n; ++i) {
    v1::Device* d = req.add_devices();
    d->set_device_id(absl::StrCat("t", 100 + i));
    d->set_product_key("p1");
    for (int t = 0; t < 64; ++t) {
      (*d->mutable_tags())[absl::StrCat("k", t)] = std::string(512, 'v');
    }
  }
  return req;
}

class VectorSource final : public RegistryService::DeviceSource {
 public:
  explicit VectorSource(std::vector<v1::ImportDevicesRequest> msgs) : msgs_(std::move(msgs)) {}
  bool Next(v1::ImportDevicesRequest* msg) override {
    if (i_ >= msgs_.size()) return false;
    *msg = msgs_[i_++];
    return true;
  }

 private:
  std::vector<v1::ImportDevicesRequest> msgs_;
  size_t i_ = 0;
};

TEST_F(RegistryServiceTest, ImportReportsPerItemErrorsWithStreamIndexes) {
  Seed();
  v1::Device existing;
  ASSERT_TRUE(CreateDevice("exists", &existing).ok());
  auto dev = [](const std::string& id, const std::string& product = "p1") {
    v1::Device d;
    d.set_device_id(id);
    d.set_product_key(product);
    return d;
  };
  v1::ImportDevicesRequest m1;
  m1.set_tenant_id("t1");
  m1.set_generate_keys(true);
  *m1.add_devices() = dev("a");       // 0 ok
  *m1.add_devices() = dev("bad id");  // 1 INVALID_DEVICE_ID
  *m1.add_devices() = dev("exists");  // 2 ALREADY_EXISTS
  v1::ImportDevicesRequest m2;
  m2.set_generate_keys(true);
  *m2.add_devices() = dev("b");          // 3 ok
  *m2.add_devices() = dev("c", "nope");  // 4 UNKNOWN_PRODUCT
  *m2.add_devices() = dev("a");          // 5 ALREADY_EXISTS (earlier batch)
  *m2.add_devices() = dev("d");          // 6 ok
  VectorSource source({m1, m2});
  v1::ImportDevicesResponse resp;
  const Caller admin = Authenticated(kAdmin);
  ASSERT_TRUE(svc_->DoImportDevices(admin, source, &resp).ok());
  EXPECT_EQ(resp.received(), 7);
  EXPECT_EQ(resp.imported(), 3);
  EXPECT_EQ(resp.rejected(), 4);
  std::map<int64_t, std::string> reasons;
  for (const auto& e : resp.errors()) reasons[e.index()] = e.reason();
  EXPECT_EQ(reasons, (std::map<int64_t, std::string>{{1, "INVALID_DEVICE_ID"},
                                                     {2, "ALREADY_EXISTS"},
                                                     {4, "UNKNOWN_PRODUCT"},
                                                     {5, "ALREADY_EXISTS"}}));
  auto d = store_->GetDevice("t1", "d", Secrets::kInclude);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->credentials().symmetric_key().primary_key().empty());

  const Caller reader = Authenticated(kReader);
  VectorSource again({m1});
  v1::ImportDevicesResponse r2;
  EXPECT_EQ(svc_->DoImportDevices(reader, again, &r2).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(RegistryServiceTest, ImportErrorCutsALongIdAtACharacterBoundary) {
  Seed();
  v1::ImportDevicesRequest m;
  m.set_tenant_id("t1");
  m.set_generate_keys(true);
  v1::Device* d = m.add_devices();
  // 127 ASCII bytes then two-byte characters: byte 128 is inside the first of them.
  d->set_device_id(std::string(127, 'a') + "\xC3\xA9\xC3\xA9");
  d->set_product_key("p1");
  VectorSource source({m});
  v1::ImportDevicesResponse resp;
  const Caller admin = Authenticated(kAdmin);
  ASSERT_TRUE(svc_->DoImportDevices(admin, source, &resp).ok());
  ASSERT_EQ(resp.errors_size(), 1);
  EXPECT_EQ(resp.errors(0).reason(), "INVALID_DEVICE_ID");
  EXPECT_EQ(resp.errors(0).device_id(), std::string(127, 'a'));
  // The client can parse the response (every string UTF-8).
  v1::ImportDevicesResponse again;
  EXPECT_TRUE(again.ParseFromString(resp.SerializeAsString()));
}

template <typename T>
class VectorSink final : public RegistryService::Sink<T> {
 public:
  bool Write(const T& msg) override {
    absl::MutexLock lock(&mu_);
    items_.push_back(msg);
    return true;
  }
  bool Cancelled() override { return cancelled_.load(); }
  void Started(absl::string_view cursor) override {
    start_cursor_ = std::string(cursor);
    started_.Notify();
  }
  // Waits (bounded) until the watch has fixed its start; false on timeout.
  bool WaitStarted() { return started_.WaitForNotificationWithTimeout(absl::Seconds(60)); }
  // Waits (bounded) until at least `n` items arrived.
  size_t WaitForItems(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return items_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(60));
    return items_.size();
  }
  std::vector<T> items() {
    absl::MutexLock lock(&mu_);
    return items_;
  }
  std::atomic<bool> cancelled_{false};
  std::string start_cursor_;  // valid once WaitStarted() returned true

 private:
  absl::Notification started_;
  absl::Mutex mu_;
  std::vector<T> items_;
};

TEST_F(RegistryServiceTest, ExportStreamsEveryDeviceAndHidesKeysFromReaders) {
  Seed();
  v1::Device d;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(CreateDevice(absl::StrCat("e", i), &d).ok());
  const Caller reader = Authenticated(kReader);
  v1::ExportDevicesRequest req;
  req.set_tenant_id("t1");
  VectorSink<v1::Device> sink;
  ASSERT_TRUE(svc_->DoExportDevices(reader, req, sink).ok());
  ASSERT_EQ(sink.items().size(), 7u);
  for (const auto& dev : sink.items()) EXPECT_FALSE(dev.credentials().has_symmetric_key());
  req.set_include_secrets(true);
  VectorSink<v1::Device> denied;
  EXPECT_EQ(svc_->DoExportDevices(reader, req, denied).code(), absl::StatusCode::kPermissionDenied);
}

// ExportDeviceBatches: the same devices in the same order as ExportDevices, 500 a
// message, or fewer when they pass about 1 MiB; nothing sent for an empty tenant.
TEST_F(RegistryServiceTest, ExportInBatchesByCountAndBySize) {
  Seed();
  const Caller admin = Authenticated(kAdmin);
  v1::ExportDevicesRequest req;
  req.set_tenant_id("t1");
  req.set_include_secrets(true);
  VectorSink<v1::DeviceBatch> empty;
  ASSERT_TRUE(svc_->DoExportDeviceBatches(admin, req, empty).ok());
  EXPECT_TRUE(empty.items().empty());

  v1::ImportDevicesRequest plain;
  plain.set_tenant_id("t1");
  plain.set_generate_keys(true);
  for (int i = 0; i < 1001; ++i) {
    v1::Device* d = plain.add_devices();
    d->set_device_id(absl::StrCat("n", 10000 + i));
    d->set_product_key("p1");
  }
  VectorSource source({plain, LargeDevices(40)});
  v1::ImportDevicesResponse imported;
  ASSERT_TRUE(svc_->DoImportDevices(admin, source, &imported).ok());
  ASSERT_EQ(imported.imported(), 1041);

  VectorSink<v1::Device> one_by_one;
  ASSERT_TRUE(svc_->DoExportDevices(admin, req, one_by_one).ok());
  VectorSink<v1::DeviceBatch> batches;
  std::vector<std::string> unreadable;
  ASSERT_TRUE(svc_->DoExportDeviceBatches(admin, req, batches, &unreadable).ok());
  std::vector<std::string> batched_ids;
  std::vector<int> sizes;
  for (const v1::DeviceBatch& b : batches.items()) {
    sizes.push_back(b.devices_size());
    EXPECT_LE(b.ByteSizeLong(), RegistryService::kExportBatchBytes + size_t{64} * 1024);
    for (const v1::Device& d : b.devices()) {
      batched_ids.push_back(d.device_id());
      EXPECT_FALSE(d.credentials().symmetric_key().primary_key().empty()) << d.device_id();
    }
  }
  std::vector<std::string> ids;
  for (const v1::Device& d : one_by_one.items()) ids.push_back(d.device_id());
  EXPECT_EQ(batched_ids, ids);
  ASSERT_EQ(ids.size(), 1041u);
  // 1,001 small devices make two full batches; the 40 large ones (~1.3 MiB in all)
  // cannot share one message, so at least two more.
  EXPECT_EQ(std::count(sizes.begin(), sizes.end(), 500), 2);
  EXPECT_GE(sizes.size(), 4u);
  EXPECT_TRUE(unreadable.empty());

  // A reader gets no keys, and none at all when it asks for them.
  req.set_include_secrets(false);
  VectorSink<v1::DeviceBatch> read;
  ASSERT_TRUE(svc_->DoExportDeviceBatches(Authenticated(kReader), req, read).ok());
  for (const v1::DeviceBatch& b : read.items()) {
    for (const v1::Device& d : b.devices()) EXPECT_FALSE(d.credentials().has_symmetric_key());
  }
  req.set_include_secrets(true);
  VectorSink<v1::DeviceBatch> denied;
  EXPECT_EQ(svc_->DoExportDeviceBatches(Authenticated(kReader), req, denied).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(denied.items().empty());
}

// BatchGetDevices: each id answered on its own, in order (a missing device or a bad
// id does not fail the call); keys only for admins; at most 1000 ids; an answer
// that passes about 1 MiB stops early and the rest are asked again; every read of
// keys is audited, one record per device, never the keys.
TEST_F(RegistryServiceTest, BatchGetAnswersEachIdInOrderAndStopsNearTheSizeLimit) {
  Seed();
  v1::Device d;
  for (const char* id : {"e0", "e1", "e2"}) ASSERT_TRUE(CreateDevice(id, &d).ok());
  v1::BatchGetDevicesRequest req;
  for (const auto& [tenant, device] : std::vector<std::pair<std::string, std::string>>{
           {"t1", "e2"}, {"t1", "nope"}, {"t1", "e0"}, {"t1", ""}, {"t2", "e1"}, {"t1", "e1"}}) {
    v1::BatchGetDevicesRequest::DeviceId* id = req.add_ids();
    id->set_tenant_id(tenant);
    id->set_device_id(device);
  }
  v1::BatchGetDevicesResponse resp;
  ASSERT_TRUE(svc_->DoBatchGetDevices(Authenticated(kReader), req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 6);
  const std::vector<int> want_codes = {0, 5, 0, 3, 5, 0};
  std::vector<int> codes;
  std::vector<std::string> found;
  for (const auto& r : resp.results()) {
    codes.push_back(r.code());
    if (r.code() == 0) {
      found.push_back(r.device().device_id());
      EXPECT_FALSE(r.device().credentials().has_symmetric_key());
    } else {
      EXPECT_FALSE(r.has_device());
      EXPECT_FALSE(r.message().empty());
    }
  }
  EXPECT_EQ(codes, want_codes);
  EXPECT_EQ(found, (std::vector<std::string>{"e2", "e0", "e1"}));
  EXPECT_NE(resp.results(3).message().find("device_id"), std::string::npos)
      << resp.results(3).message();
  // Each failed read carries its stable reason, as a failed call would.
  EXPECT_EQ(resp.results(1).reason(), "NOT_FOUND");
  EXPECT_EQ(resp.results(3).reason(), "INVALID_DEVICE_ID");
  EXPECT_EQ(resp.results(0).reason(), "");

  // Keys: admins only, and the whole call is refused for a reader who asks.
  req.set_include_secrets(true);
  v1::BatchGetDevicesResponse denied;
  EXPECT_EQ(svc_->DoBatchGetDevices(Authenticated(kReader), req, &denied).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.results_size(), 0);
  v1::BatchGetDevicesResponse keyed;
  ASSERT_TRUE(svc_->DoBatchGetDevices(Authenticated(kAdmin), req, &keyed).ok());
  ASSERT_EQ(keyed.results_size(), 6);
  EXPECT_FALSE(keyed.results(0).device().credentials().symmetric_key().primary_key().empty());

  // Through the handler: one audit record per device read with keys, no key in any.
  const size_t before = audit_.events().size();
  grpc::ServerContext ctx;
  v1::BatchGetDevicesResponse handled;
  ASSERT_TRUE(svc_->BatchGetDevices(&ctx, &req, &handled).ok());
  const auto events = audit_.events();
  ASSERT_EQ(events.size(), before + 6);
  std::vector<std::string> audited;
  for (size_t i = before; i < events.size(); ++i) {
    EXPECT_EQ(events[i].reason(), "BatchGetDevicesWithSecrets");
    audited.push_back(events[i].device_id());
    const std::string text = events[i].DebugString();
    for (const auto& r : handled.results()) {
      const auto& k = r.device().credentials().symmetric_key();
      if (!k.primary_key().empty()) {
        EXPECT_EQ(text.find(k.primary_key()), std::string::npos);
      }
    }
  }
  EXPECT_EQ(audited, (std::vector<std::string>{"e2", "nope", "e0", "", "e1", "e1"}));
  // A failed read's record keeps its reason, not only its code.
  EXPECT_EQ(events[before + 3].attributes().at("error"), "INVALID_DEVICE_ID");
  EXPECT_EQ(events[before + 1].attributes().at("error"), "NOT_FOUND");

  // Too many ids: the call is refused, saying how many fit.
  v1::BatchGetDevicesRequest many;
  for (int i = 0; i < RegistryService::kBatchGetMaxIds + 1; ++i) {
    many.add_ids()->set_tenant_id("t1");
  }
  v1::BatchGetDevicesResponse none;
  const absl::Status too_many = svc_->DoBatchGetDevices(Authenticated(kReader), many, &none);
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.message().find("1000"), std::string::npos) << too_many.message();
  EXPECT_EQ(ReasonOf(too_many), "INVALID_IDS");

  // 40 devices of about 33 KB: no answer passes ~1 MiB by more than one device, and
  // asking again for the rest brings them all, in order.
  v1::ImportDevicesRequest tagged = LargeDevices(40);
  tagged.set_tenant_id("t1");
  v1::BatchGetDevicesRequest big;
  big.set_include_secrets(true);
  for (const v1::Device& td : tagged.devices()) {
    v1::BatchGetDevicesRequest::DeviceId* id = big.add_ids();
    id->set_tenant_id("t1");
    id->set_device_id(td.device_id());
  }
  VectorSource source({tagged});
  v1::ImportDevicesResponse imported;
  ASSERT_TRUE(svc_->DoImportDevices(Authenticated(kAdmin), source, &imported).ok());
  ASSERT_EQ(imported.imported(), 40);
  std::vector<std::string> got;
  int calls = 0;
  while (big.ids_size() > 0) {
    v1::BatchGetDevicesResponse part;
    ASSERT_TRUE(svc_->DoBatchGetDevices(Authenticated(kAdmin), big, &part).ok());
    ASSERT_GT(part.results_size(), 0);
    EXPECT_LE(part.ByteSizeLong(), RegistryService::kBatchGetBytes + size_t{64} * 1024);
    for (const auto& r : part.results()) {
      ASSERT_EQ(r.code(), 0) << r.message();
      got.push_back(r.device().device_id());
    }
    big.mutable_ids()->DeleteSubrange(0, part.results_size());
    ++calls;
  }
  ASSERT_EQ(got.size(), 40u);
  EXPECT_EQ(got.front(), "t100");
  EXPECT_EQ(got.back(), "t139");
  EXPECT_GE(calls, 2);
}

// A device whose keys do not open (its sealed key moved in from another row) is
// exported marked and without keys, the export completes, and the audit record of
// the export names it (ids, never keys).
TEST_F(RegistryServiceTest, ExportWithSecretsGoesOnPastADeviceWhoseKeysDoNotOpen) {
  Seed();
  v1::Device d;
  for (const char* id : {"e0", "e1", "e2"}) ASSERT_TRUE(CreateDevice(id, &d).ok());
  ASSERT_TRUE(testing::CopySealedDeviceKey(store_->path(), "secondary_key", "e2", "e1").ok());

  grpc::ServerBuilder builder;
  builder.RegisterService(svc_.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::DeviceRegistry::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  v1::ExportDevicesRequest req;
  req.set_tenant_id("t1");
  req.set_include_secrets(true);
  auto reader = stub->ExportDevices(&ctx, req);
  std::map<std::string, v1::Device> got;
  v1::Device dev;
  while (reader->Read(&dev)) got[dev.device_id()] = dev;
  const grpc::Status st = reader->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got["e1"].keys_unreadable());
  EXPECT_FALSE(got["e1"].credentials().has_symmetric_key());
  for (const char* id : {"e0", "e2"}) {
    EXPECT_FALSE(got[id].keys_unreadable()) << id;
    EXPECT_FALSE(got[id].credentials().symmetric_key().primary_key().empty()) << id;
  }
  const auto events = audit_.events();
  ASSERT_FALSE(events.empty());
  const auto& e = events.back();
  EXPECT_EQ(e.reason(), "ExportDevicesWithSecrets");
  ASSERT_EQ(e.attributes().count("keys_unreadable"), 1u);
  EXPECT_EQ(e.attributes().at("keys_unreadable"), "1");
  ASSERT_EQ(e.attributes().count("keys_unreadable_devices"), 1u);
  EXPECT_EQ(e.attributes().at("keys_unreadable_devices"), "e1");

  // Other writes still refuse to touch it (they would keep keys they cannot read)...
  grpc::ServerContext update_ctx;
  v1::UpdateDeviceRequest update;
  *update.mutable_device() = got["e1"];
  update.mutable_device()->set_status(v1::DEVICE_STATUS_DISABLED);
  update.mutable_update_mask()->add_paths("status");
  EXPECT_EQ(svc_->UpdateDevice(&update_ctx, &update, &dev).error_code(),
            grpc::StatusCode::DATA_LOSS);
  // ...but regenerating a key writes a whole new pair, and the device reads again.
  grpc::ServerContext regen_ctx;
  v1::RegenerateDeviceKeyRequest regen;
  regen.set_tenant_id("t1");
  regen.set_device_id("e1");
  regen.set_slot(v1::KEY_SLOT_PRIMARY);
  v1::Device fixed;
  ASSERT_TRUE(svc_->RegenerateDeviceKey(&regen_ctx, &regen, &fixed).ok());
  EXPECT_FALSE(fixed.keys_unreadable());
  const v1::SymmetricKey& k = fixed.credentials().symmetric_key();
  EXPECT_FALSE(k.primary_key().empty());
  EXPECT_FALSE(k.secondary_key().empty());
  EXPECT_NE(k.secondary_key(), got["e2"].credentials().symmetric_key().secondary_key());
  auto stored = store_->GetDevice("t1", "e1", Secrets::kInclude);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->credentials().symmetric_key().primary_key(), k.primary_key());
  EXPECT_EQ(stored->credentials().symmetric_key().secondary_key(), k.secondary_key());
  EXPECT_FALSE(stored->keys_unreadable());
  server->Shutdown();
}

TEST_F(RegistryServiceTest, WatchChangesDeliversPromptlyAndStopsOnCancel) {
  Seed();
  const Caller admin = Authenticated(kAdmin);
  v1::WatchChangesRequest req;  // empty cursor: from now
  VectorSink<v1::ChangeEvent> sink;
  absl::Status result;
  std::thread watcher([&] { result = svc_->DoWatchChanges(admin, req, sink); });
  ASSERT_TRUE(sink.WaitStarted());
  EXPECT_EQ(sink.start_cursor_, "3");  // tenant + 2 products
  absl::Time wrote = absl::Now();
  v1::Device d;
  ASSERT_TRUE(CreateDevice("w1", &d).ok());
  sink.WaitForItems(1);
  absl::Duration latency = absl::Now() - wrote;
  ASSERT_EQ(sink.items().size(), 1u);
  EXPECT_LT(latency, absl::Milliseconds(500));
  EXPECT_EQ(sink.items()[0].resource_id(), "w1");
  EXPECT_EQ(sink.items()[0].type(), v1::CHANGE_TYPE_CREATED);
  absl::Time cancelled = absl::Now();
  sink.cancelled_ = true;
  watcher.join();
  EXPECT_LT(absl::Now() - cancelled, absl::Milliseconds(400));
  EXPECT_TRUE(result.ok()) << result;

  // Replay from "0" sees the seed too; watching every tenant needs admin.
  v1::WatchChangesRequest replay;
  replay.set_cursor("0");
  const Caller reader = Authenticated(kReader);
  VectorSink<v1::ChangeEvent> denied;
  EXPECT_EQ(svc_->DoWatchChanges(reader, replay, denied).code(),
            absl::StatusCode::kPermissionDenied);
  replay.set_tenant_id("t1");
  VectorSink<v1::ChangeEvent> all;
  all.cancelled_ = false;
  std::thread t([&] { result = svc_->DoWatchChanges(reader, replay, all); });
  EXPECT_EQ(all.WaitForItems(4), 4u);  // tenant, 2 products, device
  all.cancelled_ = true;
  t.join();
  EXPECT_EQ(all.items().size(), 4u);  // nothing more
  replay.set_cursor("x");
  VectorSink<v1::ChangeEvent> bad;
  EXPECT_EQ(svc_->DoWatchChanges(reader, replay, bad).code(), absl::StatusCode::kInvalidArgument);
}

// Each WatchChanges holds a server thread while open: past the cap the next is
// refused with RESOURCE_EXHAUSTED, and an ended stream frees its slot.
TEST_F(RegistryServiceTest, WatchChangesPastTheCapIsRefusedUntilOneEnds) {
  RegistryService::Options o = ServiceOptions();
  o.max_watch_streams = 1;
  auto svc = RegistryService::Create(o);
  ASSERT_TRUE(svc.ok()) << svc.status();
  const Caller admin = Authenticated(kAdmin);
  VectorSink<v1::ChangeEvent> first;
  absl::Status result;
  std::thread watcher([&] { result = (*svc)->DoWatchChanges(admin, {}, first); });
  ASSERT_TRUE(first.WaitStarted());
  VectorSink<v1::ChangeEvent> second;
  absl::Status refused = (*svc)->DoWatchChanges(admin, {}, second);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_EQ(ReasonOf(refused), "TOO_MANY_STREAMS") << refused;
  EXPECT_NE(refused.message().find("too many WatchChanges streams open (1)"),
            absl::string_view::npos)
      << refused;
  first.cancelled_ = true;
  watcher.join();
  EXPECT_TRUE(result.ok()) << result;
  VectorSink<v1::ChangeEvent> third;
  third.cancelled_ = true;  // returns once started
  EXPECT_TRUE((*svc)->DoWatchChanges(admin, {}, third).ok());
}

TEST_F(RegistryServiceTest, WatchChangesSendsHeartbeatsWhenAsked) {
  Seed();
  const Caller admin = Authenticated(kAdmin);
  v1::WatchChangesRequest req;
  req.mutable_heartbeat_interval()->set_nanos(100000000);  // 100 ms
  VectorSink<v1::ChangeEvent> sink;
  absl::Status result;
  std::thread watcher([&] { result = svc_->DoWatchChanges(admin, req, sink); });
  ASSERT_TRUE(sink.WaitStarted());
  // Nothing changes, and still the stream speaks: heartbeats carrying the cursor.
  ASSERT_GE(sink.WaitForItems(2), 2u);
  for (const auto& e : sink.items()) {
    EXPECT_EQ(e.type(), v1::CHANGE_TYPE_HEARTBEAT);
    EXPECT_EQ(e.cursor(), "3");
    EXPECT_EQ(e.resource_type(), v1::RESOURCE_TYPE_UNSPECIFIED);
  }
  v1::Device d;
  ASSERT_TRUE(CreateDevice("hb", &d).ok());
  const size_t before = sink.items().size();
  sink.WaitForItems(before + 2);
  const auto items = sink.items();
  const auto created = std::find_if(items.begin(), items.end(), [](const v1::ChangeEvent& e) {
    return e.type() == v1::CHANGE_TYPE_CREATED;
  });
  ASSERT_NE(created, items.end());
  EXPECT_EQ(created->resource_id(), "hb");
  EXPECT_EQ(items.back().cursor(), created->cursor());  // heartbeats after it carry its cursor
  sink.cancelled_ = true;
  watcher.join();
  EXPECT_TRUE(result.ok()) << result;
}

TEST_F(RegistryServiceTest, ACursorFromAnotherLogIsRefused) {
  Seed();
  grpc::ServerContext ctx;
  v1::GetChangeCursorRequest creq;
  v1::GetChangeCursorResponse head;
  resolver_.Set(true, kAdmin);
  ASSERT_TRUE(svc_->GetChangeCursor(&ctx, &creq, &head).ok());
  ASSERT_EQ(head.cursor(), "3");
  ASSERT_TRUE(head.has_cursor_time());
  const Caller admin = Authenticated(kAdmin);
  // The same cursor with another change's time: a log restored from a backup, or
  // replaced, that has issued cursor 3 for something else.
  v1::WatchChangesRequest req;
  req.set_cursor("3");
  *req.mutable_cursor_time() = head.cursor_time();
  req.mutable_cursor_time()->set_seconds(head.cursor_time().seconds() - 1);
  VectorSink<v1::ChangeEvent> refused;
  const absl::Status st = svc_->DoWatchChanges(admin, req, refused);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange) << st;
  EXPECT_EQ(ReasonOf(st), "CURSOR_UNKNOWN");
  // Its own time: accepted.
  *req.mutable_cursor_time() = head.cursor_time();
  VectorSink<v1::ChangeEvent> sink;
  absl::Status result;
  std::thread watcher([&] { result = svc_->DoWatchChanges(admin, req, sink); });
  ASSERT_TRUE(sink.WaitStarted());
  sink.cancelled_ = true;
  watcher.join();
  EXPECT_TRUE(result.ok()) << result;
}

TEST_F(RegistryServiceTest, ChangeCursorIsTheLogHead) {
  Seed();
  grpc::ServerContext ctx;
  v1::GetChangeCursorRequest req;
  v1::GetChangeCursorResponse resp;
  resolver_.Set(true, kReader);
  ASSERT_TRUE(svc_->GetChangeCursor(&ctx, &req, &resp).ok());
  EXPECT_EQ(resp.cursor(), absl::StrCat(store_->LatestCursor()));
  EXPECT_EQ(resp.cursor(), "3");  // tenant + 2 products
  resolver_.Set(false, 0);
  grpc::ServerContext ctx2;
  EXPECT_EQ(svc_->GetChangeCursor(&ctx2, &req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(RegistryServiceTest, InProcessServerWatchAndCancel) {
  Seed();
  grpc::ServerBuilder builder;
  builder.RegisterService(svc_.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::DeviceRegistry::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  grpc::ClientContext watch_ctx;
  v1::WatchChangesRequest req;
  req.set_tenant_id("t1");
  watch_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->WatchChanges(&watch_ctx, req);
  reader->WaitForInitialMetadata();  // the stream's start ("now") is fixed
  const auto& headers = watch_ctx.GetServerInitialMetadata();
  auto start = headers.find(std::string(kChangeCursorHeader));
  ASSERT_NE(start, headers.end());
  EXPECT_EQ(std::string(start->second.data(), start->second.size()), "3");

  grpc::ClientContext create_ctx;
  v1::CreateDeviceRequest create;
  create.mutable_device()->set_tenant_id("t1");
  create.mutable_device()->set_device_id("grpc-1");
  create.mutable_device()->set_product_key("p1");
  create.set_generate_keys(true);
  v1::Device created;
  absl::Time wrote = absl::Now();
  ASSERT_TRUE(stub->CreateDevice(&create_ctx, create, &created).ok());
  v1::ChangeEvent e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_LT(absl::Now() - wrote, absl::Milliseconds(500));
  EXPECT_EQ(e.resource_id(), "grpc-1");
  EXPECT_EQ(e.etag(), created.etag());

  watch_ctx.TryCancel();
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);

  // Client-streaming import and server-streaming export through the adapters.
  {
    grpc::ClientContext ctx;
    v1::ImportDevicesResponse resp;
    auto writer = stub->ImportDevices(&ctx, &resp);
    for (int m = 0; m < 3; ++m) {
      v1::ImportDevicesRequest msg;
      if (m == 0) msg.set_tenant_id("t1");
      msg.set_generate_keys(true);
      for (int i = 0; i < 3; ++i) {
        v1::Device* d = msg.add_devices();
        d->set_device_id(absl::StrCat("imp-", m, "-", i));
        d->set_product_key(m == 2 && i == 2 ? "unknown" : "p1");
      }
      ASSERT_TRUE(writer->Write(msg));
    }
    ASSERT_TRUE(writer->WritesDone());
    grpc::Status st = writer->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.received(), 9);
    EXPECT_EQ(resp.imported(), 8);
    ASSERT_EQ(resp.errors_size(), 1);
    EXPECT_EQ(resp.errors(0).index(), 8);
    EXPECT_EQ(resp.errors(0).reason(), "UNKNOWN_PRODUCT");
    auto events = audit_.events();
    EXPECT_EQ(events.back().reason(), "ImportDevices");
    EXPECT_EQ(events.back().tenant_id(), "t1");
    EXPECT_EQ(events.back().attributes().at("imported"), "8");
  }
  {
    grpc::ClientContext ctx;
    v1::ExportDevicesRequest req;
    req.set_tenant_id("t1");
    auto reader = stub->ExportDevices(&ctx, req);
    v1::Device d;
    int n = 0;
    while (reader->Read(&d)) {
      ++n;
      EXPECT_FALSE(d.credentials().has_symmetric_key());
    }
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(n, 9);  // grpc-1 and 8 imported
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

// A self-signed certificate built at test time (no checked-in PEM).
std::string MakeCertificatePem(bool ca) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Test Root"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_basic_constraints,
                                            ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(x, key, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, x);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_free(x);
  EVP_PKEY_free(key);
  return pem;
}

TEST_F(RegistryServiceTest, CaCertificateIsStoredAsItsOwnEncodingOnly) {
  Seed();
  const std::string cert = MakeCertificatePem(true);
  {
    // Text around the certificate is dropped: what is stored (and served to readers)
    // is the certificate alone.
    grpc::ServerContext ctx;
    v1::CreateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_certificate_pem("issuer notes: secret-ish text\n" + cert +
                                          "-----BEGIN TRUSTED NOTE-----\nAAAA\n"
                                          "-----END TRUSTED NOTE-----\n");
    v1::CaCertificate out;
    ASSERT_TRUE(svc_->CreateCaCertificate(&ctx, &req, &out).ok());
    EXPECT_EQ(out.certificate_pem(), cert);
    grpc::ServerContext gctx;
    v1::GetCaCertificateRequest get;
    get.set_tenant_id("t1");
    get.set_ca_id(out.id());
    v1::CaCertificate got;
    ASSERT_TRUE(svc_->GetCaCertificate(&gctx, &get, &got).ok());
    EXPECT_EQ(got.certificate_pem(), cert);
  }
  {
    // A bundled private key is refused, and the message says why.
    grpc::ServerContext ctx;
    v1::CreateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_certificate_pem(
        cert +
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n");
    v1::CaCertificate out;
    const grpc::Status st = svc_->CreateCaCertificate(&ctx, &req, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("private key"), std::string::npos) << st.error_message();
    EXPECT_EQ(st.error_message().find("MC4CAQAw"), std::string::npos);
  }
}

TEST_F(RegistryServiceTest, CaCertificatesAreParsedAndVerifiable) {
  Seed();
  v1::CaCertificate out;
  {
    grpc::ServerContext ctx;
    v1::CreateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_certificate_pem(MakeCertificatePem(true));
    ASSERT_TRUE(svc_->CreateCaCertificate(&ctx, &req, &out).ok());
    EXPECT_EQ(out.sha256_fingerprint().size(), 64u);
    EXPECT_EQ(out.subject(), "CN=Test Root");
    EXPECT_EQ(out.status(), v1::CA_STATUS_UNVERIFIED);
    EXPECT_EQ(out.verification_code().size(), 32u);
    EXPECT_GT(out.not_after().seconds(), 0);
    grpc::ServerContext ctx2;
    v1::CaCertificate dup;
    EXPECT_EQ(svc_->CreateCaCertificate(&ctx2, &req, &dup).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }
  {
    grpc::ServerContext ctx;
    v1::CreateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_certificate_pem(MakeCertificatePem(false));
    v1::CaCertificate leaf;
    EXPECT_EQ(svc_->CreateCaCertificate(&ctx, &req, &leaf).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ServerContext ctx;
    v1::UpdateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_id(out.id());
    req.mutable_ca()->set_status(v1::CA_STATUS_VERIFIED);
    req.mutable_update_mask()->add_paths("status");
    v1::CaCertificate verified;
    // No proof of possession yet: an admin cannot just mark it verified.
    grpc::Status st = svc_->UpdateCaCertificate(&ctx, &req, &verified);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("iotauthctl ca verify"), std::string::npos);
    EXPECT_EQ(store_->GetCaCertificate("t1", out.id())->status(), v1::CA_STATUS_UNVERIFIED);
  }
  {
    // Nor create it verified.
    grpc::ServerContext ctx;
    v1::CreateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_certificate_pem(MakeCertificatePem(true));
    req.mutable_ca()->set_status(v1::CA_STATUS_VERIFIED);
    req.mutable_ca()->mutable_possession_verified_time()->set_seconds(1);
    v1::CaCertificate created;
    EXPECT_EQ(svc_->CreateCaCertificate(&ctx, &req, &created).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  // Once possession is proven (the certificate service's path), disable and enable
  // again work without a new proof.
  ASSERT_TRUE(store_->SetCaVerification("t1", out.id(), v1::CA_STATUS_VERIFIED, "code2", "").ok());
  for (v1::CaStatus status : {v1::CA_STATUS_DISABLED, v1::CA_STATUS_VERIFIED}) {
    grpc::ServerContext ctx;
    v1::UpdateCaCertificateRequest req;
    req.mutable_ca()->set_tenant_id("t1");
    req.mutable_ca()->set_id(out.id());
    req.mutable_ca()->set_status(status);
    req.mutable_update_mask()->add_paths("status");
    v1::CaCertificate updated;
    ASSERT_TRUE(svc_->UpdateCaCertificate(&ctx, &req, &updated).ok());
    EXPECT_EQ(updated.status(), status);
    EXPECT_TRUE(updated.has_possession_verified_time());
    EXPECT_EQ(updated.sha256_fingerprint(), out.sha256_fingerprint());
  }
}

TEST_F(RegistryServiceTest, RevocationAndCrlReadersNeedTheReaderRole) {
  Seed();
  v1::CaCertificate ca;
  ca.set_tenant_id("t1");
  ca.set_id("ca1");
  ca.set_certificate_pem("pem");
  ca.set_sha256_fingerprint(std::string(64, 'a'));
  ASSERT_TRUE(store_->CreateCaCertificate(ca).ok());
  for (const char* id : {"rev-1", "rev-2", "rev-3"}) {
    v1::CertificateRevocation r;
    r.set_tenant_id("t1");
    r.set_id(id);
    r.set_fingerprint(std::string(64, 'f'));
    ASSERT_TRUE(store_->CreateRevocation(r).ok());
  }
  v1::CertificateRevocationList crl;
  crl.set_tenant_id("t1");
  crl.set_ca_id("ca1");
  crl.set_crl_pem("crl");
  crl.set_crl_number("4");
  ASSERT_TRUE(store_->PutCrl(crl, "").ok());

  resolver_.Set(true, kReader);
  {
    grpc::ServerContext ctx;
    v1::GetRevocationRequest req;
    req.set_tenant_id("t1");
    req.set_revocation_id("rev-2");
    v1::CertificateRevocation out;
    ASSERT_TRUE(svc_->GetRevocation(&ctx, &req, &out).ok());
    EXPECT_EQ(out.id(), "rev-2");
    EXPECT_FALSE(out.etag().empty());
    req.set_revocation_id("rev-9");
    grpc::ServerContext ctx2;
    EXPECT_EQ(svc_->GetRevocation(&ctx2, &req, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    // Pages of two: every revocation once, in order.
    std::vector<std::string> seen;
    std::string token;
    do {
      grpc::ServerContext ctx;
      v1::ListRevocationsRequest req;
      req.set_tenant_id("t1");
      req.set_page_size(2);
      req.set_page_token(token);
      v1::ListRevocationsResponse resp;
      ASSERT_TRUE(svc_->ListRevocations(&ctx, &req, &resp).ok());
      for (const auto& r : resp.revocations()) seen.push_back(r.id());
      token = resp.next_page_token();
    } while (!token.empty());
    EXPECT_EQ(seen, (std::vector<std::string>{"rev-1", "rev-2", "rev-3"}));
  }
  {
    grpc::ServerContext ctx;
    v1::GetCrlRequest req;
    req.set_tenant_id("t1");
    req.set_ca_id("ca1");
    v1::CertificateRevocationList out;
    ASSERT_TRUE(svc_->GetCrl(&ctx, &req, &out).ok());
    EXPECT_EQ(out.crl_number(), "4");
    grpc::ServerContext ctx2;
    v1::ListCrlsRequest lreq;
    lreq.set_tenant_id("t1");
    v1::ListCrlsResponse lresp;
    ASSERT_TRUE(svc_->ListCrls(&ctx2, &lreq, &lresp).ok());
    ASSERT_EQ(lresp.crls_size(), 1);
    EXPECT_EQ(lresp.crls(0).ca_id(), "ca1");
    grpc::ServerContext ctx3;
    lreq.set_tenant_id("bad tenant id with spaces");
    EXPECT_EQ(svc_->ListCrls(&ctx3, &lreq, &lresp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  resolver_.Set(false, 0);
  {
    grpc::ServerContext ctx;
    v1::ListRevocationsRequest req;
    req.set_tenant_id("t1");
    v1::ListRevocationsResponse resp;
    EXPECT_EQ(svc_->ListRevocations(&ctx, &req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ServerContext ctx2;
    v1::GetCrlRequest creq;
    creq.set_tenant_id("t1");
    creq.set_ca_id("ca1");
    v1::CertificateRevocationList out;
    EXPECT_EQ(svc_->GetCrl(&ctx2, &creq, &out).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  resolver_.Set(true, static_cast<uint32_t>(Role::kGateway));
  {
    grpc::ServerContext ctx;
    v1::GetRevocationRequest req;
    req.set_tenant_id("t1");
    req.set_revocation_id("rev-1");
    v1::CertificateRevocation out;
    EXPECT_EQ(svc_->GetRevocation(&ctx, &req, &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
}

TEST_F(RegistryServiceTest, RewrapSecretsMovesEverySecretToTheNewKey) {
  Seed();
  std::map<std::string, std::string> keys;  // device id -> primary key
  for (int i = 0; i < 5; ++i) {
    v1::Device d;
    ASSERT_TRUE(CreateDevice(absl::StrCat("dev-", i), &d).ok());
    keys[d.device_id()] = d.credentials().symmetric_key().primary_key();
    ASSERT_FALSE(keys[d.device_id()].empty());
  }
  const std::string path = store_->path();
  const std::string key_a = testing::TestMasterKey();  // the fixture's key
  const std::string key_b(32, 'n');
  svc_.reset();
  store_.reset();

  auto open = [&](std::shared_ptr<const SecretBox> box) {
    SqliteStore::Options so;
    so.path = path;
    so.secret_box = std::move(box);
    so.clock = &clock_;
    auto store = SqliteStore::Open(so);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  };
  std::shared_ptr<const SecretBox> b_only(*SecretBox::Create(key_b));
  {
    // Before the rewrap, key B alone cannot read what key A sealed.
    auto store = open(b_only);
    ASSERT_NE(store, nullptr);
    EXPECT_FALSE(store->GetDevice("t1", "dev-0", Secrets::kInclude).ok());
  }

  // Restart with {B primary, A previous} and run the RPC through a server.
  std::shared_ptr<const SecretBox> b_and_a(*SecretBox::Create(key_b, {key_a}));
  store_ = open(b_and_a);
  ASSERT_NE(store_, nullptr);
  RegistryService::Options o;
  o.store = store_.get();
  o.clock = &clock_;
  o.audit = &audit_;
  o.caller_resolver = &resolver_;
  o.secret_box = b_and_a;
  auto svc = RegistryService::Create(o);
  ASSERT_TRUE(svc.ok()) << svc.status();
  svc_ = std::move(*svc);
  size_t audits_before = audit_.events().size();

  grpc::ServerBuilder builder;
  builder.RegisterService(svc_.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::DeviceRegistry::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  resolver_.Set(true, kReader);
  {
    grpc::ClientContext ctx;
    auto reader = stub->RewrapSecrets(&ctx, v1::RewrapSecretsRequest());
    v1::RewrapSecretsProgress p;
    while (reader->Read(&p)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  resolver_.Set(true, kAdmin);
  std::vector<v1::RewrapSecretsProgress> progress;
  {
    grpc::ClientContext ctx;
    v1::RewrapSecretsRequest req;
    req.set_batch_size(2);
    auto reader = stub->RewrapSecrets(&ctx, req);
    v1::RewrapSecretsProgress p;
    while (reader->Read(&p)) progress.push_back(p);
    grpc::Status s = reader->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // 5 devices in batches of 2, plus products and the tenant: several batches.
  ASSERT_GE(progress.size(), 4u);
  for (size_t i = 0; i + 1 < progress.size(); ++i) {
    EXPECT_FALSE(progress[i].done());
    EXPECT_LE(progress[i].rows_done(), progress[i + 1].rows_done());
  }
  EXPECT_TRUE(progress.back().done());
  EXPECT_GE(progress.back().rows_total(), 5);
  EXPECT_EQ(progress.back().rows_done(), progress.back().rows_total());

  std::vector<audit::v1::AuditEvent> events = audit_.events();
  ASSERT_EQ(events.size(), audits_before + 2);  // the denied call and the run
  const audit::v1::AuditEvent& e = events.back();
  EXPECT_EQ(e.type(), audit::v1::EVENT_TYPE_ADMIN_MUTATION);
  EXPECT_EQ(e.reason(), "RewrapSecrets");
  EXPECT_EQ(e.outcome(), audit::v1::OUTCOME_SUCCESS);
  EXPECT_EQ(e.attributes().at("primary_key_id"), b_only->primary_key_id());

  server->Shutdown();
  server.reset();
  svc_.reset();
  store_.reset();

  // Key A is no longer needed to read anything.
  auto store = open(b_only);
  ASSERT_NE(store, nullptr);
  for (const auto& [id, key] : keys) {
    auto d = store->GetDevice("t1", id, Secrets::kInclude);
    ASSERT_TRUE(d.ok()) << id << ": " << d.status();
    EXPECT_EQ(d->credentials().symmetric_key().primary_key(), key);
  }
  for (const char* product : {"p1", "p2"}) {
    auto p = store->GetProduct("t1", product, Secrets::kInclude);
    EXPECT_TRUE(p.ok()) << product << ": " << p.status();
  }
  EXPECT_TRUE(store->GetTenant("t1", Secrets::kInclude).ok());
}

TEST_F(RegistryServiceTest, RewrapSecretsWithoutABoxIsAPreconditionFailure) {
  const Caller admin = Authenticated(kAdmin);
  VectorSink<v1::RewrapSecretsProgress> sink;
  EXPECT_EQ(svc_->DoRewrapSecrets(admin, v1::RewrapSecretsRequest(), sink).code(),
            absl::StatusCode::kFailedPrecondition);
  v1::RewrapSecretsRequest bad;
  bad.set_batch_size(-1);
  EXPECT_EQ(svc_->DoRewrapSecrets(admin, bad, sink).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sink.items().empty());
}

}  // namespace
}  // namespace iotauth::registry
