#include "services/audit/log_audit_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/audit/canonical.h"
#include "services/audit/chain_check.h"
#include "services/audit/event_util.h"
#include "services/common/big_endian.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/common/log.h"
#include "services/common/posix_file.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {

using iotauth::audit::v1::AuditEvent;

namespace {

using big_endian::AppendU32;
using big_endian::AppendU64;
using big_endian::LoadU32;
using big_endian::LoadU64;
using big_endian::StoreU32;

// Segments are created with "IOTAUDL2". "IOTAUDL1" heads segments begun by builds
// that wrote canonical version 1 only; the first write to such an active segment
// rewrites its magic (MarkSegmentVersion2), so that an older build, which cannot
// read version 2 and would skip its frames as damage, refuses the segment instead
// of appending after them (a rollback cannot fork the log).
constexpr absl::string_view kSegmentMagic = "IOTAUDL2";
constexpr absl::string_view kSegmentMagicV1 = "IOTAUDL1";
constexpr absl::string_view kIndexMagic = "IOTAIDX1";
constexpr absl::string_view kAnchorMagic = "IOTAANC1";
constexpr size_t kSegmentHeader = 16;
// O_DIRECT alignment of offsets, lengths and memory, and how far ahead of the
// writes the active segment is zero-filled.
constexpr uint64_t kDirectAlign = 4096;
constexpr uint64_t kZeroAhead = 8 << 20;
// `n` rounded up to a whole number of kDirectAlign blocks.
constexpr uint64_t BlockCeil(uint64_t n) {
  return (n + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
}
constexpr size_t kFrameHeader = 5;
constexpr size_t kHashBytes = crypto::kSha256Bytes;
constexpr char kKindEvent = 'E';
constexpr char kKindCheckpoint = 'C';
constexpr size_t kCheckpointBody = 8 + kHashBytes + 8;
// Larger than any event gRPC accepts (4 MiB messages): a longer length is damage.
constexpr uint32_t kMaxFrameBody = 16U << 20;
// The sparse index keeps the offset of every kSparseEvery-th event of a segment.
constexpr uint64_t kSparseEvery = 64;

// Reads fixed-size fields from a byte string; ok() turns false past the end.
class Cursor {
 public:
  explicit Cursor(absl::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  absl::string_view Bytes(size_t n) {
    if (!ok_ || in_.size() < n) {
      ok_ = false;
      return {};
    }
    absl::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }
  uint64_t U64() {
    absl::string_view b = Bytes(8);
    return ok_ ? LoadU64(b.data()) : 0;
  }
  uint32_t U32() {
    absl::string_view b = Bytes(4);
    return ok_ ? LoadU32(b.data()) : 0;
  }
  uint8_t U8() {
    absl::string_view b = Bytes(1);
    return ok_ ? static_cast<uint8_t>(b[0]) : 0;
  }
  size_t remaining() const { return in_.size(); }

 private:
  absl::string_view in_;
  bool ok_ = true;
};

// UNAVAILABLE with reason AUDIT_LOG_IO: the log's files could not be read or written.
absl::Status IoError(absl::string_view message) {
  return WithErrorReason(absl::UnavailableError(message), "AUDIT_LOG_IO");
}

absl::Status ErrnoStatus(absl::string_view what, absl::string_view path) {
  const int err = errno;
  return IoError(absl::StrCat(
      "audit log: ", what, " ", path, ": ", std::strerror(err),
      err == ENOSPC || err == EDQUOT
          ? " (free space on the audit log's volume, or prune it with audit.retention_*; "
            "meanwhile commits are retried, and events given up are counted as dropped and "
            "recorded as a GAP once the log takes writes again)"
          : ""));
}

// Raw 32 bytes of a well-formed 64-digit hex hash ("" otherwise).
std::string FromHex(absl::string_view hex) {
  if (!IsWellFormedHash(hex)) return "";
  return absl::HexStringToBytes(hex);
}

const std::string& GenesisRaw() {
  static const std::string* const raw = new std::string(kHashBytes, '\0');
  return *raw;
}

// Self-consistency of an event frame: its canonical bytes hash, with its own
// prev_hash, to the hash stored in front of them.
bool SelfHashOk(absl::string_view hash_raw, absl::string_view canonical, const CanonicalFields& f) {
  unsigned char h[kHashBytes];
  if (!HashCanonical(canonical, f, h)) return false;
  return absl::string_view(reinterpret_cast<const char*>(h), kHashBytes) == hash_raw;
}

using posix_file::WriteAll;

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path);
  absl::StatusOr<std::string> out = posix_file::ReadToEnd(fd, path, ErrnoStatus);
  close(fd);
  return out;
}

// Writes `data` to `path` through a temporary file and rename; `sync` makes it
// durable (file and directory) before returning.
absl::Status ReplaceFile(const std::string& path, absl::string_view data, bool sync, int dir_fd) {
  return posix_file::ReplaceFile(path, data, sync, dir_fd, ErrnoStatus);
}

// Time range of a set of events (seconds).
struct TimeRange {
  bool has = false;
  int64_t min_s = 0;
  int64_t max_s = 0;
  void Add(int64_t s) {
    min_s = has ? std::min(min_s, s) : s;
    max_s = has ? std::max(max_s, s) : s;
    has = true;
  }
  void Add(const TimeRange& o) {
    if (!o.has) return;
    Add(o.min_s);
    Add(o.max_s);
  }
};

}  // namespace

// Summary of one complete block of kBlockEvents sequences (block_filter.h).
struct BlockSummary {
  TimeRange time;
  std::shared_ptr<const BlockFilter> filter;
};

// A 4 KiB-aligned buffer for O_DIRECT writes, reused across batches.
struct LogAuditStore::DirectBuffer {
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> data;
  size_t capacity = 0;
  char* Get(size_t n) {
    if (n > capacity) {
      void* p = nullptr;
      if (posix_memalign(&p, kDirectAlign, n) != 0) return nullptr;
      data.reset(static_cast<char*>(p));
      capacity = n;
    }
    return data.get();
  }
};

// The block being filled by the writer.
struct LogAuditStore::BlockBuilder {
  uint64_t block = 0;
  TimeRange time;
  std::unique_ptr<BlockFilter> filter = std::make_unique<BlockFilter>();
  // The tenant added last: most events repeat it, and adding a key twice sets the
  // same bits, so the repeat skips hashing it.
  std::string last_tenant;
  bool has_tenant = false;

  void AddTenant(absl::string_view tenant_id) {
    if (has_tenant && tenant_id == last_tenant) return;
    filter->AddTenant(tenant_id);
    last_tenant.assign(tenant_id.data(), tenant_id.size());
    has_tenant = true;
  }
  // Starts block `next` with an empty filter and time range.
  void Reset(uint64_t next) {
    block = next;
    time = TimeRange();
    filter = std::make_unique<BlockFilter>();
    has_tenant = false;
  }
};

struct LogAuditStore::Segment {
  uint64_t first = 0;     // first sequence this segment holds
  uint64_t capacity = 0;  // events_per_segment
  std::string path;
  std::string index_path;
  int fd = -1;  // buffered: reads (and writes when direct I/O is unavailable)
  // Writer thread only (under writer_mu_): the active segment's O_DIRECT fd, how
  // far the file is written (data or zeros; writes below are overwrites), and the
  // bytes of its last partial 4 KiB block (what a direct write of the next batch
  // must repeat in front of it).
  int wfd = -1;
  uint64_t zeroed_end = 0;
  std::string tail;
  bool v1_magic = false;  // headed "IOTAUDL1": rewritten before the first write
  // Mutable fields: guarded by the store's state_mu_.
  uint64_t size = 0;                 // committed bytes
  uint64_t last = 0;                 // last committed sequence; first - 1 when empty
  std::vector<uint64_t> sparse;      // offset of event first + i * kSparseEvery
  std::vector<BlockSummary> blocks;  // the complete blocks, from the segment's first
  TimeRange time;

  uint64_t end() const { return first + capacity - 1; }
  uint64_t first_block() const { return (first - 1) / kBlockEvents; }
  ~Segment() {
    if (fd >= 0) close(fd);
    if (wfd >= 0) close(wfd);
  }
};

namespace {

using Segment = LogAuditStore::Segment;

// Whether `fd` is still the file at `path`: not removed, renamed over or replaced
// (by a copy renamed into its place) behind the process's back. Reads and writes go
// through descriptors opened at start, which would otherwise go on seeing, and
// writing to, a file no longer in the log.
bool StillAtPath(int fd, const std::string& path) {
  struct stat open_file {};
  struct stat at_path {};
  if (fstat(fd, &open_file) != 0 || stat(path.c_str(), &at_path) != 0) return false;
  return open_file.st_nlink > 0 && open_file.st_dev == at_path.st_dev &&
         open_file.st_ino == at_path.st_ino;
}

// One frame read from a segment.
struct Frame {
  uint64_t offset = 0;
  char kind = 0;
  absl::string_view body;  // valid until the next Next()
};

// Reads the frames of one segment file in [start, end), buffered.
class FrameReader {
 public:
  enum Result { kFrame, kEnd, kTruncated, kBadFrame, kIoError };

  FrameReader(int fd, uint64_t start, uint64_t end) : fd_(fd), pos_(start), end_(end) {}

  Result Next(Frame* f) {
    if (pos_ >= end_) return kEnd;
    if (end_ - pos_ < kFrameHeader) return kTruncated;
    if (!Ensure(kFrameHeader)) return kIoError;
    const char* h = buf_.data() + (pos_ - buf_start_);
    const uint32_t len = LoadU32(h);
    const char kind = h[4];
    if (len > kMaxFrameBody || (kind != kKindEvent && kind != kKindCheckpoint)) return kBadFrame;
    if (end_ - pos_ - kFrameHeader < len) return kTruncated;
    if (!Ensure(kFrameHeader + len)) return kIoError;
    f->offset = pos_;
    f->kind = kind;
    f->body = absl::string_view(buf_.data() + (pos_ - buf_start_) + kFrameHeader, len);
    pos_ += kFrameHeader + len;
    return kFrame;
  }
  uint64_t position() const { return pos_; }

