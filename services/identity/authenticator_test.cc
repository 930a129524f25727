#include "services/identity/authenticator.h"

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/identity/decision_counters_testing.h"
#include "services/identity/device_triple.h"
#include "services/identity/directory_cache.h"
#include "services/identity/dps.h"
#include "services/identity/sas_token.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

constexpr char kHub[] = "hub1.example.net";
constexpr char kKey1[] = "cGFzc3dvcmQxcGFzc3dvcmQxcGFzc3dvcmQx";  // "password1" x3
constexpr char kKey2[] = "c2Vjb25kYXJ5c2Vjb25kYXJ5";              // "secondarysecondary"
constexpr char kPolicyKey[] = "cG9saWN5a2V5cG9saWN5a2V5";         // "policykeypolicykey"
constexpr char kOtherKey[] = "b3RoZXJrZXlvdGhlcmtleQ==";
constexpr char kGroupKey[] =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
constexpr char kRegistrationId[] = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
constexpr char kProductSecret[] = "productsecretproductsecret";

class RecordingSink final : public audit::AuditSink {
 public:
  void Record(audit::v1::AuditEvent&& event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  std::vector<audit::v1::AuditEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<audit::v1::AuditEvent> events_;
};

class FakeRegistrar final : public DeviceRegistrar {
 public:
  absl::StatusOr<reg::Device> RegisterFromEnrollmentGroup(const EnrollmentGroupRecord& group,
                                                          absl::string_view device_id,
                                                          absl::string_view key) override {
    ++registrations;
    last_key = std::string(key);
    reg::Device d;
    d.set_tenant_id(group.tenant_id);
    d.set_device_id(std::string(device_id));
    d.set_product_key(group.product_key);
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.set_enrollment_group_id(group.id);
    for (const auto& r : group.initial_rules) *d.add_rules() = r;
    return d;
  }
  absl::StatusOr<Activation> ActivateDevice(const ProductRecord& product,
                                            absl::string_view device_name) override {
    ++activations;
    if (!activation_status.ok()) return activation_status;
    Activation a;
    a.device.set_tenant_id(product.tenant_id);
    a.device.set_device_id(std::string(device_name));
    a.device.set_product_key(product.product_key);
    a.device.set_status(reg::DEVICE_STATUS_ENABLED);
    a.device_secret = "newdevicesecret";
    return a;
  }
  absl::Status MarkActivated(const ProductRecord& product, absl::string_view device_id) override {
    ++marks;
    last_marked = absl::StrCat(product.product_key, "/", device_id);
    return mark_status;
  }

  int registrations = 0;
  int activations = 0;
  int marks = 0;
  std::string last_marked;
  absl::Status mark_status;
  std::string last_key;
  absl::Status activation_status;
};

reg::AccessRule Rule(reg::RuleEffect effect, const std::string& filter) {
  reg::AccessRule r;
  r.set_effect(effect);
  r.set_action(reg::RULE_ACTION_ALL);
  r.set_topic_filter(filter);
  return r;
}

// Members are public: the table rows (lambdas) build requests through them.
class AuthenticatorTest : public ::testing::Test {
 public:
  void SetUp() override {
    cache_ = *DirectoryCache::Create({});
    reg::Tenant t;
    t.set_id("t1");
    t.set_hub_host(kHub);
    auto* p = t.add_policies();
    p->set_name("gateway");
    p->set_primary_key(kPolicyKey);
    ASSERT_TRUE(cache_->UpsertTenant(t).ok());
    reg::Tenant t2;
    t2.set_id("t2");
    t2.set_hub_host("hub2.example.net");
    ASSERT_TRUE(cache_->UpsertTenant(t2).ok());

    reg::Product sas;
    sas.set_tenant_id("t1");
    sas.set_product_key("pk-sas");
    sas.add_allowed_credential_types(reg::CREDENTIAL_TYPE_SAS);
    *sas.add_default_rules() = Rule(reg::RULE_EFFECT_ALLOW, "devices/${device}/#");
    *sas.add_default_rules() = Rule(reg::RULE_EFFECT_ALLOW, "u/${username}");
    *sas.add_default_rules() = Rule(reg::RULE_EFFECT_DENY, "x/${username}");
    ASSERT_TRUE(cache_->UpsertProduct(sas).ok());
    reg::Product nosas = sas;
    nosas.set_product_key("pk-nosas");
    nosas.clear_allowed_credential_types();
    nosas.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
    ASSERT_TRUE(cache_->UpsertProduct(nosas).ok());
    reg::Product triple;
    triple.set_tenant_id("t1");
    triple.set_product_key("pk-triple");
    triple.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
    triple.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS);
    triple.set_product_secret(kProductSecret);
    triple.set_dynamic_activation(true);
    *triple.add_default_rules() = Rule(reg::RULE_EFFECT_ALLOW, "/${product}/${device}/user/#");
    ASSERT_TRUE(cache_->UpsertProduct(triple).ok());
    reg::Product weak = triple;
    weak.set_product_key("pk-weak");
    weak.set_allow_weak_sign_methods(true);
    weak.set_dynamic_activation(false);
    ASSERT_TRUE(cache_->UpsertProduct(weak).ok());
    reg::Product sasonly = sas;
    sasonly.set_product_key("pk-sasonly");
    ASSERT_TRUE(cache_->UpsertProduct(sasonly).ok());

    AddDevice("t1", "d1", "pk-sas", reg::DEVICE_STATUS_ENABLED,
              {Rule(reg::RULE_EFFECT_DENY, "devices/${device}/secret")});
    AddDevice("t1", "disabled", "pk-sas", reg::DEVICE_STATUS_DISABLED);
    AddDevice("t1", "pending", "pk-sas", reg::DEVICE_STATUS_PENDING_APPROVAL);
    AddDevice("t1", "nosas", "pk-nosas", reg::DEVICE_STATUS_ENABLED);
    AddDevice("t1", "dev3", "pk-triple", reg::DEVICE_STATUS_ENABLED);
    AddDevice("t1", "off3", "pk-triple", reg::DEVICE_STATUS_DISABLED);
    AddDevice("t1", "weak3", "pk-weak", reg::DEVICE_STATUS_ENABLED);
    AddDevice("t1", "sasonly3", "pk-sasonly", reg::DEVICE_STATUS_ENABLED);

    reg::EnrollmentGroup g;
    g.set_tenant_id("t1");
    g.set_id("g1");
    g.set_group_key(kGroupKey);
    g.set_product_key("pk-sas");
    g.set_enabled(true);
    *g.add_initial_rules() = Rule(reg::RULE_EFFECT_ALLOW, "enrolled/${device}");
    ASSERT_TRUE(cache_->UpsertEnrollmentGroup(g).ok());

    Rebuild({});
  }

  void AddDevice(const std::string& tenant, const std::string& id, const std::string& product,
                 reg::DeviceStatus status, std::vector<reg::AccessRule> rules = {}) const {
    reg::Device d;
    d.set_tenant_id(tenant);
    d.set_device_id(id);
    d.set_product_key(product);
    d.set_status(status);
    d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(kKey1);
    d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(kKey2);
    for (auto& r : rules) *d.add_rules() = r;
    ASSERT_TRUE(cache_->UpsertDevice(d).ok());
  }

