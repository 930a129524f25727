// Retention recorded in the chain (retention.h), on both stores: the record of a
// cut, PruneThrough's checks, and the verdict on a log whose start no record names
// (old events removed by hand, the anchor forged to match).
#include "services/audit/retention.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/audit/block_filter.h"
#include "services/audit/event_util.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/sqlite_audit_store.h"
#include "services/common/clock.h"

namespace iotauth::audit {
namespace {

namespace fs = std::filesystem;
using iotauth::audit::v1::AuditEvent;

enum class Backend { kLog, kSqlite };

class RetentionRecordTest : public ::testing::TestWithParam<Backend> {
 protected:
  // The log store removes whole segments (kBlockEvents each here); the SQLite store
  // removes any number of rows. kCut is a cut both can make.
  static constexpr uint64_t kCut = kBlockEvents;

  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = fs::path(tmp != nullptr ? tmp : "/tmp") /
           absl::StrCat("retention-", ::testing::UnitTest::GetInstance()->random_seed(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    if (GetParam() == Backend::kLog) {
      LogAuditStore::Options o;
      o.dir = (dir_ / "log").string();
      o.events_per_segment = kBlockEvents;
      o.checkpoint_interval = 0;
      o.clock = &clock_;
      auto s = LogAuditStore::Open(o);
      ASSERT_TRUE(s.ok()) << s.status();
      store_ = std::move(*s);
    } else {
      SqliteAuditStore::Options o;
      o.path = (dir_ / "audit.db").string();
      o.checkpoint_interval = 0;
      o.clock = &clock_;
      auto s = SqliteAuditStore::Open(o);
      ASSERT_TRUE(s.ok()) << s.status();
      store_ = std::move(*s);
    }
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  void AppendEvents(uint64_t n) {
    std::vector<AuditEvent> events;
    for (uint64_t i = 0; i < n; ++i) {
      AuditEvent e;
      e.set_event_id(NewEventId());
      SetTimestamp(clock_.Now(), e.mutable_time());
      e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
      e.set_device_id(absl::StrCat("dev-", next_++));
      events.push_back(std::move(e));
    }
    ASSERT_TRUE(store_->AppendFresh(&events).ok());
  }

  // What the pipeline does: plan, commit the record, prune.
  void RecordedRetention(const RetentionPolicy& policy, uint64_t want_cut) {
    auto cut = store_->PlanRetention(policy, clock_.Now());
    ASSERT_TRUE(cut.ok()) << cut.status();
    ASSERT_TRUE(cut->has_value());
    ASSERT_EQ((*cut)->sequence, want_cut);
    std::vector<AuditEvent> record{MakeRetentionEvent(**cut, policy, clock_.Now())};
    ASSERT_TRUE(store_->AppendFresh(&record).ok());
    auto pruned = store_->PruneThrough(**cut, clock_.Now());
    ASSERT_TRUE(pruned.ok()) << pruned.status();
    EXPECT_EQ(*pruned, want_cut - first_ + 1);
    first_ = want_cut + 1;
  }

  // A policy whose cut is `cut` on both stores: the log store removes the closed
  // segments that end at least max_rows before the head, the SQLite store keeps
  // exactly max_rows.
  RetentionPolicy Rows(uint64_t cut) {
    return {absl::ZeroDuration(), store_->Head().value().sequence - cut};
  }

  // A full verify as the service runs it: the walk, then the retention check.
  VerifyResult FullVerify() {
    auto walk = store_->Verify(0, 0);
    EXPECT_TRUE(walk.ok()) << walk.status();
    if (!walk.ok()) return {};
    auto r = CheckRetentionRecorded(*store_, *walk);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyResult{};
  }

  FakeClock clock_;
  fs::path dir_;
  std::unique_ptr<AuditStore> store_;
  uint64_t next_ = 1;
  uint64_t first_ = 1;
};

TEST_P(RetentionRecordTest, RecordedCutsVerify) {
  ASSERT_NO_FATAL_FAILURE(AppendEvents(3 * kBlockEvents + 10));
  const RetentionPolicy policy = Rows(kCut);
  ASSERT_NO_FATAL_FAILURE(RecordedRetention(policy, kCut));
  VerifyResult v = FullVerify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, kCut);
  // The record: what was cut, where the rest chains from, under which policy.
  EventFilter f;
  f.type = iotauth::audit::v1::EVENT_TYPE_RETENTION;
  auto records = store_->Query(f, 10);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 1u);
  const AuditEvent& rec = records->front();
  EXPECT_EQ(rec.sequence(), 3 * kBlockEvents + 11);
  EXPECT_EQ(rec.outcome(), iotauth::audit::v1::OUTCOME_SUCCESS);
  EXPECT_EQ(rec.attributes().at(kRetentionPrunedThrough), absl::StrCat(kCut));
  EXPECT_EQ(rec.attributes().at(kRetentionFirstRetained), absl::StrCat(kCut + 1));
  EXPECT_EQ(rec.attributes().at(kRetentionMaxEvents), absl::StrCat(policy.max_rows));
  EXPECT_EQ(rec.attributes().count(kRetentionMaxAge), 0u);
  EXPECT_EQ(rec.attributes().at(kRetentionPrunedThroughHash), v.anchor_hash);

