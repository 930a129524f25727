#include "services/audit/pipeline.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "services/audit/canonical.h"
#include "services/audit/event_util.h"
#include "services/audit/event_view.h"
#include "services/audit/retention.h"
#include "services/audit/spool.h"
#include "services/common/thread_name.h"

namespace iotauth::audit {

using iotauth::audit::v1::AuditEvent;

namespace {
// The writer keeps its swapped-out queue's buffer for reuse up to this size.
constexpr size_t kKeepQueueBytes = size_t{8} << 20;
}  // namespace

AuditEvent MakeGapEvent(uint64_t dropped, absl::Time now) {
  AuditEvent gap;
  gap.set_event_id(NewEventId());
  SetTimestamp(now, gap.mutable_time());
  gap.set_type(iotauth::audit::v1::EVENT_TYPE_GAP);
  gap.set_outcome(iotauth::audit::v1::OUTCOME_FAILURE);
  gap.set_reason(absl::StrCat(dropped, " audit events lost"));
  (*gap.mutable_attributes())["dropped_count"] = absl::StrCat(dropped);
  return gap;
}

absl::StatusOr<std::unique_ptr<LocalAuditSink>> LocalAuditSink::Create(Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("audit pipeline: no store");
  if (options.queue_capacity == 0 || options.max_batch == 0) {
    return absl::InvalidArgumentError("audit pipeline: queue_capacity and max_batch must be > 0");
  }
  if (options.max_commit_attempts < 1) options.max_commit_attempts = 1;
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  std::unique_ptr<LocalAuditSink> sink(new LocalAuditSink(std::move(options)));
  if (!sink->options_.spool_path.empty()) {
    if (absl::Status st = sink->CommitSpool(); !st.ok()) return st;
  }
  sink->next_retention_ = sink->options_.clock->Now();  // first pass right away
  sink->writer_ = std::thread([s = sink.get()] { s->WriterLoop(); });
  return sink;
}

LocalAuditSink::LocalAuditSink(Options options) : options_(std::move(options)) {}

LocalAuditSink::~LocalAuditSink() { Shutdown(); }

void LocalAuditSink::CountDropped(uint64_t n) {
  stats_.dropped += n;
  if (stopping_) {
    if (!stop_gap_taken_) lost_while_stopping_ += n;
  } else {
    gap_pending_ += n;
  }
}

absl::Status LocalAuditSink::CommitSpool() {
  const std::string& path = options_.spool_path;
  absl::StatusOr<std::optional<SpooledEvents>> loaded = LoadSpool(path);
  SpooledEvents events;
  const bool untrusted = !loaded.ok() && SpoolUntrusted(loaded.status());
  const absl::Time now = options_.clock->Now();
  if (loaded.ok()) {
    if (!loaded->has_value()) return absl::OkStatus();
    events = std::move(**loaded);
  } else if (untrusted) {
    // Its events cannot be trusted: the log says so first, then the file is kept
    // aside for inspection (a refused commit leaves it where it was).
    AppendUnchainedEncoding(
        SpoolLostGapEvent(loaded.status(), SetAsideName(path, absl::ToUnixSeconds(now)), now),
        &events.emplace_back());
  } else {
    return loaded.status();
  }
  // Not fresh: an event committed before a crash removed the file is a duplicate.
  std::string buffer;
  std::vector<EncodedEvent> list;
  std::vector<bool> gap_at;  // else an event Record queued
  for (const std::string& e : events) {
    CanonicalFields f;
    gap_at.push_back(ParseCanonical(e, &f) && f.type == iotauth::audit::v1::EVENT_TYPE_GAP);
    list.push_back({buffer.size(), e.size(), false});
    buffer.append(e);
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<AppendedEvent>> appended =
      options_.store->AppendEncoded(EncodedBatch{buffer, list});
  if (!appended.ok()) {
    return absl::Status(
        appended.status().code(),
        absl::StrCat("audit: the ", events.size(), " events in ", path,
                     (untrusted ? " (a GAP for a spool that cannot be trusted)" : ""),
                     " could not be committed: ", appended.status().message(),
                     ". Fix the audit store and start again (the file is kept until then), or "
                     "move the file away to start without them (they are then lost)"));
  }
  CommittedBatch c{0, 0, absl::Now() - start};
  uint64_t restored = 0;
  uint64_t gaps = 0;
  for (size_t i = 0; i < appended->size(); ++i) {
    const AppendedEvent& a = (*appended)[i];
    c.last_sequence = std::max(c.last_sequence, a.sequence);
    if (a.duplicate) continue;  // committed before a crash kept the file
    ++c.events;
    ++(gap_at[i] ? gaps : restored);
  }
  {
    absl::MutexLock lock(&mu_);
    stats_.restored += restored;
    stats_.gap_events += gaps;
    stats_.committed += c.events;
    ++stats_.batches;
  }
  if (options_.notifier != nullptr && c.last_sequence > 0) {
    options_.notifier->Publish(c.last_sequence);
  }
  if (options_.observer != nullptr) options_.observer->OnBatchCommitted(c);
  // Committed: the file's removal (or setting aside) failing is only a note, since
  // a later start would find the same events already there.
  absl::Status done = absl::OkStatus();
  if (untrusted) {
    absl::StatusOr<std::string> aside = SetAsideSpool(path, absl::ToUnixSeconds(now));
    done = aside.ok() ? SetAsideNote(loaded.status(), *aside) : aside.status();
  } else {
    done = RemoveSpool(path);
  }
  absl::MutexLock lock(&mu_);
  spool_note_ = done;
  return absl::OkStatus();
}

void LocalAuditSink::SpoolBatch(const EncodedBatch& batch, uint64_t accepted) {
  for (const EncodedEvent& e : batch.events) {
    spool_.emplace_back(batch.buffer.substr(e.offset, e.size));
  }
  spool_accepted_ += accepted;
  absl::MutexLock lock(&mu_);
  stats_.spooled += accepted;
}

void LocalAuditSink::SaveSpoolAtExit() {
  if (spool_.empty()) return;
  absl::Status st = SaveSpool(options_.spool_path, spool_);
  {
    absl::MutexLock lock(&mu_);
    spool_status_ = st;
    if (!st.ok()) {
      // Lost after all; the counters keep it.
      stats_.spooled -= spool_accepted_;
      stats_.dropped += spool_accepted_;
    }
  }
  if (!st.ok() && options_.observer) options_.observer->OnDropped(spool_accepted_);
  spool_.clear();
}

absl::Status LocalAuditSink::SpoolStatus() const {
  absl::MutexLock lock(&mu_);
  return spool_status_;
}

absl::Status LocalAuditSink::SpoolNote() const {
  absl::MutexLock lock(&mu_);
  return spool_note_;
}

void LocalAuditSink::WakeWriter() {
  writer_state_ = WriterState::kRunning;
  writer_cv_.Signal();
}

void LocalAuditSink::MaybeWakeWriter() {
  if (writer_state_ == WriterState::kIdle ||
      (writer_state_ == WriterState::kLinger && queue_.events.size() >= FullBatch())) {
    WakeWriter();
  }
}

void LocalAuditSink::Record(AuditEvent&& event) { RecordReusing(&event); }

namespace {

// Where a producer thread encodes its events, outside the queue's lock: one buffer
// per thread for both record paths, kept with its capacity.
std::string* EncodeScratch() {
  thread_local std::string scratch;
  return &scratch;
}

// True when recording `view` as it is gives what PrepareForRecord would make of
// ToAuditEvent(view): a valid time and no field to cap.
bool RecordableAsIs(const EventView& v) {
  if (!v.has_time || !ValidTimestampNanos(v.time.nanos)) return false;
  if (v.attributes.size() > kMaxAuditAttributes) return false;
  for (absl::string_view f : {v.tenant_id, v.product_key, v.device_id, v.reason, v.credential_type,
                              v.credential_fingerprint, v.caller, v.peer_address, v.request_id}) {
    if (f.size() > kMaxAuditFieldBytes) return false;
  }
  return std::none_of(v.attributes.begin(), v.attributes.end(), [](const EventView::Attribute& a) {
    return a.first.size() > kMaxAuditFieldBytes || a.second.size() > kMaxAuditFieldBytes;
  });
}

}  // namespace

void LocalAuditSink::RecordReusing(AuditEvent* event) {
  const bool fresh = event->event_id().empty();
  PrepareForRecord(*options_.clock, event);
  Enqueue(EncodeUnchainedInto(*event, EncodeScratch()), fresh);
}

void LocalAuditSink::RecordView(const EventView& view) {
  if (!RecordableAsIs(view)) {
    // Rare (a producer's clock or an oversized field): the message path fixes it up.
    AuditEvent event = ToAuditEvent(view);
    RecordReusing(&event);
    return;
  }
  const bool fresh = view.event_id.empty();
  EventView v = view;
  if (fresh) {
    thread_local std::string id;
    NewEventIdForTime(&id, v.time.seconds, v.time.nanos);
    v.event_id = id;
  }
  Enqueue(EncodeUnchainedInto(v, EncodeScratch()), fresh);
}

void LocalAuditSink::Enqueue(absl::string_view encoded, bool fresh) {
  bool accepted = false;
  {
    absl::MutexLock lock(&mu_);
    const size_t capacity = options_.queue_capacity;
    auto has_room = [this, capacity]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || queue_.events.size() < capacity;
    };
    // Waiting helps only while the writer drains the queue: while the store refuses
    // commits it does not, and every call would wait out block_timeout for the
    // whole outage. A full queue then drops at once.
    if (!has_room() && options_.full_queue_policy == FullQueuePolicy::kBlock && stats_.writable) {
      mu_.AwaitWithTimeout(absl::Condition(&has_room), options_.block_timeout);
    }
    if (stopping_ || queue_.events.size() >= capacity) {
      CountDropped(1);
    } else {
      queue_.events.push_back({queue_.bytes.size(), encoded.size(), fresh});
      queue_.bytes.append(encoded.data(), encoded.size());
      ++accepted_;
      ++stats_.enqueued;
      accepted = true;
    }
    MaybeWakeWriter();
  }
  if (!accepted && options_.observer != nullptr) options_.observer->OnDropped(1);
}

bool LocalAuditSink::RetentionEnabled() const {
  return options_.retention_interval > absl::ZeroDuration() &&
         (options_.retention.max_age > absl::ZeroDuration() || options_.retention.max_rows > 0 ||
          options_.retention.max_bytes > 0);
}

void LocalAuditSink::MaybeApplyRetention() {
  if (!RetentionEnabled()) return;
  const absl::Time now = options_.clock->Now();
  if (now < next_retention_) return;
  next_retention_ = now + options_.retention_interval;
  absl::StatusOr<uint64_t> pruned = RecordAndPrune(now);
  if (pruned.ok()) {
    absl::MutexLock lock(&mu_);
    stats_.pruned += *pruned;
  }
  if (options_.observer) options_.observer->OnRetention(pruned);
}

absl::StatusOr<uint64_t> LocalAuditSink::RecordAndPrune(absl::Time now) {
  absl::StatusOr<std::optional<CheckpointRecord>> cut =
      options_.store->PlanRetention(options_.retention, now);
  if (!cut.ok()) return cut.status();
  if (!cut->has_value()) return 0;
  // The record is committed before anything is removed: a crash in between leaves
  // a record of a cut not yet made, which verify does not mind; the reverse order
  // would leave a cut no record names.
  std::vector<AuditEvent> record{MakeRetentionEvent(**cut, options_.retention, now)};
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<AppendedEvent>> appended = options_.store->AppendFresh(&record);
  if (!appended.ok()) return appended.status();
  NoteCommitted({1, appended->front().sequence, absl::Now() - start}, 0, /*with_gap=*/false);
  return options_.store->PruneThrough(**cut, now);
}

void LocalAuditSink::NoteCommitted(const CommittedBatch& committed, uint64_t duplicates,
                                   bool with_gap) {
  bool recovered = false;
  {
    absl::MutexLock lock(&mu_);
    recovered = !std::exchange(stats_.writable, true);
    stats_.committed += committed.events;
    stats_.duplicates += duplicates;
    stats_.gap_events += with_gap ? 1 : 0;
    ++stats_.batches;
    stats_.commit_latency_total += committed.latency;
    stats_.commit_latency_max = std::max(stats_.commit_latency_max, committed.latency);
  }
  if (options_.notifier) options_.notifier->Publish(committed.last_sequence);
  if (options_.observer) {
    if (recovered) options_.observer->OnWritable(true, absl::OkStatus());
    options_.observer->OnBatchCommitted(committed);
  }
}

void LocalAuditSink::WriterLoop() {
  SetCurrentThreadName("audit-writer");
  for (;;) {
    MaybeApplyRetention();
    uint64_t gap = 0;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.events.empty() || gap_pending_ > 0;
      };
      if (!has_work()) {
        writer_state_ = WriterState::kIdle;
        flush_wanted_ = false;  // nothing queued: no Flush waits on the linger
        if (RetentionEnabled()) {
          // Wake up now and then to run retention on an idle log (a FakeClock in
          // tests decides when it is due).
          writer_cv_.WaitWithTimeout(&mu_, std::min(options_.retention_interval, absl::Seconds(1)));
        } else {
          writer_cv_.Wait(&mu_);
        }
        writer_state_ = WriterState::kRunning;
        if (!has_work()) continue;  // retention's turn (or a spurious wake-up)
      }
      if (queue_.events.empty() && gap_pending_ == 0) {
        // Stopping and drained. Records refused since Shutdown began get one GAP
        // (later ones only the counters), unless the store already refused a
        // commit and there is no spool to hold it.
        if (lost_while_stopping_ == 0 || (gave_up_while_stopping_ && !spool_the_rest_)) break;
        gap_pending_ = std::exchange(lost_while_stopping_, 0);
        stop_gap_taken_ = true;
      }
      auto cut_short = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || flush_wanted_ || queue_.events.size() >= FullBatch();
      };
      if (!cut_short() && options_.linger > absl::ZeroDuration()) {
        const absl::Time deadline = absl::Now() + options_.linger;
        writer_state_ = WriterState::kLinger;
        while (!cut_short() && !writer_cv_.WaitWithDeadline(&mu_, deadline)) {
        }
        writer_state_ = WriterState::kRunning;
      }
      flush_wanted_ = false;
      // Everything queued, in O(1): producers never wait behind the commit.
      std::swap(taken_, queue_);
      gap = std::exchange(gap_pending_, 0);
    }
    // Committed in batches of at most max_batch, in order.
    const size_t n = taken_.events.size();
    if (options_.observer != nullptr && n > 0) options_.observer->OnEnqueued(n);
    size_t at = 0;
    do {
      const size_t end = std::min(n, at + options_.max_batch);
      CommitBatch(
          EncodedBatch{taken_.bytes, absl::MakeConstSpan(taken_.events).subspan(at, end - at)},
          std::exchange(gap, 0));
      at = end;
    } while (at < n);
    // Kept for the next swap, unless a burst made it large.
    if (taken_.bytes.capacity() > kKeepQueueBytes) {
      taken_ = Queue();
    } else {
      taken_.bytes.clear();
      taken_.events.clear();
    }
    absl::MutexLock lock(&mu_);
    finished_ += n;
  }
  SaveSpoolAtExit();
}