 private:
  // Makes [pos_, pos_ + n) available in buf_.
  bool Ensure(size_t n) {
    if (pos_ >= buf_start_ && pos_ + n <= buf_start_ + buf_.size()) return true;
    const size_t want = std::max<size_t>(n, kReadChunk);
    const size_t len = static_cast<size_t>(std::min<uint64_t>(want, end_ - pos_));
    if (len < n) return false;
    buf_.resize(len);
    size_t got = 0;
    while (got < len) {
      const ssize_t r = pread(fd_, buf_.data() + got, len - got, static_cast<off_t>(pos_ + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    buf_start_ = pos_;
    return true;
  }

  static constexpr size_t kReadChunk = 256 << 10;
  int fd_;
  uint64_t pos_;
  uint64_t end_;
  std::string buf_;
  uint64_t buf_start_ = 0;
};

// An event frame's parts.
struct EventFrame {
  absl::string_view hash_raw;
  absl::string_view canonical;
  CanonicalFields fields;
};

bool ParseEventFrame(absl::string_view body, EventFrame* e) {
  if (body.size() < kHashBytes) return false;
  e->hash_raw = body.substr(0, kHashBytes);
  e->canonical = body.substr(kHashBytes);
  return ParseCanonical(e->canonical, &e->fields);
}

bool ParseCheckpointFrame(absl::string_view body, CheckpointRecord* c) {
  if (body.size() != kCheckpointBody) return false;
  c->sequence = LoadU64(body.data());
  c->head_hash = crypto::HexEncode(body.substr(8, kHashBytes));
  c->time = absl::FromUnixNanos(static_cast<int64_t>(LoadU64(body.data() + 8 + kHashBytes)));
  return true;
}

void AppendCheckpointFrame(const CheckpointRecord& c, absl::string_view hash_raw,
                           std::string* out) {
  AppendU32(static_cast<uint32_t>(kCheckpointBody), out);
  out->push_back(kKindCheckpoint);
  AppendU64(c.sequence, out);
  out->append(hash_raw.data(), hash_raw.size());
  AppendU64(static_cast<uint64_t>(absl::ToUnixNanos(c.time)), out);
}

absl::uint128 IdKey(absl::string_view id) {
  const uint64_t hi = absl::Hash<std::pair<int, absl::string_view>>{}({0x5eed, id});
  return absl::MakeUint128(hi, StableHash64(id));
}

bool Matches(const CanonicalFields& c, const EventFilter& f) {
  if (!f.tenant_id.empty() && c.tenant_id != f.tenant_id) return false;
  if (!f.device_id.empty() && c.device_id != f.device_id) return false;
  if (f.type != iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED && c.type != f.type) return false;
  if (f.outcome != iotauth::audit::v1::OUTCOME_UNSPECIFIED && c.outcome != f.outcome) {
    return false;
  }
  if (f.start_time || f.end_time) {
    if (!c.has_time) return false;
    const absl::Time t = absl::FromUnixSeconds(c.time_seconds) + absl::Nanoseconds(c.time_nanos);
    if (f.start_time && t < *f.start_time) return false;
    if (f.end_time && t >= *f.end_time) return false;
  }
  return true;
}

bool BlockMayMatch(const BlockSummary& b, const EventFilter& f) {
  if (f.start_time || f.end_time) {
    if (!b.time.has) return false;
    if (f.start_time && b.time.max_s < absl::ToUnixSeconds(*f.start_time)) return false;
    if (f.end_time && b.time.min_s > absl::ToUnixSeconds(*f.end_time)) return false;
  }
  if (!f.tenant_id.empty() && !b.filter->MayContainTenant(f.tenant_id)) return false;
  if (!f.device_id.empty() && !b.filter->MayContainDevice(f.device_id)) return false;
  return true;
}

// Whether an event frame's `body` (starting at file offset `offset`) ends in zeros
// the way a torn write leaves it: a run of 8, or everything after the last 512-byte
// sector boundary it crosses (a device persists whole sectors). A complete event
// frame never does: it ends in version 2's end marker (0xA5), or in version 1's
// 64-digit hex prev_hash, with no zero byte.
bool EndsInZeros(absl::string_view body, uint64_t offset) {
  auto zeros = [](const char* from, const char* to) {
    return std::all_of(from, to, [](char c) { return c == '\0'; });
  };
  constexpr size_t kRun = 8;
  constexpr uint64_t kSector = 512;
  if (body.size() >= kRun && zeros(body.end() - kRun, body.end())) return true;
  const uint64_t end = offset + body.size();
  const uint64_t boundary = (end - 1) / kSector * kSector;
  return !body.empty() && boundary > offset && zeros(body.data() + (boundary - offset), body.end());
}

// Whether bytes [from, file_size) of `fd` are all zero.
absl::StatusOr<bool> RestIsZero(int fd, uint64_t from, uint64_t file_size) {
  std::string buf(
      static_cast<size_t>(std::min<uint64_t>(file_size - std::min(from, file_size), 1 << 20)),
      '\0');
  for (uint64_t off = from; off < file_size; off += buf.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), file_size - off));
    if (pread(fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      return IoError("audit log: cannot read a segment's tail");
    }
    if (!std::all_of(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n),
                     [](char c) { return c == '\0'; })) {
      return false;
    }
  }
  return true;
}

// Drops the clean cached pages of a segment. A buffered read racing a direct
// write of the same block can leave the old block in the page cache; reads that
// find committed bytes that do not parse call this and read again.
void DropCachedPages(int fd) { (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); }

// What a scan of a whole segment file found.
struct SegmentScan {
  uint64_t valid_size = kSegmentHeader;  // bytes up to the end of the last frame kept
  uint64_t last = 0;                     // highest event sequence; 0 = none
  std::string last_hash_raw;
  std::vector<uint64_t> sparse;
  std::vector<BlockSummary> blocks;  // complete blocks
  TimeRange time;
  std::vector<CheckpointRecord> checkpoints;
  std::vector<std::pair<uint64_t, std::string>> ids;  // (sequence, event_id), for dedup
  // Bytes after valid_size: a write torn by a crash (non-zero bytes discarded),
  // or zeros (the active segment's preallocation, or a crash that left blocks
  // allocated but unwritten).
  bool truncated_tail = false;
  bool zero_tail = false;
  // The active segment's creation did not complete (no header written, nothing but
  // zeros): no event in it was ever reported committed; the file goes.
  bool unfinished = false;
  bool v1_magic = false;  // the header says "IOTAUDL1"
};

enum class ScanMode {
  // The active segment: a torn tail (a frame cut short, a zero-filled end, a
  // damaged last frame) is reported through valid_size; damaged framing before
  // the end fails (appending after it would bury the evidence).
  kActive,
  // A sealed segment: reading stops at damaged framing (valid_size says where);
  // the file is left as it is for Verify to report.
  kSealed,
};

// Reads every frame of `seg`'s file.
absl::StatusOr<SegmentScan> ScanSegment(const Segment& seg, uint64_t file_size, ScanMode mode,
                                        bool want_ids) {
  const bool recover = mode == ScanMode::kActive;
  SegmentScan out;
  char header[kSegmentHeader];
  if (file_size < kSegmentHeader ||
      pread(seg.fd, header, kSegmentHeader, 0) != static_cast<ssize_t>(kSegmentHeader)) {
    if (recover) {  // a segment whose creation did not complete: nothing committed
      out.valid_size = 0;
      out.unfinished = true;
      return out;
    }
    return absl::DataLossError(absl::StrCat("audit log: segment ", seg.path, " has no header"));
  }
  if (recover && std::all_of(header, header + kSegmentHeader, [](char c) { return c == '\0'; })) {
    // Created and zero-filled ahead, but the crash came before the first batch
    // (whose write starts with the header) was written: nothing in it was ever
    // committed. Only an all-zero file qualifies; anything else is damage.
    IOTAUTH_ASSIGN_OR_RETURN(const bool zero, RestIsZero(seg.fd, kSegmentHeader, file_size));
    if (zero) {
      out.valid_size = 0;
      out.unfinished = true;
      return out;
    }
  }
  const absl::string_view magic(header, 8);
  out.v1_magic = magic == kSegmentMagicV1;
  const bool known = magic == kSegmentMagic || out.v1_magic;
  if (!known && magic.substr(0, 7) == "IOTAUDL") {
    return absl::FailedPreconditionError(absl::StrCat("audit log: segment ", seg.path,
                                                      " was written by a newer iotauthd (format ",
                                                      magic, "); run that build or a newer one"));
  }
  if (!known || LoadU64(header + 8) != seg.first) {
    return absl::DataLossError(absl::StrCat("audit log: segment ", seg.path,
                                            " has a bad header (not an iotauth audit segment, or "
                                            "renamed)"));
  }
  const uint64_t blocks = seg.capacity / kBlockEvents;
  std::vector<BlockSummary> building(blocks);
  std::vector<std::unique_ptr<BlockFilter>> filters(blocks);
  std::vector<uint64_t> block_count(blocks, 0);
  std::vector<std::pair<uint64_t, uint64_t>> sparse;  // (index, offset)
  FrameReader reader(seg.fd, kSegmentHeader, file_size);
  Frame f;
  for (;;) {
    const FrameReader::Result r = reader.Next(&f);
    if (r == FrameReader::kEnd) break;
    if (r == FrameReader::kIoError) {
      return IoError(absl::StrCat("audit log: cannot read ", seg.path));
    }
    if (r != FrameReader::kFrame) {
      const uint64_t at = reader.position();
      // The normal end of the active segment is its zero-filled preallocation; a
      // crash can also leave a frame cut short. Elsewhere either is damage.
      if (r == FrameReader::kBadFrame) {
        IOTAUTH_ASSIGN_OR_RETURN(out.zero_tail, RestIsZero(seg.fd, at, file_size));
        if (out.zero_tail) break;
      }
      if (recover && r == FrameReader::kTruncated) {
        out.truncated_tail = true;
        break;
      }
      if (!recover) {
        log::Error(
            "audit log: a sealed segment is damaged; reading stops there (verify "
            "reports it)",
            {{"segment", seg.path}, {"offset", absl::StrCat(at)}});
        break;
      }
      return absl::DataLossError(absl::StrCat(
          "audit log: segment ", seg.path, " is damaged at offset ", at,
          " (a frame length or kind that does not parse). Move the file aside to start, and keep "
          "it as evidence; `iotauthctl audit verify` then reports the missing events"));
    }
    if (f.kind == kKindCheckpoint) {
      CheckpointRecord c;
      const bool parsed = ParseCheckpointFrame(f.body, &c);
      // The read of the rest of the file only for a checkpoint that does not match.
      if (recover &&
          (!parsed || c.sequence != out.last ||
           crypto::HexEncode(out.last_hash_raw) != c.head_hash) &&
          RestIsZero(seg.fd, reader.position(), file_size).value_or(false)) {
        // The last frame is a checkpoint that does not name the event before it: a
        // write of it torn by a crash (never reported done). Kept, it would read as
        // tampering forever.
        out.truncated_tail = true;
        break;
      }
      if (parsed) out.checkpoints.push_back(c);
      out.valid_size = reader.position();
      continue;
    }
    EventFrame e;
    const bool parsed = ParseEventFrame(f.body, &e);
    if (recover && (!parsed || !SelfHashOk(e.hash_raw, e.canonical, e.fields)) &&
        EndsInZeros(f.body, f.offset + kFrameHeader) &&
        RestIsZero(seg.fd, reader.position(), file_size).value_or(false)) {
      // The last frame of the file ends in zeros where its end belongs:
      // blocks allocated by the crashed write but never filled. (A complete last
      // frame that is merely wrong stays, for Verify to name.)
      out.truncated_tail = true;
      break;
    }
    out.valid_size = reader.position();
    if (!parsed) continue;  // damaged content: Verify names it
    const uint64_t seq = e.fields.sequence;
    if (seq < seg.first || seq > seg.end()) continue;  // out of place: Verify names it
    if (seq >= out.last) {
      out.last = seq;
      out.last_hash_raw = std::string(e.hash_raw);
    }
    if ((seq - seg.first) % kSparseEvery == 0) {
      sparse.emplace_back((seq - seg.first) / kSparseEvery, f.offset);
    }
    const uint64_t b = (seq - seg.first) / kBlockEvents;
    if (!filters[b]) filters[b] = std::make_unique<BlockFilter>();
    filters[b]->AddTenant(e.fields.tenant_id);
    filters[b]->AddDevice(e.fields.device_id);
    ++block_count[b];
    if (e.fields.has_time) {
      building[b].time.Add(e.fields.time_seconds);
      out.time.Add(e.fields.time_seconds);
    }
    if (want_ids) out.ids.emplace_back(seq, std::string(e.fields.event_id));
  }
  // Sparse offsets: only a gap-free prefix is usable (later lookups check anyway).
  for (const auto& [i, off] : sparse) {
    if (i != out.sparse.size()) break;
    out.sparse.push_back(off);
  }
  // Complete blocks: a prefix of blocks whose every sequence is at or below the
  // last event (a damaged frame keeps its block summarised from the others; the
  // filter may then over-approximate, never miss what is stored readable).
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t block_end = seg.first + (b + 1) * kBlockEvents - 1;
    if (out.last < block_end) break;
    BlockSummary s;
    s.time = building[b].time;
    s.filter = filters[b] ? std::shared_ptr<const BlockFilter>(std::move(filters[b]))
                          : std::make_shared<const BlockFilter>();
    out.blocks.push_back(std::move(s));
  }
  return out;
}