  void Rebuild(AuthenticatorConfig config, const CertificateVerifier* verifier = nullptr) {
    Authenticator::Options o;
    o.clock = &clock_;
    o.directory = cache_.get();
    o.directory_writer = cache_.get();
    o.registrar = &registrar_;
    o.audit_sink = &sink_;
    o.certificate_verifier = verifier;
    o.config = config;
    auto a = Authenticator::Create(o);
    ASSERT_TRUE(a.ok()) << a.status();
    auth_ = *std::move(a);
  }

  // An authenticator on the fixture's clock, directory and sink that answers
  // UNAVAILABLE while `ready` reads false or `gate` is closed (either may be null).
  std::unique_ptr<Authenticator> Guarded(const std::atomic<bool>* ready,
                                         const audit::AuditGate* gate) {
    Authenticator::Options o;
    o.clock = &clock_;
    o.directory = cache_.get();
    o.audit_sink = &sink_;
    o.ready = ready;
    o.audit_gate = gate;
    auto a = Authenticator::Create(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *std::move(a) : nullptr;
  }

  absl::Time Expiry() const { return clock_.Now() + absl::Hours(1); }

  static std::string Token(const std::string& resource, const std::string& key, absl::Time expiry,
                           const std::string& policy = "") {
    auto t = MakeSasToken(resource, key, expiry, policy);
    EXPECT_TRUE(t.ok());
    return *t;
  }

  v1::AuthenticateRequest SasConnect(const std::string& device, const std::string& key) const {
    v1::AuthenticateRequest r;
    r.set_request_id("req-1");
    auto* c = r.mutable_connect();
    c->set_client_id(device);
    c->set_username(absl::StrCat(kHub, "/", device, "/?api-version=2021-04-12"));
    c->set_password(Token(absl::StrCat(kHub, "/devices/", device), key, Expiry()));
    c->set_peer_address("192.0.2.1:5555");
    c->set_protocol(v1::PROTOCOL_MQTT);
    return r;
  }

  v1::AuthenticateRequest TripleConnect(const std::string& product, const std::string& device,
                                        const std::string& secret,
                                        TripleSignMethod method = TripleSignMethod::kHmacSha256,
                                        absl::Duration ts_offset = absl::ZeroDuration(),
                                        int secure_mode = 2) const {
    auto tc = MakeTripleConnect(product, device, secret, "c1", method,
                                absl::ToUnixMillis(clock_.Now() + ts_offset), secure_mode);
    EXPECT_TRUE(tc.ok());
    v1::AuthenticateRequest r;
    auto* c = r.mutable_connect();
    c->set_client_id(tc->client_id);
    c->set_username(tc->username);
    c->set_password(tc->password);
    return r;
  }

  v1::AuthenticateResponse Run(const v1::AuthenticateRequest& r) const {
    auto resp = auth_->Authenticate(r, CallContext{"gw-1"});
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : v1::AuthenticateResponse();
  }

  FakeClock clock_;
  std::unique_ptr<DirectoryCache> cache_;
  FakeRegistrar registrar_;
  RecordingSink sink_;
  std::unique_ptr<Authenticator> auth_;
};

TEST_F(AuthenticatorTest, SasAllowWithPrimaryKey) {
  auto resp = Run(SasConnect("d1", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_UNSPECIFIED);
  EXPECT_EQ(resp.identity().tenant_id(), "t1");
  EXPECT_EQ(resp.identity().product_key(), "pk-sas");
  EXPECT_EQ(resp.identity().device_id(), "d1");
  EXPECT_EQ(resp.credential_type(), reg::CREDENTIAL_TYPE_SAS);
  EXPECT_EQ(resp.credential_fingerprint(), "sas:primary");
  // `se` plus the allowed clock skew: when this service stops accepting the token.
  EXPECT_EQ(resp.credential_expires_at().seconds(),
            absl::ToUnixSeconds(Expiry() + AuthenticatorConfig().sas_clock_skew));
  EXPECT_EQ(resp.cache_ttl().seconds(), 300);  // min(5 min, 1 h)
  EXPECT_EQ(resp.request_id(), "req-1");
  EXPECT_EQ(resp.default_effect(), reg::RULE_EFFECT_DENY);
  // Device rules first, then product rules; placeholders resolved; the allow rule whose
  // value (the username, with '/') is unsafe is dropped, the deny rule kept.
  ASSERT_EQ(resp.access_rules_size(), 3);
  EXPECT_EQ(resp.access_rules(0).topic_filter(), "devices/d1/secret");
  EXPECT_EQ(resp.access_rules(0).effect(), reg::RULE_EFFECT_DENY);
  EXPECT_EQ(resp.access_rules(1).topic_filter(), "devices/d1/#");
  EXPECT_EQ(resp.access_rules(2).topic_filter(),
            absl::StrCat("x/", kHub, "/d1/?api-version=2021-04-12"));

  auto events = sink_.events();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].type(), audit::v1::EVENT_TYPE_AUTHENTICATION);
  EXPECT_EQ(events[0].outcome(), audit::v1::OUTCOME_ALLOW);
  EXPECT_EQ(events[0].credential_type(), "CREDENTIAL_TYPE_SAS");
  EXPECT_EQ(events[0].credential_fingerprint(), "sas:primary");
  EXPECT_EQ(events[0].caller(), "gw-1");
  EXPECT_EQ(events[0].peer_address(), "192.0.2.1:5555");
  EXPECT_EQ(events[0].request_id(), "req-1");
  EXPECT_EQ(events[0].device_id(), "d1");
}

TEST_F(AuthenticatorTest, UnavailableNotDeniedWhileTheDirectoryLoads) {
  std::atomic<bool> ready{false};
  std::unique_ptr<Authenticator> a = Guarded(&ready, nullptr);
  ASSERT_NE(a, nullptr);
  v1::AuthenticateResponse resp;
  const absl::Status loading = a->Authenticate(SasConnect("d1", kKey1), CallContext{}, &resp);
  EXPECT_EQ(loading.code(), absl::StatusCode::kUnavailable) << loading;
  // A reason: the server answered (an UNAVAILABLE without one means not reached).
  EXPECT_EQ(ErrorReason(loading), "DIRECTORY_LOADING");
  EXPECT_EQ(resp.decision(), v1::DECISION_UNSPECIFIED);
  ready.store(true);
  ASSERT_TRUE(a->Authenticate(SasConnect("d1", kKey1), CallContext{}, &resp).ok());
  EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
}

