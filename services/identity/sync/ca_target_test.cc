// The registry mirror feeding an X.509 CaDirectory end to end, in process: a real
// RegistryService over a SqliteStore, the CertificateService writing to the same
// store, and RegistryMirror + CaMirrorTarget following it over gRPC. Also the
// JIT registrar over the same server.
#include "services/identity/sync/ca_target.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/audit/sink_interface.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/identity/directory_cache.h"
#include "services/identity/sync/cert_registrar.h"
#include "services/identity/sync/directory_target.h"
#include "services/identity/sync/registry_mirror.h"
#include "services/identity/x509/certificate_service.h"
#include "services/identity/x509/test_pki.h"
#include "services/identity/x509/x509_certificate_verifier.h"
#include "services/registry/registry_service.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/test_store.h"

namespace iotauth::identity {
namespace {

namespace rv1 = ::iotauth::registry::v1;
namespace iv1 = ::iotauth::identity::v1;
using x509::X509Ptr;
using x509::testing::CertSpec;
using x509::testing::KeyType;
using x509::testing::MakeCert;
using x509::testing::NewKey;

Caller AdminCaller() {
  Caller c;
  c.authenticated = true;
  c.principal = "test";
  c.roles = static_cast<uint32_t>(Role::kAdmin);
  return c;
}

// Waits (real time: the mirror is asynchronous) until `pred` holds.
template <typename Pred>
bool Eventually(Pred pred) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return pred();
}

// Every caller has every role, except the one call numbered `fail_call` (counting
// from 1; 0 = none), which gets no role and so PERMISSION_DENIED.
class FailNthCallResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& context) const override {
    Caller c = allow_.Resolve(context);
    if (calls_.fetch_add(1) + 1 == fail_call.load()) c.roles = 0;
    return c;
  }
  std::atomic<int> fail_call{0};

 private:
  AllowAllCallerResolver allow_;
  mutable std::atomic<int> calls_{0};
};

class CaMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ::iotauth::registry::testing::OpenTestStore(&clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    registry_ = NewRegistryService();
    x509::CertificateService::Options co;
    co.store = store_.get();
    co.clock = &clock_;
    co.audit = &audit_;
    co.caller_resolver = &resolver_;
    certs_ = *x509::CertificateService::Create(co);
    grpc::ServerBuilder builder;
    builder.RegisterService(registry_.get());
    server_ = builder.BuildAndStart();
    channel_ = server_->InProcessChannel(grpc::ChannelArguments());

    rv1::Tenant t;
    t.set_id("t1");
    ASSERT_TRUE(store_->CreateTenant(t).ok());
    rv1::Product p;
    p.set_tenant_id("t1");
    p.set_product_key("p1");
    ASSERT_TRUE(store_->CreateProduct(p).ok());
  }

  void TearDown() override {
    if (mirror_) mirror_->Stop();
    if (server_) server_->Shutdown();
  }

  // A RegistryService over the fixture's store, clock, audit sink and resolver.
  std::unique_ptr<::iotauth::registry::RegistryService> NewRegistryService() {
    ::iotauth::registry::RegistryService::Options ro;
    ro.store = store_.get();
    ro.clock = &clock_;
    ro.audit = &audit_;
    ro.caller_resolver = &resolver_;
    auto service = ::iotauth::registry::RegistryService::Create(ro);
    EXPECT_TRUE(service.ok()) << service.status();
    return service.ok() ? std::move(*service) : nullptr;
  }

  void StartMirror() {
    RegistryMirrorOptions mo;
    mo.channel = channel_;
    mo.target = &fanout_;
    mirror_ = std::make_unique<RegistryMirror>(mo);
    mirror_->Start();
    ASSERT_TRUE(mirror_->WaitForInitialSync(absl::Seconds(10)));
  }

  size_t CaCount() const {
    auto t = cas_.Find("t1");
    return t == nullptr ? 0 : t->cas.size();
  }
  bool Trusted(const std::string& ca_id) const {
    auto t = cas_.Find("t1");
    if (t == nullptr) return false;
    auto it = t->cas.find(ca_id);
    return it != t->cas.end() && it->second->status == rv1::CA_STATUS_VERIFIED &&
           t->trusted_by_tbs.contains(it->second->cert->tbs_sha256());
  }
  bool Revoked(const std::string& fingerprint) const {
    auto t = cas_.Find("t1");
    return t != nullptr && t->revoked_fingerprints.contains(fingerprint);
  }
  size_t CrlCount() const {
    auto t = cas_.Find("t1");
    return t == nullptr || t->store == nullptr ? 0 : t->store->crls().size();
  }

  // What MirrorABacklog saw.
  struct Backlog {
    std::vector<rv1::Device> devices;  // created behind the mirror, in this order
    std::vector<std::string> applied;  // devices the mirror upserted, in order
    std::unique_ptr<DirectoryCache> cache;
    int64_t failed_closed = 0;
  };
  // A mirror of `registry` held at its snapshot while `n` devices are created and
  // the last of them disabled behind it, then let go; returns once the disable
  // has reached the cache.
  void MirrorABacklog(rv1::DeviceRegistry::Service* registry, int n, Backlog* out);

  FakeClock clock_;
  audit::NullAuditSink audit_;
  FailNthCallResolver resolver_;
  std::unique_ptr<::iotauth::registry::SqliteStore> store_;
  std::unique_ptr<::iotauth::registry::RegistryService> registry_;
  std::unique_ptr<x509::CertificateService> certs_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  x509::CaDirectory cas_;
  CaMirrorTarget ca_target_{&cas_};
  FanoutMirrorTarget fanout_{{&ca_target_}};
  std::unique_ptr<RegistryMirror> mirror_;
};

