#include "services/audit/pipeline.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "services/audit/canonical.h"
#include "services/audit/event_util.h"
#include "services/audit/event_view.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/retention.h"
#include "services/audit/spool.h"
#include "services/audit/sqlite_audit_store.h"
#include "services/audit/writable_changes_testing.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

// Wraps a real store; Append can be held at a gate or made to fail, and batch sizes
// are recorded.
class GatedStore final : public AuditStore {
 public:
  explicit GatedStore(std::unique_ptr<AuditStore> inner) : inner_(std::move(inner)) {}

  void Close() {
    absl::MutexLock l(&mu_);
    open_ = false;
  }
  void Open() {
    absl::MutexLock l(&mu_);
    open_ = true;
  }
  void FailNext(int n) {
    absl::MutexLock l(&mu_);
    fail_next_ = n;
  }
  // Waits until the writer is held at the gate.
  void AwaitWaiting() {
    absl::MutexLock l(&mu_);
    mu_.Await(absl::Condition(
        +[](const int* w) { return *w > 0; }, static_cast<const int*>(&waiting_)));
  }
  std::vector<size_t> batch_sizes() {
    absl::MutexLock l(&mu_);
    return batch_sizes_;
  }
  int fresh_batches() {
    absl::MutexLock l(&mu_);
    return fresh_batches_;
  }

  // Counted, then through the gate like any append.
  absl::StatusOr<std::vector<AppendedEvent>> AppendFresh(std::vector<AuditEvent>* events) override {
    {
      absl::MutexLock l(&mu_);
      ++fresh_batches_;
    }
    return Append(events);
  }

  absl::StatusOr<std::vector<AppendedEvent>> Append(std::vector<AuditEvent>* events) override {
    {
      absl::MutexLock l(&mu_);
      ++waiting_;
      mu_.Await(absl::Condition(&open_));
      --waiting_;
      if (fail_next_ > 0) {
        --fail_next_;
        return absl::UnavailableError("injected");
      }
      batch_sizes_.push_back(events->size());
    }
    return inner_->Append(events);
  }
  absl::StatusOr<std::vector<AuditEvent>> Query(const EventFilter& f, int limit) override {
    return inner_->Query(f, limit);
  }
  absl::StatusOr<ChainHead> Head() override { return inner_->Head(); }
  absl::StatusOr<uint64_t> FirstSequence() override { return inner_->FirstSequence(); }
  absl::StatusOr<CheckpointRecord> CreateCheckpoint(absl::Time now) override {
    return inner_->CreateCheckpoint(now);
  }
  absl::StatusOr<std::optional<CheckpointRecord>> LatestCheckpoint() override {
    return inner_->LatestCheckpoint();
  }
  absl::StatusOr<std::optional<CheckpointRecord>> PlanRetention(const RetentionPolicy& p,
                                                                absl::Time now) override {
    return inner_->PlanRetention(p, now);
  }
  absl::StatusOr<uint64_t> PruneThrough(const CheckpointRecord& cut, absl::Time now) override {
    return inner_->PruneThrough(cut, now);
  }
  absl::StatusOr<VerifyResult> Verify(uint64_t from, uint64_t to) override {
    return inner_->Verify(from, to);
  }
  uint64_t StoredBytes() const override { return inner_->StoredBytes(); }

 private:
  std::unique_ptr<AuditStore> inner_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_next_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<size_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
  int fresh_batches_ ABSL_GUARDED_BY(mu_) = 0;
};

class CountingObserver final : public WritableChanges {
 public:
  void OnEnqueued(uint64_t n) override { enqueued += n; }
  void OnDropped(uint64_t n) override { dropped += n; }
  void OnBatchCommitted(const CommittedBatch& batch) override {
    committed += batch.events;
    ++batches;
  }
  void OnCommitFailed(const absl::Status& /*status*/) override { ++failures; }
  std::atomic<uint64_t> enqueued{0}, dropped{0}, committed{0}, batches{0}, failures{0};
};