TEST_F(AuthenticatorTest, RefusedWhileTheAuditLogCannotRecordDecisions) {
  audit::AuditGate gate;
  std::unique_ptr<Authenticator> a = Guarded(nullptr, &gate);
  ASSERT_NE(a, nullptr);
  v1::AuthenticateResponse resp;
  ASSERT_TRUE(a->Authenticate(SasConnect("d1", kKey1), CallContext{}, &resp).ok());
  EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW);
  const size_t recorded = sink_.events().size();

  gate.SetWritable(false);
  // More bad signatures than the device lockout allows: none is decided, so none
  // counts against the device, and nothing is recorded or counted as a decision.
  for (int i = 0; i < 8; ++i) {
    v1::AuthenticateResponse refused;
    const absl::Status s = a->Authenticate(SasConnect("d1", kOtherKey), CallContext{}, &refused);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_TRUE(audit::AuditGate::IsRefusal(s)) << s;
    EXPECT_EQ(refused.decision(), v1::DECISION_UNSPECIFIED);
  }
  EXPECT_EQ(gate.refused(), 8U);
  EXPECT_EQ(sink_.events().size(), recorded);
  uint64_t decided = 0;
  for (const auto& row : a->decisions().Snapshot()) decided += row.count;
  EXPECT_EQ(decided, 1U);

  gate.SetWritable(true);
  v1::AuthenticateResponse again;
  ASSERT_TRUE(a->Authenticate(SasConnect("d1", kKey1), CallContext{}, &again).ok());
  EXPECT_EQ(again.decision(), v1::DECISION_ALLOW) << again.deny_detail();  // not locked out
  EXPECT_EQ(sink_.events().size(), recorded + 1);
}

TEST_F(AuthenticatorTest, SasSecondaryKeyAndRotation) {
  auto old_token = SasConnect("d1", kKey1);
  auto resp = Run(SasConnect("d1", kKey2));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(resp.credential_fingerprint(), "sas:secondary");
  // Regenerate the primary key: the old token is refused at once, the secondary works.
  reg::Device d;
  d.set_tenant_id("t1");
  d.set_device_id("d1");
  d.set_product_key("pk-sas");
  d.set_status(reg::DEVICE_STATUS_ENABLED);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(kOtherKey);
  d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(kKey2);
  ASSERT_TRUE(cache_->UpsertDevice(d).ok());
  EXPECT_EQ(Run(old_token).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
  EXPECT_EQ(Run(SasConnect("d1", kKey2)).decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Run(SasConnect("d1", kOtherKey)).credential_fingerprint(), "sas:primary");
}

TEST_F(AuthenticatorTest, SasSkewExpiryAndTtl) {
  auto req = SasConnect("d1", kKey1);  // expires in 1 h
  clock_.Advance(absl::Hours(1) - absl::Minutes(2));
  auto resp = Run(req);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW);
  // The token is accepted up to `se` plus the 5 min skew: that is its reported
  // expiry, and the cache TTL is bounded by it.
  const int64_t accepted_until = absl::ToUnixSeconds(clock_.Now() + absl::Minutes(2 + 5));
  EXPECT_EQ(resp.credential_expires_at().seconds(), accepted_until);
  EXPECT_EQ(resp.cache_ttl().seconds(), 300);           // min(5 min, 7 min left)
  clock_.Advance(absl::Minutes(2) + absl::Minutes(4));  // inside the 5 min skew
  resp = Run(req);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW);
  // Still ahead (a broker that disconnects at it does not drop the device at once).
  EXPECT_EQ(resp.credential_expires_at().seconds(), accepted_until);
  EXPECT_GT(absl::FromUnixSeconds(resp.credential_expires_at().seconds()), clock_.Now());
  EXPECT_EQ(resp.cache_ttl().seconds(), 60);
  clock_.Advance(absl::Minutes(1) + absl::Seconds(1));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_EXPIRED);
}

TEST_F(AuthenticatorTest, SasPolicyToken) {
  auto req = SasConnect("d1", kKey1);
  req.mutable_connect()->set_password(
      Token(absl::StrCat(kHub, "/devices/d1"), kPolicyKey, Expiry(), "gateway"));
  auto resp = Run(req);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.credential_fingerprint(), "sas:policy:gateway:primary");
  // The policy key does not work as a device-scoped token, nor a device key with skn.
  req.mutable_connect()->set_password(
      Token(absl::StrCat(kHub, "/devices/d1"), kPolicyKey, Expiry()));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
  req.mutable_connect()->set_password(
      Token(absl::StrCat(kHub, "/devices/d1"), kKey1, Expiry(), "gateway"));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
}

TEST_F(AuthenticatorTest, SasModuleToken) {
  v1::AuthenticateRequest r;
  auto* c = r.mutable_connect();
  c->set_client_id("d1/m1");
  c->set_username(absl::StrCat(kHub, "/d1/m1/?api-version=2021-04-12"));
  c->set_password(Token(absl::StrCat(kHub, "/devices/d1/modules/m1"), kKey1, Expiry()));
  auto resp = Run(r);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.identity().module_id(), "m1");
}

TEST_F(AuthenticatorTest, SasExplicitCredential) {
  v1::AuthenticateRequest r;
  r.mutable_credential()->mutable_sas()->set_token(
      Token(absl::StrCat(kHub, "/devices/d1"), kKey1, Expiry()));
  auto resp = Run(r);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW);
  EXPECT_FALSE(resp.request_id().empty());  // server-generated
  r.mutable_credential()->mutable_sas()->set_device_id("d2");
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_IDENTITY_MISMATCH);
}

struct NegativeCase {
  const char* name;
  std::function<void(AuthenticatorTest*, v1::AuthenticateRequest*)> mutate;
  v1::DenyReason reason;
};

