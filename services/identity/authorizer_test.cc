#include "services/identity/authorizer.h"

#include <vector>

#include "gtest/gtest.h"
#include "services/common/error_info.h"
#include "services/identity/directory_cache.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

class CountingSink final : public audit::AuditSink {
 public:
  void Record(audit::v1::AuditEvent&& e) override { events.push_back(std::move(e)); }
  std::vector<audit::v1::AuditEvent> events;
};

reg::AccessRule Rule(reg::RuleEffect effect, reg::RuleAction action, const std::string& filter) {
  reg::AccessRule r;
  r.set_effect(effect);
  r.set_action(action);
  r.set_topic_filter(filter);
  return r;
}

class AuthorizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = *DirectoryCache::Create({});
    reg::Product p;
    p.set_tenant_id("t1");
    p.set_product_key("pk");
    *p.add_default_rules() =
        Rule(reg::RULE_EFFECT_ALLOW, reg::RULE_ACTION_ALL, "devices/${device}/#");
    *p.add_default_rules() =
        Rule(reg::RULE_EFFECT_ALLOW, reg::RULE_ACTION_SUBSCRIBE, "broadcast/#");
    ASSERT_TRUE(cache_->UpsertProduct(p).ok());
    reg::Device d;
    d.set_tenant_id("t1");
    d.set_device_id("d1");
    d.set_product_key("pk");
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    *d.add_rules() = Rule(reg::RULE_EFFECT_DENY, reg::RULE_ACTION_ALL, "devices/${device}/secret");
    ASSERT_TRUE(cache_->UpsertDevice(d).ok());
    d.set_device_id("off");
    d.set_status(reg::DEVICE_STATUS_DISABLED);
    ASSERT_TRUE(cache_->UpsertDevice(d).ok());
    Authorizer::Options o;
    o.directory = cache_.get();
    o.audit_sink = &sink_;
    authz_ = *Authorizer::Create(o);
  }

  v1::AuthorizeResponse Ask(const std::string& device, reg::RuleAction action,
                            const std::string& topic) {
    v1::AuthorizeRequest r;
    r.mutable_identity()->set_tenant_id("t1");
    r.mutable_identity()->set_device_id(device);
    r.set_action(action);
    r.set_topic(topic);
    v1::AuthorizeResponse resp;
    absl::Status s = authz_->Authorize(r, CallContext{"gw"}, &resp);
    EXPECT_TRUE(s.ok()) << s;
    return resp;
  }

  std::unique_ptr<DirectoryCache> cache_;
  CountingSink sink_;
  std::unique_ptr<Authorizer> authz_;
};

TEST_F(AuthorizerTest, FirstMatchingRuleWins) {
  auto r = Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d1/telemetry");
  EXPECT_EQ(r.decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(r.matched_rule_index(), 1);
  EXPECT_EQ(r.matched_rule().topic_filter(), "devices/d1/#");
  r = Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d1/secret");
  EXPECT_EQ(r.decision(), v1::DECISION_DENY);
  EXPECT_EQ(r.matched_rule_index(), 0);
  // Another device's topic: default deny.
  r = Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d2/telemetry");
  EXPECT_EQ(r.decision(), v1::DECISION_DENY);
  EXPECT_EQ(r.matched_rule_index(), -1);
  // Subscribe-only rule.
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_SUBSCRIBE, "broadcast/+").decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_PUBLISH, "broadcast/x").decision(), v1::DECISION_DENY);
  // A subscription wider than the allow rule, or overlapping the deny rule, is refused.
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_SUBSCRIBE, "devices/#").decision(), v1::DECISION_DENY);
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_SUBSCRIBE, "devices/d1/#").decision(), v1::DECISION_DENY);
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_SUBSCRIBE, "devices/d1/+/x").decision(), v1::DECISION_ALLOW);
}

TEST_F(AuthorizerTest, UnknownOrDisabledDevicesAreDenied) {
  EXPECT_EQ(Ask("ghost", reg::RULE_ACTION_PUBLISH, "devices/ghost/x").decision(),
            v1::DECISION_DENY);
  EXPECT_EQ(Ask("off", reg::RULE_ACTION_PUBLISH, "devices/off/x").decision(), v1::DECISION_DENY);
  ASSERT_FALSE(sink_.events.empty());
  EXPECT_EQ(sink_.events.back().type(), audit::v1::EVENT_TYPE_AUTHORIZATION);
  EXPECT_EQ(sink_.events.back().outcome(), audit::v1::OUTCOME_DENY);
}

