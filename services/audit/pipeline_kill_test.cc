// Durability: an event reported committed survives kill -9. A child process runs
// the pipeline flat out and reports every committed sequence over a pipe; the
// parent SIGKILLs it mid-stream, reopens the database and checks that every
// reported event is there, with no hole before it, and that the chain verifies.
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/pipeline.h"
#include "services/audit/sqlite_audit_store.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

class PipeReporter final : public AuditPipelineObserver {
 public:
  explicit PipeReporter(int fd) : fd_(fd) {}
  void OnBatchCommitted(const CommittedBatch& batch) override {
    if (batch.events == 0) return;
    const uint64_t seq = batch.last_sequence;
    if (write(fd_, &seq, sizeof(seq)) != static_cast<ssize_t>(sizeof(seq))) _exit(3);
  }

 private:
  int fd_;
};

// Both backends; the segment log with small segments, so that the kills also land
// around segment creation.
absl::StatusOr<std::unique_ptr<AuditStore>> OpenStore(bool segment_log, const std::string& path) {
  if (segment_log) {
    LogAuditStore::Options lo;
    lo.dir = path;
    lo.checkpoint_interval = 100;
    lo.events_per_segment = kBlockEvents;
    auto s = LogAuditStore::Open(lo);
    if (!s.ok()) return s.status();
    return std::unique_ptr<AuditStore>(std::move(*s));
  }
  SqliteAuditStore::Options so;
  so.path = path;
  so.checkpoint_interval = 100;
  auto s = SqliteAuditStore::Open(so);
  if (!s.ok()) return s.status();
  return std::unique_ptr<AuditStore>(std::move(*s));
}

[[noreturn]] void RunChild(bool segment_log, const std::string& path, int fd, int round) {
  auto store = OpenStore(segment_log, path);
  if (!store.ok()) _exit(1);
  PipeReporter reporter(fd);
  LocalAuditSink::Options o;
  o.store = store->get();
  o.observer = &reporter;
  o.max_batch = 64;
  o.linger = absl::ZeroDuration();
  o.queue_capacity = 1024;
  o.full_queue_policy = LocalAuditSink::FullQueuePolicy::kBlock;
  o.block_timeout = absl::Seconds(60);
  auto sink = LocalAuditSink::Create(o);
  if (!sink.ok()) _exit(2);
  for (uint64_t i = 0;; ++i) {
    AuditEvent e;
    e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
    e.set_device_id(absl::StrCat("round", round, "-dev", i));
    e.set_reason("OK");
    (*sink)->Record(std::move(e));
  }
}

class PipelineKillTest : public ::testing::TestWithParam<bool> {};

TEST_P(PipelineKillTest, CommittedEventsSurviveKill9) {
  const bool segment_log = GetParam();
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(dir ? dir : "/tmp", segment_log ? "/kill9" : "/kill9.db");
  for (const char* s : {"", "-wal", "-shm"}) std::remove((path + s).c_str());

  uint64_t previous_head = 0;
  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunChild(segment_log, path, fds[1], round);
    }
    close(fds[1]);
    // Let it commit a few hundred batches' worth, then kill it mid-stream.
    uint64_t last_reported = 0;
    uint64_t reports = 0;
    uint64_t seq = 0;
    while (reports < 40 + 30 * static_cast<uint64_t>(round) &&
           read(fds[0], &seq, sizeof(seq)) == static_cast<ssize_t>(sizeof(seq))) {
      last_reported = seq;
      ++reports;
    }
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    // Reports already in the pipe were made before the kill: they count too.
    while (read(fds[0], &seq, sizeof(seq)) == static_cast<ssize_t>(sizeof(seq))) {
      last_reported = seq;
    }
    close(fds[0]);
    ASSERT_GT(last_reported, previous_head);

    auto store = OpenStore(segment_log, path);
    ASSERT_TRUE(store.ok()) << store.status();
    auto head = (*store)->Head();
    ASSERT_TRUE(head.ok());
    EXPECT_GE(head->sequence, last_reported) << "round " << round;
    // No hole: sequences 1..head are all there, in order.
    uint64_t expected = 1;
    for (;;) {
      auto page = (*store)->ReadAfter(expected - 1, 5000);
      ASSERT_TRUE(page.ok());
      if (page->empty()) break;
      for (const AuditEvent& e : *page) {
        ASSERT_EQ(e.sequence(), expected) << "hole in round " << round;
        ++expected;
      }
    }
    EXPECT_EQ(expected - 1, head->sequence);
    auto v = (*store)->Verify(0, 0);
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok) << v->problem << " at " << v->first_bad_sequence << ": " << v->detail;
    EXPECT_EQ(v->events_checked, head->sequence);
    previous_head = head->sequence;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, PipelineKillTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "SegmentLog" : "Sqlite";
                         });

}  // namespace
}  // namespace iotauth::audit