// Each property of a valid SAS connect wrong in turn, with its exact reason.
TEST_F(AuthenticatorTest, SasNegativeTable) {
  const std::string hub = kHub;
  const NegativeCase cases[] = {
      {"not a token",
       [](auto*, auto* r) { r->mutable_connect()->set_password("SharedAccessSignature x"); },
       v1::DENY_REASON_MALFORMED},
      {"unrecognised password",
       [](auto*, auto* r) { r->mutable_connect()->set_password("hunter2"); },
       v1::DENY_REASON_MALFORMED},
      {"no credential", [](auto*, auto* r) { r->mutable_connect()->clear_password(); },
       v1::DENY_REASON_NO_CREDENTIAL},
      {"audience shape",
       [hub](auto* t, auto* r) {
         r->mutable_connect()->set_password(t->Token(hub + "/things/d1", kKey1, t->Expiry()));
       },
       v1::DENY_REASON_WRONG_AUDIENCE},
      {"unknown hub",
       [](auto* t, auto* r) {
         r->mutable_connect()->set_password(
             t->Token("other.example.net/devices/d1", kKey1, t->Expiry()));
         r->mutable_connect()->set_username("other.example.net/d1/?api-version=1");
       },
       v1::DENY_REASON_UNKNOWN_TENANT},
      {"tenant hint names another hub", [](auto*, auto* r) { r->set_tenant_id("t2"); },
       v1::DENY_REASON_WRONG_AUDIENCE},
      {"unknown tenant hint", [](auto*, auto* r) { r->set_tenant_id("nope"); },
       v1::DENY_REASON_UNKNOWN_TENANT},
      {"client id names another device",
       [](auto*, auto* r) { r->mutable_connect()->set_client_id("d2"); },
       v1::DENY_REASON_IDENTITY_MISMATCH},
      {"username names another device",
       [hub](auto*, auto* r) { r->mutable_connect()->set_username(hub + "/d2/?api-version=1"); },
       v1::DENY_REASON_IDENTITY_MISMATCH},
      {"unknown device", [hub](auto* t, auto* r) { *r = t->SasConnect("ghost", kKey1); },
       v1::DENY_REASON_UNKNOWN_DEVICE},
      {"wrong key", [](auto* t, auto* r) { *r = t->SasConnect("d1", kOtherKey); },
       v1::DENY_REASON_BAD_SIGNATURE},
      {"expired",
       [hub](auto* t, auto* r) {
         r->mutable_connect()->set_password(
             t->Token(hub + "/devices/d1", kKey1, t->clock_.Now() - absl::Minutes(6)));
       },
       v1::DENY_REASON_EXPIRED},
      {"disabled", [](auto* t, auto* r) { *r = t->SasConnect("disabled", kKey1); },
       v1::DENY_REASON_DEVICE_DISABLED},
      {"pending approval", [](auto* t, auto* r) { *r = t->SasConnect("pending", kKey1); },
       v1::DENY_REASON_PENDING_APPROVAL},
      {"product does not allow SAS", [](auto* t, auto* r) { *r = t->SasConnect("nosas", kKey1); },
       v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED},
      {"unknown policy",
       [hub](auto* t, auto* r) {
         r->mutable_connect()->set_password(
             t->Token(hub + "/devices/d1", kPolicyKey, t->Expiry(), "nosuchpolicy"));
       },
       v1::DENY_REASON_UNKNOWN_POLICY},
      {"certificate without a verifier",
       [](auto*, auto* r) {
         r->mutable_connect()->clear_password();
         r->mutable_connect()->add_peer_certificate_chain("DER");
       },
       v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED},
      {"empty request", [](auto*, auto* r) { r->clear_connect(); }, v1::DENY_REASON_NO_CREDENTIAL},
  };
  for (const auto& c : cases) {
    auto req = SasConnect("d1", kKey1);
    ASSERT_EQ(Run(req).decision(), v1::DECISION_ALLOW) << c.name;
    c.mutate(this, &req);
    auto resp = Run(req);
    EXPECT_EQ(resp.decision(), v1::DECISION_DENY) << c.name;
    EXPECT_EQ(v1::DenyReason_Name(resp.deny_reason()), v1::DenyReason_Name(c.reason)) << c.name;
    EXPECT_EQ(resp.access_rules_size(), 0) << c.name;
    EXPECT_FALSE(resp.has_cache_ttl()) << c.name;
    // No secret in the detail or the audit event.
    const std::string& pw = req.connect().password();
    const size_t sig = pw.find("sig=");
    if (sig != std::string::npos) {
      const std::string sig_value = pw.substr(sig + 4, 20);
      EXPECT_EQ(resp.deny_detail().find(sig_value), std::string::npos) << c.name;
      EXPECT_EQ(sink_.events().back().DebugString().find(sig_value), std::string::npos) << c.name;
    }
    EXPECT_EQ(sink_.events().back().reason(), v1::DenyReason_Name(c.reason)) << c.name;
  }
}

TEST_F(AuthenticatorTest, EnrollmentGroupFirstConnect) {
  auto key = DeriveDeviceKey(kGroupKey, kRegistrationId);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
  auto resp = Run(SasConnect(kRegistrationId, *key));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_TRUE(resp.device_registered());
  EXPECT_EQ(resp.credential_fingerprint(), "sas:enrollment:g1");
  EXPECT_EQ(resp.identity().product_key(), "pk-sas");
  EXPECT_EQ(registrar_.registrations, 1);
  EXPECT_EQ(registrar_.last_key, *key);
  ASSERT_GE(resp.access_rules_size(), 1);
  EXPECT_EQ(resp.access_rules(0).topic_filter(), absl::StrCat("enrolled/", kRegistrationId));
  EXPECT_EQ(sink_.events().back().attributes().at("device_registered"), "true");
  // The second connect finds the device in the directory.
  resp = Run(SasConnect(kRegistrationId, *key));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW);
  EXPECT_FALSE(resp.device_registered());
  EXPECT_EQ(resp.credential_fingerprint(), "sas:primary");
  EXPECT_EQ(registrar_.registrations, 1);
  // A key not derived from the group is an unknown device.
  EXPECT_EQ(Run(SasConnect("sn-other", *key)).deny_reason(), v1::DENY_REASON_UNKNOWN_DEVICE);
  EXPECT_EQ(registrar_.registrations, 1);
}

TEST_F(AuthenticatorTest, TripleAllow) {
  auto resp = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.credential_type(), reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
  EXPECT_EQ(resp.credential_fingerprint(), "triple:hmacsha256");
  EXPECT_EQ(resp.identity().tenant_id(), "t1");
  EXPECT_FALSE(resp.has_credential_expires_at());
  EXPECT_EQ(resp.cache_ttl().seconds(), 300);
  ASSERT_EQ(resp.access_rules_size(), 1);
  EXPECT_EQ(resp.access_rules(0).topic_filter(), "/pk-triple/dev3/user/#");
}

TEST_F(AuthenticatorTest, TripleSignedWithTheSecondarySecretIsAccepted) {
  // Rotation without downtime: devices move to the secondary before the primary is
  // regenerated.
  auto primary = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(primary.decision(), v1::DECISION_ALLOW) << primary.deny_detail();
  EXPECT_EQ(primary.credential_fingerprint(), "triple:hmacsha256");
  auto secondary = Run(TripleConnect("pk-triple", "dev3", kKey2, TripleSignMethod::kHmacSha256,
                                     absl::Milliseconds(1)));
  ASSERT_EQ(secondary.decision(), v1::DECISION_ALLOW) << secondary.deny_detail();
  EXPECT_EQ(secondary.credential_fingerprint(), "triple:hmacsha256:secondary");
  EXPECT_EQ(Run(TripleConnect("pk-triple", "dev3", kOtherKey, TripleSignMethod::kHmacSha256,
                              absl::Milliseconds(2)))
                .deny_reason(),
            v1::DENY_REASON_BAD_SIGNATURE);
}

TEST_F(AuthenticatorTest, TripleReplayIsRefusedInsideWindowOnly) {
  auto req = TripleConnect("pk-triple", "dev3", kKey1);
  EXPECT_EQ(Run(req).decision(), v1::DECISION_ALLOW);
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_REPLAYED);
  clock_.Advance(absl::Minutes(5));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW);
}

TEST_F(AuthenticatorTest, TripleReplayAtTheWindowEdgeIsRefused) {
  // A timestamp exactly one window old still passes the window check: its replay
  // entry must still be live then.
  auto req = TripleConnect("pk-triple", "dev3", kKey1);
  EXPECT_EQ(Run(req).decision(), v1::DECISION_ALLOW);
  clock_.Advance(absl::Minutes(5));
  EXPECT_EQ(Run(req).deny_reason(), v1::DENY_REASON_REPLAYED);
}

TEST_F(AuthenticatorTest, FullReplayCacheFailsClosedWithoutEvicting) {
  AuthenticatorConfig small;
  small.replay_cache_capacity = 1;  // one shard of 64 holds it: every shard has room 1
  Rebuild(small);
  // Fill the cache with fresh connects of one device (distinct timestamps), then
  // replay the first: still refused. Connects that find their shard full are
  // denied RATE_LIMITED, not let through unchecked.
  auto first = TripleConnect("pk-triple", "dev3", kKey1);
  ASSERT_EQ(Run(first).decision(), v1::DECISION_ALLOW);
  int limited = 0;
  for (int i = 1; i <= 300; ++i) {
    auto r = Run(TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha256,
                               absl::Milliseconds(i)));
    if (r.decision() == v1::DECISION_DENY) {
      ASSERT_EQ(r.deny_reason(), v1::DENY_REASON_RATE_LIMITED) << r.deny_detail();
      ++limited;
    }
  }
  EXPECT_GT(limited, 200);
  EXPECT_EQ(Run(first).deny_reason(), v1::DENY_REASON_REPLAYED);
}

