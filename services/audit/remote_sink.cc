#include "services/audit/remote_sink.h"

#include <grpcpp/support/client_callback.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "services/audit/canonical.h"
#include "services/audit/event_util.h"
#include "services/audit/spool.h"
#include "services/common/grpc_status.h"
#include "services/common/thread_name.h"

namespace iotauth::audit {

absl::StatusOr<std::unique_ptr<RemoteAuditSink>> RemoteAuditSink::Create(Options options) {
  if (options.channel == nullptr) {
    return absl::InvalidArgumentError("remote audit sink: no channel");
  }
  if (options.queue_capacity == 0 || options.max_batch == 0 || options.max_in_flight == 0) {
    return absl::InvalidArgumentError("remote audit sink: sizes must be > 0");
  }
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  if (options.initial_backoff <= absl::ZeroDuration()) {
    options.initial_backoff = absl::Milliseconds(1);
  }
  options.max_backoff = std::max(options.max_backoff, options.initial_backoff);
  std::unique_ptr<RemoteAuditSink> sink(new RemoteAuditSink(std::move(options)));
  if (!sink->options_.spool_path.empty()) {
    if (absl::Status st = sink->RestoreSpool(); !st.ok()) return st;
  }
  sink->sender_ = std::thread([s = sink.get()] { s->SenderLoop(); });
  return sink;
}

RemoteAuditSink::RemoteAuditSink(Options options)
    : options_(std::move(options)), stub_(v1::AuditLog::NewStub(options_.channel)) {}

RemoteAuditSink::~RemoteAuditSink() { Shutdown(absl::Seconds(5)); }

absl::Status RemoteAuditSink::RestoreSpool() {
  const std::string& path = options_.spool_path;
  absl::StatusOr<std::optional<SpooledEvents>> loaded = LoadSpool(path);
  std::vector<v1::AuditEvent> events;
  if (loaded.ok()) {
    if (!loaded->has_value()) return absl::OkStatus();
    for (const std::string& bytes : **loaded) {
      CanonicalFields f;
      v1::AuditEvent e;
      // LoadSpool checked each one parses and decodes.
      if (!ParseCanonical(bytes, &f) || !CanonicalFieldsToEvent(f, &e)) {
        return absl::DataLossError(absl::StrCat("audit spool ", path, ": undecodable event"));
      }
      e.clear_sequence();
      e.clear_prev_hash();
      e.clear_encoding();
      events.push_back(std::move(e));
    }
  } else if (SpoolUntrusted(loaded.status())) {
    // Set aside now: the GAP saying so is queued like any event (and spooled again
    // at a clean exit if the audit service stays away).
    const absl::Time now = options_.clock->Now();
    absl::StatusOr<std::string> aside = SetAsideSpool(path, absl::ToUnixSeconds(now));
    if (!aside.ok()) return aside.status();
    {
      absl::MutexLock lock(&mu_);
      spool_note_ = SetAsideNote(loaded.status(), *aside);
    }
    events.push_back(SpoolLostGapEvent(loaded.status(), *aside, now));
  } else {
    return loaded.status();
  }
  if (events.empty()) return RemoveSpool(path);
  const auto recorded = static_cast<uint64_t>(
      std::count_if(events.begin(), events.end(),
                    [](const v1::AuditEvent& e) { return e.type() != v1::EVENT_TYPE_GAP; }));
  absl::MutexLock lock(&mu_);
  stats_.restored += recorded;
  // A damaged spool was set aside already: no file waits for these acks.
  restoring_ = loaded.ok();
  for (v1::AuditEvent& e : events) {
    if (restoring_) restored_ids_.insert(e.event_id());
    pending_.push_back(std::move(e));
  }
  stats_.enqueued += events.size();
  return absl::OkStatus();
}

void RemoteAuditSink::RemoveRestoredSpool() {
  absl::MutexLock spool_lock(&spool_mu_);
  absl::Status st = RemoveSpool(options_.spool_path);
  if (!st.ok()) {
    // Harmless: the next start resends those events and the server keeps one copy.
    absl::MutexLock lock(&mu_);
    stats_.last_stream_error = st;
  }
}

void RemoteAuditSink::SpoolAtExit() {
  std::deque<v1::AuditEvent> left;
  uint64_t gap = 0;
  {
    absl::MutexLock lock(&mu_);
    left.swap(pending_);
    sent_ = 0;
    gap = std::exchange(gap_pending_, 0);
  }
  if (left.empty() && gap == 0) return;
  // Recorded events; a GAP the sender queued already is not one.
  const auto events =
      static_cast<uint64_t>(std::count_if(left.begin(), left.end(), [](const v1::AuditEvent& e) {
        return e.type() != v1::EVENT_TYPE_GAP;
      }));
  absl::Status st = absl::OkStatus();
  if (!options_.spool_path.empty()) {
    SpooledEvents spool;
    spool.reserve(left.size() + 1);
    for (const v1::AuditEvent& e : left) AppendUnchainedEncoding(e, &spool.emplace_back());
    // Drops behind `gap` were counted when they happened; the GAP records them.
    if (gap > 0) {
      AppendUnchainedEncoding(MakeGapEvent(gap, options_.clock->Now()), &spool.emplace_back());
    }
    absl::MutexLock spool_lock(&spool_mu_);
    st = SaveSpool(options_.spool_path, spool);
  } else {
    st = absl::UnavailableError("no spool configured");
  }
  absl::MutexLock lock(&mu_);
  if (st.ok()) {
    stats_.spooled += events;
  } else {
    stats_.dropped += events;
    if (!options_.spool_path.empty()) spool_status_ = st;
  }
}

absl::Status RemoteAuditSink::SpoolStatus() const {
  absl::MutexLock lock(&mu_);
  return spool_status_;
}

absl::Status RemoteAuditSink::SpoolNote() const {
  absl::MutexLock lock(&mu_);
  return spool_note_;
}

void RemoteAuditSink::Record(v1::AuditEvent&& event) {
  PrepareForRecord(*options_.clock, &event);
  bool accepted = false;
  {
    absl::MutexLock lock(&mu_);
    const size_t capacity = options_.queue_capacity;
    auto has_room = [this, capacity]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || pending_.size() < capacity;
    };
    // As LocalAuditSink: once events are being lost (the resend queue stayed full)
    // a full queue drops at once instead of making every call wait block_timeout.
    if (!has_room() && options_.full_queue_policy == LocalAuditSink::FullQueuePolicy::kBlock &&
        stats_.writable) {
      mu_.AwaitWithTimeout(absl::Condition(&has_room), options_.block_timeout);
    }
    if (stopping_ || pending_.size() >= capacity) {
      ++stats_.dropped;
      if (!stopping_) {
        ++gap_pending_;
        // Called under the lock, so that it and the ack's "writable" arrive in order.
        if (std::exchange(stats_.writable, false) && options_.observer != nullptr) {
          options_.observer->OnWritable(
              false,
              absl::UnavailableError(absl::StrCat(
                  "the audit service has not acknowledged the last ", capacity,
                  " events (the resend queue is full); last stream error: ",
                  stats_.last_stream_error.ok() ? "none" : stats_.last_stream_error.ToString())));
        }
      }
    } else {
      pending_.push_back(std::move(event));
      ++stats_.enqueued;
      accepted = true;
    }
  }
  // Accepted events reach the observer from the sender thread (ReportEnqueued): a
  // metric updated on every Record cost the hot path more than a tenth of a
  // microsecond.
  if (!accepted && options_.observer != nullptr) options_.observer->OnDropped(1);
}

