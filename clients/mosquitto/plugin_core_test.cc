#include "clients/mosquitto/plugin_core.h"

#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "services/common/clock.h"

namespace iotauth::mosquitto {
namespace {

namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

struct FakeClientState {
  std::vector<iv1::AuthenticateRequest> requests;
  std::vector<absl::Duration> timeouts;
  absl::StatusOr<iv1::AuthenticateResponse> next = absl::UnavailableError("unset");
};

class FakeAuthClient final : public AuthClient {
 public:
  explicit FakeAuthClient(FakeClientState* s) : s_(s) {}
  absl::StatusOr<iv1::AuthenticateResponse> Authenticate(const iv1::AuthenticateRequest& req,
                                                         absl::Duration timeout) override {
    s_->requests.push_back(req);
    s_->timeouts.push_back(timeout);
    return s_->next;
  }

 private:
  FakeClientState* s_;
};

iv1::AuthenticateResponse Allow(rv1::CredentialType type, absl::Duration ttl) {
  iv1::AuthenticateResponse r;
  r.set_decision(iv1::DECISION_ALLOW);
  r.set_credential_type(type);
  r.mutable_identity()->set_tenant_id("acme");
  r.mutable_identity()->set_device_id("d1");
  r.set_default_effect(rv1::RULE_EFFECT_DENY);
  rv1::AccessRule* pub = r.add_access_rules();
  pub->set_effect(rv1::RULE_EFFECT_ALLOW);
  pub->set_action(rv1::RULE_ACTION_ALL);
  pub->set_topic_filter("devices/d1/#");
  r.mutable_cache_ttl()->set_seconds(absl::ToInt64Seconds(ttl));
  return r;
}

ConnectAttempt Attempt(uintptr_t client = 1, const std::string& password = "token") {
  ConnectAttempt a;
  a.client = client;
  a.client_id = "d1";
  a.username = "hub/d1/?api-version=2021-04-12";
  a.password = password;
  a.certificate_pem = "-----BEGIN CERTIFICATE-----\n...";
  a.peer_address = "127.0.0.1";
  return a;
}

class PluginCoreTest : public ::testing::Test {
 protected:
  void Make(size_t cache_size = 16) {
    PluginCore::Options o;
    o.config.address = "x:1";
    o.config.timeout = absl::Milliseconds(300);
    o.config.cache_size = cache_size;
    o.config.tenant_id = "acme";
    o.config.failure_backoff = absl::Seconds(1);
    o.client = std::make_unique<FakeAuthClient>(&state_);
    o.clock = &clock_;
    auto core = PluginCore::Create(std::move(o));
    ASSERT_TRUE(core.ok());
    core_ = *std::move(core);
  }
  void SetUp() override { Make(); }

  FakeClock clock_;
  FakeClientState state_;
  std::unique_ptr<PluginCore> core_;
};

TEST_F(PluginCoreTest, ConnectSendsEverythingWithTimeout) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt()).allow);
  ASSERT_EQ(state_.requests.size(), 1u);
  const iv1::AuthenticateRequest& r = state_.requests[0];
  EXPECT_EQ(r.tenant_id(), "acme");
  EXPECT_EQ(r.connect().client_id(), "d1");
  EXPECT_EQ(r.connect().username(), "hub/d1/?api-version=2021-04-12");
  EXPECT_EQ(r.connect().password(), "token");
  ASSERT_EQ(r.connect().peer_certificate_chain_size(), 1);
  EXPECT_EQ(r.connect().protocol(), iv1::PROTOCOL_MQTT);
  EXPECT_EQ(state_.timeouts[0], absl::Milliseconds(300));
}

TEST_F(PluginCoreTest, DenyAndErrorsFailClosed) {
  iv1::AuthenticateResponse deny;
  deny.set_decision(iv1::DECISION_DENY);
  deny.set_deny_reason(iv1::DENY_REASON_BAD_SIGNATURE);
  state_.next = deny;
  Decision d = core_->OnBasicAuth(Attempt());
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.reason, "DENY_REASON_BAD_SIGNATURE");
  state_.next = absl::InvalidArgumentError("connect.password too long");
  EXPECT_FALSE(core_->OnBasicAuth(Attempt()).allow);
  EXPECT_FALSE(core_->OnAclCheck(1, "d1", Access::kWrite, "devices/d1/t").allow);
}