// The .idx file of a sealed segment: everything Open would otherwise scan for.
std::string EncodeIndex(const Segment& seg, const std::vector<CheckpointRecord>& checkpoints) {
  std::string out(kIndexMagic);
  AppendU64(seg.first, &out);
  AppendU64(seg.capacity, &out);
  AppendU64(seg.size, &out);
  AppendU64(seg.last, &out);
  out.push_back(seg.time.has ? 1 : 0);
  AppendU64(static_cast<uint64_t>(seg.time.min_s), &out);
  AppendU64(static_cast<uint64_t>(seg.time.max_s), &out);
  AppendU32(static_cast<uint32_t>(seg.sparse.size()), &out);
  for (uint64_t off : seg.sparse) AppendU64(off, &out);
  AppendU32(static_cast<uint32_t>(seg.blocks.size()), &out);
  for (const BlockSummary& b : seg.blocks) {
    out.push_back(b.time.has ? 1 : 0);
    AppendU64(static_cast<uint64_t>(b.time.min_s), &out);
    AppendU64(static_cast<uint64_t>(b.time.max_s), &out);
    out.append(b.filter->bytes());
  }
  AppendU32(static_cast<uint32_t>(checkpoints.size()), &out);
  for (const CheckpointRecord& c : checkpoints) {
    AppendU64(c.sequence, &out);
    out.append(FromHex(c.head_hash));
    AppendU64(static_cast<uint64_t>(absl::ToUnixNanos(c.time)), &out);
  }
  out.append(crypto::Sha256(out));
  return out;
}

// Fills `seg` from its .idx when that is intact and describes the file as it is.
bool DecodeIndex(absl::string_view data, uint64_t file_size, Segment* seg,
                 std::vector<CheckpointRecord>* checkpoints) {
  if (data.size() < kHashBytes) return false;
  const absl::string_view body = data.substr(0, data.size() - kHashBytes);
  if (crypto::Sha256(body) != data.substr(body.size())) return false;
  Cursor c(body);
  if (c.Bytes(8) != kIndexMagic || c.U64() != seg->first || c.U64() != seg->capacity ||
      c.U64() != file_size) {
    return false;
  }
  seg->size = file_size;
  seg->last = c.U64();
  seg->time.has = c.U8() != 0;
  seg->time.min_s = static_cast<int64_t>(c.U64());
  seg->time.max_s = static_cast<int64_t>(c.U64());
  const uint32_t n_sparse = c.U32();
  if (!c.ok() || n_sparse > seg->capacity / kSparseEvery + 1) return false;
  seg->sparse.resize(n_sparse);
  for (uint64_t& off : seg->sparse) off = c.U64();
  const uint32_t n_blocks = c.U32();
  if (!c.ok() || n_blocks > seg->capacity / kBlockEvents) return false;
  seg->blocks.resize(n_blocks);
  for (BlockSummary& b : seg->blocks) {
    b.time.has = c.U8() != 0;
    b.time.min_s = static_cast<int64_t>(c.U64());
    b.time.max_s = static_cast<int64_t>(c.U64());
    auto filter = BlockFilter::FromBytes(c.Bytes(BlockFilter::kBits / 8));
    if (!c.ok() || !filter.ok()) return false;
    b.filter = std::make_shared<const BlockFilter>(*std::move(filter));
  }
  const uint32_t n_ckpt = c.U32();
  if (!c.ok() || n_ckpt > c.remaining() / kCheckpointBody) return false;
  for (uint32_t i = 0; i < n_ckpt; ++i) {
    CheckpointRecord r;
    r.sequence = c.U64();
    r.head_hash = crypto::HexEncode(c.Bytes(kHashBytes));
    r.time = absl::FromUnixNanos(static_cast<int64_t>(c.U64()));
    checkpoints->push_back(std::move(r));
  }
  return c.ok() && c.remaining() == 0;
}

// Whether the summaries of a sealed segment (what queries and retention read; for a
// segment opened from its .idx, what the .idx said) describe its frames, as `scan`
// read them. The .idx only carries a checksum anyone can recompute: a forged one
// could hide events from queries or have retention prune early. Caller holds the
// state lock.
bool SummariesMatch(const Segment& seg, const SegmentScan& scan,
                    const std::map<uint64_t, CheckpointRecord>& checkpoints) {
  const uint64_t last = scan.last != 0 ? scan.last : seg.first - 1;
  auto same_time = [](const TimeRange& a, const TimeRange& b) {
    return a.has == b.has && (!a.has || (a.min_s == b.min_s && a.max_s == b.max_s));
  };
  if (last != seg.last || !same_time(scan.time, seg.time) || scan.sparse != seg.sparse ||
      scan.blocks.size() != seg.blocks.size()) {
    return false;
  }
  for (size_t i = 0; i < scan.blocks.size(); ++i) {
    const BlockSummary& a = scan.blocks[i];
    const BlockSummary& b = seg.blocks[i];
    if (!same_time(a.time, b.time) || (a.filter == nullptr) != (b.filter == nullptr) ||
        (a.filter != nullptr && a.filter->bytes() != b.filter->bytes())) {
      return false;
    }
  }
  // Every checkpoint stored in the file is the one kept, and none is kept for an
  // event inside the segment that the file does not hold (one for its last event
  // may be stored in the next segment).
  size_t inside = 0;
  for (const CheckpointRecord& c : scan.checkpoints) {
    auto it = checkpoints.find(c.sequence);
    if (it != checkpoints.end() && it->second.head_hash != c.head_hash) return false;
    if (c.sequence >= seg.first && c.sequence < seg.last) ++inside;
  }
  size_t kept_inside = 0;
  for (auto it = checkpoints.lower_bound(seg.first);
       it != checkpoints.end() && it->first < seg.last; ++it) {
    ++kept_inside;
  }
  return kept_inside == inside;
}

// Where to start reading `seg` for the first event with sequence >= `seq`: the
// sparse entry at or before it (or the header). Caller holds the state lock.
uint64_t StartOffset(const Segment& seg, uint64_t seq) {
  if (seq <= seg.first || seg.sparse.empty()) return kSegmentHeader;
  const uint64_t i = (seq - seg.first) / kSparseEvery;
  return seg.sparse[std::min<uint64_t>(i, seg.sparse.size() - 1)];
}

}  // namespace

// What one Append writes: byte ranges of buffer_ per segment, and the state the
// store takes on once they are durable.
struct LogAuditStore::Pending {
  struct Chunk {
    std::shared_ptr<Segment> segment;
    bool created = false;
    uint64_t offset = 0;  // file offset of the chunk's first byte
    size_t begin = 0;     // range in buffer_
    size_t end = 0;
    uint64_t last = 0;  // last sequence written in it
    // The segment's tail (its bytes in the last partial block) precedes `begin` in
    // buffer_, starting at a kDirectAlign boundary: a direct write can go out of
    // buffer_ in place.
    bool tail_in_buffer = false;
  };
  std::vector<Chunk> chunks;
  std::vector<std::pair<uint64_t, uint64_t>> sparse;  // (sequence, offset)
  std::vector<CheckpointRecord> checkpoints;
  std::vector<std::pair<absl::uint128, uint64_t>> ids;
  uint64_t head = 0;
  std::string head_raw;
};

std::string LogAuditStore::SegmentFileName(uint64_t first_sequence) {
  return absl::StrFormat("%020d.seg", first_sequence);
}

LogAuditStore::LogAuditStore(Options options)
    : options_(std::move(options)), builder_(std::make_unique<BlockBuilder>()) {}

LogAuditStore::~LogAuditStore() {
  if (dir_fd_ >= 0) close(dir_fd_);
}