void LocalAuditSink::CommitBatch(EncodedBatch batch, uint64_t gap) {
  Queue with_gap;
  if (gap > 0) {
    // The loss happened before these events were accepted: the GAP goes first.
    AppendUnchainedEncoding(MakeGapEvent(gap, options_.clock->Now()), &with_gap.bytes);
    with_gap.events.push_back({0, with_gap.bytes.size(), true});
    for (const EncodedEvent& e : batch.events) {
      with_gap.events.push_back({with_gap.bytes.size(), e.size, e.fresh});
      with_gap.bytes.append(batch.buffer.data() + e.offset, e.size);
    }
    batch = EncodedBatch{with_gap.bytes, with_gap.events};
  }
  const size_t accepted = batch.events.size() - (gap > 0 ? 1 : 0);
  if (spool_the_rest_) {
    SpoolBatch(batch, accepted);
    return;
  }
  absl::Duration backoff = options_.retry_backoff;
  absl::Status refused;
  for (int attempt = 1;; ++attempt) {
    const absl::Time start = absl::Now();
    // The batch is not modified: on failure it is appended again as it is.
    auto result = options_.store->AppendEncoded(batch);
    const absl::Duration latency = absl::Now() - start;
    if (result.ok()) {
      uint64_t duplicates = 0;
      uint64_t head = 0;
      for (const AppendedEvent& a : *result) {
        if (a.duplicate) ++duplicates;
        head = std::max(head, a.sequence);
      }
      NoteCommitted({batch.events.size() - duplicates, head, latency}, duplicates, gap > 0);
      return;
    }
    // Unwritable from the first refused attempt, not only once the batch is given
    // up: with audit.when_unwritable=refuse the gate closes now, so the decisions
    // answered while the retries run (and would be lost with this batch) are few.
    bool lost_writable = false;
    {
      absl::MutexLock lock(&mu_);
      ++stats_.commit_failures;
      lost_writable = std::exchange(stats_.writable, false);
    }
    refused = result.status();
    if (options_.observer) {
      if (lost_writable) options_.observer->OnWritable(false, refused);
      options_.observer->OnCommitFailed(refused);
    }
    if (attempt >= options_.max_commit_attempts) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  // Given up. While stopping, the batch (its GAP included) and everything after it
  // goes to the spool, for the next start to commit.
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  gave_up_while_stopping_ = gave_up_while_stopping_ || stopping;
  if (stopping && !options_.spool_path.empty()) {
    spool_the_rest_ = true;
    SpoolBatch(batch, accepted);
    return;
  }
  // Otherwise the events are lost; say so in the log once the store recovers.
  {
    absl::MutexLock lock(&mu_);
    stats_.dropped += accepted;  // `gap` was counted already
    // While stopping (no spool) there is no later batch to carry the GAP; the
    // counters keep it.
    if (!stopping_) gap_pending_ += accepted + gap;
  }
  if (options_.observer) options_.observer->OnDropped(accepted);
}

bool LocalAuditSink::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t ticket = accepted_;
  // Only what still waits in the queue needs the linger cut short (a batch already
  // taken is being committed); a flag left set would make the next event after an
  // idle spell a batch of one.
  if (!queue_.events.empty() || gap_pending_ > 0) {
    flush_wanted_ = true;
    if (writer_state_ != WriterState::kRunning) WakeWriter();
  }
  auto done = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finished_ >= ticket && gap_pending_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

void LocalAuditSink::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    WakeWriter();
  }
  if (writer_.joinable()) writer_.join();
}

AuditPipelineStats LocalAuditSink::Stats() const {
  absl::MutexLock lock(&mu_);
  AuditPipelineStats s = stats_;
  s.queue_depth = queue_.events.size();
  return s;
}

}  // namespace iotauth::audit
