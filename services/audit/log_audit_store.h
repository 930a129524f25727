// AuditStore on append-only segment files: the default single-node audit log.
//
// Why not SQLite (which the project uses elsewhere, and which SqliteAuditStore
// still offers): an audit log is written once, in order, and read by sequence.
// SQLite's B-trees, WAL and checkpoint write each event twice and cost ~2.3 us of
// CPU per event on this machine; the hot path budget for the whole audit pipeline
// is ~0.6 us (see tools/bench/README.md). Here one batch is one pwrite + one
// fdatasync, and the bytes written are exactly what the hash chain covers.
//
// Directory layout (`Options::dir`):
//   <first sequence, 20 digits>.seg   segment: the events first..first+N-1, where N
//                                     is Options::events_per_segment; the segment
//                                     holding the head is "active", the rest sealed
//   <first sequence, 20 digits>.idx   summary of a sealed segment (rebuildable:
//                                     sparse offsets, block summaries, checkpoints)
//   anchor                            retention anchor: (sequence, hash) of the last
//                                     pruned event, fsynced before segments go
//
// Segment format (integers big-endian):
//   header  "IOTAUDL2" then u64 first sequence                       (16 bytes)
//           ("IOTAUDL1" in a segment only builds before canonical version 2
//           wrote to; the first write of this build rewrites it, so that those
//           builds, which cannot read version 2, refuse the segment)
//   frames  u32 body_length, u8 kind, body
//     kind 'E' (event):       32 raw bytes of the event's hash, then the event's
//                             canonical encoding (canonical.h: it carries the
//                             sequence and prev_hash), so the file holds exactly
//                             what the chain covers
//     kind 'C' (checkpoint):  u64 sequence, 32 raw bytes head hash, i64 unix nanos
//
// Durability: Append returns after fdatasync of every segment it wrote (and an
// fsync of the directory when it created one). Recovery on Open: a frame cut short
// by a crash at the end of the active segment (or a zero-filled tail) is cut off;
// those events were never reported committed. A damaged frame anywhere else is
// left in place for Verify to name (the store will not destroy evidence), except
// that a length field that no longer parses makes Open fail with DATA_LOSS and the
// offset (move the segment aside to start, then run `iotauthctl audit verify`).
//
// Tamper evidence is the same chain as SqliteAuditStore's. Removing events from
// the end of the log is only caught against a checkpoint exported elsewhere
// (GetCheckpoint), as for any log an attacker can rewrite.
//
// Retention works in whole sealed segments: a segment is deleted once all of its
// events are older than max_age or outside the newest max_rows, or while the
// segments hold more than max_bytes (oldest first; the active segment stays, so
// a budget smaller than one segment keeps one segment's worth).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/numeric/int128.h"
#include "absl/synchronization/mutex.h"
#include "services/audit/audit_store.h"
#include "services/audit/block_filter.h"
#include "services/audit/canonical.h"
#include "services/common/clock.h"

namespace iotauth::audit {

class LogAuditStore final : public AuditStore {
 public:
  struct Options {
    // Directory of the log; created when missing.
    std::string dir;
    // Events per segment file: a positive multiple of kBlockEvents. Retention
    // removes whole segments. 262,144 events is ~120 MiB of typical events.
    uint64_t events_per_segment = 64 * kBlockEvents;
    // A checkpoint frame follows every event whose sequence is a multiple of this
    // (0 = only on demand and at retention).
    uint64_t checkpoint_interval = 1000;
    // How many of the newest events' ids are remembered for deduplication of
    // resends (split mode; events written with AppendFresh are not counted). Must exceed what a
    // producer can resend: the remote sink holds at most its queue (65,536) plus its in-flight
    // window (8,192).
    uint64_t dedup_window = 262144;
    // Time of automatic checkpoints. Defaults to RealClock.
    const Clock* clock = nullptr;
    // Write the active segment with O_DIRECT into a zero-filled preallocation
    // (falls back to buffered writes where the file system refuses O_DIRECT).
    // Buffered appends cost 0.15-0.8 us of kernel CPU per event here (page cache
    // allocation, ext4 delayed allocation, writeback); direct overwrites ~0.05 us.
    bool direct_io = true;
  };

  // Opens (creating when needed) the log in `options.dir` and recovers its state
  // (reads the .idx of sealed segments, rebuilding a missing or stale one, and
  // scans the active segment). INVALID_ARGUMENT for bad options, UNAVAILABLE for
  // I/O errors, DATA_LOSS for a segment whose framing is broken.
  static absl::StatusOr<std::unique_ptr<LogAuditStore>> Open(Options options);
  ~LogAuditStore() override;

  absl::StatusOr<std::vector<AppendedEvent>> Append(
      std::vector<iotauth::audit::v1::AuditEvent>* events) override;
  // Skips the dedup lookup and leaves the ids out of the dedup window (~0.3 us
  // per event of cache misses on a 262,144-entry table).
  absl::StatusOr<std::vector<AppendedEvent>> AppendFresh(
      std::vector<iotauth::audit::v1::AuditEvent>* events) override;
  // Writes the producers' bytes as they are, with the chain fields filled in: no
  // decoding on the writer (the local pipeline's path). Deduplicates only when some
  // event is not fresh.
  absl::StatusOr<std::vector<AppendedEvent>> AppendEncoded(const EncodedBatch& batch) override;
  absl::StatusOr<std::vector<iotauth::audit::v1::AuditEvent>> Query(const EventFilter& filter,
                                                                    int limit) override;
  absl::StatusOr<ChainHead> Head() override;
  absl::StatusOr<uint64_t> FirstSequence() override;
  absl::StatusOr<CheckpointRecord> CreateCheckpoint(absl::Time now) override;
  absl::StatusOr<std::optional<CheckpointRecord>> LatestCheckpoint() override;
  absl::StatusOr<std::optional<CheckpointRecord>> PlanRetention(const RetentionPolicy& policy,
                                                                absl::Time now) override;
  absl::StatusOr<uint64_t> PruneThrough(const CheckpointRecord& cut, absl::Time now) override;
  absl::StatusOr<VerifyResult> Verify(uint64_t from_sequence, uint64_t to_sequence) override;

