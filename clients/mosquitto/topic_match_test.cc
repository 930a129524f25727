#include "clients/mosquitto/topic_match.h"

#include "gtest/gtest.h"

namespace iotauth::mosquitto {
namespace {

namespace rv1 = ::iotauth::registry::v1;

TEST(TopicMatchTest, CoversNames) {
  struct Case {
    const char* filter;
    const char* topic;
    bool want;
  } cases[] = {
      {"a/b", "a/b", true},       {"a/b", "a/c", false},   {"a/+", "a/b", true},
      {"a/+", "a/b/c", false},    {"a/#", "a/b/c", true},  {"a/#", "a", true},
      {"#", "a/b", true},         {"#", "$SYS/x", false},  {"+/x", "$SYS/x", false},
      {"$SYS/#", "$SYS/x", true}, {"a/+/c", "a//c", true}, {"a", "a/b", false},
      {"a/b/c", "a/b", false},    {"+", "", true},         {"a/#/b", "a/x/b", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FilterCovers(c.filter, c.topic), c.want) << c.filter << " vs " << c.topic;
  }
}

TEST(TopicMatchTest, CoversFilters) {
  EXPECT_TRUE(FilterCovers("devices/d1/#", "devices/d1/+/x"));
  EXPECT_TRUE(FilterCovers("devices/+/#", "devices/+/x"));
  EXPECT_FALSE(FilterCovers("devices/d1/+", "devices/d1/#"));
  EXPECT_FALSE(FilterCovers("devices/d1/x", "devices/d1/+"));
  EXPECT_FALSE(FilterCovers("devices/d1/#", "devices/#"));
}

TEST(TopicMatchTest, Overlap) {
  EXPECT_TRUE(FiltersOverlap("devices/+/x", "devices/d1/#"));
  EXPECT_TRUE(FiltersOverlap("a/#", "a"));
  EXPECT_TRUE(FiltersOverlap("#", "a/b"));
  EXPECT_FALSE(FiltersOverlap("#", "$SYS/a"));
  EXPECT_FALSE(FiltersOverlap("a/b", "a/c"));
  EXPECT_FALSE(FiltersOverlap("a/+", "a/b/c"));
  EXPECT_TRUE(FiltersOverlap("+/+", "x/#"));
}

rv1::AccessRule Rule(rv1::RuleEffect e, rv1::RuleAction a, const char* filter, bool exact = false) {
  rv1::AccessRule r;
  r.set_effect(e);
  r.set_action(a);
  r.set_topic_filter(filter);
  r.set_exact(exact);
  return r;
}

TEST(TopicMatchTest, FirstMatchWinsThenDefault) {
  const std::vector<rv1::AccessRule> rules = {
      Rule(rv1::RULE_EFFECT_DENY, rv1::RULE_ACTION_ALL, "devices/d1/secret/#"),
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_PUBLISH, "devices/d1/#"),
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_SUBSCRIBE, "commands/d1/+"),
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_ALL, "lit/#", true),
  };
  const auto pub = rv1::RULE_ACTION_PUBLISH;
  const auto sub = rv1::RULE_ACTION_SUBSCRIBE;
  const auto deny = rv1::RULE_EFFECT_DENY;
  EXPECT_TRUE(Decide(rules, deny, pub, "devices/d1/telemetry"));
  EXPECT_FALSE(Decide(rules, deny, pub, "devices/d1/secret/x"));
  EXPECT_FALSE(Decide(rules, deny, pub, "devices/d2/telemetry"));
  EXPECT_FALSE(Decide(rules, deny, sub, "devices/d1/telemetry")) << "publish-only rule";
  EXPECT_TRUE(Decide(rules, deny, sub, "commands/d1/reboot"));
  EXPECT_FALSE(Decide(rules, deny, sub, "commands/#")) << "allow must cover the filter";
  EXPECT_FALSE(Decide(rules, deny, sub, "devices/+/secret/x")) << "deny overlaps";
  EXPECT_TRUE(Decide(rules, deny, sub, "lit/#")) << "exact rule, literal";
  EXPECT_FALSE(Decide(rules, deny, pub, "lit/x")) << "exact rule does not expand";
  EXPECT_TRUE(Decide(rules, rv1::RULE_EFFECT_ALLOW, pub, "elsewhere"));
  EXPECT_FALSE(Decide(rules, rv1::RULE_EFFECT_UNSPECIFIED, pub, "elsewhere"));
}

TEST(TopicMatchTest, ExactRuleCoversDeliveriesThroughItsFilter) {
  const std::vector<rv1::AccessRule> rules = {
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_ALL, "lit/#", true),
  };
  const auto pub = rv1::RULE_ACTION_PUBLISH;
  const auto sub = rv1::RULE_ACTION_SUBSCRIBE;
  const auto deny = rv1::RULE_EFFECT_DENY;
  EXPECT_TRUE(Decide(rules, deny, sub, "lit/#")) << "subscribe to the literal filter";
  EXPECT_FALSE(Decide(rules, deny, sub, "lit/x")) << "subscribe narrower: not literal";
  EXPECT_TRUE(Decide(rules, deny, sub, "lit/x", /*delivery=*/true))
      << "delivery through the literal subscription";
  EXPECT_TRUE(Decide(rules, deny, sub, "lit", /*delivery=*/true)) << "`#` covers its parent";
  EXPECT_FALSE(Decide(rules, deny, sub, "other/x", /*delivery=*/true));
  EXPECT_FALSE(Decide(rules, deny, pub, "lit/x")) << "publish stays literal";
  EXPECT_TRUE(RuleApplies(rules[0], sub, "lit/a/b", /*delivery=*/true));
  EXPECT_FALSE(RuleApplies(rules[0], sub, "lit/a/b"));
}

TEST(TopicMatchTest, DeliveryLeavesDenyAndNonExactRulesAlone) {
  const std::vector<rv1::AccessRule> rules = {
      Rule(rv1::RULE_EFFECT_DENY, rv1::RULE_ACTION_ALL, "lit/secret", true),
      Rule(rv1::RULE_EFFECT_DENY, rv1::RULE_ACTION_ALL, "a/+/secret"),
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_ALL, "lit/#", true),
      Rule(rv1::RULE_EFFECT_ALLOW, rv1::RULE_ACTION_SUBSCRIBE, "a/#"),
  };
  const auto sub = rv1::RULE_ACTION_SUBSCRIBE;
  const auto deny = rv1::RULE_EFFECT_DENY;
  EXPECT_FALSE(Decide(rules, deny, sub, "lit/secret", /*delivery=*/true));
  EXPECT_TRUE(Decide(rules, deny, sub, "lit/public", /*delivery=*/true));
  EXPECT_FALSE(Decide(rules, deny, sub, "a/b/secret", /*delivery=*/true));
  EXPECT_TRUE(Decide(rules, deny, sub, "a/b/public", /*delivery=*/true));
}

}  // namespace
}  // namespace iotauth::mosquitto