AuditEvent Event(int i) {
  AuditEvent e;
  e.set_event_id(absl::StrCat("e", i));
  e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  e.set_device_id(absl::StrCat("dev-", i));
  return e;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("TEST_TMPDIR");
    path_ = absl::StrCat(dir ? dir : "/tmp", "/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".db");
    for (const char* s : {"", "-wal", "-shm"}) std::remove((path_ + s).c_str());
    SqliteAuditStore::Options so;
    so.path = path_;
    auto inner = SqliteAuditStore::Open(so);
    ASSERT_TRUE(inner.ok()) << inner.status();
    store_ = std::make_unique<GatedStore>(std::move(*inner));
    options_.store = store_.get();
    options_.clock = &clock_;
    options_.observer = &observer_;
    options_.notifier = &notifier_;
    options_.linger = absl::ZeroDuration();
  }
  void Start() {
    auto s = LocalAuditSink::Create(options_);
    ASSERT_TRUE(s.ok()) << s.status();
    sink_ = std::move(*s);
  }
  std::vector<AuditEvent> All() {
    auto r = store_->ReadAfter(0, 100000);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : std::vector<AuditEvent>{};
  }

  std::string path_;
  FakeClock clock_;
  std::unique_ptr<GatedStore> store_;
  CountingObserver observer_;
  CommitNotifier notifier_;
  LocalAuditSink::Options options_;
  std::unique_ptr<LocalAuditSink> sink_;
};