  // Committed bytes in the segments (what retention's max_bytes counts; index files
  // and the active segment's preallocated zeros apart).
  uint64_t StoredBytes() const override;

  // Prepares an empty `dir` for a log that continues a chain after `anchor` (the
  // last event of a log whose earlier part is gone: a migrated, pruned log). The
  // next event appended gets anchor.sequence + 1 and chains to anchor.head_hash.
  // FAILED_PRECONDITION when `dir` holds anything.
  static absl::Status StartAfter(const std::string& dir, const CheckpointRecord& anchor);

  // File name of the segment that starts at `first_sequence` ("000...1.seg").
  static std::string SegmentFileName(uint64_t first_sequence);

  struct Segment;  // defined in the .cc

 private:
  struct Pending;
  struct BlockBuilder;
  struct DirectBuffer;
  explicit LogAuditStore(Options options);
  absl::Status Recover();
  static absl::Status WriteAnchorFile(const std::string& dir, int dir_fd,
                                      const CheckpointRecord& anchor);
  // Encodes `events`, appends them with AppendCore and writes their stored form back.
  absl::StatusOr<std::vector<AppendedEvent>> AppendEvents(
      std::vector<iotauth::audit::v1::AuditEvent>* events, bool deduplicate);
  // The one append path. `chain` (optional) receives the raw head hash before the
  // batch, then the raw hash of each event written, in order.
  absl::StatusOr<std::vector<AppendedEvent>> AppendCore(const EncodedBatch& batch, bool deduplicate,
                                                        std::string* chain);
  absl::Status WriteBatch(Pending* pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Writes `data` at `offset` of `segment` (direct or buffered, by its wfd) and
  // makes it durable; on success the segment's tail/zeroed_end describe the file.
  // `in_place_pad`: the segment's tail precedes `data` in the same buffer and this
  // many zero bytes follow it, so a direct write needs no copy when that span is
  // aligned and ends on a block boundary (otherwise it is copied).
  absl::Status WriteChunk(Segment* segment, absl::string_view data, uint64_t offset,
                          std::optional<size_t> in_place_pad)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Takes back a WriteChunk of `size` bytes at `offset` whose segment tail was
  // `old_tail` before.
  void UndoChunk(Segment* segment, uint64_t offset, size_t size, const std::string& old_tail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Rewrites an "IOTAUDL1" segment header as "IOTAUDL2" (durably) before the first
  // version-2 frame goes into the segment.
  static absl::Status MarkSegmentVersion2(Segment* segment);
  // Opens the active segment for direct writes and loads its tail.
  absl::Status PrepareForWrites(Segment* segment) const;
  // What ApplyCommitted needs of each event of a batch (views into the batch).
  struct BatchEvent {
    absl::string_view tenant_id;
    absl::string_view device_id;
    bool has_time = false;
    int64_t time_seconds = 0;
  };
  void ApplyCommitted(const Pending& pending, const std::vector<BatchEvent>& events,
                      const std::vector<AppendedEvent>& results)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  void WriteIndex(const Segment& segment);
  void Remember(absl::uint128 key, uint64_t sequence) ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Verify; `last_hash_raw` (optional) receives the raw hash of the last event
  // walked (the anchor's when none).
  absl::StatusOr<VerifyResult> VerifyRange(uint64_t from, uint64_t to, std::string* last_hash_raw);
  std::vector<std::shared_ptr<Segment>> SnapshotSegments() const;

  Options options_;
  int dir_fd_ = -1;

  // Serializes Append, CreateCheckpoint, PlanRetention and PruneThrough.
  absl::Mutex writer_mu_;
  // Dedup of event ids over the newest dedup_window events: 128-bit keys of the
  // ids (two independent 64-bit hashes) in insertion order.
  absl::flat_hash_map<absl::uint128, uint64_t> recent_ids_ ABSL_GUARDED_BY(writer_mu_);
  std::vector<absl::uint128> recent_ring_ ABSL_GUARDED_BY(writer_mu_);
  size_t recent_next_ ABSL_GUARDED_BY(writer_mu_) = 0;
  std::string buffer_ ABSL_GUARDED_BY(writer_mu_);
  std::vector<BatchEvent> batch_events_ ABSL_GUARDED_BY(writer_mu_);
  std::unique_ptr<BlockBuilder> builder_ ABSL_GUARDED_BY(writer_mu_);
  std::unique_ptr<DirectBuffer> direct_buffer_ ABSL_GUARDED_BY(writer_mu_);

  // What readers see: committed state only. Guarded by state_mu_ (writers of it
  // also hold writer_mu_).
  mutable absl::Mutex state_mu_;
  std::vector<std::shared_ptr<Segment>> segments_ ABSL_GUARDED_BY(state_mu_);
  uint64_t head_sequence_ ABSL_GUARDED_BY(state_mu_) = 0;
  std::string head_hash_raw_ ABSL_GUARDED_BY(state_mu_);  // 32 bytes
  uint64_t first_sequence_ ABSL_GUARDED_BY(state_mu_) = 1;
  // Checkpoints of the retained log (including the retention anchor).
  std::map<uint64_t, CheckpointRecord> checkpoints_ ABSL_GUARDED_BY(state_mu_);
  std::optional<CheckpointRecord> anchor_ ABSL_GUARDED_BY(state_mu_);
};

}  // namespace iotauth::audit
