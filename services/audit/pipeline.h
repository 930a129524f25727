// The local audit pipeline: producers call Record() on their hot path; a bounded
// in-memory queue absorbs bursts; one writer thread commits batches to an
// AuditStore. Overflow is never silent: every dropped event is counted and the next
// batch carries a GAP event saying how many were lost.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/audit/audit_store.h"
#include "services/audit/commit_notifier.h"
#include "services/audit/sink_interface.h"
#include "services/audit/spool.h"
#include "services/common/clock.h"

namespace iotauth::audit {

// Snapshot of the pipeline counters (monotonic except queue_depth).
struct AuditPipelineStats {
  uint64_t enqueued = 0;         // events accepted by Record()
  uint64_t dropped = 0;          // events lost (queue full, shut down, or commit gave up)
  uint64_t committed = 0;        // events durably written (GAP events included)
  uint64_t duplicates = 0;       // events the store already held (same event_id)
  uint64_t gap_events = 0;       // GAP events written
  uint64_t pruned = 0;           // events removed by retention
  uint64_t spooled = 0;          // events left for the next start (shutdown spool)
  uint64_t restored = 0;         // spooled events committed at this start (GAPs apart)
  uint64_t batches = 0;          // committed transactions
  uint64_t commit_failures = 0;  // failed commit attempts (each retried)
  uint64_t queue_depth = 0;      // events waiting now
  // False from the first refused commit attempt to the next commit (see
  // AuditPipelineObserver::OnWritable).
  bool writable = true;
  absl::Duration commit_latency_total = absl::ZeroDuration();
  absl::Duration commit_latency_max = absl::ZeroDuration();
};

// One committed batch, as the observer sees it.
struct CommittedBatch {
  uint64_t events = 0;         // events newly written (a GAP event included)
  uint64_t last_sequence = 0;  // the highest sequence the batch holds
  absl::Duration latency;      // the store's append call, wall time
};

// Hooks for metrics (Prometheus) and tests. Implementations must be thread-safe
// and fast, and must not call back into the pipeline. LocalAuditSink calls
// OnDropped on the producer thread and the rest on its writer thread;
// RemoteAuditSink calls OnDropped on the producer thread, OnEnqueued on its sender
// thread (and on the thread that shuts it down), and OnBatchCommitted where
// acknowledgements arrive (a gRPC thread); its enqueued count moves when a request
// is sent, so it lags while the sink backs off or waits for acknowledgements.
class AuditPipelineObserver {
 public:
  virtual ~AuditPipelineObserver() = default;
  // `count` more events were accepted. LocalAuditSink reports them when its writer
  // takes them from the queue (after the linger, and after the batch before them
  // has committed): a metric updated on every Record cost the hot path more than a
  // tenth of a microsecond.
  virtual void OnEnqueued(uint64_t count) {}
  virtual void OnDropped(uint64_t count) {}
  // After a batch committed durably.
  virtual void OnBatchCommitted(const CommittedBatch& batch) {}
  virtual void OnCommitFailed(const absl::Status& status) {}
  // The sink cannot record events (`writable` false, `cause` saying why) or can
  // again (true, OK: an event got through since). Called on each change only, in
  // order. LocalAuditSink: false at the first refused commit attempt (the events
  // of that batch are lost only if its retries are refused too), true at the next
  // commit, from its writer thread.
  // RemoteAuditSink: false when an event is dropped because the resend queue is full
  // (the audit service is down or does not keep up), true at the next
  // acknowledgement; called with the sink's lock held.
  virtual void OnWritable(bool writable, const absl::Status& cause) {}
  // After a retention pass: how many events it pruned, or why it failed (for
  // example FAILED_PRECONDITION when the part to prune does not verify).
  virtual void OnRetention(const absl::StatusOr<uint64_t>& pruned) {}
};

class LocalAuditSink final : public AuditSink {
 public:
  enum class FullQueuePolicy {
    kDrop,   // Record() never waits: a full queue drops the event
    kBlock,  // Record() waits up to `block_timeout` for room, then drops; while the
             // log is unwritable (Stats().writable false) it drops at once
  };

  struct Options {
    AuditStore* store = nullptr;   // required; outlives the sink
    const Clock* clock = nullptr;  // event times when the producer left them unset
    size_t queue_capacity = 65536;
    size_t max_batch = 1024;
    // How long the writer waits for a batch to fill once an event is waiting. Larger
    // batches cost less CPU per event (measured 13.5 us at 2 ms, 11.7 us at 10 ms,
    // at 20 k events/s) but delay Watch by up to this much.
    absl::Duration linger = absl::Milliseconds(5);
    FullQueuePolicy full_queue_policy = FullQueuePolicy::kBlock;
    absl::Duration block_timeout = absl::Milliseconds(20);
    // A failed commit is retried `max_commit_attempts` times in all, `retry_backoff`
    // apart (doubling), then its events count as dropped (and a GAP follows).
    int max_commit_attempts = 5;
    absl::Duration retry_backoff = absl::Milliseconds(50);
    // Retention, run by the writer thread between batches every
    // `retention_interval` (by `clock`); zero interval or an empty policy = off.
    RetentionPolicy retention;
    absl::Duration retention_interval = absl::ZeroDuration();
    // The shutdown spool (spool.h); empty = none. When the store refuses a commit
    // while the sink shuts down, the events (and a GAP for any dropped meanwhile)
    // are written here instead of being lost, and Create commits them first on the
    // next start, failing if the store refuses them (the file is then kept).
    std::string spool_path;
    CommitNotifier* notifier = nullptr;         // optional; told the head after commits
    AuditPipelineObserver* observer = nullptr;  // optional
  };

