// Storage contract of the audit log: an append-only, hash-chained sequence of
// events with checkpoints, retention and verification. The pipeline and the gRPC
// service depend only on this interface (SQLite today, PostgreSQL later).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.pb.h"

namespace iotauth::audit {

// Selects events. Unset members do not filter. Results are ordered by sequence.
struct EventFilter {
  std::optional<absl::Time> start_time;  // inclusive
  std::optional<absl::Time> end_time;    // exclusive
  std::string tenant_id;
  std::string device_id;
  iotauth::audit::v1::EventType type = iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED;
  iotauth::audit::v1::Outcome outcome = iotauth::audit::v1::OUTCOME_UNSPECIFIED;
  uint64_t after_sequence = 0;  // sequence > after_sequence
  uint64_t max_sequence = 0;    // sequence <= max_sequence; 0 = no bound
};

// Outcome of appending one event (results are in the order of the input).
struct AppendedEvent {
  uint64_t sequence = 0;
  // True when an event with this id was already stored (nothing was written;
  // `sequence` is the stored one).
  bool duplicate = false;
};

struct ChainHead {
  uint64_t sequence = 0;  // 0 = empty log
  std::string hash;       // kGenesisHash when empty
};

struct CheckpointRecord {
  uint64_t sequence = 0;
  std::string head_hash;  // hash of the event at `sequence`
  absl::Time time;
};

// What Verify found. `problem` is empty when ok.
struct VerifyResult {
  bool ok = true;
  uint64_t events_checked = 0;
  uint64_t first_bad_sequence = 0;
  // "ALTERED", "MISSING", "REORDERED" or "CHECKPOINT_MISMATCH".
  std::string problem;
  std::string detail;
  // The checkpoint the walk started from (0 = genesis) and the last sequence walked.
  uint64_t anchor_sequence = 0;
  uint64_t last_sequence = 0;
};

inline constexpr char kProblemAltered[] = "ALTERED";
inline constexpr char kProblemMissing[] = "MISSING";
inline constexpr char kProblemReordered[] = "REORDERED";
inline constexpr char kProblemCheckpointMismatch[] = "CHECKPOINT_MISMATCH";

// Retention: events older than `max_age` and events beyond the newest `max_rows`
// are pruned (zero = no limit). The rest stays verifiable from an anchor checkpoint.
struct RetentionPolicy {
  absl::Duration max_age = absl::ZeroDuration();
  uint64_t max_rows = 0;
};

// Thread-safe. Implementations serialize writers; readers may run concurrently.
class AuditStore {
 public:
  virtual ~AuditStore() = default;

  // Appends `*events` in one transaction, in order: each new event gets the next
  // gap-free sequence, prev_hash and hash, set in place (input values of those
  // fields are ignored), so on success each newly written event holds its stored
  // form. An event whose event_id is already stored is not written again and is
  // reported as a duplicate (its sequence is then the stored one; its hashes mean
  // nothing). The result has one entry per input event, in order. All or nothing:
  // on error nothing was written and the same vector may be appended again.
  // INVALID_ARGUMENT for an empty event_id.
  virtual absl::StatusOr<std::vector<AppendedEvent>> Append(
      std::vector<iotauth::audit::v1::AuditEvent>* events) = 0;

  // Append for events whose ids were generated in this process and never handed
  // out (the local pipeline's): none can be a resend, so a store may skip its
  // duplicate lookup, and need not remember these ids for later lookups. The rest
  // of Append's contract holds. Defaults to Append.
  virtual absl::StatusOr<std::vector<AppendedEvent>> AppendFresh(
      std::vector<iotauth::audit::v1::AuditEvent>* events) {
    return Append(events);
  }

  // Up to `limit` events matching `filter`, ascending by sequence.
  virtual absl::StatusOr<std::vector<iotauth::audit::v1::AuditEvent>> Query(
      const EventFilter& filter, int limit) = 0;

  // Up to `limit` events with sequence > `after_sequence` (for Watch).
  absl::StatusOr<std::vector<iotauth::audit::v1::AuditEvent>> ReadAfter(uint64_t after_sequence,
                                                                        int limit) {
    EventFilter f;
    f.after_sequence = after_sequence;
    return Query(f, limit);
  }

  virtual absl::StatusOr<ChainHead> Head() = 0;
  // Lowest retained sequence (head + 1 when everything was pruned; 1 when empty).
  virtual absl::StatusOr<uint64_t> FirstSequence() = 0;

  // Records a checkpoint at the current head (no-op returning the head's checkpoint
  // when one exists already). FAILED_PRECONDITION on an empty log.
  virtual absl::StatusOr<CheckpointRecord> CreateCheckpoint(absl::Time now) = 0;
  // The newest checkpoint, or nullopt when there is none.
  virtual absl::StatusOr<std::optional<CheckpointRecord>> LatestCheckpoint() = 0;

  // Prunes per `policy`; returns the number of events removed.
  virtual absl::StatusOr<uint64_t> ApplyRetention(const RetentionPolicy& policy,
                                                  absl::Time now) = 0;

  // Recomputes the chain from the newest checkpoint before `from_sequence` (or the
  // retained start) up to `to_sequence` (0 = head) and reports the first bad
  // event. A non-OK status means the check could not run (I/O), not tampering.
  virtual absl::StatusOr<VerifyResult> Verify(uint64_t from_sequence, uint64_t to_sequence) = 0;
};

}  // namespace iotauth::audit
