#include "services/identity/decision_counters.h"

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "services/identity/decision_counters_testing.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

using ::iotauth::identity::testing::CountOf;

TEST(DecisionCountersTest, EveryKnownCombinationIsListedFromTheStartAtZero) {
  DecisionCounters c;
  const auto rows = c.Snapshot();
  // Allows: one row per credential type (the named ones, "none" and "unknown");
  // denies: that many per named reason, plus "none" and "unknown".
  const int types = reg::CredentialType_descriptor()->value_count() + 1;
  const int reasons = v1::DenyReason_descriptor()->value_count() + 1;
  EXPECT_EQ(rows.size(), static_cast<size_t>(types + reasons * types));
  std::set<std::string> label_sets;
  for (const auto& row : rows) {
    EXPECT_EQ(row.count, 0U);
    // No label set twice (Prometheus would refuse the scrape).
    EXPECT_TRUE(
        label_sets.insert(row.decision + "/" + row.reason + "/" + row.credential_type).second)
        << row.decision << "/" << row.reason << "/" << row.credential_type;
  }
  EXPECT_EQ(CountOf(c, "allow", "none", "sas"), 0U);
  EXPECT_EQ(CountOf(c, "deny", "bad_signature", "device_triple"), 0U);
  EXPECT_EQ(CountOf(c, "deny", "rate_limited", "none"), 0U);
  EXPECT_EQ(CountOf(c, "deny", "unknown", "x509_ca"), 0U);
}

TEST(DecisionCountersTest, CountsLandInTheirOwnRowOnly) {
  DecisionCounters c;
  c.Record(v1::DECISION_ALLOW, v1::DENY_REASON_UNSPECIFIED, reg::CREDENTIAL_TYPE_SAS);
  c.Record(v1::DECISION_ALLOW, v1::DENY_REASON_UNSPECIFIED, reg::CREDENTIAL_TYPE_SAS);
  c.Record(v1::DECISION_DENY, v1::DENY_REASON_BAD_SIGNATURE, reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
  c.Record(v1::DECISION_DENY, v1::DENY_REASON_MALFORMED, reg::CREDENTIAL_TYPE_UNSPECIFIED);
  c.Record(v1::DECISION_DENY, v1::DENY_REASON_REPLAYED, reg::CREDENTIAL_TYPE_X509_SELF_SIGNED);
  EXPECT_EQ(CountOf(c, "allow", "none", "sas"), 2U);
  EXPECT_EQ(CountOf(c, "deny", "bad_signature", "device_triple"), 1U);
  EXPECT_EQ(CountOf(c, "deny", "malformed", "none"), 1U);
  EXPECT_EQ(CountOf(c, "deny", "replayed", "x509_self_signed"), 1U);
  uint64_t total = 0;
  for (const auto& row : c.Snapshot()) total += row.count;
  EXPECT_EQ(total, 5U);
}

TEST(DecisionCountersTest, AnAllowIgnoresAReasonAndAnUnsetDecisionCountsAsADeny) {
  DecisionCounters c;
  c.Record(v1::DECISION_ALLOW, v1::DENY_REASON_EXPIRED, reg::CREDENTIAL_TYPE_X509_CA);
  c.Record(v1::DECISION_UNSPECIFIED, v1::DENY_REASON_UNSPECIFIED, reg::CREDENTIAL_TYPE_SAS);
  EXPECT_EQ(CountOf(c, "allow", "none", "x509_ca"), 1U);
  EXPECT_EQ(CountOf(c, "deny", "expired", "x509_ca"), 0U);
  EXPECT_EQ(CountOf(c, "deny", "none", "sas"), 1U);
}

TEST(DecisionCountersTest, ValuesThisBuildDoesNotKnowCountAsUnknown) {
  DecisionCounters c;
  c.Record(v1::DECISION_DENY, static_cast<v1::DenyReason>(999),
           static_cast<reg::CredentialType>(-4));
  c.Record(v1::DECISION_ALLOW, v1::DENY_REASON_UNSPECIFIED, static_cast<reg::CredentialType>(77));
  EXPECT_EQ(CountOf(c, "deny", "unknown", "unknown"), 1U);
  EXPECT_EQ(CountOf(c, "allow", "none", "unknown"), 1U);
}

TEST(DecisionCountersTest, ConcurrentRecordsAreAllCounted) {
  DecisionCounters c;
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < kEach; ++i) {
        c.Record(v1::DECISION_ALLOW, v1::DENY_REASON_UNSPECIFIED, reg::CREDENTIAL_TYPE_SAS);
        c.Record(v1::DECISION_DENY, v1::DENY_REASON_RATE_LIMITED, reg::CREDENTIAL_TYPE_UNSPECIFIED);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(CountOf(c, "allow", "none", "sas"), static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(CountOf(c, "deny", "rate_limited", "none"), static_cast<uint64_t>(kThreads * kEach));
}

}  // namespace
}  // namespace iotauth::identity
