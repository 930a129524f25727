#include "services/audit/chain_check.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/audit/canonical.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

// A chained log of `n` events, sequences 1..n from genesis.
std::vector<AuditEvent> Chain(int n) {
  std::vector<AuditEvent> out;
  std::string prev(kGenesisHash);
  for (int i = 1; i <= n; ++i) {
    AuditEvent e;
    e.set_sequence(static_cast<uint64_t>(i));
    e.set_event_id("id-" + std::to_string(i));
    e.set_device_id("dev-" + std::to_string(i));
    EXPECT_TRUE(ChainEvent(prev, &e).ok());
    prev = e.hash();
    out.push_back(e);
  }
  return out;
}

bool SelfOk(const AuditEvent& e) {
  auto h = ComputeEventHash(e);
  return h.ok() && *h == e.hash();
}

TEST(ChainCheckTest, RenumberedAfterRemovalNamesHowManyWereRemoved) {
  auto log = Chain(10);
  // Events 4 and 5 deleted; 6 renumbered to 4.
  AuditEvent e = log[5];
  e.set_sequence(4);
  ASSERT_FALSE(SelfOk(e));
  ChainFault f = BrokenLinkFault(4, &e, SelfOk(e), 0);
  EXPECT_EQ(f.sequence, 4U);
  EXPECT_EQ(f.problem, kProblemMissing);
  EXPECT_EQ(f.detail,
            "2 event(s) from 4 were removed and the later events renumbered (event 4 was written "
            "as 6)");
}

TEST(ChainCheckTest, FirstEventAfterTheAnchorNamesGenesisOrCheckpoint) {
  auto log = Chain(3);
  ChainFault g = BrokenLinkFault(1, log.data(), true, 0);
  EXPECT_EQ(g.sequence, 1U);
  EXPECT_EQ(g.problem, kProblemCheckpointMismatch);
  EXPECT_EQ(g.detail, "prev_hash of event 1 does not match the genesis hash");
  ChainFault c = BrokenLinkFault(3, &log[2], true, 2);
  EXPECT_EQ(c.sequence, 3U);
  EXPECT_EQ(c.detail, "prev_hash of event 3 does not match checkpoint 2");
}

TEST(ChainCheckTest, IntactEventBlamesThePreviousOneAsReHashed) {
  auto log = Chain(5);
  ChainFault f = BrokenLinkFault(4, &log[3], /*self_ok=*/true, 0);
  EXPECT_EQ(f.sequence, 3U);
  EXPECT_EQ(f.problem, kProblemAltered);
  EXPECT_EQ(f.detail,
            "event 3 no longer has the hash that event 4 chained to: either event 3 was changed "
            "and re-hashed, or events after it were removed and the later ones renumbered and "
            "re-hashed (a checkpoint kept outside the log, `--expect`, tells which)");
}

TEST(ChainCheckTest, AlteredEventThatNoRenumberingExplainsIsAltered) {
  auto log = Chain(5);
  AuditEvent e = log[3];
  e.set_device_id("someone-else");
  ChainFault f = BrokenLinkFault(4, &e, SelfOk(e), 0);
  EXPECT_EQ(f.sequence, 4U);
  EXPECT_EQ(f.problem, kProblemAltered);
  EXPECT_EQ(f.detail, "event 4 does not match its stored hash");
  // An event that no longer decodes cannot be searched for: altered too.
  EXPECT_EQ(BrokenLinkFault(4, nullptr, false, 0).detail, f.detail);
}

TEST(ChainCheckTest, FailWithMarksTheResultAndKeepsItsCounts) {
  VerifyResult r;
  r.events_checked = 7;
  r.anchor_sequence = 2;
  VerifyResult failed = FailWith(r, AbsentFault(10, 12));
  EXPECT_FALSE(failed.ok);
  EXPECT_EQ(failed.first_bad_sequence, 10U);
  EXPECT_EQ(failed.problem, kProblemMissing);
  EXPECT_EQ(failed.detail, "event 10 is absent; the next stored event is 12");
  EXPECT_EQ(failed.events_checked, 7U);
  EXPECT_EQ(failed.anchor_sequence, 2U);
  EXPECT_EQ(FailWith(r, EndsEarlyFault(20, 15)).first_bad_sequence, 16U);
  EXPECT_EQ(FailWith(r, FollowsLaterFault(5, 9)).problem, kProblemReordered);
  EXPECT_EQ(FailWith(r, CheckpointFault(5)).problem, kProblemCheckpointMismatch);
}

}  // namespace
}  // namespace iotauth::audit