  // Commits a shutdown spool left at `spool_path`, then starts the writer thread.
  // INVALID_ARGUMENT when the store is missing or a size is zero; the store's error
  // when it refuses the spooled events (the file stays). A damaged or untrusted
  // spool (see LoadSpool) is recorded as a GAP event, then set aside (its name gets
  // `.damaged.<time>`).
  static absl::StatusOr<std::unique_ptr<LocalAuditSink>> Create(Options options);
  // Shutdown().
  ~LocalAuditSink() override;

  // Assigns event_id and time when empty, encodes the event (EncodeUnchainedInto,
  // on the caller's thread: the writer then only chains and writes bytes) and
  // enqueues it; see FullQueuePolicy. Thread-safe. After Shutdown() events are
  // counted as dropped.
  void Record(iotauth::audit::v1::AuditEvent&& event) override;
  void RecordReusing(iotauth::audit::v1::AuditEvent* event) override;
  // Encodes the view directly (no message built): the same bytes Record would
  // queue for ToAuditEvent(view). A view with an invalid time or a field over
  // kMaxAuditFieldBytes takes the message path, which fixes those up.
  void RecordView(const EventView& view) override;

  // Waits until every event accepted before the call is committed (or given up).
  // False on timeout.
  bool Flush(absl::Duration timeout);

  // Stops accepting events, commits everything queued, and joins the writer. What
  // the store refuses by then goes to the spool (Options::spool_path). Idempotent.
  void Shutdown();

  AuditPipelineStats Stats() const;
  // Why the shutdown spool could not be written (OK when it was, or not needed);
  // its events then count as dropped. Valid after Shutdown().
  absl::Status SpoolStatus() const;
  // What the operator should know about the spool Create committed: a damaged or
  // untrusted one set aside (DATA_LOSS, naming the file), or one committed but not
  // removed. OK otherwise.
  absl::Status SpoolNote() const;

 private:
  explicit LocalAuditSink(Options options);
  // Queues one encoded event (see FullQueuePolicy); `fresh`: the sink made its id.
  void Enqueue(absl::string_view encoded, bool fresh);
  void WriterLoop();
  // Commits `batch`, after a GAP event for `gap` lost events when gap > 0.
  void CommitBatch(EncodedBatch batch, uint64_t gap);
  // Commits the spool left by the last shutdown (see Create).
  absl::Status CommitSpool();
  // Keeps `batch` (which holds its GAP event already) for the spool.
  void SpoolBatch(const EncodedBatch& batch, uint64_t accepted);
  // Writes the spool at exit, if anything was kept for it.
  void SaveSpoolAtExit();
  void CountDropped(uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the writer running and signals it (harmless when it is not waiting).
  void WakeWriter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes the writer if it waits for what the queue now holds.
  void MaybeWakeWriter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Events that make a lingering writer commit at once.
  size_t FullBatch() const { return std::min(options_.max_batch, options_.queue_capacity); }
  bool RetentionEnabled() const;
  // Plans retention, commits the record of the cut, then prunes (retention.h).
  absl::StatusOr<uint64_t> RecordAndPrune(absl::Time now);
  // After a commit (a batch, or a retention record): the counters, Watch and the
  // observer.
  void NoteCommitted(const CommittedBatch& committed, uint64_t duplicates, bool with_gap);
  void MaybeApplyRetention();

  const Options options_;
  mutable absl::Mutex mu_;
  // Encoded events in one buffer. Swapped out whole by the writer (O(1) under the
  // lock: Record never waits behind a batch); both sides keep their capacity, so a
  // steady stream allocates nothing per event.
  struct Queue {
    std::string bytes;
    std::vector<EncodedEvent> events;  // `fresh`: Record() generated the event_id
  };
  Queue queue_ ABSL_GUARDED_BY(mu_);
  Queue taken_;  // writer thread only
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The writer sleeps on `writer_cv_`, never on a Condition of `mu_`: a waiter's
  // Condition would be evaluated by every producer's unlock. Producers signal it
  // only when it waits for a first event (kIdle) or for a batch to fill (kLinger)
  // and the batch is full.
  enum class WriterState { kRunning, kIdle, kLinger };
  WriterState writer_state_ ABSL_GUARDED_BY(mu_) = WriterState::kRunning;
  bool flush_wanted_ ABSL_GUARDED_BY(mu_) = false;  // Flush() cuts the linger short
  absl::CondVar writer_cv_;
  uint64_t gap_pending_ ABSL_GUARDED_BY(mu_) = 0;  // drops not yet written as a GAP
  // Records refused once Shutdown began: written as a GAP (or spooled) at exit.
  uint64_t lost_while_stopping_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_gap_taken_ ABSL_GUARDED_BY(mu_) = false;  // that GAP is queued already
  // Writer thread only: a commit gave up while stopping, so the rest is spooled
  // without retrying; what the spool holds; its write's outcome.
  bool spool_the_rest_ = false;
  bool gave_up_while_stopping_ = false;
  SpooledEvents spool_;
  uint64_t spool_accepted_ = 0;  // of spool_, events Record accepted (not GAPs)
  absl::Status spool_status_ ABSL_GUARDED_BY(mu_);
  absl::Status spool_note_ ABSL_GUARDED_BY(mu_);
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;  // tickets for Flush
  uint64_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  AuditPipelineStats stats_ ABSL_GUARDED_BY(mu_);
  absl::Time next_retention_;  // writer thread only
  absl::Mutex shutdown_mu_;
  std::thread writer_;
};

// Builds the GAP event recording `dropped` lost events.
iotauth::audit::v1::AuditEvent MakeGapEvent(uint64_t dropped, absl::Time now);

}  // namespace iotauth::audit
