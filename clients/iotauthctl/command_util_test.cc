#include "clients/iotauthctl/command_util.h"

#include "gtest/gtest.h"

namespace iotauth::cli {
namespace {

namespace rv1 = ::iotauth::registry::v1;

TEST(RuleFlagTest, Parses) {
  auto r = ParseRuleFlag("allow:publish:devices/${device}/telemetry/#");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->effect(), rv1::RULE_EFFECT_ALLOW);
  EXPECT_EQ(r->action(), rv1::RULE_ACTION_PUBLISH);
  EXPECT_EQ(r->topic_filter(), "devices/${device}/telemetry/#");
  EXPECT_FALSE(r->exact());

  auto sub = ParseRuleFlag("DENY:sub:a:b:c");
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(sub->effect(), rv1::RULE_EFFECT_DENY);
  EXPECT_EQ(sub->action(), rv1::RULE_ACTION_SUBSCRIBE);
  EXPECT_EQ(sub->topic_filter(), "a:b:c");

  auto exact = ParseRuleFlag("allow:all:exact:a/+/b");
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->action(), rv1::RULE_ACTION_ALL);
  EXPECT_TRUE(exact->exact());
  EXPECT_EQ(exact->topic_filter(), "a/+/b");
}

TEST(RuleFlagTest, Rejects) {
  for (const char* bad :
       {"", "allow", "allow:publish", "allow:publish:", "permit:publish:t", "allow:write:t"}) {
    auto r = ParseRuleFlag(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(TagFlagTest, Parses) {
  auto tags = ParseTagFlags({"site=berlin", "floor=3=a"});
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(tags->at("site"), "berlin");
  EXPECT_EQ(tags->at("floor"), "3=a");
  EXPECT_FALSE(ParseTagFlags({"novalue"}).ok());
  EXPECT_FALSE(ParseTagFlags({"=x"}).ok());
  EXPECT_FALSE(ParseTagFlags({"a=1", "a=2"}).ok());
}

TEST(ListFlagTest, SplitsCommas) {
  EXPECT_EQ(SplitListFlag({"sas, device_triple", "x509_ca", ""}),
            std::vector<std::string>({"sas", "device_triple", "x509_ca"}));
}

}  // namespace
}  // namespace iotauth::cli