TEST_F(PipelineTest, CreateValidates) {
  LocalAuditSink::Options o;
  EXPECT_EQ(LocalAuditSink::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = options_;
  o.queue_capacity = 0;
  EXPECT_EQ(LocalAuditSink::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PipelineTest, CommitsInBatchesOfAtMostMaxBatch) {
  options_.max_batch = 4;
  Start();
  store_->Close();
  sink_->Record(Event(1));
  store_->AwaitWaiting();  // the writer holds a batch of one
  for (int i = 2; i <= 10; ++i) sink_->Record(Event(i));
  store_->Open();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(store_->batch_sizes(), (std::vector<size_t>{1, 4, 4, 1}));
  auto all = All();
  ASSERT_EQ(all.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(all[i].event_id(), absl::StrCat("e", i + 1));  // order kept
    EXPECT_EQ(all[i].sequence(), static_cast<uint64_t>(i + 1));
  }
  AuditPipelineStats st = sink_->Stats();
  EXPECT_EQ(st.enqueued, 10u);
  EXPECT_EQ(st.committed, 10u);
  EXPECT_EQ(st.batches, 4u);
  EXPECT_EQ(st.dropped, 0u);
  EXPECT_EQ(observer_.committed, 10u);
  EXPECT_EQ(observer_.enqueued, 10u);
  EXPECT_EQ(notifier_.head(), 10u);
  EXPECT_TRUE(store_->Verify(0, 0)->ok);
}

TEST_F(PipelineTest, LingerGathersABatch) {
  options_.max_batch = 3;
  options_.linger = absl::Seconds(30);  // only a full batch (or shutdown) ends the wait
  Start();
  for (int i = 1; i <= 3; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(store_->batch_sizes(), (std::vector<size_t>{3}));
}

// The batch filling up wakes the lingering writer: no Flush, no timeout.
TEST_F(PipelineTest, AFullBatchEndsTheLinger) {
  options_.max_batch = 3;
  options_.linger = absl::Hours(1);
  Start();
  for (int i = 1; i <= 3; ++i) sink_->Record(Event(i));
  EXPECT_EQ(notifier_.WaitAbove(2, absl::Seconds(10)), 3u);
  EXPECT_EQ(store_->batch_sizes(), (std::vector<size_t>{3}));
}

// Flush commits what is queued now instead of waiting out the linger.
TEST_F(PipelineTest, FlushEndsTheLinger) {
  options_.max_batch = 100;
  options_.linger = absl::Hours(1);
  Start();
  sink_->Record(Event(1));
  sink_->Record(Event(2));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(All().size(), 2u);
  sink_->Record(Event(3));  // a second Flush works the same way
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(All().size(), 3u);
}

TEST_F(PipelineTest, DropPolicyCountsDropsAndWritesAGap) {
  options_.queue_capacity = 2;
  options_.full_queue_policy = LocalAuditSink::FullQueuePolicy::kDrop;
  Start();
  store_->Close();
  sink_->Record(Event(1));
  store_->AwaitWaiting();
  for (int i = 2; i <= 8; ++i) sink_->Record(Event(i));  // 2, 3 fit; 4..8 dropped
  AuditPipelineStats st = sink_->Stats();
  EXPECT_EQ(st.dropped, 5u);
  EXPECT_EQ(st.enqueued, 3u);
  EXPECT_EQ(observer_.dropped, 5u);
  store_->Open();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].event_id(), "e1");
  EXPECT_EQ(all[1].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(all[1].attributes().at("dropped_count"), "5");
  EXPECT_EQ(all[1].reason(), "5 audit events lost");
  EXPECT_EQ(all[2].event_id(), "e2");
  EXPECT_EQ(all[3].event_id(), "e3");
  st = sink_->Stats();
  EXPECT_EQ(st.gap_events, 1u);
  EXPECT_EQ(st.committed, 4u);
  EXPECT_TRUE(store_->Verify(0, 0)->ok);
}

TEST_F(PipelineTest, BlockPolicyWaitsUpToTheDeadlineThenDrops) {
  options_.queue_capacity = 1;
  options_.full_queue_policy = LocalAuditSink::FullQueuePolicy::kBlock;
  options_.block_timeout = absl::Milliseconds(100);
  Start();
  store_->Close();
  sink_->Record(Event(1));
  store_->AwaitWaiting();
  sink_->Record(Event(2));  // fills the queue
  const absl::Time start = absl::Now();
  sink_->Record(Event(3));  // waits 100 ms, then drops
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
  EXPECT_EQ(sink_->Stats().dropped, 1u);

  store_->Open();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[1].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
}

TEST_F(PipelineTest, BlockPolicyAcceptsWhenRoomAppears) {
  options_.queue_capacity = 1;
  options_.full_queue_policy = LocalAuditSink::FullQueuePolicy::kBlock;
  options_.block_timeout = absl::Seconds(20);
  Start();
  store_->Close();
  sink_->Record(Event(1));
  store_->AwaitWaiting();
  sink_->Record(Event(2));
  std::thread producer([this] { sink_->Record(Event(3)); });  // blocks: queue full
  absl::SleepFor(absl::Milliseconds(50));  // let it block (the test holds either way)
  store_->Open();
  producer.join();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(sink_->Stats().dropped, 0u);
  EXPECT_EQ(All().size(), 3u);
}

TEST_F(PipelineTest, ShutdownDrainsTheQueue) {
  options_.max_batch = 16;
  options_.linger = absl::Seconds(30);
  Start();
  for (int i = 1; i <= 100; ++i) sink_->Record(Event(i));
  sink_->Shutdown();
  EXPECT_EQ(All().size(), 100u);
  EXPECT_EQ(sink_->Stats().committed, 100u);
  sink_->Record(Event(101));  // after shutdown: counted, not written
  EXPECT_EQ(sink_->Stats().dropped, 1u);
  sink_->Shutdown();  // idempotent
  EXPECT_EQ(All().size(), 100u);
}

TEST_F(PipelineTest, AssignsIdAndTimeWhenEmpty) {
  Start();
  AuditEvent e;
  e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHORIZATION);
  e.set_sequence(77);  // producers cannot choose
  sink_->Record(AuditEvent(e));
  sink_->Record(Event(2));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].event_id().size(), 32u);
  EXPECT_EQ(all[0].time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(all[0].sequence(), 1u);
  EXPECT_EQ(all[1].event_id(), "e2");
}

TEST_F(PipelineTest, RetriesFailedCommits) {
  options_.retry_backoff = absl::Milliseconds(1);
  Start();
  store_->FailNext(2);
  sink_->Record(Event(1));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(All().size(), 1u);
  EXPECT_EQ(sink_->Stats().commit_failures, 2u);
  EXPECT_EQ(observer_.failures, 2u);
  EXPECT_EQ(sink_->Stats().dropped, 0u);
  // Unwritable from the first refused attempt (with audit.when_unwritable=refuse the
  // gate closes then, not once the batch is given up), writable at the commit.
  const auto changes = observer_.Changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_FALSE(changes[0].first);
  EXPECT_EQ(changes[0].second.message(), "injected");
  EXPECT_TRUE(changes[1].first);
  EXPECT_TRUE(sink_->Stats().writable);
}