TEST_F(AuthenticatorTest, OneDeviceCannotFillTheReplayCacheForEveryone) {
  // A device holding a valid secret signs connects with distinct timestamps: past
  // its share (1,024 live entries) it alone is refused. A disabled device is refused
  // as disabled before the replay check.
  for (int i = 0; i < 1024; ++i) {
    auto r = Run(TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha256,
                               absl::Milliseconds(i)));
    ASSERT_EQ(r.decision(), v1::DECISION_ALLOW) << i << ": " << r.deny_detail();
  }
  auto over = Run(TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha256,
                                absl::Milliseconds(1024)));
  EXPECT_EQ(over.deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  EXPECT_NE(over.deny_detail().find("this device"), std::string::npos) << over.deny_detail();
  EXPECT_EQ(Run(TripleConnect("pk-triple", "off3", kKey1)).deny_reason(),
            v1::DENY_REASON_DEVICE_DISABLED);
  // Its entries leave with the window; then it connects again.
  clock_.Advance(absl::Minutes(11));
  EXPECT_EQ(Run(TripleConnect("pk-triple", "dev3", kKey1)).decision(), v1::DECISION_ALLOW);
}

TEST_F(AuthenticatorTest, TripleWithoutTimestamp) {
  auto tc = MakeTripleConnect("pk-triple", "dev3", kKey1, "c1", TripleSignMethod::kHmacSha256, -1);
  ASSERT_TRUE(tc.ok());
  v1::AuthenticateRequest r;
  r.mutable_connect()->set_client_id(tc->client_id);
  r.mutable_connect()->set_username(tc->username);
  r.mutable_connect()->set_password(tc->password);
  EXPECT_EQ(Run(r).decision(), v1::DECISION_ALLOW);
  AuthenticatorConfig strict;
  strict.require_triple_timestamp = true;
  Rebuild(strict);
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW);
}

TEST_F(AuthenticatorTest, TripleNegativeTable) {
  const NegativeCase cases[] = {
      {"client id without securemode",
       [](auto*, auto* r) { r->mutable_connect()->set_client_id("c1|signmethod=hmacsha256|"); },
       v1::DENY_REASON_MALFORMED},
      {"username without product",
       [](auto*, auto* r) { r->mutable_connect()->set_username("dev3"); },
       v1::DENY_REASON_MALFORMED},
      {"password not hex",
       [](auto*, auto* r) { r->mutable_connect()->set_password(std::string(64, 'z')); },
       v1::DENY_REASON_MALFORMED},
      {"unknown product", [](auto* t, auto* r) { *r = t->TripleConnect("pk-nope", "dev3", kKey1); },
       v1::DENY_REASON_UNKNOWN_DEVICE},
      {"unknown device",
       [](auto* t, auto* r) { *r = t->TripleConnect("pk-triple", "ghost", kKey1); },
       v1::DENY_REASON_UNKNOWN_DEVICE},
      {"device of another product",
       [](auto* t, auto* r) { *r = t->TripleConnect("pk-weak", "dev3", kKey1); },
       v1::DENY_REASON_UNKNOWN_DEVICE},
      {"wrong secret",
       [](auto* t, auto* r) { *r = t->TripleConnect("pk-triple", "dev3", kOtherKey); },
       v1::DENY_REASON_BAD_SIGNATURE},
      {"old timestamp",
       [](auto* t, auto* r) {
         *r = t->TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha256,
                               -absl::Minutes(6));
       },
       v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW},
      {"future timestamp",
       [](auto* t, auto* r) {
         *r = t->TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha256,
                               absl::Minutes(6));
       },
       v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW},
      {"weak method not enabled",
       [](auto* t, auto* r) {
         *r = t->TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kHmacSha1);
       },
       v1::DENY_REASON_WEAK_ALGORITHM},
      {"disabled", [](auto* t, auto* r) { *r = t->TripleConnect("pk-triple", "off3", kKey1); },
       v1::DENY_REASON_DEVICE_DISABLED},
      {"product does not allow triples",
       [](auto* t, auto* r) { *r = t->TripleConnect("pk-sasonly", "sasonly3", kKey1); },
       v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED},
      {"tenant hint of another tenant", [](auto*, auto* r) { r->set_tenant_id("t2"); },
       v1::DENY_REASON_UNKNOWN_DEVICE},
  };
  int n = 0;
  for (const auto& c : cases) {
    // A fresh timestamp per row so the valid request is never a replay.
    clock_.Advance(absl::Seconds(1));
    auto req = TripleConnect("pk-triple", "dev3", kKey1);
    ASSERT_EQ(Run(req).decision(), v1::DECISION_ALLOW) << c.name;
    clock_.Advance(absl::Seconds(1));
    req = TripleConnect("pk-triple", "dev3", kKey1);
    c.mutate(this, &req);
    auto resp = Run(req);
    EXPECT_EQ(resp.decision(), v1::DECISION_DENY) << c.name;
    EXPECT_EQ(v1::DenyReason_Name(resp.deny_reason()), v1::DenyReason_Name(c.reason)) << c.name;
    EXPECT_EQ(resp.deny_detail().find(req.connect().password()), std::string::npos) << c.name;
    ++n;
  }
  EXPECT_EQ(n, 13);
}

TEST_F(AuthenticatorTest, TripleWeakMethodWhenEnabledAndExplicitCredential) {
  auto resp = Run(TripleConnect("pk-weak", "weak3", kKey1, TripleSignMethod::kHmacSha1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.credential_fingerprint(), "triple:hmacsha1");

  const int64_t ts = absl::ToUnixMillis(clock_.Now());
  auto sig = ComputeTripleSignature(TripleSignMethod::kHmacSha256, kKey1,
                                    {"c9", "dev3", "pk-triple", absl::StrCat(ts)});
  ASSERT_TRUE(sig.ok());
  v1::AuthenticateRequest r;
  auto* t = r.mutable_credential()->mutable_device_triple();
  t->set_product_key("pk-triple");
  t->set_device_name("dev3");
  t->set_client_id("c9");
  t->set_timestamp_ms(ts);
  t->set_signature(crypto::HexEncode(*sig));
  EXPECT_EQ(Run(r).decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_REPLAYED);
}

// Found by authenticate_fuzzer: the token is raw bytes, and a device id URL-decoded
// from it went into the response's identity (and the audit event) as it was; a byte
// that is not UTF-8 made the whole response unparsable for the broker.
TEST_F(AuthenticatorTest, SasAudienceWithBytesNoDeviceIdHasIsMalformedAudience) {
  v1::AuthenticateRequest r = SasConnect("sn-007", kKey1);
  r.mutable_connect()->set_password(Token(absl::StrCat(kHub,
                                                       "/devices/sn-0\xF1"
                                                       "07"),
                                          kKey1, Expiry()));
  auto resp = Run(r);
  EXPECT_EQ(resp.decision(), v1::DECISION_DENY);
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_WRONG_AUDIENCE);
  EXPECT_TRUE(resp.identity().device_id().empty());
  v1::AuthenticateResponse again;
  EXPECT_TRUE(again.ParseFromString(resp.SerializeAsString()));
  auto events = sink_.events();
  ASSERT_EQ(events.size(), 1U);
  audit::v1::AuditEvent event_again;
  EXPECT_TRUE(event_again.ParseFromString(events[0].SerializeAsString()));
  EXPECT_EQ(events[0].reason(), "DENY_REASON_WRONG_AUDIENCE");
}