absl::StatusOr<std::unique_ptr<LogAuditStore>> LogAuditStore::Open(Options options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("audit log: empty directory");
  if (options.events_per_segment == 0 || options.events_per_segment % kBlockEvents != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "audit log: events_per_segment must be a positive multiple of ", kBlockEvents));
  }
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  if (mkdir(options.dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return ErrnoStatus("cannot create directory", options.dir);
  }
  std::unique_ptr<LogAuditStore> store(new LogAuditStore(std::move(options)));
  store->dir_fd_ = open(store->options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (store->dir_fd_ < 0) return ErrnoStatus("cannot open directory", store->options_.dir);
  IOTAUTH_RETURN_IF_ERROR(store->Recover());
  return store;
}

absl::Status LogAuditStore::Recover() {
  const std::string& dir = options_.dir;
  const uint64_t cap = options_.events_per_segment;
  std::vector<uint64_t> firsts;
  {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return ErrnoStatus("cannot list", dir);
    while (dirent* ent = readdir(d)) {
      absl::string_view name(ent->d_name);
      uint64_t first = 0;
      if (name.size() == 24 && absl::EndsWith(name, ".seg") &&
          absl::SimpleAtoi(name.substr(0, 20), &first) && first > 0) {
        firsts.push_back(first);
      }
    }
    closedir(d);
  }
  std::sort(firsts.begin(), firsts.end());

  absl::MutexLock wl(&writer_mu_);
  absl::MutexLock sl(&state_mu_);
  // The retention anchor.
  {
    const std::string path = absl::StrCat(dir, "/anchor");
    if (access(path.c_str(), F_OK) == 0) {
      IOTAUTH_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(path));
      Cursor c(data);
      CheckpointRecord a;
      const bool magic = c.Bytes(8) == kAnchorMagic;
      a.sequence = c.U64();
      const std::string raw(c.Bytes(kHashBytes));
      a.time = absl::FromUnixNanos(static_cast<int64_t>(c.U64()));
      const absl::string_view sum = c.Bytes(kHashBytes);
      if (!magic || !c.ok() || c.remaining() != 0 ||
          crypto::Sha256(absl::string_view(data).substr(0, data.size() - kHashBytes)) != sum) {
        return absl::DataLossError(absl::StrCat(
            "audit log: ", path, " is damaged; it anchors the retained log after pruning"));
      }
      a.head_hash = crypto::HexEncode(raw);
      anchor_ = a;
      checkpoints_[a.sequence] = a;
      first_sequence_ = a.sequence + 1;
    }
  }
  head_sequence_ = anchor_ ? anchor_->sequence : 0;
  head_hash_raw_ = anchor_ ? FromHex(anchor_->head_hash) : GenesisRaw();

  // Ids of the newest events (dedup): the active segment's, and the previous
  // segment's when the active one holds fewer than the window.
  std::vector<std::pair<uint64_t, std::string>> active_ids;
  bool head_hash_known = true;
  for (size_t i = 0; i < firsts.size(); ++i) {
    const uint64_t first = firsts[i];
    if ((first - 1) % cap != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("audit log: segment ", SegmentFileName(first), " in ", dir,
                       " does not start at a multiple of events_per_segment (", cap,
                       "): the log was written with another segment size; open it with that size"));
    }
    auto seg = std::make_shared<Segment>();
    seg->first = first;
    seg->capacity = cap;
    seg->path = absl::StrCat(dir, "/", SegmentFileName(first));
    seg->index_path = seg->path.substr(0, seg->path.size() - 4) + ".idx";
    const bool active = i + 1 == firsts.size();
    if (anchor_ && seg->end() <= anchor_->sequence && !active) {
      // Wholly pruned: retention wrote the anchor, then a crash came before these
      // unlinks were durable. Finish the pruning.
      log::Info("audit log: removing a segment retention had pruned", {{"segment", seg->path}});
      if ((unlink(seg->path.c_str()) != 0 && errno != ENOENT) ||
          (unlink(seg->index_path.c_str()) != 0 && errno != ENOENT)) {
        return ErrnoStatus("cannot remove", seg->path);
      }
      fsync(dir_fd_);
      continue;
    }
    seg->fd = open(seg->path.c_str(), (active ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (seg->fd < 0) return ErrnoStatus("cannot open", seg->path);
    struct stat st {};
    if (fstat(seg->fd, &st) != 0) return ErrnoStatus("cannot stat", seg->path);
    auto file_size = static_cast<uint64_t>(st.st_size);
    seg->last = first - 1;

    std::vector<CheckpointRecord> ckpts;
    bool from_index = false;
    if (!active && access(seg->index_path.c_str(), F_OK) == 0) {
      auto data = ReadWholeFile(seg->index_path);
      from_index = data.ok() && DecodeIndex(*data, file_size, seg.get(), &ckpts);
      if (!from_index) {
        seg->sparse.clear();
        seg->blocks.clear();
        seg->time = TimeRange();
        seg->last = first - 1;
        ckpts.clear();
      }
    }
    std::string last_hash_raw;
    if (!from_index) {
      if (active) log::Info("audit log: recovering", {{"segment", seg->path}});
      IOTAUTH_ASSIGN_OR_RETURN(
          SegmentScan scan,
          ScanSegment(*seg, file_size, active ? ScanMode::kActive : ScanMode::kSealed, active));
      if (scan.unfinished) {
        log::Warn(
            "audit log: removing a segment whose creation a crash interrupted (it holds no "
            "event)",
            {{"segment", seg->path}, {"bytes", absl::StrCat(file_size)}});
        close(seg->fd);
        seg->fd = -1;
        if (unlink(seg->path.c_str()) != 0 || fsync(dir_fd_) != 0) {
          return ErrnoStatus("cannot remove", seg->path);
        }
        continue;
      }
      if (scan.truncated_tail) {
        log::Warn(
            "audit log: cutting off a torn write at the end of the log (events never "
            "reported committed)",
            {{"segment", seg->path},
             {"offset", absl::StrCat(scan.valid_size)},
             {"bytes", absl::StrCat(file_size - scan.valid_size)}});
        if (ftruncate(seg->fd, static_cast<off_t>(scan.valid_size)) != 0 ||
            fdatasync(seg->fd) != 0) {
          return ErrnoStatus("cannot truncate", seg->path);
        }
        file_size = scan.valid_size;
      } else if (scan.zero_tail && !active) {
        // A segment sealed by a batch whose cut of the preallocation did not
        // happen (crash): sealed files end at their last frame.
        if (truncate(seg->path.c_str(), static_cast<off_t>(scan.valid_size)) != 0) {
          return ErrnoStatus("cannot truncate", seg->path);
        }
        file_size = scan.valid_size;
      }
      seg->size = scan.valid_size;
      seg->v1_magic = scan.v1_magic;
      seg->last = scan.last != 0 ? scan.last : first - 1;
      seg->sparse = std::move(scan.sparse);
      seg->blocks = std::move(scan.blocks);
      seg->time = scan.time;
      ckpts = std::move(scan.checkpoints);
      last_hash_raw = std::move(scan.last_hash_raw);
      if (active) active_ids = std::move(scan.ids);
      if (!active && seg->size == file_size) {
        // A sealed segment without a usable .idx: write one (best effort).
        absl::Status s = ReplaceFile(seg->index_path, EncodeIndex(*seg, ckpts), false, dir_fd_);
        if (!s.ok()) log::Warn("audit log: cannot write index", {{"error", s.ToString()}});
      }
    }
    for (CheckpointRecord& c : ckpts) {
      if (c.sequence >= first_sequence_) checkpoints_[c.sequence] = std::move(c);
    }
    if (seg->last >= seg->first && seg->last > head_sequence_) {
      head_sequence_ = seg->last;
      head_hash_raw_ = last_hash_raw;
      head_hash_known = !from_index;
    }
    segments_.push_back(std::move(seg));
  }
  if (!segments_.empty()) {
    IOTAUTH_RETURN_IF_ERROR(PrepareForWrites(segments_.back().get()));
  }
  if (!head_hash_known) {
    // The head lies in a sealed segment read from its index (the active one is
    // empty): read its last event.
    for (const auto& seg : segments_) {
      if (seg->last < seg->first || seg->last != head_sequence_) continue;
      IOTAUTH_ASSIGN_OR_RETURN(SegmentScan s,
                               ScanSegment(*seg, seg->size, ScanMode::kSealed, false));
      head_hash_raw_ = s.last_hash_raw;
      break;
    }
  }
  // The dedup window: the newest `dedup_window` ids, from as many segments back as
  // it takes (the active segment's were collected by its scan, if it survived).
  {
    const auto window = static_cast<size_t>(options_.dedup_window);
    std::vector<std::vector<std::pair<uint64_t, std::string>>> newest_first;
    size_t have = active_ids.size();
    const bool active_scanned = !segments_.empty() && !active_ids.empty();
    for (size_t j = segments_.size() - (active_scanned ? 1 : 0); j > 0 && have < window; --j) {
      const Segment& prev = *segments_[j - 1];
      if (prev.last < prev.first) continue;
      IOTAUTH_ASSIGN_OR_RETURN(SegmentScan s,
                               ScanSegment(prev, prev.size, ScanMode::kSealed, true));
      const size_t keep = window - have;
      if (s.ids.size() > keep) {
        s.ids.erase(s.ids.begin(), s.ids.end() - static_cast<std::ptrdiff_t>(keep));
      }
      have += s.ids.size();
      newest_first.push_back(std::move(s.ids));
    }
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it) {
      for (auto& [seq, id] : *it) Remember(IdKey(id), seq);
    }
  }
  for (auto& [seq, id] : active_ids) Remember(IdKey(id), seq);
  if (!segments_.empty() && first_sequence_ == 1 && segments_.front()->first > 1) {
    log::Warn(
        "audit log: the oldest segment does not start at 1 and there is no retention "
        "anchor (segments were removed); verify will report the missing events",
        {{"first_segment", segments_.front()->path}});
  }
  // The block being filled.
  builder_ = std::make_unique<BlockBuilder>();
  builder_->block = head_sequence_ / kBlockEvents;
  if (head_sequence_ % kBlockEvents != 0 && !segments_.empty()) {
    // Rebuild the partial block's filter from the active segment.
    const std::shared_ptr<Segment>& seg = segments_.back();
    FrameReader reader(seg->fd, kSegmentHeader, seg->size);
    Frame f;
    const uint64_t block_first = builder_->block * kBlockEvents + 1;
    while (reader.Next(&f) == FrameReader::kFrame) {
      EventFrame e;
      if (f.kind != kKindEvent || !ParseEventFrame(f.body, &e)) continue;
      if (e.fields.sequence < block_first) continue;
      builder_->AddTenant(e.fields.tenant_id);
      builder_->filter->AddDevice(e.fields.device_id);
      if (e.fields.has_time) builder_->time.Add(e.fields.time_seconds);
    }
  }
  return absl::OkStatus();
}

void LogAuditStore::Remember(absl::uint128 key, uint64_t sequence) {
  const size_t window = static_cast<size_t>(std::max<uint64_t>(options_.dedup_window, 1));
  if (recent_ring_.size() < window) {
    recent_ring_.push_back(key);
  } else {
    recent_ids_.erase(recent_ring_[recent_next_]);
    recent_ring_[recent_next_] = key;
    recent_next_ = (recent_next_ + 1) % window;
  }
  recent_ids_[key] = sequence;
}

absl::StatusOr<std::vector<AppendedEvent>> LogAuditStore::Append(std::vector<AuditEvent>* events) {
  return AppendEvents(events, /*deduplicate=*/true);
}

absl::StatusOr<std::vector<AppendedEvent>> LogAuditStore::AppendFresh(
    std::vector<AuditEvent>* events) {
  return AppendEvents(events, /*deduplicate=*/false);
}

absl::StatusOr<std::vector<AppendedEvent>> LogAuditStore::AppendEncoded(const EncodedBatch& batch) {
  bool fresh = true;
  for (const EncodedEvent& e : batch.events) fresh = fresh && e.fresh;
  return AppendCore(batch, /*deduplicate=*/!fresh, nullptr);
}