TEST_F(PipelineTest, GivingUpOnACommitLeavesAGap) {
  options_.retry_backoff = absl::Milliseconds(1);
  options_.max_commit_attempts = 2;
  Start();
  store_->Close();
  sink_->Record(Event(1));
  store_->AwaitWaiting();
  sink_->Record(Event(2));
  store_->FailNext(2);  // batch {e1} fails twice: lost
  store_->Open();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(all[0].attributes().at("dropped_count"), "1");
  EXPECT_EQ(all[1].event_id(), "e2");
  EXPECT_EQ(sink_->Stats().dropped, 1u);
}

TEST_F(PipelineTest, ReportsOnceThatItLosesEventsAndOnceThatItStopped) {
  options_.retry_backoff = absl::Milliseconds(1);
  options_.max_commit_attempts = 2;
  Start();
  sink_->Record(Event(1));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_TRUE(sink_->Stats().writable);
  EXPECT_TRUE(observer_.Changes().empty());  // committing from the start is no change

  store_->FailNext(1 << 30);  // the store refuses everything
  sink_->Record(Event(2));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (sink_->Stats().dropped == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(sink_->Stats().dropped, 1u);
  EXPECT_FALSE(sink_->Stats().writable);
  for (int i = 3; i <= 5; ++i) sink_->Record(Event(i));
  while (sink_->Stats().dropped < 4 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(sink_->Stats().dropped, 4u);
  auto changes = observer_.Changes();
  ASSERT_EQ(changes.size(), 1u);  // one change, however many batches were given up
  EXPECT_FALSE(changes[0].first);
  EXPECT_EQ(changes[0].second.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(changes[0].second.message(), "injected");  // the store's own error

  store_->FailNext(0);
  sink_->Record(Event(6));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_TRUE(sink_->Stats().writable);
  changes = observer_.Changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[1].first);
  EXPECT_TRUE(changes[1].second.ok());
  auto all = All();
  ASSERT_EQ(all.size(), 3u);  // e1, the GAP for e2..e5, e6
  EXPECT_EQ(all[1].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(all[1].attributes().at("dropped_count"), "4");
  EXPECT_EQ(all[2].event_id(), "e6");
}

TEST_F(PipelineTest, AFullQueueDropsAtOnceWhileTheStoreRefuses) {
  // Waiting for room helps only while the writer drains the queue. A block that
  // outlasts the test's timeout shows what it was before: every call waited it out
  // for the whole outage.
  options_.queue_capacity = 2;
  options_.full_queue_policy = LocalAuditSink::FullQueuePolicy::kBlock;
  options_.block_timeout = absl::Hours(1);
  options_.retry_backoff = absl::Milliseconds(1);
  options_.max_commit_attempts = 2;
  Start();
  store_->FailNext(1 << 30);
  sink_->Record(Event(1));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (sink_->Stats().writable && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_FALSE(sink_->Stats().writable);
  const uint64_t dropped = sink_->Stats().dropped;
  for (int i = 2; i <= 11; ++i) sink_->Record(Event(i));  // returns: no hour-long waits
  // At most the queue's 2 and one batch in the writer's hands were not dropped.
  EXPECT_GE(sink_->Stats().dropped, dropped + 7);

  store_->FailNext(0);  // writable again: blocking as before
  sink_->Record(Event(12));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_TRUE(sink_->Stats().writable);
}

// ---------------------------------------------------------------------------
// The shutdown spool.

class SpoolTest : public PipelineTest {
 protected:
  void SetUp() override {
    PipelineTest::SetUp();
    spool_ = path_ + ".spool";
    std::filesystem::remove(spool_);
    options_.spool_path = spool_;
    options_.retry_backoff = absl::Milliseconds(1);
    options_.max_commit_attempts = 2;
    options_.max_batch = 4;
  }
  // Starts Shutdown on another thread while the writer is held at the store's gate
  // with {e1}; then the store refuses every commit. Returns the number of events
  // accepted in all (e1..e`n` and the probes recorded before stopping showed).
  uint64_t ShutdownWhileTheStoreRefuses(int n) {
    store_->Close();
    sink_->Record(Event(1));
    store_->AwaitWaiting();
    for (int i = 2; i <= n; ++i) sink_->Record(Event(i));
    std::thread stopper([this] { sink_->Shutdown(); });
    // A Record refused means stopping has begun (the refused one counts as dropped).
    auto accepted = static_cast<uint64_t>(n);
    // (The queue holds 65536: no other drop is possible here.)
    for (int probe = 1000; sink_->Stats().dropped == 0; ++probe) {
      if (probe > 1000000) {
        ADD_FAILURE() << "Shutdown never began";
        break;
      }
      sink_->Record(Event(probe));
      if (sink_->Stats().dropped == 0) ++accepted;
    }
    store_->FailNext(1 << 30);
    store_->Open();
    stopper.join();
    store_->FailNext(0);
    return accepted;
  }
  std::string spool_;
};

TEST_F(SpoolTest, ShutdownSpoolsWhatTheStoreRefusesAndTheNextStartCommitsIt) {
  Start();
  const uint64_t accepted = ShutdownWhileTheStoreRefuses(10);
  AuditPipelineStats st = sink_->Stats();
  EXPECT_EQ(st.spooled, accepted);
  EXPECT_EQ(st.committed, 0u);
  EXPECT_EQ(st.dropped, 1u);  // the probe refused after Shutdown began: its GAP is spooled
  EXPECT_TRUE(sink_->SpoolStatus().ok()) << sink_->SpoolStatus();
  EXPECT_TRUE(All().empty());
  // One failed batch, the rest spooled without retrying.
  EXPECT_EQ(st.commit_failures, 2u);
  absl::StatusOr<std::optional<SpooledEvents>> file = LoadSpool(spool_);
  ASSERT_TRUE(file.ok() && file->has_value()) << file.status();
  EXPECT_EQ((*file)->size(), accepted + 1);

  sink_.reset();
  Start();  // the next start commits the spool before anything new
  EXPECT_FALSE(std::filesystem::exists(spool_));
  EXPECT_EQ(sink_->Stats().restored, accepted);  // and the GAP
  EXPECT_TRUE(sink_->SpoolNote().ok()) << sink_->SpoolNote();
  sink_->Record(Event(20));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  const std::vector<AuditEvent> all = All();
  ASSERT_EQ(all.size(), accepted + 2);
  for (int i = 1; i <= 10; ++i) EXPECT_EQ(all[i - 1].event_id(), absl::StrCat("e", i));
  const AuditEvent& gap = all[accepted];
  EXPECT_EQ(gap.type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(gap.attributes().at("dropped_count"), "1");
  EXPECT_EQ(all.back().event_id(), "e20");
  auto v = store_->Verify(0, 0);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem << " " << v->detail;
}

TEST_F(SpoolTest, AStartFailsWhileTheStoreRefusesTheSpoolAndKeepsIt) {
  Start();
  const uint64_t accepted = ShutdownWhileTheStoreRefuses(3);
  sink_.reset();
  store_->FailNext(1);
  auto refused = LocalAuditSink::Create(options_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find(spool_), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("start again"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(spool_));
  EXPECT_TRUE(All().empty());
  Start();
  EXPECT_EQ(All().size(), accepted + 1);
  EXPECT_FALSE(std::filesystem::exists(spool_));
}

// A crash after the spool committed but before the file went: the events are not
// written twice (they keep their ids and are not treated as fresh).
TEST_F(SpoolTest, EventsCommittedBeforeTheSpoolWentAreNotWrittenTwice) {
  Start();
  sink_->Record(Event(1));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  sink_.reset();
  AuditEvent e1 = Event(1);
  e1.mutable_time()->set_seconds(absl::ToUnixSeconds(clock_.Now()));
  AuditEvent e2 = Event(2);
  e2.mutable_time()->set_seconds(absl::ToUnixSeconds(clock_.Now()));
  SpooledEvents spooled;
  AppendUnchainedEncoding(e1, &spooled.emplace_back());
  AppendUnchainedEncoding(e2, &spooled.emplace_back());
  ASSERT_TRUE(SaveSpool(spool_, spooled).ok());
  Start();
  EXPECT_EQ(sink_->Stats().restored, 1u);
  const std::vector<AuditEvent> all = All();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].event_id(), "e1");
  EXPECT_EQ(all[1].event_id(), "e2");
}

TEST_F(SpoolTest, ADamagedSpoolIsSetAsideAndTheLossRecorded) {
  {
    std::ofstream out(spool_, std::ios::binary);
    out << "IOTSPOL1 and then garbage";
  }
  Start();
  EXPECT_FALSE(std::filesystem::exists(spool_));
  const std::string aside = absl::StrCat(spool_, ".damaged.", absl::ToUnixSeconds(clock_.Now()));
  EXPECT_TRUE(std::filesystem::exists(aside));
  const std::vector<AuditEvent> all = All();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(all[0].attributes().at("cause"), "damaged_spool");
  EXPECT_NE(all[0].reason().find(aside), std::string::npos) << all[0].reason();
}

TEST_F(SpoolTest, ADamagedSpoolWhoseGapIsRefusedStaysWhereItIs) {
  {
    std::ofstream out(spool_, std::ios::binary);
    out << "IOTSPOL1 and then garbage";
  }
  store_->FailNext(1);
  auto refused = LocalAuditSink::Create(options_);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("move the file away"), std::string::npos)
      << refused.status();
  EXPECT_TRUE(std::filesystem::exists(spool_));
  EXPECT_TRUE(All().empty());
  Start();
  EXPECT_FALSE(std::filesystem::exists(spool_));
  EXPECT_EQ(sink_->SpoolNote().code(), absl::StatusCode::kDataLoss);
  ASSERT_EQ(All().size(), 1u);
}

// A spool others could have written is not committed into the chain.
TEST_F(SpoolTest, ASpoolOthersCanWriteIsNotTrusted) {
  SpooledEvents planted;
  AuditEvent forged = Event(1);
  forged.mutable_time()->set_seconds(absl::ToUnixSeconds(clock_.Now()));
  AppendUnchainedEncoding(forged, &planted.emplace_back());
  ASSERT_TRUE(SaveSpool(spool_, planted).ok());
  std::filesystem::permissions(spool_, std::filesystem::perms::others_write,
                               std::filesystem::perm_options::add);
  Start();
  const std::vector<AuditEvent> all = All();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].type(), iotauth::audit::v1::EVENT_TYPE_GAP);
  EXPECT_EQ(all[0].attributes().at("cause"), "untrusted_spool");
  EXPECT_EQ(sink_->Stats().restored, 0u);
  EXPECT_FALSE(std::filesystem::exists(spool_));
}

// Without a spool path, what the store refuses at exit is counted as lost (the
// behaviour before the spool), and shutdown does not keep retrying a GAP for it.
TEST_F(SpoolTest, WithoutASpoolPathTheLossIsCounted) {
  options_.spool_path.clear();
  Start();
  const uint64_t accepted = ShutdownWhileTheStoreRefuses(6);
  const AuditPipelineStats st = sink_->Stats();
  EXPECT_EQ(st.spooled, 0u);
  EXPECT_EQ(st.dropped, accepted + 1);
  EXPECT_GE(st.commit_failures, 2u * ((accepted + 3) / 4));  // every batch, tried twice
  EXPECT_FALSE(std::filesystem::exists(spool_));
  EXPECT_TRUE(All().empty());
}

TEST_F(SpoolTest, NoSpoolWhenEverythingCommits) {
  Start();
  for (int i = 1; i <= 9; ++i) sink_->Record(Event(i));
  sink_->Shutdown();
  EXPECT_EQ(sink_->Stats().spooled, 0u);
  EXPECT_FALSE(std::filesystem::exists(spool_));
  EXPECT_EQ(All().size(), 9u);
}

TEST_F(PipelineTest, ConcurrentProducersLoseNothing) {
  options_.max_batch = 64;
  options_.queue_capacity = 256;
  options_.block_timeout = absl::Seconds(20);
  Start();
  std::vector<std::thread> producers;
  producers.reserve(4);
  for (int t = 0; t < 4; ++t) {
    producers.emplace_back([this, t] {
      for (int i = 0; i < 500; ++i) sink_->Record(Event(t * 1000 + i));
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(sink_->Flush(absl::Seconds(20)));
  EXPECT_EQ(All().size(), 2000u);
  EXPECT_EQ(sink_->Stats().dropped, 0u);
  EXPECT_EQ(notifier_.WaitAbove(1999, absl::Seconds(1)), 2000u);
  EXPECT_TRUE(store_->Verify(0, 0)->ok);
}

TEST_F(PipelineTest, AppliesRetentionOnTheWriterThread) {
  options_.retention.max_rows = 5;
  options_.retention_interval = absl::Minutes(1);
  Start();
  for (int i = 1; i <= 12; ++i) sink_->Record(Event(i));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(All().size(), 12u);  // not due yet
  // Due now: an idle writer wakes up for it (at most a second later) with no new
  // event to commit. (Recording one here raced: the writer may prune before or
  // after committing it.)
  clock_.Advance(absl::Minutes(2));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (sink_->Stats().pruned == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(sink_->Stats().pruned, 7u);
  auto all = All();
  // 8..12, then the record of the cut, committed before the prune.
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all.front().sequence(), 8u);
  const AuditEvent& record = all.back();
  EXPECT_EQ(record.sequence(), 13u);
  EXPECT_EQ(record.type(), iotauth::audit::v1::EVENT_TYPE_RETENTION);
  EXPECT_EQ(record.attributes().at(kRetentionPrunedThrough), "7");
  EXPECT_EQ(record.attributes().at(kRetentionFirstRetained), "8");
  EXPECT_EQ(record.attributes().at(kRetentionMaxEvents), "5");
  EXPECT_EQ(record.attributes().at(kRetentionPrunedThroughHash), all.front().prev_hash());
  EXPECT_EQ(sink_->Stats().committed, 13u);
  EXPECT_EQ(notifier_.WaitAbove(12, absl::Seconds(1)), 13u);  // Watch sees it
  auto v = store_->Verify(0, 0);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem << " " << v->detail;
  EXPECT_EQ(v->anchor_sequence, 7u);
  auto recorded = CheckRetentionRecorded(*store_, *v);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_TRUE(recorded->ok) << recorded->problem << " " << recorded->detail;
}

// Ids the pipeline generates cannot be resends: those batches skip the store's
// duplicate lookup (AppendFresh); a batch holding a caller's id does not.
TEST_F(PipelineTest, OnlyBatchesOfGeneratedIdsSkipTheDuplicateLookup) {
  Start();
  AuditEvent generated;
  generated.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  sink_->Record(std::move(generated));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(store_->fresh_batches(), 1);
  sink_->Record(Event(7));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  EXPECT_EQ(store_->fresh_batches(), 1);
  EXPECT_EQ(store_->batch_sizes().size(), 2u);
  EXPECT_EQ(All().size(), 2u);
}

// A producer that reuses one event: each Record is a copy taken at the call, the
// event stays with the caller, and a generated id is not carried into the next use.
TEST_F(PipelineTest, RecordReusingCopiesAndLeavesTheEventWithTheCaller) {
  Start();
  AuditEvent e;
  for (int i = 0; i < 50; ++i) {
    e.Clear();
    e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
    e.set_device_id(absl::StrCat("dev-", i));
    if (i % 2 == 1) (*e.mutable_attributes())["odd"] = "true";
    sink_->RecordReusing(&e);
    EXPECT_EQ(e.device_id(), absl::StrCat("dev-", i));
    EXPECT_EQ(e.event_id().size(), 32u);  // assigned in place, as Record does
  }
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 50u);
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(all[i].device_id(), absl::StrCat("dev-", i));
    EXPECT_EQ(all[i].attributes().contains("odd"), i % 2 == 1);
    ids.insert(all[i].event_id());
  }
  EXPECT_EQ(ids.size(), 50u);
  EXPECT_EQ(store_->fresh_batches(), static_cast<int>(store_->batch_sizes().size()));
  EXPECT_EQ(observer_.committed.load(), 50u);
}

// RecordView stores what Record of the same event stores: fields, a generated id
// (fresh), and the fix-ups of the message path for an invalid time or an oversized
// field.
TEST_F(PipelineTest, RecordViewStoresWhatRecordStores) {
  Start();
  AuditEvent full;
  full.mutable_time()->set_seconds(1700000123);
  full.mutable_time()->set_nanos(456);
  full.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  full.set_tenant_id("t");
  full.set_product_key("p");
  full.set_device_id("d");
  full.set_outcome(iotauth::audit::v1::OUTCOME_DENY);
  full.set_reason("DENY_REASON_BAD_SIGNATURE");
  full.set_credential_type("CREDENTIAL_TYPE_SAS");
  full.set_credential_fingerprint("sas:primary");
  full.set_caller("gw");
  full.set_peer_address("ipv4:192.0.2.1:1883");
  full.set_request_id("r-1");
  full.mutable_duration()->set_nanos(1500);
  (*full.mutable_attributes())["detail"] = "signature mismatch";
  (*full.mutable_attributes())["module_id"] = "m";
  std::vector<EventView::Attribute> attributes;
  sink_->RecordView(ViewOf(full, &attributes));
  sink_->Record(AuditEvent(full));
  AuditEvent bad_time = full;
  bad_time.mutable_time()->set_nanos(-1);
  sink_->RecordView(ViewOf(bad_time, &attributes));
  AuditEvent long_field = full;
  long_field.set_peer_address(std::string(kMaxAuditFieldBytes + 10, 'x'));
  sink_->RecordView(ViewOf(long_field, &attributes));
  ASSERT_TRUE(sink_->Flush(absl::Seconds(10)));
  auto all = All();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].event_id().size(), 32u);
  EXPECT_NE(all[0].event_id(), all[1].event_id());
  auto without_chain = [](AuditEvent e) {
    e.clear_event_id();
    e.clear_sequence();
    e.clear_prev_hash();
    e.clear_hash();
    return e;
  };
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(without_chain(all[0]),
                                                                 without_chain(all[1])))
      << all[0].DebugString() << all[1].DebugString();
  EXPECT_EQ(all[2].time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(all[2].attributes().at("invalid_time_replaced"), "true");
  EXPECT_EQ(all[3].peer_address().size(), kMaxAuditFieldBytes);
  EXPECT_EQ(all[3].attributes().at("truncated"), "true");
  EXPECT_EQ(store_->fresh_batches(), static_cast<int>(store_->batch_sizes().size()));
}