void RemoteAuditSink::ReportEnqueued() {
  if (options_.observer == nullptr) return;
  uint64_t newly = 0;
  {
    absl::MutexLock lock(&mu_);
    newly = stats_.enqueued - std::exchange(enqueued_reported_, stats_.enqueued);
  }
  if (newly > 0) options_.observer->OnEnqueued(newly);
}

// One Ingest call through the callback API, with blocking Write / WritesDone /
// Finish for the sender thread (which then waits on a mutex, not in gRPC). Acks go
// to the sink as they arrive.
class RemoteAuditSink::IngestStream final
    : public grpc::ClientBidiReactor<v1::IngestRequest, v1::IngestAck> {
 public:
  IngestStream(RemoteAuditSink* sink, v1::AuditLog::Stub* stub, grpc::ClientContext* context)
      : sink_(sink) {
    stub->async()->Ingest(context, this);
    // The sender thread starts writes from outside any reaction: without a hold,
    // the call could end (OnDone, the call object freed) between Write()'s check of
    // ended_ and its StartWrite. Release() removes the hold once it writes no more.
    AddHold();
    StartRead(&ack_);
    StartCall();
  }

  // The sender starts no more operations on this stream (call before Finish()).
  void Release() {
    if (!released_) {
      released_ = true;
      RemoveHold();
    }
  }

  // Writes `request` and waits until it is on the wire (or the call failed: false).
  bool Write(v1::IngestRequest request) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || write_failed_) return false;
      outgoing_ = std::move(request);
      writing_ = true;
    }
    StartWrite(&outgoing_);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](IngestStream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return !s->writing_; }, this));
    return !write_failed_;
  }

  // Half-closes the call (the server ends it after acknowledging everything).
  void WritesDone() { StartWritesDone(); }

  // Waits for the end of the call (after WritesDone or a cancel) and returns its
  // status. The stream may be destroyed as soon as this returns.
  grpc::Status Finish() {
    done_.WaitForNotification();
    return status_;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) write_failed_ = true;
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      sink_->MarkStreamBroken();
      return;
    }
    sink_->HandleAck(ack_);
    StartRead(&ack_);
  }

  void OnDone(const grpc::Status& s) override {
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      writing_ = false;  // a write still pending will never complete
    }
    status_ = s;
    done_.Notify();  // last: Finish() may destroy this stream right after
  }

 private:
  RemoteAuditSink* sink_;
  v1::IngestAck ack_;           // owned by the outstanding read
  v1::IngestRequest outgoing_;  // owned by the outstanding write
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_;  // written before done_ is notified
  absl::Notification done_;
  bool released_ = false;  // sender thread only
};

