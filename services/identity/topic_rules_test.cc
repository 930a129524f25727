#include "services/identity/topic_rules.h"

#include "gtest/gtest.h"

namespace iotauth::identity {
namespace {

namespace reg = ::iotauth::registry::v1;

TEST(TopicRulesTest, TopicMatches) {
  struct Case {
    const char* filter;
    const char* topic;
    bool match;
  } cases[] = {
      {"a/b", "a/b", true},
      {"a/b", "a/c", false},
      {"a/+", "a/b", true},
      {"a/+", "a/b/c", false},
      {"a/#", "a", true},
      {"a/#", "a/b/c", true},
      {"#", "a/b", true},
      {"+/+", "a/b", true},
      {"+", "a/b", false},
      {"a/+/c", "a//c", true},
      {"+/b", "/b", true},
      {"#", "$SYS/x", false},
      {"+/x", "$SYS/x", false},
      {"$SYS/#", "$SYS/x", true},
      {"a/b", "a/b/", false},
      // Not a filter ('#' before the last level; the registry refuses one): no match.
      {"#/status", "anything/at/all", false},
      {"a/#/b", "a/x/b", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(TopicMatches(c.filter, c.topic), c.match) << c.filter << " vs " << c.topic;
  }
}

TEST(TopicRulesTest, CoversAndOverlaps) {
  EXPECT_TRUE(FilterCovers("a/#", "a/+/c"));
  EXPECT_TRUE(FilterCovers("a/+", "a/+"));
  EXPECT_TRUE(FilterCovers("a/#", "a/#"));
  EXPECT_FALSE(FilterCovers("a/+", "a/#"));
  EXPECT_FALSE(FilterCovers("a/b", "a/+"));
  EXPECT_FALSE(FilterCovers("a/b", "#"));
  EXPECT_TRUE(FiltersOverlap("a/b", "a/+"));
  EXPECT_TRUE(FiltersOverlap("a/b/c", "#"));
  EXPECT_TRUE(FiltersOverlap("a", "a/#"));
  EXPECT_FALSE(FiltersOverlap("a/b", "a/c"));
  EXPECT_FALSE(FiltersOverlap("a/b", "a/b/c"));
  EXPECT_FALSE(FiltersOverlap("$SYS/x", "#"));
}

TEST(TopicRulesTest, Validation) {
  EXPECT_TRUE(ValidateTopicName("a/b").ok());
  EXPECT_FALSE(ValidateTopicName("a/+").ok());
  EXPECT_FALSE(ValidateTopicName("").ok());
  EXPECT_TRUE(ValidateTopicFilter("a/+/#").ok());
  EXPECT_FALSE(ValidateTopicFilter("a/#/b").ok());
  EXPECT_FALSE(ValidateTopicFilter("a/b#").ok());
  EXPECT_FALSE(ValidateTopicFilter("a/b+").ok());
}

TEST(TopicRulesTest, PlaceholdersAndUnsafeValues) {
  reg::AccessRule allow;
  allow.set_effect(reg::RULE_EFFECT_ALLOW);
  allow.set_topic_filter("t/${tenant}/${device}/${client_id}/${unknown}");
  reg::AccessRule deny = allow;
  deny.set_effect(reg::RULE_EFFECT_DENY);
  google::protobuf::RepeatedPtrField<reg::AccessRule> out;
  Placeholders vars{"t1", "pk", "d1", "c1", "u", ""};
  EXPECT_TRUE(ResolveRule(allow, vars, &out));
  ASSERT_EQ(out.size(), 1);
  EXPECT_EQ(out[0].topic_filter(), "t/t1/d1/c1/${unknown}");
  vars.client_id = "#";
  EXPECT_FALSE(ResolveRule(allow, vars, &out));
  EXPECT_TRUE(ResolveRule(deny, vars, &out));
  ASSERT_EQ(out.size(), 2);
  EXPECT_EQ(out[1].topic_filter(), "t/t1/d1/#/${unknown}");
  vars.client_id = "";
  EXPECT_FALSE(ResolveRule(allow, vars, &out));
}

TEST(TopicRulesTest, RuleApplies) {
  reg::AccessRule r;
  r.set_effect(reg::RULE_EFFECT_ALLOW);
  r.set_action(reg::RULE_ACTION_PUBLISH);
  r.set_topic_filter("a/+");
  EXPECT_TRUE(RuleApplies(r, reg::RULE_ACTION_PUBLISH, "a/b"));
  EXPECT_FALSE(RuleApplies(r, reg::RULE_ACTION_SUBSCRIBE, "a/b"));
  r.set_action(reg::RULE_ACTION_ALL);
  EXPECT_TRUE(RuleApplies(r, reg::RULE_ACTION_SUBSCRIBE, "a/b"));
  EXPECT_FALSE(RuleApplies(r, reg::RULE_ACTION_SUBSCRIBE, "a/#"));  // allow must cover
  r.set_effect(reg::RULE_EFFECT_DENY);
  EXPECT_TRUE(RuleApplies(r, reg::RULE_ACTION_SUBSCRIBE, "a/#"));  // deny needs overlap
  r.set_exact(true);
  EXPECT_FALSE(RuleApplies(r, reg::RULE_ACTION_PUBLISH, "a/b"));
  r.set_topic_filter("a/b");
  EXPECT_TRUE(RuleApplies(r, reg::RULE_ACTION_PUBLISH, "a/b"));
}

}  // namespace
}  // namespace iotauth::identity
