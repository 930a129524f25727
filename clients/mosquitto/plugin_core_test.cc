#include "clients/mosquitto/plugin_core.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/common/error_info.h"

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

constexpr char kUser[] = "hub/d1/?api-version=2021-04-12";

ConnectAttempt Attempt(uintptr_t client = 1, const std::string& password = "token") {
  ConnectAttempt a;
  a.client = client;
  a.client_id = "d1";
  a.username = kUser;
  a.password = password;
  a.certificate_pem = "-----BEGIN CERTIFICATE-----\n...";
  a.peer_address = "127.0.0.1";
  return a;
}

class PluginCoreTest : public ::testing::Test {
 protected:
  void Make(size_t cache_size = 16, absl::Duration offline_grant_ttl = absl::Hours(1),
            size_t max_offline_sessions = 100) {
    PluginCore::Options o;
    o.config.offline_grant_ttl = offline_grant_ttl;
    o.config.max_offline_sessions = max_offline_sessions;
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
  EXPECT_FALSE(core_->OnAclCheck(1, "d1", kUser, Access::kWrite, "devices/d1/t").allow);
}

TEST_F(PluginCoreTest, UnreachableFailsFastForBackoff) {
  state_.next = absl::DeadlineExceededError("deadline\nforged line");
  const Decision d = core_->OnBasicAuth(Attempt());
  EXPECT_FALSE(d.allow);
  // Why, for the broker's log: the message, escaped so that it cannot forge a line.
  EXPECT_EQ(d.reason, "iotauth error: DEADLINE_EXCEEDED: deadline\\nforged line");
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  EXPECT_FALSE(core_->OnBasicAuth(Attempt()).allow) << "within the backoff: no call";
  EXPECT_EQ(state_.requests.size(), 1u);
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt()).allow);
  EXPECT_EQ(state_.requests.size(), 2u);
}

TEST_F(PluginCoreTest, FailFastWindowDoublesWhileUnreachableAndResetsOnAnAnswer) {
  // Each probe may hold the broker's event loop for the whole timeout: a long outage
  // must cost a shrinking share of the time.
  state_.next = absl::UnavailableError("down");
  absl::Duration window = absl::Seconds(1);
  for (int i = 0; i < 8; ++i) {
    ASSERT_FALSE(core_->OnBasicAuth(Attempt()).allow);
    const size_t calls = state_.requests.size();
    clock_.Advance(window - absl::Milliseconds(1));
    EXPECT_FALSE(core_->OnBasicAuth(Attempt()).allow);
    EXPECT_EQ(state_.requests.size(), calls) << "probe " << i << ": inside the window";
    clock_.Advance(absl::Milliseconds(1));
    window = std::min(window * 2, absl::Seconds(30));
  }
  // An answer resets the window to failure_backoff.
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  ASSERT_TRUE(core_->OnBasicAuth(Attempt()).allow);
  state_.next = absl::UnavailableError("down");
  ASSERT_FALSE(core_->OnBasicAuth(Attempt()).allow);
  const size_t calls = state_.requests.size();
  clock_.Advance(absl::Seconds(1));
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  EXPECT_TRUE(core_->OnBasicAuth(Attempt()).allow);
  EXPECT_EQ(state_.requests.size(), calls + 1);
}

TEST_F(PluginCoreTest, ARefusalFromIotauthIsNotAnOutage) {
  // iotauth answered, refusing what its audit log cannot record (a stable reason
  // in the error's details): the CONNECT is refused, but no fail-fast window opens,
  // so the device is let in on its next CONNECT once iotauth admits it.
  state_.next = WithErrorReason(absl::UnavailableError("audit log unwritable"), "AUDIT_UNWRITABLE");
  const Decision refused = core_->OnBasicAuth(Attempt());
  EXPECT_FALSE(refused.allow);
  EXPECT_EQ(refused.reason, "iotauth refused: AUDIT_UNWRITABLE");
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt()).allow) << "no clock advance: asked again at once";
  EXPECT_EQ(state_.requests.size(), 2u);
  EXPECT_EQ(core_->stats().rpc_failures, 1u);

  // A refusal also ends an earlier outage's doubling: the next outage starts at
  // failure_backoff again.
  state_.next = absl::UnavailableError("down");
  ASSERT_FALSE(core_->OnBasicAuth(Attempt(2, "t2")).allow);
  clock_.Advance(absl::Seconds(1));
  ASSERT_FALSE(core_->OnBasicAuth(Attempt(2, "t2")).allow);  // window now 2 s
  clock_.Advance(absl::Seconds(2));
  state_.next = WithErrorReason(absl::UnavailableError("refused"), "AUDIT_UNWRITABLE");
  ASSERT_FALSE(core_->OnBasicAuth(Attempt(2, "t2")).allow);
  state_.next = absl::UnavailableError("down");
  ASSERT_FALSE(core_->OnBasicAuth(Attempt(2, "t2")).allow);
  const size_t calls = state_.requests.size();
  clock_.Advance(absl::Seconds(1));
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(2, "t2")).allow) << "window back to 1 s";
  EXPECT_EQ(state_.requests.size(), calls + 1);
}