TEST_F(AuthenticatorTest, EnosStaticAndDynamicActivation) {
  auto resp = Run(TripleConnect("pk-triple", "dev3", kKey1, TripleSignMethod::kSha256));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.credential_type(), reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS);
  EXPECT_EQ(resp.credential_fingerprint(), "enos:sha256");

  // Dynamic activation with the product secret (securemode=3).
  resp = Run(TripleConnect("pk-triple", "newdev", kProductSecret, TripleSignMethod::kSha256,
                           absl::ZeroDuration(), 3));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_TRUE(resp.device_registered());
  EXPECT_EQ(resp.issued_device_secret(), "newdevicesecret");
  EXPECT_EQ(resp.credential_fingerprint(), "enos:product-secret");
  EXPECT_EQ(registrar_.activations, 1);
  // The audit event never carries the issued secret.
  EXPECT_EQ(sink_.events().back().DebugString().find("newdevicesecret"), std::string::npos);
  // The device now connects with its new secret.
  clock_.Advance(absl::Seconds(1));
  resp = Run(TripleConnect("pk-triple", "newdev", "newdevicesecret", TripleSignMethod::kSha256));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_FALSE(resp.device_registered());

  // Wrong product secret; already activated.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(Run(TripleConnect("pk-triple", "x", "bad", TripleSignMethod::kSha256,
                              absl::ZeroDuration(), 3))
                .deny_reason(),
            v1::DENY_REASON_BAD_SIGNATURE);
  registrar_.activation_status = absl::FailedPreconditionError("already");
  auto denied = Run(TripleConnect("pk-triple", "newdev", kProductSecret, TripleSignMethod::kSha256,
                                  absl::ZeroDuration(), 3));
  EXPECT_EQ(denied.deny_reason(), v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED);
  EXPECT_TRUE(denied.issued_device_secret().empty());
  // The registry says the device is disabled (a disable this service has not seen).
  clock_.Advance(absl::Seconds(1));
  registrar_.activation_status = absl::PermissionDeniedError("device is disabled");
  denied = Run(TripleConnect("pk-triple", "newdev", kProductSecret, TripleSignMethod::kSha256,
                             absl::ZeroDuration(), 3));
  EXPECT_EQ(denied.deny_reason(), v1::DENY_REASON_DEVICE_DISABLED) << denied.deny_detail();
  EXPECT_TRUE(denied.issued_device_secret().empty());
  // A product without dynamic activation refuses securemode=3 product-secret connects.
  registrar_.activation_status = absl::OkStatus();
  EXPECT_EQ(Run(TripleConnect("pk-weak", "weak3", kProductSecret, TripleSignMethod::kSha256,
                              absl::ZeroDuration(), 3))
                .deny_reason(),
            v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED);
  EXPECT_EQ(registrar_.activations, 3);
}

// EnOS: a device that connected with its own secret counts as activated, so the
// product secret (in every device of the product) cannot re-key it and take it over.
TEST_F(AuthenticatorTest, FirstConnectInADynamicActivationProductMarksTheDeviceActivated) {
  auto resp = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(registrar_.marks, 1);
  EXPECT_EQ(registrar_.last_marked, "pk-triple/dev3");
  EXPECT_EQ(sink_.events().back().attributes().count("activation_mark_failed"), 0U);
  // Products without dynamic activation never mark.
  resp = Run(TripleConnect("pk-weak", "weak3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(registrar_.marks, 1);

  // Once the registry's tag reaches the directory: no more marking, and the product
  // secret is refused before the registrar or the replay cache is asked.
  reg::Device d;
  d.set_tenant_id("t1");
  d.set_device_id("dev3");
  d.set_product_key("pk-triple");
  d.set_status(reg::DEVICE_STATUS_ENABLED);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(kKey1);
  (*d.mutable_tags())[kActivatedTag] = "true";
  ASSERT_TRUE(cache_->UpsertDevice(d).ok());
  clock_.Advance(absl::Seconds(1));
  resp = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(registrar_.marks, 1);
  clock_.Advance(absl::Seconds(1));
  resp = Run(TripleConnect("pk-triple", "dev3", kProductSecret, TripleSignMethod::kSha256,
                           absl::ZeroDuration(), 3));
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED);
  EXPECT_EQ(resp.deny_detail(), "device is already activated");
  EXPECT_TRUE(resp.issued_device_secret().empty());
  EXPECT_EQ(registrar_.activations, 0);
  // The same activation again is refused the same way, not as a replay: it took no
  // room in the replay cache.
  resp = Run(TripleConnect("pk-triple", "dev3", kProductSecret, TripleSignMethod::kSha256,
                           absl::ZeroDuration(), 3));
  EXPECT_EQ(resp.deny_detail(), "device is already activated");
  // A device of another product is refused before the registrar too.
  clock_.Advance(absl::Seconds(1));
  resp = Run(TripleConnect("pk-triple", "weak3", kProductSecret, TripleSignMethod::kSha256,
                           absl::ZeroDuration(), 3));
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_UNKNOWN_DEVICE);
  EXPECT_EQ(registrar_.activations, 0);
}

// The mark is stored when it can be: the device proved its secret either way, and the
// audit record names a failed mark.
TEST_F(AuthenticatorTest, AFailedActivationMarkStillAllowsAndIsAudited) {
  registrar_.mark_status = absl::UnavailableError("registry not ready");
  auto resp = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(sink_.events().back().attributes().at("activation_mark_failed"), "UNAVAILABLE");
  clock_.Advance(absl::Seconds(1));
  registrar_.mark_status = absl::OkStatus();
  resp = Run(TripleConnect("pk-triple", "dev3", kKey1));
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(registrar_.marks, 2);
  EXPECT_EQ(sink_.events().back().attributes().count("activation_mark_failed"), 0U);
}

// Device ids may hold '?': the username's query starts after the ids the token names.
TEST_F(AuthenticatorTest, SasUsernameOfADeviceIdWithAQuestionMark) {
  AddDevice("t1", "sensor?1", "pk-sas", reg::DEVICE_STATUS_ENABLED);
  auto r = SasConnect("sensor?1", kKey1);
  auto resp = Run(r);
  EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  for (const std::string tail : {"", "/", "?api-version=1", "/?api-version=1&x=?"}) {
    r.mutable_connect()->set_username(absl::StrCat(kHub, "/sensor?1", tail));
    resp = Run(r);
    EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW) << tail << ": " << resp.deny_detail();
  }
  for (const std::string name : {"/sensor?1x/?api-version=1", "/sensor?1/m1/?api-version=1",
                                 "/sensor/?1", "/sensor?", "sensor?1"}) {
    r.mutable_connect()->set_username(absl::StrCat(kHub, name));
    EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_IDENTITY_MISMATCH) << name;
  }
}