void RemoteAuditSink::HandleAck(const v1::IngestAck& ack) {
  int matched = 0;
  bool spool_delivered = false;
  {
    absl::MutexLock lock(&mu_);
    const auto& ids = ack.event_ids();
    // The server acknowledges in send order, so the acknowledged events are normally
    // the oldest pending ones, in the same order: compare each id with the front.
    while (matched < ids.size() && !pending_.empty() &&
           pending_.front().event_id() == ids.Get(matched)) {
      if (!restored_ids_.empty()) restored_ids_.erase(pending_.front().event_id());
      pending_.pop_front();
      if (sent_ > 0) --sent_;
      ++matched;
    }
    if (matched < ids.size()) {
      // Out of order (not expected from our server): look the rest up by id.
      absl::flat_hash_set<absl::string_view> rest(ids.begin() + matched, ids.end());
      size_t i = 0;
      while (!rest.empty() && i < pending_.size()) {
        if (rest.erase(pending_[i].event_id()) > 0) {
          if (!restored_ids_.empty()) restored_ids_.erase(pending_[i].event_id());
          pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
          if (i < sent_) --sent_;
          ++matched;
        } else {
          ++i;
        }
      }
    }
    stats_.acked += static_cast<uint64_t>(matched);
    if (matched > 0 && !std::exchange(stats_.writable, true) && options_.observer != nullptr) {
      options_.observer->OnWritable(true, absl::OkStatus());
    }
    ack_wait_start_ = absl::Now();
    spool_delivered = restoring_ && restored_ids_.empty();
    if (spool_delivered) restoring_ = false;
  }
  if (spool_delivered) RemoveRestoredSpool();
  if (options_.observer != nullptr && matched > 0) {
    options_.observer->OnBatchCommitted({static_cast<uint64_t>(matched), 0, absl::ZeroDuration()});
  }
}

void RemoteAuditSink::MarkStreamBroken() {
  absl::MutexLock lock(&mu_);
  stream_broken_ = true;
}