TEST_F(PluginCoreTest, UnreachableFailsFastForBackoff) {
  state_.next = absl::DeadlineExceededError("deadline");
  EXPECT_FALSE(core_->OnBasicAuth(Attempt()).allow);
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  EXPECT_FALSE(core_->OnBasicAuth(Attempt()).allow) << "within the backoff: no call";
  EXPECT_EQ(state_.requests.size(), 1u);
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt()).allow);
  EXPECT_EQ(state_.requests.size(), 2u);
}

TEST_F(PluginCoreTest, CacheHonoursTtl) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Seconds(30));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(1)).allow);
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(2)).allow);
  EXPECT_EQ(state_.requests.size(), 1u);
  EXPECT_EQ(core_->stats().cache_hits, 1u);
  EXPECT_TRUE(core_->OnAclCheck(2, "d1", Access::kWrite, "devices/d1/t").allow)
      << "cached grant carries the rules";
  clock_.Advance(absl::Seconds(30));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(3)).allow);
  EXPECT_EQ(state_.requests.size(), 2u) << "expired entry asks again";
}

TEST_F(PluginCoreTest, CacheKeyCoversPasswordAndDeniesAreNotCached) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(1, "good")).allow);
  iv1::AuthenticateResponse deny;
  deny.set_decision(iv1::DECISION_DENY);
  state_.next = deny;
  EXPECT_FALSE(core_->OnBasicAuth(Attempt(2, "tampered")).allow);
  EXPECT_FALSE(core_->OnBasicAuth(Attempt(3, "tampered")).allow);
  EXPECT_EQ(state_.requests.size(), 3u);
}

TEST_F(PluginCoreTest, CacheBoundedByCredentialExpiryAndZeroTtl) {
  iv1::AuthenticateResponse r = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(5));
  r.mutable_credential_expires_at()->set_seconds(absl::ToUnixSeconds(clock_.Now()) + 10);
  state_.next = r;
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(1)).allow);
  clock_.Advance(absl::Seconds(10));
  EXPECT_FALSE(core_->OnAclCheck(1, "d1", Access::kWrite, "devices/d1/t").allow)
      << "credential expired";
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(2)).allow);
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(3)).allow);
  EXPECT_EQ(state_.requests.size(), 3u);
}

TEST_F(PluginCoreTest, TripleConnectsAreNeverCached) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_DEVICE_TRIPLE, absl::Minutes(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(1)).allow);
  iv1::AuthenticateResponse replay;
  replay.set_decision(iv1::DECISION_DENY);
  replay.set_deny_reason(iv1::DENY_REASON_REPLAYED);
  state_.next = replay;
  EXPECT_FALSE(core_->OnBasicAuth(Attempt(2)).allow) << "the replay reaches iotauth";
}

TEST_F(PluginCoreTest, CacheSizeIsBounded) {
  Make(2);
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  for (int i = 0; i < 5; ++i) core_->OnBasicAuth(Attempt(i, "pw" + std::to_string(i)));
  EXPECT_EQ(core_->stats().cached, 2u);
  Make(0);
  core_->OnBasicAuth(Attempt(1));
  EXPECT_EQ(core_->stats().cached, 0u);
}

TEST_F(PluginCoreTest, AclEnforcesRulesPerClient) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", Access::kWrite, "devices/d1/telemetry").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", Access::kSubscribe, "devices/d1/#").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", Access::kRead, "devices/d1/x").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", Access::kWrite, "devices/d2/telemetry").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", Access::kSubscribe, "devices/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", Access::kRead, "devices/d2/x").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", Access::kUnsubscribe, "anything").allow);
  EXPECT_FALSE(core_->OnAclCheck(8, "d1", Access::kWrite, "devices/d1/t").allow)
      << "unknown connection";
  EXPECT_FALSE(core_->OnAclCheck(7, "other", Access::kWrite, "devices/d1/t").allow)
      << "client id changed";
  core_->OnDisconnect(7);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", Access::kWrite, "devices/d1/t").allow);
  EXPECT_EQ(core_->stats().sessions, 0u);
}

}  // namespace
}  // namespace iotauth::mosquitto
