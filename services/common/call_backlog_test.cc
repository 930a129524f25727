#include "services/common/call_backlog.h"

#include "gtest/gtest.h"

namespace iotauth {
namespace {

// One credential is one caller however its header is spelt.
TEST(CallBacklogTest, KeyIgnoresTheSchemesSpelling) {
  EXPECT_EQ(CallBacklog::KeyOf("Bearer tok", ""), CallBacklog::KeyOf("bEaRer tok", ""));
  EXPECT_EQ(CallBacklog::KeyOf("BEARER tok", ""), CallBacklog::KeyOf("bearer tok", ""));
  EXPECT_NE(CallBacklog::KeyOf("Bearer tok", ""), CallBacklog::KeyOf("Bearer other", ""));
  // An empty bearer token falls back to the certificate.
  EXPECT_EQ(CallBacklog::KeyOf("Bearer ", "CN=broker-1"), CallBacklog::KeyOf("", "CN=broker-1"));
  EXPECT_EQ(CallBacklog::KeyOf("bearer ", "CN=broker-1"), CallBacklog::KeyOf("", "CN=broker-1"));
}

TEST(CallBacklogTest, ACallerIsRefusedOnceItsWaitingCallsReachTheCap) {
  FakeClock clock;
  CallBacklog backlog({.max_waiting = 3, .forgiven_per_second = 10}, &clock);
  const uint64_t gw = CallBacklog::KeyOf("", "CN=broker-1,OU=gateway");
  const uint64_t other = CallBacklog::KeyOf("Bearer t", "");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(backlog.Admit(gw)) << i;
  EXPECT_FALSE(backlog.Admit(gw));
  EXPECT_EQ(backlog.refused(), 1u);
  // Another caller has its own cap.
  EXPECT_TRUE(backlog.Admit(other));
  // A started call makes room at once.
  backlog.Started(gw);
  EXPECT_TRUE(backlog.Admit(gw));
  EXPECT_FALSE(backlog.Admit(gw));
}

TEST(CallBacklogTest, CallsThatNeverStartAreForgivenOverTime) {
  FakeClock clock;
  CallBacklog backlog({.max_waiting = 3, .forgiven_per_second = 10}, &clock);
  const uint64_t gw = CallBacklog::KeyOf("", "CN=broker-1");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(backlog.Admit(gw));
  EXPECT_FALSE(backlog.Admit(gw));
  clock.Advance(absl::Milliseconds(100));  // one forgiven
  EXPECT_TRUE(backlog.Admit(gw));
  EXPECT_FALSE(backlog.Admit(gw));
  // A clock set back forgives nothing, and the decay resumes from there.
  clock.Advance(-absl::Minutes(1));
  EXPECT_FALSE(backlog.Admit(gw));
  clock.Advance(absl::Milliseconds(100));
  EXPECT_TRUE(backlog.Admit(gw));
}

TEST(CallBacklogTest, ACallerWhoseCallsAllStartLeavesNoEntry) {
  FakeClock clock;
  CallBacklog backlog({}, &clock);
  const uint64_t gw = CallBacklog::KeyOf("", "CN=broker-1");
  for (int i = 0; i < 10000; ++i) {
    ASSERT_TRUE(backlog.Admit(gw));
    backlog.Started(gw);
  }
  EXPECT_EQ(backlog.callers(), 0u);
  backlog.Started(gw);  // more starts than admissions (a call admitted before a restart
                        // of the count, or without the gate): no debt below zero
  EXPECT_TRUE(backlog.Admit(gw));
  EXPECT_EQ(backlog.callers(), 1u);
}

TEST(CallBacklogTest, CallersPastTheMapCapShareOneEntry) {
  FakeClock clock;
  CallBacklog backlog({.max_waiting = 2, .forgiven_per_second = 0, .max_callers = 2}, &clock);
  EXPECT_TRUE(backlog.Admit(CallBacklog::KeyOf("", "a")));
  EXPECT_TRUE(backlog.Admit(CallBacklog::KeyOf("", "b")));
  EXPECT_TRUE(backlog.Admit(CallBacklog::KeyOf("", "c")));
  EXPECT_TRUE(backlog.Admit(CallBacklog::KeyOf("", "d")));
  EXPECT_FALSE(backlog.Admit(CallBacklog::KeyOf("", "e")));  // c, d and e share
  EXPECT_TRUE(backlog.Admit(CallBacklog::KeyOf("", "a")));   // a has its own
}

TEST(CallBacklogTest, KeysTellTokensAndSubjectsApart) {
  EXPECT_NE(CallBacklog::KeyOf("", "x"), CallBacklog::KeyOf("x", ""));
  EXPECT_EQ(CallBacklog::KeyOf("Bearer t", "CN=a"), CallBacklog::KeyOf("Bearer t", "CN=b"));
  EXPECT_NE(CallBacklog::KeyOf("", "CN=a"), CallBacklog::KeyOf("", "CN=b"));
}

}  // namespace
}  // namespace iotauth