absl::StatusOr<std::vector<AppendedEvent>> LogAuditStore::AppendEvents(
    std::vector<AuditEvent>* events, bool deduplicate) {
  // AppendCore checks each encoding (event_id, time) before anything is written.
  std::string encoded;
  std::vector<EncodedEvent> parts(events->size());
  for (size_t i = 0; i < events->size(); ++i) {
    parts[i].offset = encoded.size();
    AppendUnchainedEncoding((*events)[i], &encoded);
    parts[i].size = encoded.size() - parts[i].offset;
  }
  std::string chain;
  IOTAUTH_ASSIGN_OR_RETURN(std::vector<AppendedEvent> results,
                           AppendCore(EncodedBatch{encoded, parts}, deduplicate, &chain));
  // The stored form back into the events: `chain` is the head before the batch,
  // then each written event's hash.
  size_t at = 0;
  for (size_t i = 0; i < events->size(); ++i) {
    AuditEvent& e = (*events)[i];
    e.set_sequence(results[i].sequence);
    if (results[i].duplicate) continue;
    e.set_prev_hash(crypto::HexEncode(absl::string_view(chain).substr(at, kHashBytes)));
    at += kHashBytes;
    e.set_hash(crypto::HexEncode(absl::string_view(chain).substr(at, kHashBytes)));
    e.set_encoding(EncodingOf(e));
  }
  return results;
}

absl::StatusOr<std::vector<AppendedEvent>> LogAuditStore::AppendCore(const EncodedBatch& batch,
                                                                     bool deduplicate,
                                                                     std::string* chain) {
  absl::MutexLock wl(&writer_mu_);
  Pending p;
  std::shared_ptr<Segment> seg;
  uint64_t seg_size = 0;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    p.head = head_sequence_;
    p.head_raw = head_hash_raw_;
    if (!segments_.empty()) {
      seg = segments_.back();
      seg_size = seg->size;
    }
  }
  if (p.head_raw.size() != kHashBytes) {
    return absl::DataLossError(
        "audit log: the head event's hash is unknown (its segment is damaged); run "
        "`iotauthctl audit verify` and move the damaged segment aside");
  }
  if (chain != nullptr) *chain = p.head_raw;
  buffer_.clear();
  // Room for the whole batch up front: buffer_ then does not move while it fills,
  // and the first chunk, starting at a kDirectAlign boundary, is written in place
  // (WriteBatch) instead of copied into the direct buffer. (Were the bound short,
  // the write would only fall back to the copy.)
  size_t event_bytes = 0;
  for (const EncodedEvent& e : batch.events) event_bytes += e.size;
  const size_t n_events = batch.events.size();
  const size_t n_checkpoints =
      options_.checkpoint_interval == 0 ? 0 : n_events / options_.checkpoint_interval + 1;
  buffer_.reserve(3 * kDirectAlign + 2 * kSegmentHeader + event_bytes +
                  n_events * (kFrameHeader + kHashBytes) +
                  n_checkpoints * (kFrameHeader + kCheckpointBody));
  const auto lead = static_cast<size_t>(
      (kDirectAlign - reinterpret_cast<uintptr_t>(buffer_.data()) % kDirectAlign) % kDirectAlign);
  std::vector<AppendedEvent> results(batch.events.size());
  absl::flat_hash_map<absl::uint128, uint64_t> batch_ids;
  const absl::Time now = options_.clock->Now();
  const uint64_t cap = options_.events_per_segment;
  Pending::Chunk* chunk = nullptr;
  unsigned char hash[kHashBytes];
  // Each event is checked as the loop reaches it, so that its bytes are read cold
  // once and are still in cache for the copy and the hash; a bad one fails the
  // whole batch before anything is written. What ApplyCommitted needs of each goes
  // to batch_events_ (kept across batches: no allocation, no zero-filling).
  batch_events_.clear();
  batch_events_.reserve(n_events);
  for (size_t i = 0; i < batch.events.size(); ++i) {
    CanonicalFields fields;
    IOTAUTH_RETURN_IF_ERROR(CheckEncodedEvent(batch, batch.events[i], &fields));
    // A frame the reader would refuse must never be written: it would end every
    // later read of its segment (and the log's recovery at start-up).
    if (batch.events[i].size > kMaxFrameBody - kHashBytes) {
      return absl::InvalidArgumentError(absl::StrCat("audit event of ", batch.events[i].size,
                                                     " bytes is over the log's frame limit"));
    }
    batch_events_.push_back(
        {fields.tenant_id, fields.device_id, fields.has_time, fields.time_seconds});
    const absl::uint128 key = deduplicate ? IdKey(fields.event_id) : absl::uint128();
    uint64_t stored = 0;
    if (!deduplicate) {
      // Fresh ids: nothing to look up.
    } else if (auto it = recent_ids_.find(key); it != recent_ids_.end()) {
      stored = it->second;
    } else if (auto jt = batch_ids.find(key); jt != batch_ids.end()) {
      stored = jt->second;
    }
    if (stored != 0) {
      results[i] = {stored, true};
      continue;
    }
    const uint64_t seq = p.head + 1;
    if (seg == nullptr || seq > seg->end()) {
      // A new segment: the chunk for it starts with the segment header.
      if (chunk != nullptr) chunk->end = buffer_.size();
      seg = std::make_shared<Segment>();
      seg->first = ((seq - 1) / cap) * cap + 1;
      seg->capacity = cap;
      seg->path = absl::StrCat(options_.dir, "/", SegmentFileName(seg->first));
      seg->index_path = seg->path.substr(0, seg->path.size() - 4) + ".idx";
      seg->last = seg->first - 1;
      seg_size = 0;
      const bool first_chunk = chunk == nullptr;
      if (first_chunk) buffer_.append(lead, '\0');
      p.chunks.push_back({seg, true, 0, buffer_.size(), 0, 0, first_chunk});
      chunk = &p.chunks.back();
      buffer_.append(kSegmentMagic.data(), kSegmentMagic.size());
      AppendU64(seg->first, &buffer_);
    } else if (chunk == nullptr) {
      if (seg->v1_magic) IOTAUTH_RETURN_IF_ERROR(MarkSegmentVersion2(seg.get()));
      const bool direct = seg->wfd >= 0;
      if (direct) {
        buffer_.append(lead, '\0');
        buffer_.append(seg->tail);
      }
      p.chunks.push_back({seg, false, seg_size, buffer_.size(), 0, 0, direct});
      chunk = &p.chunks.back();
    }
    const size_t frame = buffer_.size();
    const uint64_t offset = chunk->offset + (frame - chunk->begin);
    if ((seq - seg->first) % kSparseEvery == 0) p.sparse.emplace_back(seq, offset);
    // The producer's bytes, with the chain fields filled in.
    const EncodedEvent& in = batch.events[i];
    buffer_.append(kFrameHeader + kHashBytes, '\0');
    const size_t canonical = buffer_.size();
    buffer_.append(batch.buffer.data() + in.offset, in.size);
    ChainUnchainedEncoding(seq, p.head_raw, &buffer_[canonical], in.size);
    const absl::string_view canon(buffer_.data() + canonical, in.size);
    if (!HashChainedEncoding(canon, p.head_raw, hash)) {
      return absl::InternalError("audit log: SHA-256 failed");
    }
    StoreU32(static_cast<uint32_t>(buffer_.size() - frame - kFrameHeader), &buffer_[frame]);
    buffer_[frame + 4] = kKindEvent;
    std::memcpy(&buffer_[frame + kFrameHeader], hash, kHashBytes);
    p.head_raw.assign(reinterpret_cast<const char*>(hash), kHashBytes);
    p.head = seq;
    if (chain != nullptr) chain->append(p.head_raw);
    chunk->last = seq;
    if (deduplicate) {
      batch_ids.emplace(key, seq);
      p.ids.emplace_back(key, seq);
    }
    results[i] = {seq, false};
    if (options_.checkpoint_interval != 0 && seq % options_.checkpoint_interval == 0) {
      CheckpointRecord c{seq, crypto::HexEncode(p.head_raw), now};
      AppendCheckpointFrame(c, p.head_raw, &buffer_);
      p.checkpoints.push_back(std::move(c));
    }
  }
  if (chunk == nullptr) return results;  // only duplicates: nothing to write
  chunk->end = buffer_.size();
  IOTAUTH_RETURN_IF_ERROR(WriteBatch(&p));
  ApplyCommitted(p, batch_events_, results);
  return results;
}

absl::Status LogAuditStore::MarkSegmentVersion2(Segment* seg) {
  if (!WriteAll(seg->fd, kSegmentMagic, 0) || fdatasync(seg->fd) != 0) {
    return ErrnoStatus("cannot write the header of", seg->path);
  }
  // The next direct write repeats the segment's last partial block: when that is
  // the first block, it must carry the new magic too.
  if (seg->size == seg->tail.size() && seg->tail.size() >= kSegmentMagic.size()) {
    std::memcpy(seg->tail.data(), kSegmentMagic.data(), kSegmentMagic.size());
  }
  seg->v1_magic = false;
  log::Info("audit log: segment marked for canonical version 2 (older builds refuse it)",
            {{"segment", seg->path}});
  return absl::OkStatus();
}