// SDKs that always append "&skn=" (the Azure IoT C SDK) send device-scoped tokens
// with an empty key name.
TEST_F(AuthenticatorTest, SasTokenWithAnEmptyKeyNameIsDeviceScoped) {
  auto r = SasConnect("d1", kKey1);
  r.mutable_connect()->set_password(r.connect().password() + "&skn=");
  auto resp = Run(r);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  EXPECT_EQ(resp.credential_fingerprint(), "sas:primary");
}

// A tenant with more enrollment groups than are tried: the deny says why.
TEST_F(AuthenticatorTest, EnrollmentGroupsPastTheLimitAreNamedInTheDetail) {
  reg::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g0");  // sorts before g1, the registration id's group
  g.set_group_key("b3RoZXItZ3JvdXAta2V5LTAwMDAwMDAwMDAwMDAwMDA=");
  g.set_product_key("pk-sas");
  g.set_enabled(true);
  ASSERT_TRUE(cache_->UpsertEnrollmentGroup(g).ok());
  AuthenticatorConfig config;
  config.max_enrollment_groups_tried = 1;
  Rebuild(config);
  auto key = DeriveDeviceKey(kGroupKey, kRegistrationId);
  ASSERT_TRUE(key.ok());
  auto resp = Run(SasConnect(kRegistrationId, *key));
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_UNKNOWN_DEVICE);
  EXPECT_NE(resp.deny_detail().find("only the first 1 of the tenant's 2 enrollment groups"),
            std::string::npos)
      << resp.deny_detail();
  EXPECT_EQ(registrar_.registrations, 0);
  config.max_enrollment_groups_tried = 2;
  Rebuild(config);
  resp = Run(SasConnect(kRegistrationId, *key));
  EXPECT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
}