TEST_F(CaMirrorTest, SnapshotThenChangesReachTheCaDirectory) {
  // Before the mirror starts: an issuing CA and a revocation (snapshot path).
  iv1::CreateIssuingCaRequest create;
  create.set_tenant_id("t1");
  create.mutable_generate();
  auto issuing = certs_->DoCreateIssuingCa(AdminCaller(), create);
  ASSERT_TRUE(issuing.ok()) << issuing.status();
  iv1::RevokeCertificateRequest revoke;
  revoke.set_tenant_id("t1");
  revoke.set_fingerprint(std::string(64, 'a'));
  ASSERT_TRUE(certs_->DoRevokeCertificate(AdminCaller(), revoke).ok());

  StartMirror();
  EXPECT_EQ(CaCount(), 1u);
  EXPECT_TRUE(Trusted(issuing->id()));
  EXPECT_TRUE(Revoked(std::string(64, 'a')));

  // Changes: an uploaded CA (unverified, then verified by proof of possession), a
  // CRL, a revocation, then deletions.
  auto ca_key = NewKey(KeyType::kP256);
  X509Ptr root =
      MakeCert(CertSpec{.cn = "Uploaded Root", .ca = true}, ca_key.get(), nullptr, nullptr);
  grpc::ServerContext ctx;
  rv1::CreateCaCertificateRequest up;
  up.mutable_ca()->set_tenant_id("t1");
  up.mutable_ca()->set_certificate_pem(x509::testing::Pem(root.get()));
  rv1::CaCertificate uploaded;
  ASSERT_TRUE(registry_->CreateCaCertificate(&ctx, &up, &uploaded).ok());
  ASSERT_TRUE(Eventually([&] { return CaCount() == 2; }));
  EXPECT_FALSE(Trusted(uploaded.id()));

  X509Ptr proof = MakeCert(CertSpec{.cn = uploaded.verification_code()},
                           NewKey(KeyType::kP256).get(), root.get(), ca_key.get());
  iv1::VerifyCaPossessionRequest pop;
  pop.set_tenant_id("t1");
  pop.set_ca_id(uploaded.id());
  pop.set_verification_certificate(x509::testing::Pem(proof.get()));
  ASSERT_TRUE(certs_->DoVerifyCaPossession(AdminCaller(), pop).ok());
  ASSERT_TRUE(Eventually([&] { return Trusted(uploaded.id()); }));

  iv1::UploadCrlRequest crl;
  crl.set_tenant_id("t1");
  crl.set_ca_id(uploaded.id());
  crl.set_crl(x509::testing::MakeCrlPem(root.get(), ca_key.get(), {3}, clock_.Now(),
                                        clock_.Now() + absl::Hours(24)));
  ASSERT_TRUE(certs_->DoUploadCrl(AdminCaller(), crl).ok());
  ASSERT_TRUE(Eventually([&] { return CrlCount() == 1; }));

  revoke.set_fingerprint(std::string(64, 'b'));
  auto rev = certs_->DoRevokeCertificate(AdminCaller(), revoke);
  ASSERT_TRUE(rev.ok());
  ASSERT_TRUE(Eventually([&] { return Revoked(std::string(64, 'b')); }));
  iv1::DeleteRevocationRequest del;
  del.set_tenant_id("t1");
  del.set_revocation_id(rev->id());
  ASSERT_TRUE(certs_->DoDeleteRevocation(AdminCaller(), del).ok());
  ASSERT_TRUE(Eventually([&] { return !Revoked(std::string(64, 'b')); }));

  // Deleting the CA removes it and its CRL.
  rv1::DeleteCaCertificateRequest dca;
  dca.set_tenant_id("t1");
  dca.set_ca_id(uploaded.id());
  rv1::DeleteResponse dresp;
  grpc::ServerContext ctx2;
  ASSERT_TRUE(registry_->DeleteCaCertificate(&ctx2, &dca, &dresp).ok());
  ASSERT_TRUE(Eventually([&] { return CaCount() == 1 && CrlCount() == 0; }));
  EXPECT_EQ(ca_target_.malformed_records(), 0);
}