absl::Status LogAuditStore::PrepareForWrites(Segment* seg) const {
  struct stat st {};
  if (fstat(seg->fd, &st) != 0) return ErrnoStatus("cannot stat", seg->path);
  // Opening changes nothing in the file (it may be evidence); the first write
  // aligns and extends it.
  seg->zeroed_end = static_cast<uint64_t>(st.st_size);
  const uint64_t block = seg->size - seg->size % kDirectAlign;
  seg->tail.assign(static_cast<size_t>(seg->size - block), '\0');
  if (!seg->tail.empty() &&
      pread(seg->fd, seg->tail.data(), seg->tail.size(), static_cast<off_t>(block)) !=
          static_cast<ssize_t>(seg->tail.size())) {
    return ErrnoStatus("cannot read", seg->path);
  }
  if (options_.direct_io && seg->wfd < 0) {
    seg->wfd = open(seg->path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (seg->wfd < 0) {
      log::Info("audit log: O_DIRECT refused here; writing through the page cache",
                {{"segment", seg->path}, {"error", std::strerror(errno)}});
    }
  }
  return absl::OkStatus();
}

absl::Status LogAuditStore::WriteChunk(Segment* seg, absl::string_view data, uint64_t offset,
                                       std::optional<size_t> in_place_pad) {
  // Never report events committed into a file that is no longer the log's.
  if (!StillAtPath(seg->fd, seg->path)) {
    return absl::DataLossError(absl::StrCat(
        "audit log: ", seg->path,
        " was removed or replaced while the service ran; nothing more is written to it. "
        "Restore the file, restart the service and run `iotauthctl audit verify`"));
  }
  if (seg->wfd < 0) {
    if (!WriteAll(seg->fd, data, offset) || fdatasync(seg->fd) != 0) {
      return ErrnoStatus("cannot write", seg->path);
    }
    return absl::OkStatus();
  }
  // Direct: whole 4 KiB blocks, the first repeating the bytes already in it.
  const uint64_t start = offset - offset % kDirectAlign;
  if (offset - start != seg->tail.size()) {
    return absl::InternalError(
        absl::StrCat("audit log: ", seg->path, ": write position and tail disagree; restart"));
  }
  const size_t total = seg->tail.size() + data.size();
  const auto padded = static_cast<size_t>(BlockCeil(total));
  const char* buf = data.data() - seg->tail.size();
  if (!in_place_pad.has_value() || *in_place_pad != padded - total ||
      reinterpret_cast<uintptr_t>(buf) % kDirectAlign != 0) {
    // Copied into the aligned buffer, with the tail before and zeros after.
    if (!direct_buffer_) direct_buffer_ = std::make_unique<DirectBuffer>();
    char* copy = direct_buffer_->Get(std::max<size_t>(padded, 1 << 20));
    if (copy == nullptr) return absl::ResourceExhaustedError("audit log: no memory for a write");
    std::copy(seg->tail.begin(), seg->tail.end(), copy);
    std::memcpy(copy + seg->tail.size(), data.data(), data.size());
    std::memset(copy + total, 0, padded - total);
    buf = copy;
  }
  // Keep the file zero-filled ahead: the data writes are then overwrites of
  // allocated blocks (no allocation, no size change to journal).
  if (start + padded > seg->zeroed_end) {
    static char* const zeros = [] {
      void* p = nullptr;
      if (posix_memalign(&p, kDirectAlign, 1 << 20) != 0) return static_cast<char*>(nullptr);
      std::memset(p, 0, 1 << 20);
      return static_cast<char*>(p);
    }();
    if (zeros == nullptr) return absl::ResourceExhaustedError("audit log: no memory");
    // From the block after the one holding the current end: that block lies
    // inside [start, start + padded), which the data write below fills.
    // Ahead by ~32 bytes per event of the segment's capacity (8 MiB for the
    // default 262,144), at least 256 KiB.
    const uint64_t ahead =
        std::clamp<uint64_t>(options_.events_per_segment * 32, 256 << 10, kZeroAhead);
    const uint64_t chunk = std::min<uint64_t>(ahead, 1 << 20);
    const uint64_t target = start + padded + ahead;
    const uint64_t from = BlockCeil(seg->zeroed_end);
    for (uint64_t off = from; off < target; off += chunk) {
      if (!WriteAll(seg->wfd, absl::string_view(zeros, chunk), off)) {
        return ErrnoStatus("cannot preallocate", seg->path);
      }
      seg->zeroed_end = off + chunk;
    }
  }
  if (!WriteAll(seg->wfd, absl::string_view(buf, padded), start) || fdatasync(seg->fd) != 0) {
    return ErrnoStatus("cannot write", seg->path);
  }
  const size_t keep = total % kDirectAlign;
  seg->tail.assign(buf + (total - keep), keep);
  return absl::OkStatus();
}

void LogAuditStore::UndoChunk(Segment* seg, uint64_t offset, size_t size,
                              const std::string& old_tail) {
  bool ok = true;
  if (seg->wfd < 0) {
    ok = ftruncate(seg->fd, static_cast<off_t>(offset)) == 0 && fdatasync(seg->fd) == 0;
  } else {
    // Put the old partial block back, then zeros over every block the write may
    // have reached (a write in place can be larger than the direct buffer: the
    // zeros go out in pieces of it).
    const uint64_t start = offset - offset % kDirectAlign;
    const uint64_t span = std::max(BlockCeil(old_tail.size() + size), kDirectAlign);
    if (!direct_buffer_) direct_buffer_ = std::make_unique<DirectBuffer>();
    char* buf = direct_buffer_->Get(1 << 20);
    ok = buf != nullptr;
    for (uint64_t done = 0; ok && done < span;) {
      const auto n = static_cast<size_t>(std::min<uint64_t>(span - done, direct_buffer_->capacity));
      std::memset(buf, 0, n);
      if (done == 0) std::copy(old_tail.begin(), old_tail.end(), buf);
      ok = WriteAll(seg->wfd, absl::string_view(buf, n), start + done);
      done += n;
    }
    ok = ok && fdatasync(seg->fd) == 0;
    seg->tail = old_tail;
  }
  if (!ok) {
    log::Error("audit log: cannot take back a failed write; restart to recover",
               {{"segment", seg->path}, {"error", std::strerror(errno)}});
  }
}

absl::Status LogAuditStore::WriteBatch(Pending* p) {
  size_t done = 0;
  absl::Status status;
  std::vector<std::string> old_tails;
  for (Pending::Chunk& c : p->chunks) {
    Segment* seg = c.segment.get();
    if (c.created) {
      seg->fd = open(seg->path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0640);
      if (seg->fd < 0) {
        status = ErrnoStatus("cannot create", seg->path);
        break;
      }
      status = PrepareForWrites(seg);
      if (!status.ok()) break;
    }
    old_tails.push_back(seg->tail);
    ++done;
    // A batch of one chunk, its tail before it in buffer_, goes out in place: buffer_ takes
    // the zeros up to the block boundary (within its reserve, so it does not move).
    std::optional<size_t> in_place_pad;
    if (c.tail_in_buffer && seg->wfd >= 0 && c.end == buffer_.size()) {
      const size_t total = seg->tail.size() + (c.end - c.begin);
      in_place_pad = BlockCeil(total) - total;
      buffer_.append(*in_place_pad, '\0');
    }
    status = WriteChunk(seg, absl::string_view(buffer_.data() + c.begin, c.end - c.begin), c.offset,
                        in_place_pad);
    if (status.ok() && c.created && fsync(dir_fd_) != 0) {
      status = ErrnoStatus("cannot sync the directory of", seg->path);
    }
    if (!status.ok()) break;
  }
  if (status.ok()) return status;
  // All or nothing: take back what this batch wrote.
  for (size_t i = 0; i < p->chunks.size(); ++i) {
    Pending::Chunk& c = p->chunks[i];
    if (c.created) {
      if (c.segment->fd >= 0) close(c.segment->fd);
      if (c.segment->wfd >= 0) close(c.segment->wfd);
      c.segment->fd = c.segment->wfd = -1;
      unlink(c.segment->path.c_str());
    } else if (i < done) {
      UndoChunk(c.segment.get(), c.offset, c.end - c.begin, old_tails[i]);
    }
  }
  return status;
}

void LogAuditStore::ApplyCommitted(const Pending& p, const std::vector<BatchEvent>& events,
                                   const std::vector<AppendedEvent>& results) {
  // Block summaries: the writer's builder takes every new event; a completed
  // block's summary goes to the segment holding it.
  std::vector<std::pair<uint64_t, BlockSummary>> completed;  // (block, summary)
  std::vector<std::pair<uint64_t, TimeRange>> seg_times;
  for (size_t i = 0; i < events.size(); ++i) {
    if (results[i].duplicate) continue;
    const BatchEvent& e = events[i];
    const uint64_t seq = results[i].sequence;
    BlockBuilder& b = *builder_;
    b.AddTenant(e.tenant_id);
    b.filter->AddDevice(e.device_id);
    if (e.has_time) {
      b.time.Add(e.time_seconds);
      if (seg_times.empty() || (seq - 1) / options_.events_per_segment != seg_times.back().first) {
        seg_times.emplace_back((seq - 1) / options_.events_per_segment, TimeRange());
      }
      seg_times.back().second.Add(e.time_seconds);
    }
    if (seq % kBlockEvents == 0) {
      BlockSummary s;
      s.time = b.time;
      s.filter = std::shared_ptr<const BlockFilter>(std::move(b.filter));
      completed.emplace_back(b.block, std::move(s));
      b.Reset(seq / kBlockEvents);
    }
  }
  for (const auto& [key, seq] : p.ids) Remember(key, seq);

  std::vector<std::shared_ptr<Segment>> sealed;
  {
    absl::MutexLock sl(&state_mu_);
    for (const Pending::Chunk& c : p.chunks) {
      if (c.created) segments_.push_back(c.segment);
      c.segment->size = c.offset + (c.end - c.begin);
      c.segment->last = c.last;
      if (c.last == c.segment->end()) sealed.push_back(c.segment);
    }
    for (const auto& [seq, offset] : p.sparse) {
      for (const Pending::Chunk& c : p.chunks) {
        if (seq >= c.segment->first && seq <= c.segment->end()) {
          if (c.segment->sparse.size() == (seq - c.segment->first) / kSparseEvery) {
            c.segment->sparse.push_back(offset);
          }
          break;
        }
      }
    }
    for (auto& [block, summary] : completed) {
      for (const Pending::Chunk& c : p.chunks) {
        if (block >= c.segment->first_block() &&
            block < c.segment->first_block() + c.segment->capacity / kBlockEvents) {
          if (c.segment->blocks.size() == block - c.segment->first_block()) {
            c.segment->blocks.push_back(std::move(summary));
          }
          break;
        }
      }
    }
    for (const auto& [seg_no, range] : seg_times) {
      for (const Pending::Chunk& c : p.chunks) {
        if ((c.segment->first - 1) / options_.events_per_segment == seg_no) {
          c.segment->time.Add(range);
        }
      }
    }
    for (const CheckpointRecord& c : p.checkpoints) checkpoints_[c.sequence] = c;
    head_sequence_ = p.head;
    head_hash_raw_ = p.head_raw;
  }
  for (const std::shared_ptr<Segment>& s : sealed) {
    // Sealed files end at their last frame: cut the zero-filled preallocation.
    if (s->wfd >= 0) {
      close(s->wfd);
      s->wfd = -1;
    }
    if (s->zeroed_end > s->size) {
      if (ftruncate(s->fd, static_cast<off_t>(s->size)) != 0) {
        log::Warn("audit log: cannot trim a sealed segment", {{"segment", s->path}});
      }
      s->zeroed_end = s->size;
    }
    s->tail.clear();
    WriteIndex(*s);
  }
}

void LogAuditStore::WriteIndex(const Segment& seg) {
  std::string data;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    std::vector<CheckpointRecord> ckpts;
    for (auto it = checkpoints_.lower_bound(seg.first);
         it != checkpoints_.end() && it->first <= seg.end(); ++it) {
      ckpts.push_back(it->second);
    }
    data = EncodeIndex(seg, ckpts);
  }
  absl::Status s = ReplaceFile(seg.index_path, data, /*sync=*/false, dir_fd_);
  if (!s.ok()) log::Warn("audit log: cannot write segment index", {{"error", s.ToString()}});
}