TEST_F(AuthenticatorTest, DeviceLockoutAfterRepeatedBadSignatures) {
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Run(SasConnect("d1", kOtherKey)).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
  }
  // Locked: even the right key is refused before any crypto, from any address.
  auto good = SasConnect("d1", kKey1);
  good.mutable_connect()->set_peer_address("198.51.100.7:1234");
  EXPECT_EQ(Run(good).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  EXPECT_EQ(sink_.events().back().reason(), "DENY_REASON_RATE_LIMITED");
  // Other devices are unaffected.
  EXPECT_EQ(Run(TripleConnect("pk-triple", "dev3", kKey1)).decision(), v1::DECISION_ALLOW);
  clock_.Advance(absl::Seconds(30));
  EXPECT_EQ(Run(good).decision(), v1::DECISION_ALLOW);
  // Success forgets the failures: one more bad signature does not lock again.
  EXPECT_EQ(Run(SasConnect("d1", kOtherKey)).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
  EXPECT_EQ(Run(good).decision(), v1::DECISION_ALLOW);
}

TEST_F(AuthenticatorTest, EnrollmentCandidateLockout) {
  // An unknown device id that enrollment groups could register: wrong tokens are
  // counted against it like bad signatures, and once it is locked even the derived
  // key is refused before any crypto (no registration).
  auto key = DeriveDeviceKey(kGroupKey, kRegistrationId);
  ASSERT_TRUE(key.ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Run(SasConnect(kRegistrationId, kOtherKey)).deny_reason(),
              v1::DENY_REASON_UNKNOWN_DEVICE);
  }
  EXPECT_EQ(Run(SasConnect(kRegistrationId, *key)).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  EXPECT_EQ(registrar_.registrations, 0);
  clock_.Advance(absl::Seconds(30));
  EXPECT_EQ(Run(SasConnect(kRegistrationId, *key)).decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(registrar_.registrations, 1);
}

TEST_F(AuthenticatorTest, SourceLockout) {
  AuthenticatorConfig config;
  config.source_max_failures = 3;
  Rebuild(config);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Run(SasConnect(absl::StrCat("ghost", i), kKey1)).deny_reason(),
              v1::DENY_REASON_UNKNOWN_DEVICE);
  }
  EXPECT_EQ(Run(SasConnect("d1", kKey1)).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  auto other = SasConnect("d1", kKey1);
  other.mutable_connect()->set_peer_address("[2001:db8::1]:8883");
  EXPECT_EQ(Run(other).decision(), v1::DECISION_ALLOW);
  // IPv6 sources count by their /64: fresh addresses from one /64 are one source.
  for (int i = 0; i < 3; ++i) {
    auto ghost = SasConnect(absl::StrCat("ghost", i), kKey1);
    ghost.mutable_connect()->set_peer_address(absl::StrCat("[2001:db8:0:7::", i + 10, "]:8883"));
    EXPECT_EQ(Run(ghost).deny_reason(), v1::DENY_REASON_UNKNOWN_DEVICE);
  }
  other.mutable_connect()->set_peer_address("[2001:db8:0:7:ffff:1:2:3]:8883");
  EXPECT_EQ(Run(other).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  other.mutable_connect()->set_peer_address("2001:db8:0:7::99");  // no port
  EXPECT_EQ(Run(other).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  other.mutable_connect()->set_peer_address("[2001:db8:0:8::1]:8883");  // another /64
  EXPECT_EQ(Run(other).decision(), v1::DECISION_ALLOW);
  // An IPv4-mapped IPv6 address is its IPv4 address (locked above).
  other.mutable_connect()->set_peer_address("[::ffff:192.0.2.1]:9000");
  EXPECT_EQ(Run(other).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  // An explicit credential from a gateway (Envoy ext_authz) carries the address too.
  v1::AuthenticateRequest explicit_sas;
  explicit_sas.mutable_credential()->mutable_sas()->set_token(
      Token(absl::StrCat(kHub, "/devices/d1"), kKey1, Expiry()));
  EXPECT_EQ(Run(explicit_sas).decision(), v1::DECISION_ALLOW);
  explicit_sas.mutable_credential()->set_peer_address("192.0.2.1:7000");
  EXPECT_EQ(Run(explicit_sas).deny_reason(), v1::DENY_REASON_RATE_LIMITED);
  // Limits off.
  config.source_max_failures = 0;
  config.device_max_failures = 0;
  Rebuild(config);
  for (int i = 0; i < 10; ++i) Run(SasConnect("d1", kOtherKey));
  EXPECT_EQ(Run(SasConnect("d1", kKey1)).decision(), v1::DECISION_ALLOW);
}

TEST_F(AuthenticatorTest, OversizedFieldsAreInvalidArgumentNamingTheField) {
  auto req = SasConnect("d1", kKey1);
  req.mutable_connect()->set_password(std::string(5000, 'a'));
  auto resp = auth_->Authenticate(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(resp.status().message().find("connect.password"), absl::string_view::npos);
  req = SasConnect("d1", kKey1);
  req.mutable_connect()->set_client_id(std::string(2000, 'a'));
  EXPECT_NE(auth_->Authenticate(req).status().message().find("connect.client_id"),
            absl::string_view::npos);
  req = SasConnect("d1", kKey1);
  req.set_request_id(std::string(200, 'r'));
  EXPECT_NE(auth_->Authenticate(req).status().message().find("request_id"),
            absl::string_view::npos);
}

TEST_F(AuthenticatorTest, CreateValidates) {
  Authenticator::Options o;
  EXPECT_FALSE(Authenticator::Create(o).ok());
  o.directory = cache_.get();
  o.config.triple_timestamp_window = absl::ZeroDuration();
  EXPECT_FALSE(Authenticator::Create(o).ok());
}

class StubVerifier final : public CertificateVerifier {
 public:
  Result Verify(absl::Span<const absl::string_view> chain, absl::string_view /*tenant_hint*/,
                absl::Time /*now*/) const override {
    Result r;
    if (!chain.empty() && chain[0] == "revoked") {
      r.verdict = Verdict::Deny(v1::DENY_REASON_REVOKED, "certificate is revoked");
      r.tenant_id = "t1";  // judged by t1's CAs
      return r;
    }
    if (chain.empty() || chain[0] != "good") {
      r.verdict = Verdict::Deny(v1::DENY_REASON_UNTRUSTED_ISSUER, "unknown issuer");
      return r;
    }
    r.tenant_id = "t1";
    r.device_id = "d1";
    r.credential_type = reg::CREDENTIAL_TYPE_X509_CA;
    r.fingerprint = "x509:sha256:00";
    return r;
  }
};

TEST_F(AuthenticatorTest, CertificateSeam) {
  StubVerifier verifier;
  Rebuild({}, &verifier);
  v1::AuthenticateRequest r;
  r.mutable_connect()->set_client_id("d1");
  r.mutable_connect()->add_peer_certificate_chain("bad");
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_UNTRUSTED_ISSUER);
  r.mutable_connect()->set_peer_certificate_chain(0, "good");
  // pk-sas does not allow X.509.
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED);
  // A valid certificate of d1 presented under another device's client id.
  r.mutable_connect()->set_client_id("d2");
  EXPECT_EQ(Run(r).deny_reason(), v1::DENY_REASON_IDENTITY_MISMATCH);
}

// Nothing binds an MQTT username to a certificate: `${username}` resolves only to the
// device's own id, so a device cannot pick another's name for its rules.
TEST_F(AuthenticatorTest, X509UsernamePlaceholderNamesOnlyTheDevice) {
  class X1 final : public CertificateVerifier {
   public:
    Result Verify(absl::Span<const absl::string_view> /*chain*/, absl::string_view /*tenant_hint*/,
                  absl::Time /*now*/) const override {
      Result r;
      r.tenant_id = "t1";
      r.device_id = "x1";
      r.credential_type = reg::CREDENTIAL_TYPE_X509_CA;
      r.fingerprint = "x509:sha256:01";
      return r;
    }
  } verifier;
  reg::Product p;
  p.set_tenant_id("t1");
  p.set_product_key("pk-x509");
  p.add_allowed_credential_types(reg::CREDENTIAL_TYPE_X509_CA);
  *p.add_default_rules() = Rule(reg::RULE_EFFECT_ALLOW, "u/${username}/#");
  ASSERT_TRUE(cache_->UpsertProduct(p).ok());
  AddDevice("t1", "x1", "pk-x509", reg::DEVICE_STATUS_ENABLED);
  Rebuild({}, &verifier);
  v1::AuthenticateRequest r;
  r.mutable_connect()->set_client_id("x1");
  r.mutable_connect()->set_username("victim");
  r.mutable_connect()->add_peer_certificate_chain("cert");
  auto resp = Run(r);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  for (const auto& rule : resp.access_rules()) EXPECT_NE(rule.topic_filter(), "u/victim/#");
  r.mutable_connect()->set_username("x1");
  resp = Run(r);
  ASSERT_EQ(resp.decision(), v1::DECISION_ALLOW) << resp.deny_detail();
  ASSERT_EQ(resp.access_rules_size(), 1);
  EXPECT_EQ(resp.access_rules(0).topic_filter(), "u/x1/#");
}

// A deny judged by a tenant's CAs (here: revoked) is audited under that tenant, so a
// tenant-filtered audit query shows it; an untrusted issuer has no tenant.
TEST_F(AuthenticatorTest, CertificateDenyCarriesTheJudgingTenant) {
  StubVerifier verifier;
  Rebuild({}, &verifier);
  v1::AuthenticateRequest r;
  r.mutable_connect()->add_peer_certificate_chain("revoked");
  const v1::AuthenticateResponse resp = Run(r);
  EXPECT_EQ(resp.deny_reason(), v1::DENY_REASON_REVOKED);
  EXPECT_EQ(resp.identity().tenant_id(), "t1");
  EXPECT_EQ(sink_.events().back().tenant_id(), "t1");
  EXPECT_EQ(sink_.events().back().reason(), "DENY_REASON_REVOKED");
  // A caller asking for another tenant gets no tenant attributed.
  r.set_tenant_id("t2");
  EXPECT_EQ(Run(r).identity().tenant_id(), "");
  r.clear_tenant_id();
  r.mutable_connect()->set_peer_certificate_chain(0, "bad");
  EXPECT_EQ(Run(r).identity().tenant_id(), "");
  EXPECT_EQ(sink_.events().back().tenant_id(), "");
}

TEST_F(AuthenticatorTest, EveryDecisionIsCountedByOutcomeReasonAndCredentialType) {
  EXPECT_EQ(Run(SasConnect("d1", kKey1)).decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Run(SasConnect("d1", kKey1)).decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Run(SasConnect("d1", kOtherKey)).deny_reason(), v1::DENY_REASON_BAD_SIGNATURE);
  EXPECT_EQ(Run(TripleConnect("pk-triple", "dev3", kKey1)).decision(), v1::DECISION_ALLOW);
  v1::AuthenticateRequest empty;
  empty.mutable_connect()->set_client_id("d1");
  EXPECT_EQ(Run(empty).deny_reason(), v1::DENY_REASON_NO_CREDENTIAL);
  // A malformed request (INVALID_ARGUMENT, no decision) is not counted.
  v1::AuthenticateRequest oversized = SasConnect("d1", kKey1);
  oversized.mutable_connect()->set_password(std::string(size_t{64} * 1024, 'x'));
  EXPECT_FALSE(auth_->Authenticate(oversized, CallContext{"gw-1"}).ok());

  EXPECT_EQ(testing::CountOf(auth_->decisions(), "allow", "none", "sas"), 2U);
  EXPECT_EQ(testing::CountOf(auth_->decisions(), "deny", "bad_signature", "sas"), 1U);
  EXPECT_EQ(testing::CountOf(auth_->decisions(), "allow", "none", "device_triple"), 1U);
  EXPECT_EQ(testing::CountOf(auth_->decisions(), "deny", "no_credential", "none"), 1U);
  uint64_t total = 0;
  for (const auto& row : auth_->decisions().Snapshot()) total += row.count;
  EXPECT_EQ(total, 5U);
  // The audit saw the same five decisions.
  EXPECT_EQ(sink_.events().size(), 5U);
}

}  // namespace
}  // namespace iotauth::identity