TEST_F(PluginCoreTest, CacheHonoursTtl) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Seconds(30));
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(1)).allow);
  EXPECT_TRUE(core_->OnBasicAuth(Attempt(2)).allow);
  EXPECT_EQ(state_.requests.size(), 1u);
  EXPECT_EQ(core_->stats().cache_hits, 1u);
  EXPECT_TRUE(core_->OnAclCheck(2, "d1", kUser, Access::kWrite, "devices/d1/t").allow)
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
  EXPECT_FALSE(core_->OnAclCheck(1, "d1", kUser, Access::kWrite, "devices/d1/t").allow)
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
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/telemetry").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "devices/d1/#").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/x").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d2/telemetry").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "devices/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d2/x").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kUnsubscribe, "anything").allow);
  EXPECT_FALSE(core_->OnAclCheck(8, "d1", kUser, Access::kWrite, "devices/d1/t").allow)
      << "unknown connection";
  EXPECT_FALSE(core_->OnAclCheck(7, "other", kUser, Access::kWrite, "devices/d1/t").allow)
      << "client id changed";
  EXPECT_EQ(core_->stats().online_sessions, 1u);
  core_->OnDisconnect(7);
  // Kept offline for its Last Will and queued deliveries, with the same rules.
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/t").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d2/telemetry").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "other", kUser, Access::kWrite, "devices/d1/t").allow);
  EXPECT_EQ(core_->stats().online_sessions, 0u);
  EXPECT_EQ(core_->stats().offline_sessions, 1u);
}

// Mosquitto asks about a shared subscription with its `$share/{group}/` prefix: the
// filter after it is what is subscribed to.
TEST_F(PluginCoreTest, SharedSubscriptionsAreCheckedByTheirFilter) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "$share/g/devices/d1/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "$share/g/devices/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "$share//devices/d1/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "$share/g/").allow);
  // A publish to a literal `$share/...` topic is checked as it is.
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "$share/g/devices/d1/t").allow);
}

// Topics past the server's limit are refused before any matching (the broker's
// thread would otherwise split a 64 KiB topic once per rule).
TEST_F(PluginCoreTest, OverlongTopicsAreRefused) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  std::string topic = "devices/d1/";
  topic.resize(kMaxAclTopicBytes, 'a');
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, topic).allow);
  topic.push_back('a');
  Decision d = core_->OnAclCheck(7, "d1", kUser, Access::kWrite, topic);
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.reason, "topic too long");
}

TEST_F(PluginCoreTest, ExactRuleAllowsDeliveriesThroughItsFilter) {
  iv1::AuthenticateResponse r = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  r.clear_access_rules();
  rv1::AccessRule* lit = r.add_access_rules();
  lit->set_effect(rv1::RULE_EFFECT_ALLOW);
  lit->set_action(rv1::RULE_ACTION_ALL);
  lit->set_topic_filter("lit/#");
  lit->set_exact(true);
  state_.next = r;
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "lit/#").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kSubscribe, "lit/x").allow);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "lit/x").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "lit/x").allow);
}

TEST_F(PluginCoreTest, WillAndDeliveriesAllowedWithinOfflineGrace) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  core_->OnDisconnect(7);
  // Mosquitto checks the will after the disconnect event (a delayed will later).
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/will").allow);
  clock_.Advance(absl::Minutes(59));
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/will").allow)
      << "delayed will";
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/cmd").allow)
      << "queued for the offline persistent session";
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d2/cmd").allow);
  core_->OnDisconnect(7);  // a repeated event does not restart the grace
  clock_.Advance(absl::Minutes(1));
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/cmd").allow)
      << "grace over";
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/will").allow);
  EXPECT_EQ(core_->stats().offline_sessions, 0u) << "dropped once past its grace";
}