absl::StatusOr<std::vector<AuditEvent>> LogAuditStore::Query(const EventFilter& f, int limit) {
  struct Range {
    std::shared_ptr<Segment> segment;
    uint64_t lo;  // events with lo < sequence <= hi
    uint64_t hi;
    uint64_t offset;
    uint64_t end;
  };
  std::vector<Range> ranges;
  const bool selective = !f.tenant_id.empty() || !f.device_id.empty() || f.start_time || f.end_time;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    const uint64_t upper =
        std::min(f.max_sequence != 0 ? f.max_sequence : UINT64_MAX, head_sequence_);
    for (const std::shared_ptr<Segment>& seg : segments_) {
      if (seg->last < seg->first || seg->last <= f.after_sequence || seg->first > upper) continue;
      const uint64_t lo = std::max(f.after_sequence, seg->first - 1);
      const uint64_t hi = std::min(upper, seg->last);
      if (!selective) {
        ranges.push_back({seg, lo, hi, StartOffset(*seg, lo + 1), seg->size});
        continue;
      }
      // Block by block: a summarised block the filter rules out is skipped.
      uint64_t cursor = lo;
      while (cursor < hi) {
        const uint64_t b = cursor / kBlockEvents;
        const uint64_t block_hi = std::min(hi, (b + 1) * kBlockEvents);
        const uint64_t in_seg = b - seg->first_block();
        const bool skip = in_seg < seg->blocks.size() && !BlockMayMatch(seg->blocks[in_seg], f);
        if (!skip) {
          if (!ranges.empty() && ranges.back().segment == seg && ranges.back().hi == cursor) {
            ranges.back().hi = block_hi;
          } else {
            ranges.push_back({seg, cursor, block_hi, StartOffset(*seg, cursor + 1), seg->size});
          }
        }
        cursor = block_hi;
      }
    }
  }
  std::vector<AuditEvent> out;
  const auto wanted = static_cast<size_t>(std::max(limit, 0));
  for (const Range& r : ranges) {
    if (out.size() >= wanted) break;
    uint64_t offset = r.offset;
    uint64_t done = r.lo;  // events up to here were handled
    bool dropped_cache = false;
    for (int attempt = 0; attempt < 3; ++attempt) {
      FrameReader reader(r.segment->fd, offset, r.end);
      Frame fr;
      bool restart = false;
      bool first_event = true;
      FrameReader::Result res = FrameReader::kEnd;
      while ((res = reader.Next(&fr)) == FrameReader::kFrame && out.size() < wanted) {
        if (fr.kind != kKindEvent) continue;
        EventFrame e;
        if (!ParseEventFrame(fr.body, &e)) {
          // Damaged (Verify names it), or a page cached while a direct write
          // replaced it: read once more from the disk before skipping it.
          if (!dropped_cache) {
            restart = true;
            break;
          }
          continue;
        }
        const uint64_t seq = e.fields.sequence;
        if (first_event && offset != kSegmentHeader && seq > done + 1) {
          restart = true;  // the sparse entry does not lead where expected
          break;
        }
        first_event = false;
        if (seq <= done) continue;
        if (seq > r.hi) break;
        done = seq;
        if (!Matches(e.fields, f)) continue;
        out.emplace_back();
        CanonicalFieldsToEvent(e.fields, &out.back());
        out.back().set_hash(crypto::HexEncode(e.hash_raw));
      }
      if (res == FrameReader::kIoError) {
        return IoError(absl::StrCat("audit log: cannot read ", r.segment->path));
      }
      if ((res == FrameReader::kBadFrame || res == FrameReader::kTruncated) && !dropped_cache) {
        restart = true;  // committed bytes that do not parse: the same doubt
      }
      if (!restart) break;
      if (!first_event || offset == kSegmentHeader) {
        DropCachedPages(r.segment->fd);
        dropped_cache = true;
      }
      offset = kSegmentHeader;
    }
  }
  return out;
}

absl::StatusOr<ChainHead> LogAuditStore::Head() {
  absl::ReaderMutexLock sl(&state_mu_);
  return ChainHead{head_sequence_, crypto::HexEncode(head_hash_raw_)};
}

absl::StatusOr<uint64_t> LogAuditStore::FirstSequence() {
  absl::ReaderMutexLock sl(&state_mu_);
  return first_sequence_;
}

absl::StatusOr<CheckpointRecord> LogAuditStore::CreateCheckpoint(absl::Time now) {
  absl::MutexLock wl(&writer_mu_);
  std::shared_ptr<Segment> seg;
  CheckpointRecord c;
  std::string raw;
  uint64_t offset = 0;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    if (head_sequence_ == 0) {
      return absl::FailedPreconditionError("audit log is empty: nothing to checkpoint");
    }
    auto it = checkpoints_.find(head_sequence_);
    if (it != checkpoints_.end()) return it->second;
    if (segments_.empty()) {
      return absl::FailedPreconditionError("audit log holds no events since the last prune");
    }
    seg = segments_.back();
    c = {head_sequence_, crypto::HexEncode(head_hash_raw_), now};
    raw = head_hash_raw_;
    offset = seg->size;
  }
  std::string frame;
  AppendCheckpointFrame(c, raw, &frame);
  const std::string old_tail = seg->tail;
  if (absl::Status st = WriteChunk(seg.get(), frame, offset, std::nullopt); !st.ok()) {
    UndoChunk(seg.get(), offset, frame.size(), old_tail);
    return st;
  }
  bool sealed = false;
  {
    absl::MutexLock sl(&state_mu_);
    seg->size = offset + frame.size();
    checkpoints_[c.sequence] = c;
    sealed = seg->last == seg->end();
  }
  if (sealed) WriteIndex(*seg);  // its size changed
  return c;
}

absl::StatusOr<std::optional<CheckpointRecord>> LogAuditStore::LatestCheckpoint() {
  absl::ReaderMutexLock sl(&state_mu_);
  if (checkpoints_.empty()) return std::optional<CheckpointRecord>();
  return std::optional<CheckpointRecord>(checkpoints_.rbegin()->second);
}

absl::StatusOr<std::optional<CheckpointRecord>> LogAuditStore::PlanRetention(
    const RetentionPolicy& policy, absl::Time now) {
  absl::MutexLock wl(&writer_mu_);
  std::vector<std::shared_ptr<Segment>> prune;
  uint64_t first = 0;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    first = first_sequence_;
    const int64_t cutoff_s = absl::ToUnixSeconds(now - policy.max_age);
    uint64_t bytes = 0;
    for (const auto& s : segments_) bytes += s->size;
    // Oldest first, never the active segment; stop at the first segment to keep.
    for (size_t i = 0; i + 1 < segments_.size(); ++i) {
      const Segment& s = *segments_[i];
      const bool by_rows =
          policy.max_rows > 0 && s.last >= s.first && head_sequence_ - s.last >= policy.max_rows;
      const bool by_age =
          policy.max_age > absl::ZeroDuration() && s.time.has && s.time.max_s < cutoff_s;
      const bool by_bytes = policy.max_bytes > 0 && bytes > policy.max_bytes;
      if (!by_rows && !by_age && !by_bytes) break;
      prune.push_back(segments_[i]);
      bytes -= s.size;
    }
  }
  if (prune.empty()) return std::optional<CheckpointRecord>();
  const uint64_t anchor_seq = prune.back()->end();
  std::string anchor_raw;
  IOTAUTH_ASSIGN_OR_RETURN(VerifyResult check, VerifyRange(first, anchor_seq, &anchor_raw));
  if (!check.ok) {
    for (const auto& seg : prune) DropCachedPages(seg->fd);
    IOTAUTH_ASSIGN_OR_RETURN(check, VerifyRange(first, anchor_seq, &anchor_raw));
  }
  if (!check.ok) {
    return absl::FailedPreconditionError(
        absl::StrCat("refusing to prune: the chain does not verify at ", check.first_bad_sequence,
                     " (", check.problem, ")"));
  }
  return std::optional<CheckpointRecord>(
      CheckpointRecord{anchor_seq, crypto::HexEncode(anchor_raw), now});
}

uint64_t LogAuditStore::StoredBytes() const {
  absl::ReaderMutexLock sl(&state_mu_);
  uint64_t bytes = 0;
  for (const auto& s : segments_) bytes += s->size;
  return bytes;
}

absl::StatusOr<uint64_t> LogAuditStore::PruneThrough(const CheckpointRecord& cut, absl::Time now) {
  absl::MutexLock wl(&writer_mu_);
  std::vector<std::shared_ptr<Segment>> prune;
  {
    absl::ReaderMutexLock sl(&state_mu_);
    if (cut.sequence < first_sequence_) return 0;  // pruned already
    // Never the active segment.
    for (size_t i = 0; i + 1 < segments_.size() && segments_[i]->end() <= cut.sequence; ++i) {
      prune.push_back(segments_[i]);
    }
  }
  if (prune.empty() || prune.back()->end() != cut.sequence) {
    return absl::FailedPreconditionError(
        absl::StrCat("audit log: cannot prune through event ", cut.sequence,
                     ": no closed segment ends there (retention removes whole segments)"));
  }
  // The cut is still the event it was planned on (its stored hash; PlanRetention
  // verified the chain up to it).
  EventFilter at;
  at.after_sequence = cut.sequence - 1;
  at.max_sequence = cut.sequence;
  IOTAUTH_ASSIGN_OR_RETURN(std::vector<AuditEvent> stored, Query(at, 1));
  if (stored.size() != 1 || stored[0].sequence() != cut.sequence ||
      stored[0].hash() != cut.head_hash) {
    return absl::FailedPreconditionError(absl::StrCat("refusing to prune: event ", cut.sequence,
                                                      " is not the one retention planned to cut"));
  }
  const CheckpointRecord anchor{cut.sequence, cut.head_hash, now};
  IOTAUTH_RETURN_IF_ERROR(WriteAnchorFile(options_.dir, dir_fd_, anchor));
  uint64_t removed = 0;
  {
    absl::MutexLock sl(&state_mu_);
    segments_.erase(segments_.begin(),
                    segments_.begin() + static_cast<std::ptrdiff_t>(prune.size()));
    checkpoints_.erase(checkpoints_.begin(), checkpoints_.lower_bound(anchor.sequence));
    checkpoints_[anchor.sequence] = anchor;
    anchor_ = anchor;
    for (const auto& s : prune) removed += s->last - std::max(s->first, first_sequence_) + 1;
    first_sequence_ = anchor.sequence + 1;
  }
  for (const auto& s : prune) {
    unlink(s->path.c_str());
    unlink(s->index_path.c_str());
  }
  fsync(dir_fd_);
  return removed;
}

absl::Status LogAuditStore::WriteAnchorFile(const std::string& dir, int dir_fd,
                                            const CheckpointRecord& anchor) {
  const std::string raw = FromHex(anchor.head_hash);
  if (raw.size() != kHashBytes) {
    return absl::InvalidArgumentError("audit log: an anchor needs a 64-digit hex hash");
  }
  std::string data(kAnchorMagic);
  AppendU64(anchor.sequence, &data);
  data.append(raw);
  AppendU64(static_cast<uint64_t>(absl::ToUnixNanos(anchor.time)), &data);
  data.append(crypto::Sha256(data));
  return ReplaceFile(absl::StrCat(dir, "/anchor"), data, /*sync=*/true, dir_fd);
}

absl::Status LogAuditStore::StartAfter(const std::string& dir, const CheckpointRecord& anchor) {
  if (anchor.sequence == 0) return absl::OkStatus();
  if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return ErrnoStatus("cannot create directory", dir);
  }
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoStatus("cannot open directory", dir);
  absl::Status st;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* ent = readdir(d)) {
      const absl::string_view name(ent->d_name);
      if (name != "." && name != "..") {
        st = absl::FailedPreconditionError(
            absl::StrCat("audit log: ", dir, " is not empty (", name, ")"));
        break;
      }
    }
    closedir(d);
  }
  if (st.ok()) st = WriteAnchorFile(dir, dir_fd, anchor);
  close(dir_fd);
  return st;
}