// The whole path on the segment log: producers' bytes are chained and written by
// LogAuditStore::AppendEncoded, with a GAP event in front after drops.
TEST(PipelineOnLogStoreTest, EncodedEventsAndGapsVerify) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  LogAuditStore::Options lo;
  lo.dir = absl::StrCat(tmp ? tmp : "/tmp", "/pipeline_on_log_store");
  std::error_code ec;
  std::filesystem::remove_all(lo.dir, ec);
  auto store = LogAuditStore::Open(lo);
  ASSERT_TRUE(store.ok()) << store.status();
  GatedStore gated(std::move(*store));
  FakeClock clock;
  LocalAuditSink::Options o;
  o.store = &gated;
  o.clock = &clock;
  o.queue_capacity = 4;
  o.max_batch = 3;
  o.linger = absl::ZeroDuration();
  o.full_queue_policy = LocalAuditSink::FullQueuePolicy::kDrop;
  auto sink = LocalAuditSink::Create(o);
  ASSERT_TRUE(sink.ok()) << sink.status();
  gated.Close();
  (*sink)->Record(Event(0));  // taken by the writer, held at the gate
  gated.AwaitWaiting();
  for (int i = 1; i <= 6; ++i) (*sink)->Record(Event(i));  // 4 queued, 2 dropped
  gated.Open();
  ASSERT_TRUE((*sink)->Flush(absl::Seconds(10)));
  auto all = gated.ReadAfter(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::string> got;
  for (const AuditEvent& e : *all) {
    got.push_back(e.type() == iotauth::audit::v1::EVENT_TYPE_GAP ? "GAP" : e.event_id());
    EXPECT_EQ(*ComputeEventHash(e), e.hash());
  }
  EXPECT_EQ(got, (std::vector<std::string>{"e0", "GAP", "e1", "e2", "e3", "e4"}));
  auto v = gated.Verify(0, 0);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok) << v->problem << " " << v->detail;
  (*sink)->Shutdown();
}

}  // namespace
}  // namespace iotauth::audit
