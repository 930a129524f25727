#include "services/common/refused_calls.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

using Presented = RefusedCallTally::Presented;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);
constexpr char kCreate[] = "/iotauth.registry.v1.DeviceRegistry/CreateTenant";

TEST(RefusedCallTallyTest, CountsRepeatsInOneEntryWithFirstAndLastSeen) {
  RefusedCallTally tally;
  tally.Add(kCreate, Presented::kNothing, "", "", kT0);
  tally.Add(kCreate, Presented::kNothing, "", "", kT0 + absl::Seconds(1));
  tally.Add(kCreate, Presented::kNothing, "", "", kT0 + absl::Seconds(2));
  RefusedCallTally::Drained d = tally.Drain();
  ASSERT_EQ(d.entries.size(), 1u);
  EXPECT_EQ(d.entries[0].method, kCreate);
  EXPECT_EQ(d.entries[0].presented, Presented::kNothing);
  EXPECT_EQ(d.entries[0].count, 3u);
  EXPECT_EQ(d.entries[0].first, kT0);
  EXPECT_EQ(d.entries[0].last, kT0 + absl::Seconds(2));
  EXPECT_EQ(d.entries[0].token_fingerprint, "");
  EXPECT_EQ(d.overflow, 0u);
}

TEST(RefusedCallTallyTest, EachMethodPresentedTokenAndSubjectIsItsOwnEntry) {
  RefusedCallTally tally;
  tally.Add(kCreate, Presented::kNothing, "", "", kT0);
  tally.Add("/iotauth.audit.v1.AuditLog/Query", Presented::kNothing, "", "", kT0);
  tally.Add(kCreate, Presented::kMalformedAuthorization, "", "", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "token-a", "", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "token-b", "", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "token-a", "CN=gw,OU=gateway", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "token-a", "", kT0);
  RefusedCallTally::Drained d = tally.Drain();
  ASSERT_EQ(d.entries.size(), 6u);
  EXPECT_EQ(d.entries[3].count, 2u);  // token-a without a certificate, twice
  EXPECT_NE(d.entries[3].token_fingerprint, d.entries[4].token_fingerprint);
  EXPECT_EQ(d.entries[5].cert_subject, "CN=gw,OU=gateway");
  EXPECT_EQ(d.entries[5].token_fingerprint, d.entries[3].token_fingerprint);
}

TEST(RefusedCallTallyTest, TheTokenIsKeptOnlyAsATruncatedHash) {
  RefusedCallTally tally;
  const std::string token = "planted-secret-token-0123456789";
  tally.Add(kCreate, Presented::kUnknownToken, token, "", kT0);
  RefusedCallTally::Drained d = tally.Drain();
  ASSERT_EQ(d.entries.size(), 1u);
  const std::string& fp = d.entries[0].token_fingerprint;
  EXPECT_TRUE(absl::StartsWith(fp, "sha256:")) << fp;
  EXPECT_EQ(fp.size(), 7u + 16u) << fp;
  EXPECT_FALSE(absl::StrContains(fp, "planted")) << fp;
  // SHA-256("abc") starts ba7816bf8f01cfea.
  EXPECT_EQ(RefusedCallTally::Fingerprint("abc"), "sha256:ba7816bf8f01cfea");
}

TEST(RefusedCallTallyTest, PastMaxEntriesRefusalsAreCountedWithoutDetails) {
  RefusedCallTally tally(RefusedCallTally::Options{/*max_entries=*/2});
  tally.Add(kCreate, Presented::kUnknownToken, "t1", "", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "t2", "", kT0);
  tally.Add(kCreate, Presented::kUnknownToken, "t3", "", kT0 + absl::Seconds(1));
  tally.Add(kCreate, Presented::kUnknownToken, "t4", "", kT0 + absl::Seconds(2));
  tally.Add(kCreate, Presented::kUnknownToken, "t1", "", kT0 + absl::Seconds(3));  // known entry
  RefusedCallTally::Drained d = tally.Drain();
  ASSERT_EQ(d.entries.size(), 2u);
  EXPECT_EQ(d.entries[0].count, 2u);
  EXPECT_EQ(d.overflow, 2u);
  EXPECT_EQ(d.overflow_first, kT0 + absl::Seconds(1));
  EXPECT_EQ(d.overflow_last, kT0 + absl::Seconds(2));
}

TEST(RefusedCallTallyTest, DrainEmptiesTheTally) {
  RefusedCallTally tally(RefusedCallTally::Options{/*max_entries=*/1});
  EXPECT_TRUE(tally.Drain().empty());
  tally.Add(kCreate, Presented::kNothing, "", "", kT0);
  tally.Add(kCreate, Presented::kMalformedAuthorization, "", "", kT0);
  EXPECT_FALSE(tally.Drain().empty());
  EXPECT_TRUE(tally.Drain().empty());
  // Room again after a drain.
  tally.Add(kCreate, Presented::kMalformedAuthorization, "", "", kT0);
  RefusedCallTally::Drained d = tally.Drain();
  ASSERT_EQ(d.entries.size(), 1u);
  EXPECT_EQ(d.overflow, 0u);
}

TEST(RefusedCallTallyTest, PathsThatAreNotMethodNamesAreNotEchoed) {
  EXPECT_EQ(RefusedCallTally::MethodLabel(kCreate), kCreate);
  EXPECT_EQ(RefusedCallTally::MethodLabel(""), "(malformed)");
  EXPECT_EQ(RefusedCallTally::MethodLabel("no-slash"), "(malformed)");
  EXPECT_EQ(RefusedCallTally::MethodLabel("/a b/c"), "(malformed)");
  EXPECT_EQ(RefusedCallTally::MethodLabel("/a\nb/c"), "(malformed)");
  EXPECT_EQ(RefusedCallTally::MethodLabel("/" + std::string(200, 'a')), "(malformed)");
  EXPECT_EQ(RefusedCallTally::MethodLabel("/" + std::string(127, 'a')),
            "/" + std::string(127, 'a'));
}

TEST(RefusedCallTallyTest, PresentedNames) {
  EXPECT_EQ(RefusedCallTally::PresentedName(Presented::kNothing), "none");
  EXPECT_EQ(RefusedCallTally::PresentedName(Presented::kMalformedAuthorization),
            "authorization_header");
  EXPECT_EQ(RefusedCallTally::PresentedName(Presented::kUnknownToken), "bearer_token");
}

}  // namespace
}  // namespace iotauth