absl::StatusOr<VerifyResult> LogAuditStore::Verify(uint64_t from_sequence, uint64_t to_sequence) {
  IOTAUTH_ASSIGN_OR_RETURN(VerifyResult r, VerifyRange(from_sequence, to_sequence, nullptr));
  if (r.ok) return r;
  // Before reporting tampering, rule out a stale cached page (see DropCachedPages).
  for (const auto& seg : SnapshotSegments()) DropCachedPages(seg->fd);
  return VerifyRange(from_sequence, to_sequence, nullptr);
}

std::vector<std::shared_ptr<LogAuditStore::Segment>> LogAuditStore::SnapshotSegments() const {
  absl::ReaderMutexLock sl(&state_mu_);
  return segments_;
}

absl::StatusOr<VerifyResult> LogAuditStore::VerifyRange(uint64_t from, uint64_t to,
                                                        std::string* last_hash_raw) {
  std::vector<std::shared_ptr<Segment>> segments;
  std::vector<uint64_t> sizes;
  std::map<uint64_t, std::string> checkpoints;  // sequence -> hex
  uint64_t head = 0;
  std::string head_hash_raw;  // as this process committed it
  uint64_t first = 1;
  uint64_t anchor_seq = 0;
  std::string anchor_hash(kGenesisHash);
  VerifyResult r;
  auto fail = [&r](uint64_t seq, absl::string_view problem, std::string detail) {
    return FailWith(r, {seq, problem, std::move(detail)});
  };
  {
    absl::ReaderMutexLock sl(&state_mu_);
    segments = segments_;
    for (const auto& s : segments_) sizes.push_back(s->size);
    head = head_sequence_;
    head_hash_raw = head_hash_raw_;
    first = first_sequence_;
    from = std::max<uint64_t>({from, first, 1});
    auto it = checkpoints_.lower_bound(from);
    if (it != checkpoints_.begin()) {
      --it;
      if (it->first + 1 >= first) {
        anchor_seq = it->first;
        anchor_hash = it->second.head_hash;
      }
    }
    for (auto c = checkpoints_.upper_bound(anchor_seq); c != checkpoints_.end(); ++c) {
      checkpoints[c->first] = c->second.head_hash;
    }
  }
  if (first > 1 && anchor_seq + 1 < first) {
    return fail(
        first, kProblemCheckpointMismatch,
        absl::StrCat("no anchor checkpoint at ", first - 1, " for the retained start of the log"));
  }
  const uint64_t upper = to == 0 ? head : std::min(to, head);
  r.anchor_sequence = anchor_seq;
  r.anchor_hash = anchor_hash;
  if (last_hash_raw != nullptr) *last_hash_raw = FromHex(anchor_hash);
  if (upper <= anchor_seq) return r;

  uint64_t expected = anchor_seq + 1;
  std::string expected_prev = anchor_hash;
  std::string expected_prev_raw = FromHex(anchor_hash);

  // Searches the frames after (segment i, offset) for an event frame matching
  // `pred`; returns its sequence, or 0.
  auto find_later = [&](size_t seg_i, uint64_t offset,
                        const std::function<bool(const EventFrame&)>& pred) -> uint64_t {
    for (size_t i = seg_i; i < segments.size(); ++i) {
      FrameReader reader(segments[i]->fd, i == seg_i ? offset : kSegmentHeader, sizes[i]);
      Frame fr;
      while (reader.Next(&fr) == FrameReader::kFrame) {
        EventFrame e;
        if (fr.kind == kKindEvent && ParseEventFrame(fr.body, &e) && pred(e)) {
          return e.fields.sequence;
        }
      }
    }
    return 0;
  };

  for (size_t si = 0; si < segments.size() && expected <= upper; ++si) {
    const Segment& seg = *segments[si];
    if (seg.end() < expected) continue;
    if (!StillAtPath(seg.fd, seg.path)) {
      return fail(std::max(expected, seg.first), kProblemMissing,
                  absl::StrCat(seg.path,
                               " was removed or replaced while the service ran (the service "
                               "still holds the file it opened): restore it, restart the "
                               "service and verify again"));
    }
    if (seg.first > expected) {
      return fail(expected, kProblemMissing,
                  absl::StrCat("events ", expected, " to ", seg.first - 1,
                               " are absent (segment files removed); the next segment is ",
                               SegmentFileName(seg.first)));
    }
    uint64_t start = kSegmentHeader;
    {
      absl::ReaderMutexLock sl(&state_mu_);
      start = StartOffset(seg, expected);
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      FrameReader reader(seg.fd, start, sizes[si]);
      Frame fr;
      bool restart = false;
      bool started = false;
      FrameReader::Result res = FrameReader::kEnd;
      while (expected <= upper && (res = reader.Next(&fr)) == FrameReader::kFrame) {
        if (fr.kind == kKindCheckpoint) {
          CheckpointRecord c;
          if (!started) continue;
          const bool parsed = ParseCheckpointFrame(fr.body, &c);
          if (parsed && c.sequence > expected - 1 && c.sequence <= upper) {
            // A checkpoint for a later event: the events before it are gone.
            return fail(expected, kProblemMissing,
                        absl::StrCat("event ", expected,
                                     " is absent; the next frame is the "
                                     "checkpoint of event ",
                                     c.sequence));
          }
          if (!parsed || c.sequence != expected - 1 || c.head_hash != expected_prev) {
            return fail(expected - 1, kProblemCheckpointMismatch,
                        absl::StrCat("the checkpoint stored after event ", expected - 1,
                                     " does not match it"));
          }
          continue;
        }
        EventFrame e;
        if (!ParseEventFrame(fr.body, &e)) {
          if (!started && start != kSegmentHeader) {
            restart = true;
            break;
          }
          return fail(expected, kProblemAltered,
                      absl::StrCat("the frame at offset ", fr.offset, " of ", seg.path,
                                   " (where event ", expected, " belongs) does not decode"));
        }
        const uint64_t seq = e.fields.sequence;
        if (!started && seq < expected) continue;  // before the walk's start
        if (!started && seq > expected && start != kSegmentHeader) {
          restart = true;  // the sparse entry overshot: walk from the header
          break;
        }
        started = true;
        if (seq == expected && seq > seg.end()) {
          // The walk reads on to the end of the file: frames past the segment's range
          // (copies of the next segment's events appended here) would otherwise be
          // verified in place of the events in the next segment, which queries read.
          return fail(
              expected, kProblemAltered,
              absl::StrCat("event ", expected, " is stored in ", seg.path, ", which holds events ",
                           seg.first, " to ", seg.end(), " only: frames were added to the file"));
        }
        if (seq != expected) {
          const uint64_t want = expected;
          const uint64_t later = find_later(si, reader.position(), [want](const EventFrame& x) {
            return x.fields.sequence == want;
          });
          if (later != 0 || seq < expected) {
            return fail(expected, kProblemReordered,
                        absl::StrCat("event ", expected, " is not stored in sequence order (event ",
                                     seq, " is stored in its place)"));
          }
          return FailWith(r, AbsentFault(expected, seq));
        }
        const bool self_ok = SelfHashOk(e.hash_raw, e.canonical, e.fields);
        const std::string hash_hex = crypto::HexEncode(e.hash_raw);
        // Raw, in either version (empty when version 1's hex is malformed).
        const absl::string_view prev_raw =
            e.fields.prev_hash_ok ? e.fields.prev_hash_raw_view() : absl::string_view();
        if (prev_raw.empty() || prev_raw != expected_prev_raw) {
          const uint64_t later =
              prev_raw.empty()
                  ? 0
                  : find_later(si, reader.position(),
                               [&prev_raw](const EventFrame& x) { return x.hash_raw == prev_raw; });
          if (later != 0) {
            return FailWith(r, FollowsLaterFault(seq, later));
          }
          AuditEvent stored;
          const bool decoded = !self_ok && CanonicalFieldsToEvent(e.fields, &stored);
          if (decoded) stored.set_hash(hash_hex);
          return FailWith(r,
                          BrokenLinkFault(seq, decoded ? &stored : nullptr, self_ok, anchor_seq));
        }
        if (!self_ok) return FailWith(r, AlteredFault(seq));
        auto ck = checkpoints.find(seq);
        if (ck != checkpoints.end() && ck->second != hash_hex) {
          return FailWith(r, CheckpointFault(seq));
        }
        ++r.events_checked;
        r.last_sequence = seq;
        expected_prev = hash_hex;
        expected_prev_raw.assign(e.hash_raw.data(), e.hash_raw.size());
        if (last_hash_raw != nullptr) *last_hash_raw = expected_prev_raw;
        ++expected;
      }
      if (restart) {
        start = kSegmentHeader;
        continue;
      }
      if (expected <= upper && res == FrameReader::kIoError) {
        return IoError(absl::StrCat("audit log: cannot read ", seg.path));
      }
      if (expected <= upper && res != FrameReader::kEnd && res != FrameReader::kFrame) {
        return fail(expected, kProblemAltered,
                    absl::StrCat(seg.path, " is damaged at offset ", reader.position(),
                                 " (where event ", expected, " belongs)"));
      }
      break;
    }
  }
  if (expected <= upper) return FailWith(r, EndsEarlyFault(upper, expected - 1));
  // The sealed segments walked: their summaries must describe them (see
  // SummariesMatch). The active one's are built from its own frames as they are written.
  for (size_t si = 0; si + 1 < segments.size(); ++si) {
    const Segment& seg = *segments[si];
    // Only segments the walk covered whole: a ranged verify vouches for its range.
    if (seg.first <= anchor_seq || seg.end() > upper) continue;
    IOTAUTH_ASSIGN_OR_RETURN(SegmentScan scan,
                             ScanSegment(seg, sizes[si], ScanMode::kSealed, false));
    bool match = false;
    {
      absl::ReaderMutexLock sl(&state_mu_);
      match = SummariesMatch(seg, scan, checkpoints_);
    }
    if (!match) {
      return fail(seg.first, kProblemAltered,
                  absl::StrCat("the index of ", seg.path, " (", seg.index_path,
                               ") does not describe the segment, and queries and retention "
                               "read it: stop the service, remove the .idx file (it is "
                               "rebuilt from the segment at start) and verify again"));
    }
  }
  // The newest event has no successor or checkpoint yet to vouch for it: one
  // rewritten whole (content and hash) would chain correctly. The head this process
  // committed does vouch for it, until a restart reads the head from the file.
  if (upper == head && head_hash_raw.size() == kHashBytes &&
      expected_prev != crypto::HexEncode(head_hash_raw)) {
    return fail(head, kProblemAltered,
                absl::StrCat("event ", head,
                             " is not the event this process committed last: the end of the log "
                             "was rewritten while the service ran"));
  }
  return r;
}

}  // namespace iotauth::audit