TEST_F(AuthorizerTest, InvalidRequests) {
  // Each refusal names the field it is about, as a stable reason.
  const auto reason = [&](const v1::AuthorizeRequest& r) {
    v1::AuthorizeResponse resp;
    const absl::Status s = authz_->Authorize(r, {}, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return ErrorReason(s);
  };
  v1::AuthorizeRequest r;
  EXPECT_EQ(reason(r), "INVALID_IDENTITY");
  r.mutable_identity()->set_tenant_id("t1");
  r.mutable_identity()->set_device_id("d1");
  r.set_action(reg::RULE_ACTION_PUBLISH);
  r.set_topic("devices/+/x");
  EXPECT_EQ(reason(r), "INVALID_TOPIC");
  r.set_action(reg::RULE_ACTION_ALL);
  r.set_topic("devices/d1/x");
  EXPECT_EQ(reason(r), "INVALID_ACTION");
  r.set_action(reg::RULE_ACTION_SUBSCRIBE);
  r.set_topic("devices/#/x");
  EXPECT_EQ(reason(r), "INVALID_TOPIC");
  r.set_topic("devices/d1/x");
  r.set_client_id(std::string(100000, 'c'));
  EXPECT_EQ(reason(r), "INVALID_CLIENT_ID");
}

uint64_t CountOf(const Authorizer& a, const std::string& decision, const std::string& action,
                 const std::string& basis) {
  int found = 0;
  uint64_t count = 0;
  for (const auto& row : a.DecisionCounts()) {
    if (row.decision == decision && row.action == action && row.basis == basis) {
      ++found;
      count = row.count;
    }
  }
  EXPECT_EQ(found, 1) << decision << "/" << action << "/" << basis;
  return count;
}

TEST_F(AuthorizerTest, AuditedDecisionsAreRefusedWhileTheAuditLogCannotRecordThem) {
  audit::AuditGate gate;
  Authorizer::Options o;
  o.directory = cache_.get();
  o.audit_sink = &sink_;
  o.audit_gate = &gate;
  auto authz = Authorizer::Create(o);
  ASSERT_TRUE(authz.ok()) << authz.status();
  auto ask = [&](const std::string& topic, v1::AuthorizeResponse* resp) {
    v1::AuthorizeRequest r;
    r.mutable_identity()->set_tenant_id("t1");
    r.mutable_identity()->set_device_id("d1");
    r.set_action(reg::RULE_ACTION_PUBLISH);
    r.set_topic(topic);
    return (*authz)->Authorize(r, CallContext{"gw"}, resp);
  };
  gate.SetWritable(false);
  // An allow is not audited (audit_allows is off): still answered.
  v1::AuthorizeResponse allowed;
  ASSERT_TRUE(ask("devices/d1/telemetry", &allowed).ok());
  EXPECT_EQ(allowed.decision(), v1::DECISION_ALLOW);
  // A deny would be: refused, not recorded, not counted.
  v1::AuthorizeResponse denied;
  const absl::Status s = ask("devices/d1/secret", &denied);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(denied.decision(), v1::DECISION_UNSPECIFIED);
  EXPECT_TRUE(sink_.events.empty());
  EXPECT_EQ(CountOf(**authz, "deny", "publish", "rule"), 0U);
  EXPECT_EQ(gate.refused(), 1U);
  gate.SetWritable(true);
  ASSERT_TRUE(ask("devices/d1/secret", &denied).ok());
  EXPECT_EQ(denied.decision(), v1::DECISION_DENY);
  EXPECT_EQ(sink_.events.size(), 1U);
}

TEST_F(AuthorizerTest, EveryDecisionIsCountedByOutcomeActionAndBasis) {
  // Every combination is there from the start, at zero: 2 decisions x 2 actions x 3.
  ASSERT_EQ(authz_->DecisionCounts().size(), 12U);
  for (const auto& row : authz_->DecisionCounts()) EXPECT_EQ(row.count, 0U);

  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d1/telemetry").decision(),
            v1::DECISION_ALLOW);  // rule 1
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d1/secret").decision(),
            v1::DECISION_DENY);  // rule 0
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_PUBLISH, "devices/d2/telemetry").decision(),
            v1::DECISION_DENY);  // no rule: the default
  EXPECT_EQ(Ask("d1", reg::RULE_ACTION_SUBSCRIBE, "broadcast/+").decision(), v1::DECISION_ALLOW);
  EXPECT_EQ(Ask("off", reg::RULE_ACTION_SUBSCRIBE, "devices/off/x").decision(), v1::DECISION_DENY);
  EXPECT_EQ(Ask("ghost", reg::RULE_ACTION_PUBLISH, "devices/ghost/x").decision(),
            v1::DECISION_DENY);
  // An invalid request is not a decision.
  v1::AuthorizeRequest bad;
  v1::AuthorizeResponse resp;
  EXPECT_FALSE(authz_->Authorize(bad, {}, &resp).ok());

  EXPECT_EQ(CountOf(*authz_, "allow", "publish", "rule"), 1U);
  EXPECT_EQ(CountOf(*authz_, "deny", "publish", "rule"), 1U);
  EXPECT_EQ(CountOf(*authz_, "deny", "publish", "default_effect"), 1U);
  EXPECT_EQ(CountOf(*authz_, "allow", "subscribe", "rule"), 1U);
  EXPECT_EQ(CountOf(*authz_, "deny", "subscribe", "device"), 1U);
  EXPECT_EQ(CountOf(*authz_, "deny", "publish", "device"), 1U);
  uint64_t total = 0;
  for (const auto& row : authz_->DecisionCounts()) total += row.count;
  EXPECT_EQ(total, 6U);
}

}  // namespace
}  // namespace iotauth::identity
