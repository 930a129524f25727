#include "services/identity/sync/registry_registrar.h"

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "services/audit/sink_interface.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/registry/registry_service.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/test_store.h"

namespace iotauth::identity {
namespace {

namespace rv1 = iotauth::registry::v1;
using ::iotauth::registry::RegistryService;
using ::iotauth::registry::SqliteStore;

class AdminResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& /*context*/) const override {
    Caller c;
    c.authenticated = true;
    c.principal = "identity";
    c.roles = static_cast<uint32_t>(Role::kAdmin);
    return c;
  }
};

// The real registry service, with a hook before each of the writes activation
// makes: it can fail the call (as a lost connection or a full disk would) or change
// the device first (as a concurrent writer would).
class HookedRegistry final : public rv1::DeviceRegistry::Service {
 public:
  explicit HookedRegistry(RegistryService* real) : real_(real) {}

  // Before the next call of `method`: `hook` runs; a non-OK status is the call's
  // answer and the real service is not called.
  void Before(const std::string& method, std::function<grpc::Status()> hook) {
    absl::MutexLock lock(&mu_);
    method_ = method;
    hook_ = std::move(hook);
  }

  grpc::Status GetDevice(grpc::ServerContext* ctx, const rv1::GetDeviceRequest* req,
                         rv1::Device* resp) override {
    return real_->GetDevice(ctx, req, resp);
  }
  grpc::Status CreateDevice(grpc::ServerContext* ctx, const rv1::CreateDeviceRequest* req,
                            rv1::Device* resp) override {
    if (grpc::Status s = Hook("CreateDevice"); !s.ok()) return s;
    return real_->CreateDevice(ctx, req, resp);
  }
  grpc::Status UpdateDevice(grpc::ServerContext* ctx, const rv1::UpdateDeviceRequest* req,
                            rv1::Device* resp) override {
    if (grpc::Status s = Hook("UpdateDevice"); !s.ok()) return s;
    return real_->UpdateDevice(ctx, req, resp);
  }
  grpc::Status SetDeviceStatus(grpc::ServerContext* ctx, const rv1::SetDeviceStatusRequest* req,
                               rv1::Device* resp) override {
    if (grpc::Status s = Hook("SetDeviceStatus"); !s.ok()) return s;
    return real_->SetDeviceStatus(ctx, req, resp);
  }
  grpc::Status RegenerateDeviceKey(grpc::ServerContext* ctx,
                                   const rv1::RegenerateDeviceKeyRequest* req,
                                   rv1::Device* resp) override {
    if (grpc::Status s = Hook("RegenerateDeviceKey"); !s.ok()) return s;
    return real_->RegenerateDeviceKey(ctx, req, resp);
  }

 private:
  grpc::Status Hook(const std::string& method) {
    std::function<grpc::Status()> hook;
    {
      absl::MutexLock lock(&mu_);
      if (method != method_) return grpc::Status::OK;
      hook = std::exchange(hook_, nullptr);
      method_.clear();
    }
    return hook ? hook() : grpc::Status::OK;
  }

  RegistryService* real_;
  absl::Mutex mu_;
  std::string method_ ABSL_GUARDED_BY(mu_);
  std::function<grpc::Status()> hook_ ABSL_GUARDED_BY(mu_);
};

class RegistryRegistrarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ::iotauth::registry::testing::OpenTestStore(&clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    RegistryService::Options o;
    o.store = store_.get();
    o.clock = &clock_;
    o.audit = &audit_;
    o.caller_resolver = &resolver_;
    auto svc = RegistryService::Create(o);
    ASSERT_TRUE(svc.ok()) << svc.status();
    real_ = std::move(*svc);
    hooked_ = std::make_unique<HookedRegistry>(real_.get());
    grpc::ServerBuilder builder;
    builder.RegisterService(hooked_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    registrar_ = std::make_unique<RegistryRegistrar>(
        server_->InProcessChannel(grpc::ChannelArguments()), "");

    grpc::ServerContext ctx;
    rv1::CreateTenantRequest t;
    t.mutable_tenant()->set_id("t1");
    rv1::Tenant tenant;
    ASSERT_TRUE(real_->CreateTenant(&ctx, &t, &tenant).ok());
    grpc::ServerContext pctx;
    rv1::CreateProductRequest p;
    p.mutable_product()->set_tenant_id("t1");
    p.mutable_product()->set_product_key("pk");
    rv1::Product product;
    ASSERT_TRUE(real_->CreateProduct(&pctx, &p, &product).ok());
    product_.tenant_id = "t1";
    product_.product_key = "pk";
    product_.dynamic_activation = true;
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // A device registered ahead of activation, with keys the device was never given.
  void PreRegister(const std::string& id,
                   rv1::DeviceStatus status = rv1::DEVICE_STATUS_PENDING_APPROVAL) {
    grpc::ServerContext ctx;
    rv1::CreateDeviceRequest req;
    req.mutable_device()->set_tenant_id("t1");
    req.mutable_device()->set_device_id(id);
    req.mutable_device()->set_product_key("pk");
    req.mutable_device()->set_status(status);
    req.set_generate_keys(true);
    rv1::Device out;
    ASSERT_TRUE(real_->CreateDevice(&ctx, &req, &out).ok());
  }

  // The device as stored, secrets included.
  rv1::Device Stored(const std::string& id) {
    auto d = store_->GetDevice("t1", id, ::iotauth::registry::Secrets::kInclude);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : rv1::Device();
  }

  static bool Activated(const rv1::Device& d) {
    return d.tags().count(RegistryRegistrar::kActivatedTag) > 0;
  }

  FakeClock clock_;
  AdminResolver resolver_;
  audit::NullAuditSink audit_;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<RegistryService> real_;
  std::unique_ptr<HookedRegistry> hooked_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<RegistryRegistrar> registrar_;
  ProductRecord product_;
};

TEST_F(RegistryRegistrarTest, UnknownDeviceIsCreatedEnabledActivatedWithItsSecret) {
  auto a = registrar_->ActivateDevice(product_, "dev1");
  ASSERT_TRUE(a.ok()) << a.status();
  const rv1::Device d = Stored("dev1");
  EXPECT_TRUE(Activated(d));
  EXPECT_EQ(d.status(), rv1::DEVICE_STATUS_ENABLED);
  EXPECT_FALSE(a->device_secret.empty());
  EXPECT_EQ(a->device_secret, d.credentials().symmetric_key().primary_key());
}

TEST_F(RegistryRegistrarTest, AnEnrolledDeviceThatWasGivenAnotherKeyIsRefused) {
  grpc::ServerContext gctx;
  rv1::CreateEnrollmentGroupRequest greq;
  greq.mutable_group()->set_tenant_id("t1");
  greq.mutable_group()->set_id("g1");
  greq.mutable_group()->set_product_key("pk");
  greq.set_generate_key(true);
  rv1::EnrollmentGroup created_group;
  ASSERT_TRUE(real_->CreateEnrollmentGroup(&gctx, &greq, &created_group).ok());
  EnrollmentGroupRecord group;
  group.tenant_id = "t1";
  group.id = "g1";
  group.product_key = "pk";
  const std::string derived = "ZGVyaXZlZC1rZXktZm9yLWUxLTAwMDAwMDAwMDA=";
  auto first = registrar_->RegisterFromEnrollmentGroup(group, "e1", derived);
  ASSERT_TRUE(first.ok()) << first.status();
  // A concurrent first connect (ALREADY_EXISTS) with the same derived key: the stored
  // device, with its keys.
  auto again = registrar_->RegisterFromEnrollmentGroup(group, "e1", derived);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->credentials().symmetric_key().primary_key(), derived);
  // An admin gives the device other keys: the derived key no longer proves anything.
  rv1::Device d = Stored("e1");
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(
      "b3RoZXIta2V5LWZvci1lMS0wMDAwMDAwMDAwMDA=");
  d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(
      "b3RoZXIta2V5LWZvci1lMS0wMDAwMDAwMDAwMDE=");
  ASSERT_TRUE(store_->UpdateDevice(d, "").ok());
  EXPECT_EQ(registrar_->RegisterFromEnrollmentGroup(group, "e1", derived).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(RegistryRegistrarTest, PreRegisteredDeviceGetsANewKeyAndIsEnabledAndTagged) {
  PreRegister("dev1");
  const std::string old_key = Stored("dev1").credentials().symmetric_key().primary_key();
  auto a = registrar_->ActivateDevice(product_, "dev1");
  ASSERT_TRUE(a.ok()) << a.status();
  const rv1::Device d = Stored("dev1");
  EXPECT_TRUE(Activated(d));
  EXPECT_EQ(d.status(), rv1::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(a->device_secret, d.credentials().symmetric_key().primary_key());
  EXPECT_NE(a->device_secret, old_key);
  // The returned device is the stored one, keys included (the identity service's
  // directory takes it as it is).
  EXPECT_EQ(a->device.device_id(), "dev1");
  EXPECT_EQ(a->device.status(), rv1::DEVICE_STATUS_ENABLED);
  EXPECT_TRUE(Activated(a->device));
  EXPECT_EQ(a->device.credentials().symmetric_key().primary_key(), a->device_secret);
  EXPECT_EQ(a->device.credentials().symmetric_key().secondary_key(),
            d.credentials().symmetric_key().secondary_key());
  EXPECT_FALSE(a->device.credentials().symmetric_key().secondary_key().empty());
}

// An admin's disable stands even when the caller has not seen it yet; a device
// already enabled is activated.
TEST_F(RegistryRegistrarTest, DisabledDeviceIsRefusedEnabledOneIsActivated) {
  PreRegister("off", rv1::DEVICE_STATUS_DISABLED);
  EXPECT_EQ(registrar_->ActivateDevice(product_, "off").status().code(),
            absl::StatusCode::kPermissionDenied);
  const rv1::Device off = Stored("off");
  EXPECT_FALSE(Activated(off));
  EXPECT_EQ(off.status(), rv1::DEVICE_STATUS_DISABLED);
  PreRegister("on", rv1::DEVICE_STATUS_ENABLED);
  auto a = registrar_->ActivateDevice(product_, "on");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(Activated(Stored("on")));
}

TEST_F(RegistryRegistrarTest, SecondActivationAndOtherProductsAreRefused) {
  ASSERT_TRUE(registrar_->ActivateDevice(product_, "dev1").ok());
  EXPECT_EQ(registrar_->ActivateDevice(product_, "dev1").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ProductRecord other = product_;
  other.product_key = "other";
  PreRegister("dev2");
  EXPECT_EQ(registrar_->ActivateDevice(other, "dev2").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(Activated(Stored("dev2")));
}

// A device that connected with its own credential is marked; the product secret can
// then no longer activate (re-key) it. Keys and status are left as they were.
TEST_F(RegistryRegistrarTest, MarkActivatedTagsTheDeviceAndStopsLaterActivations) {
  PreRegister("dev1", rv1::DEVICE_STATUS_ENABLED);
  const rv1::Device before = Stored("dev1");
  ASSERT_TRUE(registrar_->MarkActivated(product_, "dev1").ok());
  const rv1::Device after = Stored("dev1");
  EXPECT_TRUE(Activated(after));
  EXPECT_EQ(after.credentials().symmetric_key().primary_key(),
            before.credentials().symmetric_key().primary_key());
  EXPECT_EQ(after.status(), rv1::DEVICE_STATUS_ENABLED);
  // Idempotent; no new version when already marked.
  ASSERT_TRUE(registrar_->MarkActivated(product_, "dev1").ok());
  EXPECT_EQ(Stored("dev1").etag(), after.etag());
  EXPECT_EQ(registrar_->ActivateDevice(product_, "dev1").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Stored("dev1").credentials().symmetric_key().primary_key(),
            before.credentials().symmetric_key().primary_key());
  // Another product's device, or none, is not marked.
  ProductRecord other = product_;
  other.product_key = "other";
  PreRegister("dev2", rv1::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(registrar_->MarkActivated(other, "dev2").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(Activated(Stored("dev2")));
  EXPECT_EQ(registrar_->MarkActivated(product_, "nobody").code(), absl::StatusCode::kNotFound);
}

// Whichever write fails, the device is left not activated, and the next attempt
// activates it with a secret that matches what is stored.
TEST_F(RegistryRegistrarTest, AFailedWriteLeavesTheDeviceActivatableAgain) {
  for (const char* method : {"RegenerateDeviceKey", "SetDeviceStatus", "UpdateDevice"}) {
    SCOPED_TRACE(method);
    const std::string id = absl::StrCat("dev-", method);
    PreRegister(id);
    hooked_->Before(method, [] {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "injected: registry unreachable");
    });
    auto failed = registrar_->ActivateDevice(product_, id);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(Activated(Stored(id)));

    auto a = registrar_->ActivateDevice(product_, id);
    ASSERT_TRUE(a.ok()) << a.status();
    const rv1::Device d = Stored(id);
    EXPECT_TRUE(Activated(d));
    EXPECT_EQ(d.status(), rv1::DEVICE_STATUS_ENABLED);
    EXPECT_EQ(a->device_secret, d.credentials().symmetric_key().primary_key());
  }
}

// A write to the device before any of the registrar's writes (another activation,
// an admin) makes the activation fail rather than overwrite it.
TEST_F(RegistryRegistrarTest, AConcurrentChangeFailsTheActivation) {
  for (const char* method : {"RegenerateDeviceKey", "SetDeviceStatus", "UpdateDevice"}) {
    SCOPED_TRACE(method);
    const std::string id = absl::StrCat("dev-", method);
    PreRegister(id);
    hooked_->Before(method, [this, id] {
      grpc::ServerContext ctx;
      rv1::RegenerateDeviceKeyRequest req;
      req.set_tenant_id("t1");
      req.set_device_id(id);
      req.set_slot(rv1::KEY_SLOT_SECONDARY);
      rv1::Device out;
      return real_->RegenerateDeviceKey(&ctx, &req, &out);
    });
    auto a = registrar_->ActivateDevice(product_, id);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition) << a.status();
    EXPECT_FALSE(Activated(Stored(id)));
  }
}

}  // namespace
}  // namespace iotauth::identity