void RemoteAuditSink::SenderLoop() {
  SetCurrentThreadName("audit-sender");
  absl::Duration backoff = options_.initial_backoff;
  for (;;) {
    // One Ingest stream per iteration of this loop.
    uint64_t acked_before = 0;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty() || gap_pending_ > 0;
      };
      mu_.Await(absl::Condition(&work));
      if (stopping_ && pending_.empty() && gap_pending_ == 0) return;
      if (stopping_ && absl::Now() >= shutdown_deadline_) break;
      ++stats_.connects;
      stream_broken_ = false;
      acked_before = stats_.acked;
    }
    grpc::ClientContext context;
    if (options_.configure_context) options_.configure_context(&context);
    auto stream = std::make_unique<IngestStream>(this, stub_.get(), &context);
    bool clean_end = false;
    bool ended_by_us = false;  // else the stream failed (and already has its status)
    bool ack_timed_out = false;
    for (;;) {
      v1::IngestRequest request;
      {
        absl::MutexLock lock(&mu_);
        const size_t max_batch = options_.max_batch;
        const size_t max_in_flight = options_.max_in_flight;
        auto has_unsent = [this, max_in_flight]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return sent_ < pending_.size() && sent_ < max_in_flight;
        };
        auto ack_overdue = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return sent_ > 0 && absl::Now() - ack_wait_start_ > options_.ack_timeout;
        };
        auto terminal = [this, &ack_overdue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stream_broken_ || ack_overdue() ||
                 (stopping_ &&
                  ((pending_.empty() && gap_pending_ == 0) || absl::Now() >= shutdown_deadline_));
        };
        auto any = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return terminal() || gap_pending_ > 0 || has_unsent();
        };
        auto full = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return terminal() || gap_pending_ > 0 || stopping_ ||
                 (has_unsent() && pending_.size() - sent_ >= max_batch);
        };
        // Short timeouts: the shutdown deadline is time-based, not a state change.
        if (!mu_.AwaitWithTimeout(absl::Condition(&any), absl::Milliseconds(100))) continue;
        if (!full() && options_.linger > absl::ZeroDuration()) {
          mu_.AwaitWithTimeout(absl::Condition(&full), options_.linger);
        }
        if (terminal()) {
          ended_by_us = !stream_broken_;
          clean_end = ended_by_us && pending_.empty() && gap_pending_ == 0;
          if (ack_overdue() && !stream_broken_) {
            stats_.last_stream_error = absl::DeadlineExceededError("no ingest ack in time");
            ack_timed_out = true;
          }
          break;
        }
        if (gap_pending_ > 0) {
          pending_.insert(pending_.begin() + static_cast<std::ptrdiff_t>(sent_),
                          MakeGapEvent(gap_pending_, options_.clock->Now()));
          gap_pending_ = 0;
          ++stats_.gap_events;
        }
        if (!has_unsent()) continue;
        const size_t n = std::min({pending_.size() - sent_, max_batch, max_in_flight - sent_});
        for (size_t i = 0; i < n; ++i) *request.add_events() = pending_[sent_ + i];
        if (sent_ == 0) ack_wait_start_ = absl::Now();
        sent_ += n;
        stats_.sent += n;
      }
      ReportEnqueued();  // before the events it counts can be acknowledged
      if (!stream->Write(std::move(request))) break;
    }
    // Tear down this stream; whatever is unacknowledged goes again on the next one.
    if (clean_end) stream->WritesDone();
    // Cancel only a stream we are abandoning: a failed one is finished already, and
    // cancelling it would replace its status with CANCELLED.
    if (ended_by_us) context.TryCancel();
    stream->Release();
    const grpc::Status finish = stream->Finish();
    bool stop_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (!clean_end) {
        ++stats_.stream_failures;
        if (!ack_timed_out) {
          stats_.last_stream_error =
              finish.ok() ? absl::UnavailableError("ingest stream closed") : FromGrpcStatus(finish);
        }
        stats_.resent += sent_;  // sent but unacknowledged: they go again
      }
      sent_ = 0;
      stop_now = stopping_ && (pending_.empty() || absl::Now() >= shutdown_deadline_);
      if (stats_.acked > acked_before) backoff = options_.initial_backoff;
    }
    if (stop_now) break;
    // Back off before reconnecting (cut short by the shutdown deadline).
    {
      absl::MutexLock lock(&mu_);
      auto give_up = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ && absl::Now() >= shutdown_deadline_;
      };
      mu_.AwaitWithTimeout(
          absl::Condition(&give_up),
          stopping_ ? std::min(backoff, shutdown_deadline_ - absl::Now()) : backoff);
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  SpoolAtExit();
}

bool RemoteAuditSink::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.empty() && gap_pending_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

void RemoteAuditSink::Shutdown(absl::Duration timeout) {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      stopping_ = true;
      shutdown_deadline_ = absl::Now() + timeout;
    }
  }
  if (sender_.joinable()) sender_.join();
  ReportEnqueued();  // events accepted but never sent (counted as dropped too)
}

RemoteSinkStats RemoteAuditSink::Stats() const {
  absl::MutexLock lock(&mu_);
  RemoteSinkStats s = stats_;
  s.pending = pending_.size();
  return s;
}

}  // namespace iotauth::audit