TEST_F(PluginCoreTest, OfflineGrantEndsWithTheCredential) {
  iv1::AuthenticateResponse r = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  r.mutable_credential_expires_at()->set_seconds(absl::ToUnixSeconds(clock_.Now()) + 600);
  state_.next = r;
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  core_->OnDisconnect(7);
  clock_.Advance(absl::Seconds(599));
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/cmd").allow);
  clock_.Advance(absl::Seconds(1));
  const Decision d = core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/cmd");
  EXPECT_FALSE(d.allow) << "within the grace, but the credential expired";
  EXPECT_EQ(d.reason, "credential expired");
  EXPECT_EQ(core_->stats().offline_sessions, 0u);
}

TEST_F(PluginCoreTest, ZeroOfflineGrantForgetsAtDisconnect) {
  Make(16, absl::ZeroDuration());
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  core_->OnDisconnect(7);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/will").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kRead, "devices/d1/cmd").allow);
  EXPECT_EQ(core_->stats().online_sessions, 0u);
  EXPECT_EQ(core_->stats().offline_sessions, 0u);
}

TEST_F(PluginCoreTest, OfflineCapEvictsOldestFirst) {
  Make(16, absl::Hours(1), 2);
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  for (uintptr_t c = 1; c <= 4; ++c) ASSERT_TRUE(core_->OnBasicAuth(Attempt(c)).allow);
  core_->OnDisconnect(1);
  clock_.Advance(absl::Seconds(1));
  core_->OnDisconnect(2);
  clock_.Advance(absl::Seconds(1));
  core_->OnDisconnect(3);
  EXPECT_FALSE(core_->OnAclCheck(1, "d1", kUser, Access::kRead, "devices/d1/x").allow) << "evicted";
  EXPECT_TRUE(core_->OnAclCheck(2, "d1", kUser, Access::kRead, "devices/d1/x").allow);
  EXPECT_TRUE(core_->OnAclCheck(3, "d1", kUser, Access::kRead, "devices/d1/x").allow);
  EXPECT_TRUE(core_->OnAclCheck(4, "d1", kUser, Access::kRead, "devices/d1/x").allow)
      << "online sessions are not counted against the cap";
  EXPECT_EQ(core_->stats().offline_sessions, 2u);
  EXPECT_EQ(core_->stats().online_sessions, 1u);
}

TEST_F(PluginCoreTest, ExpiredOfflineSessionsAreReapedLazily) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::Minutes(1));
  for (uintptr_t c = 1; c <= 3; ++c) ASSERT_TRUE(core_->OnBasicAuth(Attempt(c)).allow);
  core_->OnDisconnect(1);
  core_->OnDisconnect(2);
  clock_.Advance(absl::Hours(1));
  core_->OnDisconnect(3);  // reaps 1 and 2, keeps its own
  EXPECT_EQ(core_->stats().offline_sessions, 1u);
  EXPECT_TRUE(core_->OnAclCheck(3, "d1", kUser, Access::kRead, "devices/d1/x").allow);
}

TEST_F(PluginCoreTest, AReusedHandleWithAnotherLoginInheritsNothing) {
  // The broker frees a disconnected client and hands its address to a client that
  // never reached OnBasicAuth (anonymous, or certificate-as-username): the offline
  // session's rules must not answer for it, even with the same client id.
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  core_->OnDisconnect(7);
  ASSERT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/t").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", "", Access::kWrite, "devices/d1/t").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", "someone-else", Access::kRead, "devices/d1/t").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d2", kUser, Access::kWrite, "devices/d1/t").allow);
}

TEST_F(PluginCoreTest, ReconnectReplacesOfflineSession) {
  state_.next = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  core_->OnDisconnect(7);
  EXPECT_EQ(core_->stats().offline_sessions, 1u);
  // The same handle connects again, now with narrower rules.
  iv1::AuthenticateResponse r = Allow(rv1::CREDENTIAL_TYPE_SAS, absl::ZeroDuration());
  r.mutable_access_rules(0)->set_topic_filter("devices/d1/only");
  state_.next = r;
  ASSERT_TRUE(core_->OnBasicAuth(Attempt(7)).allow);
  EXPECT_EQ(core_->stats().offline_sessions, 0u);
  EXPECT_EQ(core_->stats().online_sessions, 1u);
  EXPECT_TRUE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/only").allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/t").allow)
      << "the offline grant is gone";
  // A denied reconnect leaves nothing behind either.
  core_->OnDisconnect(7);
  iv1::AuthenticateResponse deny;
  deny.set_decision(iv1::DECISION_DENY);
  state_.next = deny;
  EXPECT_FALSE(core_->OnBasicAuth(Attempt(7)).allow);
  EXPECT_FALSE(core_->OnAclCheck(7, "d1", kUser, Access::kWrite, "devices/d1/only").allow);
  EXPECT_EQ(core_->stats().offline_sessions, 0u);
}

}  // namespace
}  // namespace iotauth::mosquitto