  // A second recorded cut: the newest record names the new start.
  ASSERT_NO_FATAL_FAILURE(AppendEvents(kBlockEvents));
  ASSERT_NO_FATAL_FAILURE(RecordedRetention(Rows(2 * kCut), 2 * kCut));
  v = FullVerify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, 2 * kCut);
}

TEST_P(RetentionRecordTest, EventsRemovedWithoutARecordFailVerify) {
  ASSERT_NO_FATAL_FAILURE(AppendEvents(3 * kBlockEvents + 10));
  ASSERT_NO_FATAL_FAILURE(RecordedRetention(Rows(kCut), kCut));
  const uint64_t record_seq = 3 * kBlockEvents + 11;
  // Someone removes the next part by hand and leaves a consistent anchor (which is
  // what the store's own unrecorded prune does). The chain alone still verifies.
  auto removed = store_->ApplyRetention(Rows(2 * kCut), clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(*removed, kBlockEvents);
  auto walk = store_->Verify(0, 0);
  ASSERT_TRUE(walk.ok());
  ASSERT_TRUE(walk->ok) << "the chain cannot see this by itself: " << walk->detail;
  VerifyResult v = FullVerify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, kProblemMissing);
  EXPECT_EQ(v.first_bad_sequence, kCut + 1);
  EXPECT_EQ(v.detail,
            absl::StrCat("events ", kCut + 1, "..", 2 * kCut,
                         " are gone but no retention record names that cut: they were removed "
                         "outside retention (the newest retention record, event ",
                         record_seq, ", pruned through ", kCut,
                         "). Restore the removed part of the log from a backup; what is left "
                         "cannot vouch for it"));
}

TEST_P(RetentionRecordTest, ALogPrunedWithNoRecordAtAllFailsFromTheStart) {
  ASSERT_NO_FATAL_FAILURE(AppendEvents(2 * kBlockEvents + 10));
  ASSERT_TRUE(store_->ApplyRetention(Rows(kCut), clock_.Now()).ok());
  VerifyResult v = FullVerify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, kProblemMissing);
  EXPECT_EQ(v.first_bad_sequence, 1u);
  EXPECT_NE(v.detail.find(absl::StrCat("events 1..", kCut, " are gone")), std::string::npos)
      << v.detail;
}

TEST_P(RetentionRecordTest, WalksThatDoNotCoverTheStartOrTheHeadPassThrough) {
  ASSERT_NO_FATAL_FAILURE(AppendEvents(2 * kBlockEvents + 10));
  ASSERT_TRUE(store_->ApplyRetention(Rows(kCut), clock_.Now()).ok());
  // Stops short of the head: says nothing about the start.
  auto walk = store_->Verify(0, kCut + 5);
  ASSERT_TRUE(walk.ok() && walk->ok);
  auto r = CheckRetentionRecorded(*store_, *walk);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << r->detail;
  // Starts at a later checkpoint.
  ASSERT_TRUE(store_->CreateCheckpoint(clock_.Now()).ok());
  ASSERT_NO_FATAL_FAILURE(AppendEvents(5));
  walk = store_->Verify(2 * kBlockEvents + 12, 0);
  ASSERT_TRUE(walk.ok() && walk->ok);
  ASSERT_GT(walk->anchor_sequence, kCut);
  r = CheckRetentionRecorded(*store_, *walk);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << r->detail;
  // A failed walk keeps its own verdict.
  VerifyResult failed;
  failed.ok = false;
  failed.problem = kProblemAltered;
  r = CheckRetentionRecorded(*store_, failed);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->problem, kProblemAltered);
}