TEST_F(CaMirrorTest, RegistrarRegistersJitDevicesIdempotently) {
  RegistryCertificateRegistrar registrar(channel_, "");
  x509::CaInfo ca;
  ca.tenant_id = "t1";
  ca.id = "ca-1";
  ca.jit_registration = true;
  ca.jit_product_key = "p1";
  ca.jit_auto_enable = false;
  auto d = registrar.RegisterFromCertificate(ca, "jit-1", std::string(64, 'c'));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->status(), rv1::DEVICE_STATUS_PENDING_APPROVAL);
  EXPECT_TRUE(d->credentials().ca_signed_allowed());
  EXPECT_EQ(d->product_key(), "p1");
  EXPECT_EQ(d->tags().at(RegistryCertificateRegistrar::kJitCaTag), "ca-1");
  auto again = registrar.RegisterFromCertificate(ca, "jit-1", std::string(64, 'c'));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->etag(), d->etag());
  ca.jit_auto_enable = true;
  auto enabled = registrar.RegisterFromCertificate(ca, "jit-2", "");
  ASSERT_TRUE(enabled.ok());
  EXPECT_EQ(enabled->status(), rv1::DEVICE_STATUS_ENABLED);
  ca.jit_product_key = "missing";
  EXPECT_EQ(registrar.RegisterFromCertificate(ca, "jit-3", "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ca.jit_product_key = "";
  EXPECT_EQ(registrar.RegisterFromCertificate(ca, "jit-3", "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetDevice("t1", "jit-3", ::iotauth::registry::Secrets::kOmit).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CaMirrorTest, IssuedCertificateAuthenticatesUntilRevokedWithinASecond) {
  StartMirror();
  rv1::Device device;
  device.set_tenant_id("t1");
  device.set_device_id("device-1");
  device.set_product_key("p1");
  device.set_status(rv1::DEVICE_STATUS_ENABLED);
  device.mutable_credentials()->set_ca_signed_allowed(true);
  ASSERT_TRUE(store_->CreateDevice(device).ok());
  DirectoryCache directory(DirectoryCache::Options{});
  ASSERT_TRUE(directory.UpsertDevice(device).ok());
  x509::X509CertificateVerifier::Options vo;
  vo.cas = &cas_;
  vo.directory = &directory;
  auto verifier = x509::X509CertificateVerifier::Create(vo);
  ASSERT_TRUE(verifier.ok());

  iv1::CreateIssuingCaRequest create;
  create.set_tenant_id("t1");
  create.mutable_generate();
  ASSERT_TRUE(certs_->DoCreateIssuingCa(AdminCaller(), create).ok());
  auto key = NewKey(KeyType::kP256);
  iv1::IssueCertificateRequest issue;
  issue.set_tenant_id("t1");
  issue.set_device_id("device-1");
  issue.set_csr(x509::testing::MakeCsrPem("device-1", key.get()));
  auto issued = certs_->DoIssueCertificate(AdminCaller(), issue);
  ASSERT_TRUE(issued.ok()) << issued.status();
  std::vector<absl::string_view> chain = {issued->certificate_pem()};
  auto verify = [&] { return (*verifier)->Verify(chain, "t1", clock_.Now()); };
  ASSERT_TRUE(Eventually([&] { return verify().verdict.ok(); }));
  EXPECT_EQ(verify().device_id, "device-1");

  iv1::RevokeCertificateRequest revoke;
  revoke.set_tenant_id("t1");
  revoke.set_certificate(issued->certificate_pem());
  absl::Time revoked_at = absl::Now();
  ASSERT_TRUE(certs_->DoRevokeCertificate(AdminCaller(), revoke).ok());
  ASSERT_TRUE(Eventually([&] { return verify().verdict.reason == iv1::DENY_REASON_REVOKED; }));
  EXPECT_LT(absl::Now() - revoked_at, absl::Seconds(1));
}

// Counts the devices the mirror delivers; the first UpsertDevice can be held back
// (a slow target) so that the change stream runs ahead of it.
class CountingTarget final : public MirrorTarget {
 public:
  explicit CountingTarget(absl::Notification* gate) : gate_(gate) {}
  void UpsertTenant(const rv1::Tenant& /*tenant*/) override {}
  void RemoveTenant(const std::string& /*tenant_id*/) override {}
  void UpsertProduct(const rv1::Product& /*product*/) override {}
  void RemoveProduct(const std::string& /*tenant_id*/, const std::string& /*key*/) override {}
  void UpsertDevice(const rv1::Device& device) override {
    if (gate_ != nullptr) gate_->WaitForNotification();
    absl::MutexLock lock(&mu_);
    order_.push_back(device.device_id());
  }
  void RemoveDevice(const std::string& /*tenant_id*/, const std::string& /*id*/) override {}
  void UpsertGroup(const rv1::EnrollmentGroup& /*group*/) override {}
  void RemoveGroup(const std::string& /*tenant_id*/, const std::string& /*id*/) override {}
  void Clear() override {
    absl::MutexLock lock(&mu_);
    order_.clear();
  }
  std::vector<std::string> Devices() const {
    absl::MutexLock lock(&mu_);
    return order_;
  }

 private:
  absl::Notification* gate_;
  mutable absl::Mutex mu_;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
};

// Options for a mirror of the registry behind `channel` into `target`, devices only.
RegistryMirrorOptions DeviceMirrorOptions(std::shared_ptr<grpc::Channel> channel,
                                          MirrorTarget* target) {
  RegistryMirrorOptions mo;
  mo.channel = std::move(channel);
  mo.target = target;
  mo.mirror_certificates = false;
  return mo;
}

// A mirror of the fixture's registry into `target` (devices only), synced.
std::unique_ptr<RegistryMirror> StartDeviceMirror(std::shared_ptr<grpc::Channel> channel,
                                                  MirrorTarget* target) {
  auto mirror = std::make_unique<RegistryMirror>(DeviceMirrorOptions(std::move(channel), target));
  mirror->Start();
  EXPECT_TRUE(mirror->WaitForInitialSync(absl::Seconds(10)));
  return mirror;
}

// Enabled devices dev-<first> ... dev-<first + n - 1> of t1/p1.
std::vector<rv1::Device> Devices(int first, int n) {
  std::vector<rv1::Device> devices;
  devices.reserve(static_cast<size_t>(n));
  for (int i = first; i < first + n; ++i) {
    rv1::Device d;
    d.set_tenant_id("t1");
    d.set_device_id(absl::StrCat("dev-", i));
    d.set_product_key("p1");
    d.set_status(rv1::DEVICE_STATUS_ENABLED);
    devices.push_back(std::move(d));
  }
  return devices;
}

// More changes than the mirror buffers (1024) while its target is stuck: the
// stream pauses and resumes, and every change arrives once, in order.
TEST_F(CaMirrorTest, ChangesBeyondTheBufferArriveInOrderBehindASlowTarget) {
  absl::Notification gate;
  CountingTarget target(&gate);
  auto mirror = StartDeviceMirror(channel_, &target);

  std::vector<std::string> want;
  for (int batch = 0; batch < 30; ++batch) {
    const std::vector<rv1::Device> devices = Devices(batch * 100, 100);
    for (const auto& d : devices) want.push_back(d.device_id());
    auto r = store_->CreateDevices("t1", devices);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  gate.Notify();
  ASSERT_TRUE(Eventually([&] { return target.Devices().size() >= want.size(); }))
      << target.Devices().size() << " of " << want.size();
  EXPECT_EQ(target.Devices(), want);
  mirror->Stop();
}

// Stop() while the target is behind and the stream is paused ends the call and
// returns (it does not wait for the registry or drain the backlog first).
TEST_F(CaMirrorTest, StopWhileBehindEndsTheStream) {
  absl::Notification gate;
  CountingTarget target(&gate);
  auto mirror = StartDeviceMirror(channel_, &target);
  const std::vector<rv1::Device> devices = Devices(0, 2000);
  ASSERT_TRUE(store_->CreateDevices("t1", devices).ok());
  // The failure mode is a hang: Stop() waiting for a call that never ends.
  std::thread stopper([&] { mirror->Stop(); });
  gate.Notify();
  stopper.join();
  EXPECT_LE(target.Devices().size(), devices.size());
}

// A snapshot that fails part-way (here the 4th registry call of the mirror, after
// it read the change cursor) is started again from scratch: every device that
// existed before the mirror started reaches the target.
TEST_F(CaMirrorTest, SnapshotFailingPartWayIsRetriedWhole) {
  const std::vector<rv1::Device> devices = Devices(0, 50);
  ASSERT_TRUE(store_->CreateDevices("t1", devices).ok());
  resolver_.fail_call = 4;
  CountingTarget target(nullptr);
  auto mirror = StartDeviceMirror(channel_, &target);
  std::vector<std::string> want;
  want.reserve(devices.size());
  for (const auto& d : devices) want.push_back(d.device_id());
  std::vector<std::string> got = target.Devices();
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  mirror->Stop();
}

// Stop() during a long device export (the target is slow) cancels the export
// instead of reading it to the end.
TEST_F(CaMirrorTest, StopCancelsTheSnapshotExport) {
  const std::vector<rv1::Device> devices = Devices(0, 3000);
  ASSERT_TRUE(store_->CreateDevices("t1", devices).ok());
  absl::Notification gate;
  CountingTarget target(&gate);
  RegistryMirror mirror(DeviceMirrorOptions(channel_, &target));
  mirror.Start();  // the snapshot blocks in the target's first UpsertDevice
  std::thread stopper([&] { mirror.Stop(); });
  ASSERT_TRUE(Eventually([&] { return mirror.stop_requested(); }));
  gate.Notify();
  stopper.join();
  EXPECT_FALSE(mirror.WaitForInitialSync(absl::ZeroDuration()));
  EXPECT_LT(target.Devices().size(), devices.size());
}

// The registry goes away while reading is paused (the target is behind): draining
// the queue afterwards must not start a read on the finished call (a use after free
// that ASan reports), and the mirror stops cleanly.
TEST_F(CaMirrorTest, RegistryGoneWhileReadingIsPausedIsSafe) {
  const std::vector<rv1::Device> devices = Devices(0, 3000);
  ASSERT_TRUE(store_->CreateDevices("t1", devices).ok());
  absl::Notification gate;
  CountingTarget target(&gate);
  RegistryMirror mirror(DeviceMirrorOptions(channel_, &target));
  mirror.Start();  // the export fills the queue and pauses behind the gated target
  absl::SleepFor(absl::Milliseconds(300));
  server_->Shutdown(std::chrono::system_clock::now());  // cancels the export
  gate.Notify();
  ASSERT_TRUE(Eventually([&] { return !target.Devices().empty(); }));
  mirror.Stop();
  EXPECT_FALSE(mirror.WaitForInitialSync(absl::ZeroDuration()));
}

// The registry as the mirror sees it, except that GetDevice of one device fails with
// INTERNAL (a row whose secrets no longer open, say): a change that will never apply.
class OneBrokenDeviceRegistry final : public rv1::DeviceRegistry::Service {
 public:
  OneBrokenDeviceRegistry(rv1::DeviceRegistry::Service* real, std::string broken)
      : real_(real), broken_(std::move(broken)) {}
  grpc::Status GetDevice(grpc::ServerContext* c, const rv1::GetDeviceRequest* q,
                         rv1::Device* r) override {
    if (q->device_id() == broken_) return {grpc::StatusCode::INTERNAL, "cannot open secrets"};
    const int now = in_flight.fetch_add(1) + 1;
    int seen = max_in_flight.load();
    while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
    }
    if (get_delay > absl::ZeroDuration()) absl::SleepFor(get_delay);
    grpc::Status s = real_->GetDevice(c, q, r);
    in_flight.fetch_sub(1);
    return s;
  }
  // With batch_get, BatchGetDevices is served (the broken device failing on its
  // own); without it, UNIMPLEMENTED, as from a registry that predates it.
  grpc::Status BatchGetDevices(grpc::ServerContext* c, const rv1::BatchGetDevicesRequest* q,
                               rv1::BatchGetDevicesResponse* r) override {
    if (!batch_get.load()) return {grpc::StatusCode::UNIMPLEMENTED, "no BatchGetDevices"};
    batch_calls.fetch_add(1);
    if (batch_delay > absl::ZeroDuration()) absl::SleepFor(batch_delay);
    int seen = max_batch_ids.load();
    while (q->ids_size() > seen && !max_batch_ids.compare_exchange_weak(seen, q->ids_size())) {
    }
    grpc::Status s = real_->BatchGetDevices(c, q, r);
    for (int i = 0; s.ok() && i < r->results_size(); ++i) {
      if (q->ids(i).device_id() != broken_) continue;
      r->mutable_results(i)->Clear();
      r->mutable_results(i)->set_code(grpc::StatusCode::INTERNAL);
      r->mutable_results(i)->set_message("cannot open secrets");
    }
    return s;
  }
  std::atomic<bool> batch_get{false};
  std::atomic<int> batch_calls{0};
  std::atomic<int> max_batch_ids{0};
  absl::Duration batch_delay = absl::ZeroDuration();
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  absl::Duration get_delay = absl::ZeroDuration();
  grpc::Status GetChangeCursor(grpc::ServerContext* c, const rv1::GetChangeCursorRequest* q,
                               rv1::GetChangeCursorResponse* r) override {
    return real_->GetChangeCursor(c, q, r);
  }
  grpc::Status ListTenants(grpc::ServerContext* c, const rv1::ListTenantsRequest* q,
                           rv1::ListTenantsResponse* r) override {
    return real_->ListTenants(c, q, r);
  }
  grpc::Status GetTenant(grpc::ServerContext* c, const rv1::GetTenantRequest* q,
                         rv1::Tenant* r) override {
    return real_->GetTenant(c, q, r);
  }
  grpc::Status ListProducts(grpc::ServerContext* c, const rv1::ListProductsRequest* q,
                            rv1::ListProductsResponse* r) override {
    return real_->ListProducts(c, q, r);
  }
  grpc::Status GetProduct(grpc::ServerContext* c, const rv1::GetProductRequest* q,
                          rv1::Product* r) override {
    return real_->GetProduct(c, q, r);
  }
  grpc::Status ListEnrollmentGroups(grpc::ServerContext* c,
                                    const rv1::ListEnrollmentGroupsRequest* q,
                                    rv1::ListEnrollmentGroupsResponse* r) override {
    return real_->ListEnrollmentGroups(c, q, r);
  }
  grpc::Status ExportDevices(grpc::ServerContext* c, const rv1::ExportDevicesRequest* q,
                             grpc::ServerWriter<rv1::Device>* w) override {
    return real_->ExportDevices(c, q, w);
  }
  grpc::Status WatchChanges(grpc::ServerContext* c, const rv1::WatchChangesRequest* q,
                            grpc::ServerWriter<rv1::ChangeEvent>* w) override {
    if (silent_watch.load()) {
      // A half-open connection: the call is up, and nothing ever arrives.
      while (!c->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
      return {grpc::StatusCode::CANCELLED, "cancelled"};
    }
    return real_->WatchChanges(c, q, w);
  }
  std::atomic<bool> silent_watch{false};

 private:
  rv1::DeviceRegistry::Service* real_;
  std::string broken_;
};

// A change that can never be applied drops its device from the cache (refused from
// then on) and does not hold back the changes after it: a disable behind it still
// takes effect within a second.
TEST_F(CaMirrorTest, AChangeThatCannotBeReadFailsClosedAndTheRestFollow) {
  ASSERT_TRUE(store_->CreateDevices("t1", Devices(0, 2)).ok());
  OneBrokenDeviceRegistry faulty(registry_.get(), "dev-0");
  grpc::ServerBuilder b;
  b.RegisterService(&faulty);
  auto server = b.BuildAndStart();
  auto cache = *DirectoryCache::Create({});
  DirectoryMirrorTarget directory(cache.get());
  RegistryMirror mirror(
      DeviceMirrorOptions(server->InProcessChannel(grpc::ChannelArguments()), &directory));
  mirror.Start();
  ASSERT_TRUE(mirror.WaitForInitialSync(absl::Seconds(10)));
  ASSERT_NE(cache->FindDevice("t1", "dev-0"), nullptr);  // exported, not read one by one

  for (const char* id : {"dev-0", "dev-1"}) {
    auto d = store_->GetDevice("t1", id, ::iotauth::registry::Secrets::kOmit);
    ASSERT_TRUE(d.ok()) << d.status();
    d->set_status(rv1::DEVICE_STATUS_DISABLED);
    ASSERT_TRUE(store_->UpdateDevice(*d, "").ok());
  }
  ASSERT_TRUE(Eventually([&] {
    auto d1 = cache->FindDevice("t1", "dev-1");
    return d1 != nullptr && d1->status == rv1::DEVICE_STATUS_DISABLED;
  }));
  EXPECT_EQ(cache->FindDevice("t1", "dev-0"), nullptr);
  EXPECT_EQ(mirror.failed_closed_changes(), 1);
  mirror.Stop();
  server->Shutdown();
}

// One device whose keys the registry cannot open (its sealed key swapped for
// another row's: the AAD binds it to that row) is refused, and the snapshot of the
// rest completes instead of failing whole and being retried forever.
TEST_F(CaMirrorTest, ADeviceWhoseKeysDoNotOpenIsRefusedAndTheRestAreMirrored) {
  std::vector<rv1::Device> devices = Devices(0, 3);
  for (rv1::Device& d : devices) {
    rv1::SymmetricKey* k = d.mutable_credentials()->mutable_symmetric_key();
    k->set_primary_key(std::string(32, 'p'));
    k->set_secondary_key(std::string(32, 's'));
  }
  ASSERT_TRUE(store_->CreateDevices("t1", devices).ok());
  ASSERT_TRUE(::iotauth::registry::testing::CopySealedDeviceKey(store_->path(), "primary_key",
                                                                "dev-2", "dev-1")
                  .ok());

  auto cache = *DirectoryCache::Create({});
  DirectoryMirrorTarget directory(cache.get());
  std::unique_ptr<RegistryMirror> mirror = StartDeviceMirror(channel_, &directory);
  ASSERT_NE(mirror, nullptr);
  EXPECT_NE(cache->FindDevice("t1", "dev-0"), nullptr);
  EXPECT_NE(cache->FindDevice("t1", "dev-2"), nullptr);
  EXPECT_EQ(cache->FindDevice("t1", "dev-1"), nullptr);
  EXPECT_EQ(mirror->failed_closed_changes(), 1);

  // Written again (deleted and created with new keys), it is mirrored as usual.
  ASSERT_TRUE(store_->DeleteDevice("t1", "dev-1", "").ok());
  ASSERT_TRUE(store_->CreateDevice(devices[1]).ok());
  EXPECT_TRUE(Eventually([&] { return cache->FindDevice("t1", "dev-1") != nullptr; }));
  EXPECT_EQ(mirror->failed_closed_changes(), 1);
  mirror->Stop();
}

// A change stream that goes silent (no heartbeat) is given up within a second and
// reconnected; with max_silence set, the front-ends are told to stop deciding
// meanwhile, and to decide again once the registry speaks.
TEST_F(CaMirrorTest, ASilentChangeStreamIsReconnectedAndFailsClosedWhenAsked) {
  OneBrokenDeviceRegistry registry(registry_.get(), "");
  grpc::ServerBuilder b;
  b.RegisterService(&registry);
  auto server = b.BuildAndStart();
  auto cache = *DirectoryCache::Create({});
  DirectoryMirrorTarget directory(cache.get());
  std::atomic<bool> fresh{true};
  RegistryMirrorOptions mo =
      DeviceMirrorOptions(server->InProcessChannel(grpc::ChannelArguments()), &directory);
  mo.heartbeat_interval = absl::Milliseconds(100);
  mo.fresh = &fresh;
  mo.max_silence = absl::Milliseconds(600);
  mo.max_backoff = absl::Milliseconds(100);
  registry.silent_watch = true;  // the snapshot works; the change stream says nothing
  RegistryMirror mirror(mo);
  mirror.Start();
  ASSERT_TRUE(mirror.WaitForInitialSync(absl::Seconds(10)));
  ASSERT_TRUE(Eventually([&] { return mirror.silent_streams() >= 1; }));
  ASSERT_TRUE(Eventually([&] { return !fresh.load(); }));
  registry.silent_watch = false;
  ASSERT_TRUE(Eventually([&] { return fresh.load(); }));
  // Heartbeats keep a quiet registry's stream alive: no more reconnects.
  const int64_t reconnects = mirror.silent_streams();
  absl::SleepFor(absl::Milliseconds(800));
  EXPECT_EQ(mirror.silent_streams(), reconnects);
  EXPECT_TRUE(fresh.load());
  mirror.Stop();
  server->Shutdown();
}

void CaMirrorTest::MirrorABacklog(rv1::DeviceRegistry::Service* registry, int n, Backlog* out) {
  grpc::ServerBuilder b;
  b.RegisterService(registry);
  auto server = b.BuildAndStart();
  out->cache = *DirectoryCache::Create({});
  DirectoryMirrorTarget directory(out->cache.get());
  absl::Notification gate;
  CountingTarget order(&gate);  // holds the mirror until the backlog is queued
  FanoutMirrorTarget both({&directory, &order});
  ASSERT_TRUE(store_->CreateDevices("t1", Devices(0, 1)).ok());
  RegistryMirror mirror(
      DeviceMirrorOptions(server->InProcessChannel(grpc::ChannelArguments()), &both));
  mirror.Start();
  ASSERT_TRUE(Eventually([&] { return out->cache->FindDevice("t1", "dev-0") != nullptr; }));
  out->devices = Devices(1, n);
  ASSERT_TRUE(store_->CreateDevices("t1", out->devices).ok());
  auto last =
      store_->GetDevice("t1", out->devices.back().device_id(), ::iotauth::registry::Secrets::kOmit);
  ASSERT_TRUE(last.ok());
  last->set_status(rv1::DEVICE_STATUS_DISABLED);
  ASSERT_TRUE(store_->UpdateDevice(*last, "").ok());
  gate.Notify();
  ASSERT_TRUE(mirror.WaitForInitialSync(absl::Seconds(10)));
  ASSERT_TRUE(Eventually([&] {
    auto d = out->cache->FindDevice("t1", out->devices.back().device_id());
    return d != nullptr && d->status == rv1::DEVICE_STATUS_DISABLED;
  }));
  out->applied = order.Devices();
  out->failed_closed = mirror.failed_closed_changes();
  mirror.Stop();
  server->Shutdown();
}

// A big import's backlog is read many devices at a time, not one round trip each,
// and still applied in order: a disable queued behind it lands last and sticks.
// Here the registry predates BatchGetDevices: GetDevice calls, many in flight.
TEST_F(CaMirrorTest, ABacklogIsReadConcurrentlyAndAppliedInOrder) {
  OneBrokenDeviceRegistry registry(registry_.get(), "");
  registry.get_delay = absl::Milliseconds(2);
  Backlog backlog;
  ASSERT_NO_FATAL_FAILURE(MirrorABacklog(&registry, 300, &backlog));
  EXPECT_GT(registry.max_in_flight.load(), 1);
  std::vector<std::string> want = {"dev-0"};
  for (const auto& d : backlog.devices) want.push_back(d.device_id());
  want.push_back(backlog.devices.back().device_id());  // the disable, last
  EXPECT_EQ(backlog.applied, want);
}

// The same backlog through BatchGetDevices: hundreds of devices a call (the
// GetDevice path had 64 in flight), applied in order, the disable last; a device
// the registry cannot read fails closed on its own and the rest follow.
TEST_F(CaMirrorTest, ABacklogIsReadInBatchesAndAppliedInOrder) {
  OneBrokenDeviceRegistry registry(registry_.get(), "dev-7");
  registry.batch_get = true;
  // A slow registry: while a call is answered, the rest of the backlog arrives
  // (without it, how much arrives per call is the machine's timing: under ASan on
  // a slow VM, 23 calls of about 52).
  registry.batch_delay = absl::Milliseconds(50);
  Backlog backlog;
  ASSERT_NO_FATAL_FAILURE(MirrorABacklog(&registry, 1200, &backlog));
  EXPECT_GT(registry.max_batch_ids.load(), 64);  // GetDevice's cap on calls in flight
  EXPECT_EQ(backlog.cache->FindDevice("t1", "dev-7"), nullptr);
  EXPECT_EQ(backlog.failed_closed, 1);
  std::vector<std::string> want = {"dev-0"};
  for (const auto& d : backlog.devices) {
    if (d.device_id() != "dev-7") want.push_back(d.device_id());
  }
  want.push_back(backlog.devices.back().device_id());  // the disable, last
  EXPECT_EQ(backlog.applied, want);
}

// A resync never leaves the identity cache without its records: while the snapshot
// runs, a device the registry still has and one it deleted are both readable; once
// it completes, the deleted one is gone.
TEST_F(CaMirrorTest, ResyncKeepsTheCacheReadableUntilComplete) {
  auto cache = *DirectoryCache::Create({});
  rv1::Device ghost;
  ghost.set_tenant_id("t1");
  ghost.set_device_id("ghost");  // deleted from the registry while nobody followed
  ghost.set_product_key("p1");
  ASSERT_TRUE(cache->UpsertDevice(ghost).ok());
  ASSERT_TRUE(cache->UpsertDevice(Devices(0, 1)[0]).ok());
  const auto dev0_before = cache->FindDevice("t1", "dev-0");
  ASSERT_TRUE(store_->CreateDevices("t1", Devices(0, 5)).ok());

  DirectoryMirrorTarget directory(cache.get());
  absl::Notification gate;
  CountingTarget slow(&gate);  // after the cache: holds the export at the first device
  FanoutMirrorTarget both({&directory, &slow});
  RegistryMirror mirror(DeviceMirrorOptions(channel_, &both));
  mirror.Start();
  // The export replaced dev-0's record and is now held there (the slow target is
  // called after the cache): the snapshot is under way, and nothing was cleared.
  ASSERT_TRUE(Eventually([&] { return cache->FindDevice("t1", "dev-0") != dev0_before; }));
  EXPECT_NE(cache->FindDevice("t1", "ghost"), nullptr);
  EXPECT_NE(cache->FindDevice("t1", "dev-0"), nullptr);
  gate.Notify();
  ASSERT_TRUE(mirror.WaitForInitialSync(absl::Seconds(10)));
  EXPECT_EQ(cache->FindDevice("t1", "ghost"), nullptr);
  for (int i = 0; i < 5; ++i) {
    EXPECT_NE(cache->FindDevice("t1", absl::StrCat("dev-", i)), nullptr) << i;
  }
  mirror.Stop();
}

// The whole resync path: the registry goes away, a device is deleted and another
// created meanwhile, and the change log is pruned past the mirror's cursor. On
// reconnect WatchChanges answers CURSOR_EXPIRED, the mirror takes a new snapshot,
// and the cache ends exact: the deleted device gone, the rest present.
TEST_F(CaMirrorTest, ResyncsAfterItsCursorWasPruned) {
  ASSERT_TRUE(store_->CreateDevices("t1", Devices(0, 3)).ok());
  auto start_server = [&](int port_wanted, int* port) {
    auto service = NewRegistryService();
    grpc::ServerBuilder b;
    b.AddListeningPort(absl::StrCat("127.0.0.1:", port_wanted), grpc::InsecureServerCredentials(),
                       port);
    b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    b.RegisterService(service.get());
    auto server = b.BuildAndStart();
    return std::make_pair(std::move(service), std::move(server));
  };
  int port = 0;
  auto first = start_server(0, &port);
  ASSERT_GT(port, 0);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                           grpc::InsecureChannelCredentials(), args);
  auto cache = *DirectoryCache::Create({});
  DirectoryMirrorTarget directory(cache.get());
  RegistryMirrorOptions mo = DeviceMirrorOptions(channel, &directory);
  mo.max_backoff = absl::Milliseconds(200);
  RegistryMirror mirror(mo);
  mirror.Start();
  ASSERT_TRUE(mirror.WaitForInitialSync(absl::Seconds(10)));
  ASSERT_NE(cache->FindDevice("t1", "dev-1"), nullptr);

  first.second->Shutdown(std::chrono::system_clock::now());
  first.second.reset();
  ASSERT_TRUE(store_->DeleteDevice("t1", "dev-1", "").ok());
  clock_.Advance(absl::Hours(2));
  ASSERT_TRUE(store_->CreateDevices("t1", Devices(9, 1)).ok());
  auto pruned = store_->PruneChanges(clock_.Now() - absl::Hours(1));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  ASSERT_GT(*pruned, 0);

  int port2 = 0;
  auto second = start_server(port, &port2);
  ASSERT_EQ(port2, port);
  EXPECT_TRUE(Eventually([&] {
    return cache->FindDevice("t1", "dev-9") != nullptr &&
           cache->FindDevice("t1", "dev-1") == nullptr;
  }));
  EXPECT_NE(cache->FindDevice("t1", "dev-0"), nullptr);
  EXPECT_NE(cache->FindDevice("t1", "dev-2"), nullptr);
  mirror.Stop();
  second.second->Shutdown(std::chrono::system_clock::now());
}

// The same for X.509 trust: CAs and revocations the snapshot does not bring are
// removed at its end, not before.
TEST(CaDirectorySnapshotTest, SweepsWhatTheSnapshotDidNotBring) {
  x509::CaDirectory dir;
  auto key = NewKey(KeyType::kP256);
  X509Ptr root_a = MakeCert(CertSpec{.cn = "Root A", .ca = true}, key.get(), nullptr, nullptr);
  X509Ptr root_b = MakeCert(CertSpec{.cn = "Root B", .ca = true}, key.get(), nullptr, nullptr);
  auto ca = [](const std::string& tenant, const std::string& id, X509* cert) {
    rv1::CaCertificate c;
    c.set_tenant_id(tenant);
    c.set_id(id);
    c.set_status(rv1::CA_STATUS_VERIFIED);
    c.set_certificate_pem(x509::testing::Pem(cert));
    return c;
  };
  auto revocation = [](const std::string& id, char fill) {
    rv1::CertificateRevocation r;
    r.set_tenant_id("t1");
    r.set_id(id);
    r.set_fingerprint(std::string(64, fill));
    return r;
  };
  ASSERT_TRUE(dir.UpsertCa(ca("t1", "a", root_a.get())).ok());
  ASSERT_TRUE(dir.UpsertCa(ca("t1", "b", root_b.get())).ok());
  ASSERT_TRUE(dir.UpsertCa(ca("t2", "c", root_a.get())).ok());
  ASSERT_TRUE(dir.UpsertRevocation(revocation("r1", 'a')).ok());
  ASSERT_TRUE(dir.UpsertRevocation(revocation("r2", 'b')).ok());

  dir.BeginSnapshot();  // the registry now has t1's CA a and revocation r1 only
  ASSERT_TRUE(dir.UpsertCa(ca("t1", "a", root_a.get())).ok());
  ASSERT_TRUE(dir.UpsertRevocation(revocation("r1", 'a')).ok());
  EXPECT_EQ(dir.Find("t1")->cas.size(), 2U);
  EXPECT_NE(dir.Find("t2"), nullptr);
  EXPECT_TRUE(dir.Find("t1")->revoked_fingerprints.contains(std::string(64, 'b')));

  const uint64_t generation = dir.generation();
  dir.EndSnapshot();
  EXPECT_GT(dir.generation(), generation);  // cached verifications are invalidated
  auto t1 = dir.Find("t1");
  ASSERT_NE(t1, nullptr);
  EXPECT_EQ(t1->cas.size(), 1U);
  EXPECT_TRUE(t1->cas.contains("a"));
  EXPECT_EQ(t1->trusted_by_tbs.size(), 1U);
  EXPECT_TRUE(t1->revoked_fingerprints.contains(std::string(64, 'a')));
  EXPECT_FALSE(t1->revoked_fingerprints.contains(std::string(64, 'b')));
  EXPECT_EQ(dir.Find("t2"), nullptr);
}

}  // namespace
}  // namespace iotauth::identity
