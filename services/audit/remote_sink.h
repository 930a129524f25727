// Split mode: an AuditSink that streams events to a remote AuditLog service over
// the bidirectional Ingest RPC. Events stay in a bounded resend queue until the
// server acknowledges their event_id (after its commit); after a failure the sink
// reconnects with exponential backoff and resends everything unacknowledged. The
// server deduplicates by event_id, so a resend never creates a duplicate.
//
// The stream uses gRPC's callback API; the sender thread waits on this sink's mutex,
// never inside gRPC. (A thread blocked in a synchronous Read or Write is a gRPC
// poller and takes the socket events of the server's own calls, handing each to
// another thread: measured on the registry mirror, ~2 us per Authenticate.)
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.grpc.pb.h"
#include "services/audit/pipeline.h"
#include "services/audit/sink_interface.h"
#include "services/common/clock.h"

namespace iotauth::audit {

struct RemoteSinkStats {
  uint64_t enqueued = 0;
  uint64_t dropped = 0;   // queue full, or unacknowledged at shutdown and not spooled
  uint64_t spooled = 0;   // unacknowledged at shutdown, left in the spool
  uint64_t restored = 0;  // events from the last shutdown's spool, resent (GAPs apart)
  uint64_t acked = 0;     // acknowledged by the server (committed or duplicate)
  uint64_t sent = 0;      // events written to a stream (resends included)
  uint64_t resent = 0;    // events sent again after a stream failure
  uint64_t connects = 0;  // Ingest streams opened
  uint64_t stream_failures = 0;
  uint64_t gap_events = 0;
  uint64_t pending = 0;  // unacknowledged events held now
  // False from an event dropped on a full queue to the next acknowledgement (see
  // AuditPipelineObserver::OnWritable).
  bool writable = true;
  // How the last failed stream ended (OK when none failed), for logs.
  absl::Status last_stream_error;
};

class RemoteAuditSink final : public AuditSink {
 public:
  struct Options {
    std::shared_ptr<grpc::Channel> channel;  // required
    const Clock* clock = nullptr;            // event times when unset
    // Unacknowledged events held (sent or not). Beyond it the full-queue policy applies.
    size_t queue_capacity = 65536;
    size_t max_batch = 512;       // events per IngestRequest
    size_t max_in_flight = 8192;  // sent but unacknowledged
    absl::Duration linger = absl::Milliseconds(2);
    LocalAuditSink::FullQueuePolicy full_queue_policy = LocalAuditSink::FullQueuePolicy::kDrop;
    absl::Duration block_timeout = absl::Milliseconds(20);
    // A stream whose oldest sent event waits longer than this for its ack is
    // abandoned and its events resent on a new one (a hung server or a dead TCP
    // connection that never reports an error).
    absl::Duration ack_timeout = absl::Seconds(30);
    absl::Duration initial_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(10);
    // Called on each new Ingest call's context (for example to add a bearer token).
    std::function<void(grpc::ClientContext*)> configure_context;
    // OnEnqueued (from the sender thread, for the events accepted since its last
    // report) / OnDropped, and OnBatchCommitted with the number of events
    // acknowledged (last_sequence 0: acks carry ids only) and zero latency;
    // OnWritable when drops on a full queue start, and at the next acknowledgement.
    AuditPipelineObserver* observer = nullptr;
    // The shutdown spool (spool.h); empty = none. What is still unacknowledged
    // when Shutdown's timeout passes (and a GAP for events dropped meanwhile) is
    // written there, and the next Create queues it first. The file stays until
    // those events are acknowledged: a crash before that resends them again, and
    // the server's deduplication by event_id keeps one copy.
    std::string spool_path;
  };

  // Queues the spool left at `spool_path`, then starts the sender thread.
  // INVALID_ARGUMENT without a channel or with a zero size; UNAVAILABLE when the
  // spool cannot be read. A damaged spool is set aside with a GAP event saying so.
  static absl::StatusOr<std::unique_ptr<RemoteAuditSink>> Create(Options options);
  ~RemoteAuditSink() override;  // Shutdown(absl::Seconds(5))

  // Assigns event_id and time when empty; non-blocking under kDrop. Thread-safe.
  void Record(iotauth::audit::v1::AuditEvent&& event) override;

  // Waits until everything recorded so far is acknowledged. False on timeout.
  bool Flush(absl::Duration timeout);

  // Stops accepting events, keeps sending until everything is acknowledged or
  // `timeout` passes, then closes the stream. What is left goes to the spool
  // (counted as dropped without one, or when it cannot be written). Idempotent.
  void Shutdown(absl::Duration timeout);

  RemoteSinkStats Stats() const;
  // Why the shutdown spool could not be written (OK when it was, or not needed).
  absl::Status SpoolStatus() const;
  // A damaged or untrusted spool Create set aside (DATA_LOSS, naming the file); OK
  // otherwise.
  absl::Status SpoolNote() const;

 private:
  class IngestStream;

  explicit RemoteAuditSink(Options options);
  void SenderLoop();
  // Tells the observer how many events were accepted since the last report.
  void ReportEnqueued();
  // An ack arrived: releases the acknowledged events (called on a gRPC thread).
  void HandleAck(const iotauth::audit::v1::IngestAck& ack);
  // The stream's reads ended: the sender tears it down and reconnects.
  void MarkStreamBroken();
  // Queues the last shutdown's spool (see Create).
  absl::Status RestoreSpool();
  // The spool's events were all acknowledged: removes the file.
  void RemoveRestoredSpool();
  // At exit: spools what is unacknowledged (called with neither mutex held).
  void SpoolAtExit();

  const Options options_;
  std::unique_ptr<iotauth::audit::v1::AuditLog::Stub> stub_;

  mutable absl::Mutex mu_;
  // Unacknowledged events in record order; the first `sent_` were written to the
  // current stream.
  std::deque<iotauth::audit::v1::AuditEvent> pending_ ABSL_GUARDED_BY(mu_);
  size_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t gap_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  // Since when the in-flight events have waited without any ack arriving.
  absl::Time ack_wait_start_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time shutdown_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  RemoteSinkStats stats_ ABSL_GUARDED_BY(mu_);
  uint64_t enqueued_reported_ ABSL_GUARDED_BY(mu_) = 0;  // told to the observer
  // Ids of restored events not acknowledged yet; the spool file stays until empty.
  absl::flat_hash_set<std::string> restored_ids_ ABSL_GUARDED_BY(mu_);
  bool restoring_ ABSL_GUARDED_BY(mu_) = false;  // the spool file waits for those acks
  absl::Status spool_status_ ABSL_GUARDED_BY(mu_);
  absl::Status spool_note_ ABSL_GUARDED_BY(mu_);
  // Serializes the spool file's removal (an ack) and rewrite (exit).
  absl::Mutex spool_mu_;

  absl::Mutex shutdown_mu_;
  std::thread sender_;
};

}  // namespace iotauth::audit