TEST_P(RetentionRecordTest, ARecordOfACutNotYetMadeIsHarmless) {
  // A crash between the record's commit and the prune: the log still starts at
  // genesis, and the next pass cuts (and records) again.
  ASSERT_NO_FATAL_FAILURE(AppendEvents(2 * kBlockEvents + 10));
  const RetentionPolicy policy = Rows(kCut);
  auto cut = store_->PlanRetention(policy, clock_.Now());
  ASSERT_TRUE(cut.ok() && cut->has_value());
  std::vector<AuditEvent> record{MakeRetentionEvent(**cut, policy, clock_.Now())};
  ASSERT_TRUE(store_->AppendFresh(&record).ok());
  VerifyResult v = FullVerify();
  EXPECT_TRUE(v.ok) << v.detail;
  EXPECT_EQ(v.anchor_sequence, 0u);
  ASSERT_NO_FATAL_FAILURE(RecordedRetention(Rows(kCut), kCut));
  v = FullVerify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
}

TEST_P(RetentionRecordTest, PruneThroughChecksTheCut) {
  ASSERT_NO_FATAL_FAILURE(AppendEvents(2 * kBlockEvents + 10));
  auto cut = store_->PlanRetention(Rows(kCut), clock_.Now());
  ASSERT_TRUE(cut.ok() && cut->has_value());
  EXPECT_EQ(store_->FirstSequence().value(), 1u) << "planning changes nothing";
  CheckpointRecord wrong = **cut;
  wrong.head_hash = std::string(64, '0');
  EXPECT_EQ(store_->PruneThrough(wrong, clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  wrong = **cut;
  wrong.sequence = 3 * kBlockEvents;  // past the head
  EXPECT_EQ(store_->PruneThrough(wrong, clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->FirstSequence().value(), 1u);
  auto pruned = store_->PruneThrough(**cut, clock_.Now());
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, kCut);
  // Again: the log already starts after it.
  pruned = store_->PruneThrough(**cut, clock_.Now());
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 0u);
  // Nothing due: no cut.
  auto none = store_->PlanRetention({absl::ZeroDuration(), 0}, clock_.Now());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

INSTANTIATE_TEST_SUITE_P(Stores, RetentionRecordTest,
                         ::testing::Values(Backend::kLog, Backend::kSqlite),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kLog ? "Log" : "Sqlite";
                         });

TEST(RetentionRecordFormatTest, NamesCutNeedsTheTypeTheSequenceAndTheHash) {
  const CheckpointRecord cut{42, std::string(64, 'a'), absl::FromUnixSeconds(1700000000)};
  AuditEvent e = MakeRetentionEvent(cut, {absl::Hours(24), 0}, absl::FromUnixSeconds(1700000000));
  EXPECT_EQ(e.type(), iotauth::audit::v1::EVENT_TYPE_RETENTION);
  EXPECT_FALSE(e.event_id().empty());
  EXPECT_EQ(e.attributes().at(kRetentionMaxAge), "86400s");
  EXPECT_EQ(e.attributes().count(kRetentionMaxEvents), 0u);
  EXPECT_EQ(e.attributes().count(kRetentionMaxBytes), 0u);
  EXPECT_EQ(MakeRetentionEvent(cut, {absl::ZeroDuration(), 0, 1 << 20}, absl::Now())
                .attributes()
                .at(kRetentionMaxBytes),
            "1048576");
  EXPECT_TRUE(NamesCut(e, 42, cut.head_hash));
  EXPECT_FALSE(NamesCut(e, 41, cut.head_hash));
  EXPECT_FALSE(NamesCut(e, 42, std::string(64, 'b')));
  AuditEvent other = e;
  other.set_type(iotauth::audit::v1::EVENT_TYPE_ADMIN_MUTATION);
  EXPECT_FALSE(NamesCut(other, 42, cut.head_hash));
  other = e;
  other.mutable_attributes()->erase(kRetentionPrunedThroughHash);
  EXPECT_FALSE(NamesCut(other, 42, cut.head_hash));
}

}  // namespace
}  // namespace iotauth::audit
