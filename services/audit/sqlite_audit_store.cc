#include "services/audit/sqlite_audit_store.h"

#include <sched.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "services/audit/block_filter.h"
#include "services/audit/canonical.h"
#include "services/audit/chain_check.h"
#include "services/audit/event_util.h"
#include "services/common/big_endian.h"
#include "services/common/sqlite_setup.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS audit_events (
  sequence INTEGER PRIMARY KEY,
  event_id TEXT NOT NULL,
  time_s INTEGER,
  time_nanos INTEGER,
  type INTEGER NOT NULL,
  tenant_id TEXT NOT NULL,
  product_key TEXT NOT NULL,
  device_id TEXT NOT NULL,
  outcome INTEGER NOT NULL,
  reason TEXT NOT NULL,
  credential_type TEXT NOT NULL,
  credential_fingerprint TEXT NOT NULL,
  caller TEXT NOT NULL,
  peer_address TEXT NOT NULL,
  request_id TEXT NOT NULL,
  duration_s INTEGER,
  duration_nanos INTEGER,
  attributes BLOB NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL,
  -- The canonical encoding version `hash` covers (canonical.h).
  encoding INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_events_event_id ON audit_events(event_id);
-- One row per complete block of kBlockEvents sequences (see block_filter.h): what
-- Query and retention consult instead of per-column indexes.
CREATE TABLE IF NOT EXISTS audit_blocks (
  block INTEGER PRIMARY KEY,
  min_time_s INTEGER,
  max_time_s INTEGER,
  filter_version INTEGER NOT NULL,
  filter BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  sequence INTEGER PRIMARY KEY,
  head_hash TEXT NOT NULL,
  time_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version INTEGER NOT NULL,
  first_sequence INTEGER NOT NULL,
  head_sequence INTEGER NOT NULL,
  head_hash TEXT NOT NULL
);
)sql";

// Version 1 had B-tree indexes on time, (tenant, sequence) and (device, sequence);
// version 2 replaces them with audit_blocks; version 3 adds audit_events.encoding
// (rows written before it are canonical version 1).
constexpr int kSchemaVersion = 3;
constexpr char kDropVersion1Indexes[] = R"sql(
DROP INDEX IF EXISTS audit_events_time;
DROP INDEX IF EXISTS audit_events_tenant;
DROP INDEX IF EXISTS audit_events_device;
)sql";

// How far Verify looks for the original sequence of a renumbered event.

constexpr char kEventColumns[] =
    "sequence, event_id, time_s, time_nanos, type, tenant_id, product_key, device_id, "
    "outcome, reason, credential_type, credential_fingerprint, caller, peer_address, "
    "request_id, duration_s, duration_nanos, attributes, prev_hash, hash, encoding";

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return SqliteStatus(sqlite3_extended_errcode(db),
                      absl::StrCat("audit store: ", what, ": ", sqlite3_errmsg(db)),
                      "free space on the audit database's volume, or prune it with "
                      "audit.retention_*; commits are retried meanwhile");
}

// RAII prepared statement with 1-based binds and 0-based column reads.
class Stmt {
 public:
  Stmt(sqlite3* db, absl::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    return rc_ == SQLITE_OK ? absl::OkStatus() : SqlError(db_, "prepare");
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  // A null data pointer would bind SQL NULL; bind an empty value instead.
  void BindText(int i, absl::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data() ? v.data() : "", static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
  }
  void BindBlob(int i, absl::string_view v) {
    sqlite3_bind_blob(stmt_, i, v.data() ? v.data() : "", static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
  }
  void BindNull(int i) { sqlite3_bind_null(stmt_, i); }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  int64_t Int(int c) { return sqlite3_column_int64(stmt_, c); }
  bool IsNull(int c) { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  // The stored type of column c (meaningful before any read converts it).
  int Type(int c) { return sqlite3_column_type(stmt_, c); }
  std::string Text(int c) { return std::string(View(c)); }
  // Valid until the next Step, Reset or column read of another type.
  absl::string_view View(int c) {
    const void* p = sqlite3_column_blob(stmt_, c);
    const int n = sqlite3_column_bytes(stmt_, c);
    return p == nullptr ? absl::string_view() : absl::string_view(static_cast<const char*>(p), n);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("audit store: ", msg));
  }
  return absl::OkStatus();
}

// Rolls back unless committed.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(sqlite3* db, bool write) {
    if (sqlite3_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      return SqlError(db, "begin");
    }
    return Transaction(db);
  }
  Transaction(Transaction&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
  ~Transaction() {
    if (db_ != nullptr) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  absl::Status Commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db_, "commit");
    }
    db_ = nullptr;
    return absl::OkStatus();
  }

 private:
  explicit Transaction(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

// False when the blob is malformed (a tampered row); Verify then reports ALTERED.
bool DecodeAttributes(absl::string_view in, AuditEvent* e) {
  auto get = [&in](std::string* s) {
    if (in.size() < 4) return false;
    const uint32_t n = big_endian::LoadU32(in.data());
    in.remove_prefix(4);
    if (in.size() < n) return false;
    s->assign(in.data(), n);
    in.remove_prefix(n);
    return true;
  };
  while (!in.empty()) {
    std::string k;
    std::string v;
    if (!get(&k) || !get(&v)) return false;
    (*e->mutable_attributes())[k] = v;
  }
  return true;
}

// Whether a row selected with kEventColumns has the shape BindEvent writes: each
// column of its type, the 32-bit fields in range, a time and a duration either
// wholly set or wholly NULL. A row edited into another shape (a number pushed past
// 32 bits, a text retyped as a blob) could decode to the event its hash covers
// while Query's SQL filters no longer match it: Verify reports it ALTERED. Checked
// before any column is read (a read may convert the stored value).
bool RowShapeOk(Stmt& s) {
  for (int c : {0, 4, 8, 20}) {  // sequence, type, outcome, encoding
    if (s.Type(c) != SQLITE_INTEGER) return false;
  }
  for (int c : {1, 5, 6, 7, 9, 10, 11, 12, 13, 14, 18, 19}) {
    if (s.Type(c) != SQLITE_TEXT) return false;
  }
  if (s.Type(17) != SQLITE_BLOB) return false;  // attributes
  for (int c : {2, 15}) {                       // time_s / time_nanos, duration_s / duration_nanos
    const bool null = s.Type(c) == SQLITE_NULL;
    if (null != (s.Type(c + 1) == SQLITE_NULL)) return false;
    if (!null && (s.Type(c) != SQLITE_INTEGER || s.Type(c + 1) != SQLITE_INTEGER)) return false;
  }
  auto int32_ok = [&s](int c) {
    const int64_t v = s.Int(c);
    return v >= INT32_MIN && v <= INT32_MAX;
  };
  if (!int32_ok(4) || !int32_ok(8)) return false;
  return (s.Type(3) == SQLITE_NULL || int32_ok(3)) && (s.Type(16) == SQLITE_NULL || int32_ok(16));
}

// Reads a row selected with kEventColumns. Returns false when a column cannot be
// represented or the row is not in the shape BindEvent writes (a tampered row).
bool RowToEvent(Stmt& s, AuditEvent* e) {
  const bool shape_ok = RowShapeOk(s);
  e->set_sequence(static_cast<uint64_t>(s.Int(0)));
  e->set_event_id(s.Text(1));
  if (!s.IsNull(2)) {
    e->mutable_time()->set_seconds(s.Int(2));
    e->mutable_time()->set_nanos(static_cast<int32_t>(s.Int(3)));
  }
  e->set_type(static_cast<iotauth::audit::v1::EventType>(s.Int(4)));
  e->set_tenant_id(s.Text(5));
  e->set_product_key(s.Text(6));
  e->set_device_id(s.Text(7));
  e->set_outcome(static_cast<iotauth::audit::v1::Outcome>(s.Int(8)));
  e->set_reason(s.Text(9));
  e->set_credential_type(s.Text(10));
  e->set_credential_fingerprint(s.Text(11));
  e->set_caller(s.Text(12));
  e->set_peer_address(s.Text(13));
  e->set_request_id(s.Text(14));
  if (!s.IsNull(15)) {
    e->mutable_duration()->set_seconds(s.Int(15));
    e->mutable_duration()->set_nanos(static_cast<int32_t>(s.Int(16)));
  }
  const bool attrs_ok = DecodeAttributes(s.Text(17), e);
  e->set_prev_hash(s.Text(18));
  e->set_hash(s.Text(19));
  const int64_t encoding = s.Int(20);
  e->set_encoding(static_cast<uint32_t>(encoding));
  return shape_ok && attrs_ok && encoding >= kEncodingV1 && encoding <= kEncodingV2;
}

void BindEvent(Stmt& s, const AuditEvent& e) {
  s.Bind(1, static_cast<int64_t>(e.sequence()));
  s.BindText(2, e.event_id());
  if (e.has_time()) {
    s.Bind(3, e.time().seconds());
    s.Bind(4, e.time().nanos());
  } else {
    s.BindNull(3);
    s.BindNull(4);
  }
  s.Bind(5, e.type());
  s.BindText(6, e.tenant_id());
  s.BindText(7, e.product_key());
  s.BindText(8, e.device_id());
  s.Bind(9, e.outcome());
  s.BindText(10, e.reason());
  s.BindText(11, e.credential_type());
  s.BindText(12, e.credential_fingerprint());
  s.BindText(13, e.caller());
  s.BindText(14, e.peer_address());
  s.BindText(15, e.request_id());
  if (e.has_duration()) {
    s.Bind(16, e.duration().seconds());
    s.Bind(17, e.duration().nanos());
  } else {
    s.BindNull(16);
    s.BindNull(17);
  }
  s.BindBlob(18, EncodeAttributes(e.attributes()));  // the canonical field 16 form
  s.BindText(19, e.prev_hash());
  s.BindText(20, e.hash());
  s.Bind(21, e.encoding());
}

struct State {
  uint64_t first_sequence = 1;
  uint64_t head_sequence = 0;
  std::string head_hash;
};

absl::StatusOr<State> ReadState(sqlite3* db) {
  Stmt s(db, "SELECT first_sequence, head_sequence, head_hash FROM audit_state WHERE id = 1");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  const int rc = s.Step();
  if (rc != SQLITE_ROW) {
    return rc == SQLITE_DONE ? absl::DataLossError("audit store: state row missing")
                             : SqlError(db, "read state");
  }
  State st;
  st.first_sequence = static_cast<uint64_t>(s.Int(0));
  st.head_sequence = static_cast<uint64_t>(s.Int(1));
  st.head_hash = s.Text(2);
  return st;
}

absl::Status WriteState(sqlite3* db, const State& st) {
  Stmt s(db,
         "UPDATE audit_state SET first_sequence = ?, head_sequence = ?, head_hash = ? "
         "WHERE id = 1");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(st.first_sequence));
  s.Bind(2, static_cast<int64_t>(st.head_sequence));
  s.BindText(3, st.head_hash);
  if (s.Step() != SQLITE_DONE) return SqlError(db, "write state");
  return absl::OkStatus();
}

// The stored hash of event `sequence`; DATA_LOSS when it is not stored.
absl::StatusOr<std::string> StoredHash(sqlite3* db, uint64_t sequence) {
  Stmt s(db, "SELECT hash FROM audit_events WHERE sequence = ?");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(sequence));
  if (s.Step() != SQLITE_ROW) {
    return absl::DataLossError(absl::StrCat("audit store: event ", sequence, " missing"));
  }
  return s.Text(0);
}

absl::Status PutCheckpoint(sqlite3* db, uint64_t sequence, absl::string_view hash, absl::Time now) {
  Stmt s(db,
         "INSERT OR REPLACE INTO audit_checkpoints(sequence, head_hash, time_ns) "
         "VALUES (?, ?, ?)");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  s.Bind(1, static_cast<int64_t>(sequence));
  s.BindText(2, hash);
  s.Bind(3, absl::ToUnixNanos(now));
  if (s.Step() != SQLITE_DONE) return SqlError(db, "write checkpoint");
  return absl::OkStatus();
}

// Writes the summary of block `b` from its stored rows (inside the caller's
// write transaction). Runs once per kBlockEvents events.
absl::Status SummarizeBlock(sqlite3* db, uint64_t b) {
  Stmt rows(db,
            "SELECT tenant_id, device_id, time_s FROM audit_events "
            "WHERE sequence > ? AND sequence <= ?");
  IOTAUTH_RETURN_IF_ERROR(rows.status());
  rows.Bind(1, static_cast<int64_t>(b * kBlockEvents));
  rows.Bind(2, static_cast<int64_t>((b + 1) * kBlockEvents));
  BlockFilter filter;
  std::optional<int64_t> min_time;
  std::optional<int64_t> max_time;
  int rc;
  while ((rc = rows.Step()) == SQLITE_ROW) {
    filter.AddTenant(rows.View(0));
    filter.AddDevice(rows.View(1));
    if (!rows.IsNull(2)) {
      const int64_t t = rows.Int(2);
      min_time = std::min(min_time.value_or(t), t);
      max_time = std::max(max_time.value_or(t), t);
    }
  }
  if (rc != SQLITE_DONE) return SqlError(db, "summarize block");
  Stmt put(db,
           "INSERT OR REPLACE INTO audit_blocks(block, min_time_s, max_time_s, filter_version, "
           "filter) VALUES (?, ?, ?, ?, ?)");
  IOTAUTH_RETURN_IF_ERROR(put.status());
  put.Bind(1, static_cast<int64_t>(b));
  if (min_time) {
    put.Bind(2, *min_time);
    put.Bind(3, *max_time);
  } else {
    put.BindNull(2);
    put.BindNull(3);
  }
  put.Bind(4, BlockFilter::kFilterVersion);
  put.BindBlob(5, filter.bytes());
  if (put.Step() != SQLITE_DONE) return SqlError(db, "write block summary");
  return absl::OkStatus();
}

// Summarises every complete block after the last summarised one (a log written
// by schema version 1, or blocks completed before a crash: none, since a block
// is summarised in the transaction that completes it).
absl::Status SummarizeMissingBlocks(sqlite3* db, const State& st) {
  Stmt s(db, "SELECT IFNULL(MAX(block) + 1, 0) FROM audit_blocks");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  if (s.Step() != SQLITE_ROW) return SqlError(db, "block summaries");
  const uint64_t complete = st.head_sequence / kBlockEvents;
  for (uint64_t b =
           std::max(static_cast<uint64_t>(s.Int(0)), (st.first_sequence - 1) / kBlockEvents);
       b < complete; ++b) {
    IOTAUTH_RETURN_IF_ERROR(SummarizeBlock(db, b));
  }
  return absl::OkStatus();
}

// One row of audit_blocks as the candidate search reads it.
struct BlockRow {
  uint64_t block = 0;
  std::optional<int64_t> min_time_s;
  std::optional<int64_t> max_time_s;
  int filter_version = 0;
  absl::string_view filter;  // valid during the may_match call only
};

// Calls `scan(lo, hi)` for the sequence ranges (lo, hi] inside (after, upper]
// that may hold a match, in increasing order: each summarised block that
// `may_match` accepts, and every range no summary covers (the incomplete last
// block, say). Stops when `scan` returns false. Runs in the caller's transaction.
absl::Status ForEachCandidateRange(
    sqlite3* db, uint64_t after, uint64_t upper, absl::FunctionRef<bool(const BlockRow&)> may_match,
    absl::FunctionRef<absl::StatusOr<bool>(uint64_t, uint64_t)> scan) {
  Stmt blocks(db,
              "SELECT block, min_time_s, max_time_s, filter_version, filter FROM audit_blocks "
              "WHERE block >= ? ORDER BY block");
  IOTAUTH_RETURN_IF_ERROR(blocks.status());
  blocks.Bind(1, static_cast<int64_t>(after / kBlockEvents));
  uint64_t cursor = after;
  int rc = SQLITE_DONE;
  while (cursor < upper && (rc = blocks.Step()) == SQLITE_ROW) {
    BlockRow row;
    row.block = static_cast<uint64_t>(blocks.Int(0));
    const uint64_t first = row.block * kBlockEvents + 1;
    const uint64_t last = (row.block + 1) * kBlockEvents;
    if (last <= cursor) continue;
    if (first > cursor + 1) {  // not summarised: a candidate as a whole
      const uint64_t hi = std::min(first - 1, upper);
      IOTAUTH_ASSIGN_OR_RETURN(bool more, scan(cursor, hi));
      cursor = hi;
      if (!more || cursor >= upper) return absl::OkStatus();
    }
    if (!blocks.IsNull(1)) row.min_time_s = blocks.Int(1);
    if (!blocks.IsNull(2)) row.max_time_s = blocks.Int(2);
    row.filter_version = static_cast<int>(blocks.Int(3));
    row.filter = blocks.View(4);
    const uint64_t hi = std::min(last, upper);
    if (may_match(row)) {
      IOTAUTH_ASSIGN_OR_RETURN(bool more, scan(cursor, hi));
      if (!more) return absl::OkStatus();
    }
    cursor = hi;
  }
  if (cursor < upper) {
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError(db, "read block summaries");
    IOTAUTH_ASSIGN_OR_RETURN(bool more, scan(cursor, upper));
    (void)more;
  }
  return absl::OkStatus();
}

// Whether a block may hold an event matching `f` (never false for a match).
bool BlockMayMatch(const BlockRow& row, const EventFilter& f) {
  if (f.start_time || f.end_time) {
    if (!row.min_time_s) return false;  // no event of the block has a time
    if (f.start_time && *row.max_time_s < absl::ToUnixSeconds(*f.start_time)) return false;
    if (f.end_time && *row.min_time_s > absl::ToUnixSeconds(*f.end_time)) return false;
  }
  if (f.tenant_id.empty() && f.device_id.empty()) return true;
  if (row.filter_version != BlockFilter::kFilterVersion) return true;  // unknown: scan it
  auto filter = BlockFilter::FromBytes(row.filter);
  if (!filter.ok()) return true;
  if (!f.tenant_id.empty() && !filter->MayContainTenant(f.tenant_id)) return false;
  if (!f.device_id.empty() && !filter->MayContainDevice(f.device_id)) return false;
  return true;
}

absl::StatusOr<sqlite3*> OpenDb(const std::string& path, bool read_only) {
  ConfigureSqliteOnce();
  sqlite3* db = nullptr;
  const int flags =
      (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
      SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    absl::Status st = absl::UnavailableError(
        absl::StrCat("audit store: cannot open ", path, ": ", db ? sqlite3_errmsg(db) : "oom"));
    sqlite3_close(db);
    return st;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  return db;
}

// The chain walk behind Verify and ApplyRetention. Runs inside the caller's
// transaction on `db`.
absl::StatusOr<VerifyResult> VerifyOn(sqlite3* db, uint64_t from, uint64_t to) {
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(db));
  VerifyResult r;
  auto fail = [&r](uint64_t seq, absl::string_view problem, std::string detail) {
    return FailWith(r, {seq, problem, std::move(detail)});
  };

  uint64_t max_row = 0;
  uint64_t max_ckpt = 0;
  {
    Stmt s(db,
           "SELECT IFNULL((SELECT MAX(sequence) FROM audit_events), 0), "
           "IFNULL((SELECT MAX(sequence) FROM audit_checkpoints), 0)");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    if (s.Step() != SQLITE_ROW) return SqlError(db, "verify bounds");
    max_row = static_cast<uint64_t>(s.Int(0));
    max_ckpt = static_cast<uint64_t>(s.Int(1));
  }
  const bool to_head = to == 0;
  const uint64_t known_end = std::max({st.head_sequence, max_row, max_ckpt});
  const uint64_t upper = to_head ? known_end : std::min(to, known_end);
  from = std::max<uint64_t>({from, st.first_sequence, 1});

  // Anchor: the newest checkpoint before `from` at or after the retained start.
  uint64_t anchor_seq = 0;
  std::string anchor_hash(kGenesisHash);
  {
    Stmt s(db,
           "SELECT sequence, head_hash FROM audit_checkpoints WHERE sequence < ? AND "
           "sequence >= ? ORDER BY sequence DESC LIMIT 1");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>(std::min<uint64_t>(from, INT64_MAX)));
    s.Bind(2, static_cast<int64_t>(st.first_sequence - 1));
    const int rc = s.Step();
    if (rc == SQLITE_ROW) {
      anchor_seq = static_cast<uint64_t>(s.Int(0));
      anchor_hash = s.Text(1);
    } else if (rc != SQLITE_DONE) {
      return SqlError(db, "verify anchor");
    } else if (st.first_sequence > 1) {
      return fail(st.first_sequence, kProblemCheckpointMismatch,
                  absl::StrCat("no anchor checkpoint at ", st.first_sequence - 1,
                               " for the retained start of the log"));
    }
  }
  r.anchor_sequence = anchor_seq;
  r.anchor_hash = anchor_hash;
  if (upper <= anchor_seq) return r;

  std::map<uint64_t, std::string> checkpoints;
  {
    Stmt s(db,
           "SELECT sequence, head_hash FROM audit_checkpoints WHERE sequence > ? AND "
           "sequence <= ?");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>(anchor_seq));
    s.Bind(2, static_cast<int64_t>(upper));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) checkpoints[static_cast<uint64_t>(s.Int(0))] = s.Text(1);
    if (rc != SQLITE_DONE) return SqlError(db, "verify checkpoints");
  }

  Stmt later(db, "SELECT sequence FROM audit_events WHERE hash = ? AND sequence > ? LIMIT 1");
  IOTAUTH_RETURN_IF_ERROR(later.status());
  Stmt rows(db, absl::StrCat("SELECT ", kEventColumns,
                             " FROM audit_events WHERE sequence > ? AND sequence <= ? "
                             "ORDER BY sequence"));
  IOTAUTH_RETURN_IF_ERROR(rows.status());
  rows.Bind(1, static_cast<int64_t>(anchor_seq));
  rows.Bind(2, static_cast<int64_t>(upper));

  uint64_t expected_seq = anchor_seq + 1;
  std::string expected_prev = anchor_hash;
  int rc;
  while ((rc = rows.Step()) == SQLITE_ROW) {
    AuditEvent e;
    const bool decoded = RowToEvent(rows, &e);
    const uint64_t seq = e.sequence();
    if (seq != expected_seq) return FailWith(r, AbsentFault(expected_seq, seq));
    auto computed = ComputeEventHash(e);
    const bool self_ok = decoded && computed.ok() && *computed == e.hash();
    if (e.prev_hash() != expected_prev) {
      later.Reset();
      later.BindText(1, e.prev_hash());
      later.Bind(2, static_cast<int64_t>(seq));
      const int lrc = later.Step();
      if (lrc == SQLITE_ROW) {
        return FailWith(r, FollowsLaterFault(seq, static_cast<uint64_t>(later.Int(0))));
      }
      if (lrc != SQLITE_DONE) return SqlError(db, "verify reorder lookup");
      return FailWith(r, BrokenLinkFault(seq, decoded ? &e : nullptr, self_ok, anchor_seq));
    }
    if (!self_ok) return FailWith(r, AlteredFault(seq));
    auto ck = checkpoints.find(seq);
    if (ck != checkpoints.end() && ck->second != e.hash()) return FailWith(r, CheckpointFault(seq));
    ++r.events_checked;
    r.last_sequence = seq;
    expected_prev = e.hash();
    ++expected_seq;
  }
  if (rc != SQLITE_DONE) return SqlError(db, "verify scan");
  if (expected_seq <= upper) return FailWith(r, EndsEarlyFault(upper, expected_seq - 1));
  if (to_head && upper == st.head_sequence && st.head_sequence > anchor_seq &&
      expected_prev != st.head_hash) {
    return fail(st.head_sequence, kProblemCheckpointMismatch,
                "the chain head recorded at the last commit is not this event's hash: later "
                "events were removed, or the head record was altered");
  }
  return r;
}

// Brings a log written by an older schema up to kSchemaVersion, in one
// transaction: version 1 -> 2 drops the per-column indexes and summarises the
// complete blocks (about a second per million events); 2 -> 3 adds the encoding
// column, 1 for every row already there.
absl::Status MigrateToCurrentSchema(sqlite3* db) {
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db, /*write=*/true));
  int version = 0;
  {
    Stmt s(db, "SELECT schema_version FROM audit_state WHERE id = 1");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    if (s.Step() != SQLITE_ROW) return SqlError(db, "read schema version");
    version = static_cast<int>(s.Int(0));
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "audit store: the database has schema version ", version,
        ", newer than this build understands (", kSchemaVersion, "); run a newer iotauthd"));
  }
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(db));
  IOTAUTH_RETURN_IF_ERROR(Exec(db, kDropVersion1Indexes));
  bool has_encoding = false;
  {
    Stmt s(db, "SELECT 1 FROM pragma_table_info('audit_events') WHERE name = 'encoding'");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    has_encoding = s.Step() == SQLITE_ROW;
  }
  if (!has_encoding) {
    // Every row written so far is canonical version 1.
    IOTAUTH_RETURN_IF_ERROR(
        Exec(db, "ALTER TABLE audit_events ADD COLUMN encoding INTEGER NOT NULL DEFAULT 1"));
  }
  IOTAUTH_RETURN_IF_ERROR(SummarizeMissingBlocks(db, st));
  if (version != kSchemaVersion) {
    Stmt s(db, "UPDATE audit_state SET schema_version = ? WHERE id = 1");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, kSchemaVersion);
    if (s.Step() != SQLITE_DONE) return SqlError(db, "write schema version");
  }
  return txn.Commit();
}

}  // namespace

SqliteAuditStore::SqliteAuditStore(Options options, sqlite3* writer, sqlite3* reader)
    : options_(std::move(options)), writer_(writer), reader_(reader) {}

SqliteAuditStore::~SqliteAuditStore() {
  sqlite3_close(reader_);
  sqlite3_close(writer_);
}

absl::StatusOr<std::unique_ptr<SqliteAuditStore>> SqliteAuditStore::Open(Options options) {
  if (options.path.empty()) return absl::InvalidArgumentError("audit store: empty path");
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  IOTAUTH_ASSIGN_OR_RETURN(sqlite3 * writer, OpenDb(options.path, /*read_only=*/false));
  auto close_writer = [writer](absl::Status s) {
    sqlite3_close(writer);
    return s;
  };
  // WAL: readers (Query, Watch, Verify) never block the writer. FULL: a commit is on
  // disk when Append returns, which is what "committed" promises the producers.
  // A larger WAL before SQLite folds it into the database: fewer of those slow
  // checkpoints land inside an Append (about 2x sustained throughput measured).
  const std::string checkpoint_pragma =
      absl::StrCat("PRAGMA wal_autocheckpoint=", options.wal_autocheckpoint_pages);
  const std::string cache_pragma =
      absl::StrCat("PRAGMA cache_size=-", std::max(options.writer_cache_kib, 64));
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             checkpoint_pragma.c_str(), cache_pragma.c_str()}) {
    absl::Status s = Exec(writer, pragma);
    if (!s.ok()) return close_writer(s);
  }
  {
    absl::Status s = Exec(writer, kSchema);
    if (!s.ok()) return close_writer(s);
    s = Exec(writer,
             "INSERT OR IGNORE INTO audit_state(id, schema_version, first_sequence, "
             "head_sequence, head_hash) VALUES (1, 3, 1, 0, "
             "'0000000000000000000000000000000000000000000000000000000000000000')");
    if (!s.ok()) return close_writer(s);
    s = MigrateToCurrentSchema(writer);
    if (!s.ok()) return close_writer(s);
  }
  auto reader = OpenDb(options.path, /*read_only=*/true);
  if (!reader.ok()) return close_writer(reader.status());
  return std::unique_ptr<SqliteAuditStore>(
      new SqliteAuditStore(std::move(options), writer, *reader));
}

absl::StatusOr<std::vector<AppendedEvent>> SqliteAuditStore::Append(
    std::vector<AuditEvent>* events_ptr) {
  std::vector<AuditEvent>& events = *events_ptr;
  for (const AuditEvent& e : events) {
    if (e.event_id().empty()) return absl::InvalidArgumentError("audit event without event_id");
    if (e.has_time() && (e.time().nanos() < 0 || e.time().nanos() > 999999999)) {
      return absl::InvalidArgumentError("audit event time has out-of-range nanos");
    }
  }
  absl::MutexLock lock(&writer_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(writer_, /*write=*/true));
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(writer_));
  Stmt insert(writer_, absl::StrCat("INSERT INTO audit_events(", kEventColumns,
                                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  IOTAUTH_RETURN_IF_ERROR(insert.status());
  Stmt existing(writer_, "SELECT sequence FROM audit_events WHERE event_id = ?");
  IOTAUTH_RETURN_IF_ERROR(existing.status());

  std::vector<AppendedEvent> results;
  results.reserve(events.size());
  const uint64_t complete_before = st.head_sequence / kBlockEvents;
  const absl::Time now = options_.clock->Now();
  for (AuditEvent& e : events) {
    e.set_sequence(st.head_sequence + 1);
    if (options_.yield_every_events > 0 && ++appended_since_yield_ >= options_.yield_every_events) {
      appended_since_yield_ = 0;
      sched_yield();
    }
    IOTAUTH_RETURN_IF_ERROR(ChainEvent(st.head_hash, &e));
    insert.Reset();
    BindEvent(insert, e);
    const int rc = insert.Step();
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
      // event_id already stored: a resend. Acknowledge with the stored sequence.
      existing.Reset();
      existing.BindText(1, e.event_id());
      if (existing.Step() != SQLITE_ROW) return SqlError(writer_, "dedup lookup");
      e.set_sequence(static_cast<uint64_t>(existing.Int(0)));
      results.push_back({e.sequence(), true});
      continue;
    }
    if (rc != SQLITE_DONE) return SqlError(writer_, "insert event");
    st.head_sequence = e.sequence();
    st.head_hash = e.hash();
    if (options_.checkpoint_interval != 0 && st.head_sequence % options_.checkpoint_interval == 0) {
      IOTAUTH_RETURN_IF_ERROR(PutCheckpoint(writer_, st.head_sequence, st.head_hash, now));
    }
    results.push_back({e.sequence(), false});
  }
  // Blocks this batch completed get their summary in the same transaction.
  for (uint64_t b = complete_before; b < st.head_sequence / kBlockEvents; ++b) {
    IOTAUTH_RETURN_IF_ERROR(SummarizeBlock(writer_, b));
  }
  IOTAUTH_RETURN_IF_ERROR(WriteState(writer_, st));
  IOTAUTH_RETURN_IF_ERROR(txn.Commit());
  return results;
}

absl::StatusOr<std::vector<AuditEvent>> SqliteAuditStore::Query(const EventFilter& f, int limit) {
  // Always bounded by a sequence range: the whole filter (after_sequence,
  // max_sequence], or one candidate block of it.
  std::string sql = absl::StrCat("SELECT ", kEventColumns,
                                 " FROM audit_events WHERE sequence > ? AND sequence <= ?");
  if (f.start_time) sql += " AND (time_s, time_nanos) >= (?, ?)";
  if (f.end_time) sql += " AND (time_s, time_nanos) < (?, ?)";
  if (!f.tenant_id.empty()) sql += " AND tenant_id = ?";
  if (!f.device_id.empty()) sql += " AND device_id = ?";
  if (f.type != iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED) sql += " AND type = ?";
  if (f.outcome != iotauth::audit::v1::OUTCOME_UNSPECIFIED) sql += " AND outcome = ?";
  sql += " ORDER BY sequence LIMIT ?";

  absl::MutexLock lock(&reader_mu_);
  // One snapshot for the block summaries and the rows they lead to.
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(reader_, /*write=*/false));
  Stmt s(reader_, sql);
  IOTAUTH_RETURN_IF_ERROR(s.status());
  std::vector<AuditEvent> out;
  const auto wanted = static_cast<size_t>(std::max(limit, 0));
  // Appends the matches in (lo, hi] to `out`; false once `out` is full.
  auto scan = [&](uint64_t lo, uint64_t hi) -> absl::StatusOr<bool> {
    if (out.size() >= wanted) return false;
    s.Reset();
    int i = 1;
    // Sequences are below 2^63; a larger bound (a client's page token) must not wrap.
    s.Bind(i++, static_cast<int64_t>(std::min<uint64_t>(lo, INT64_MAX)));
    s.Bind(i++, static_cast<int64_t>(std::min<uint64_t>(hi, INT64_MAX)));
    for (const auto& t : {f.start_time, f.end_time}) {
      if (!t) continue;
      google::protobuf::Timestamp ts;
      SetTimestamp(*t, &ts);
      s.Bind(i++, ts.seconds());
      s.Bind(i++, ts.nanos());
    }
    if (!f.tenant_id.empty()) s.BindText(i++, f.tenant_id);
    if (!f.device_id.empty()) s.BindText(i++, f.device_id);
    if (f.type != iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED) s.Bind(i++, f.type);
    if (f.outcome != iotauth::audit::v1::OUTCOME_UNSPECIFIED) s.Bind(i++, f.outcome);
    s.Bind(i++, static_cast<int64_t>(wanted - out.size()));
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.emplace_back();
      RowToEvent(s, &out.back());
    }
    if (rc != SQLITE_DONE) return SqlError(reader_, "query");
    return out.size() < wanted;
  };
  const uint64_t upper = f.max_sequence != 0 ? f.max_sequence : UINT64_MAX;
  const bool selective = !f.tenant_id.empty() || !f.device_id.empty() || f.start_time || f.end_time;
  if (!selective) {
    // Type and outcome are not summarised: one range scan in sequence order.
    IOTAUTH_RETURN_IF_ERROR(scan(f.after_sequence, upper).status());
    return out;
  }
  IOTAUTH_RETURN_IF_ERROR(ForEachCandidateRange(
      reader_, f.after_sequence, upper, [&f](const BlockRow& row) { return BlockMayMatch(row, f); },
      scan));
  return out;
}

absl::StatusOr<ChainHead> SqliteAuditStore::Head() {
  absl::MutexLock lock(&reader_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(reader_));
  return ChainHead{st.head_sequence, st.head_hash};
}

absl::StatusOr<uint64_t> SqliteAuditStore::FirstSequence() {
  absl::MutexLock lock(&reader_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(reader_));
  return st.first_sequence;
}

absl::StatusOr<CheckpointRecord> SqliteAuditStore::CreateCheckpoint(absl::Time now) {
  absl::MutexLock lock(&writer_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(writer_, /*write=*/true));
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(writer_));
  if (st.head_sequence == 0) {
    return absl::FailedPreconditionError("audit log is empty: nothing to checkpoint");
  }
  {
    Stmt s(writer_, "SELECT head_hash, time_ns FROM audit_checkpoints WHERE sequence = ?");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>(st.head_sequence));
    if (s.Step() == SQLITE_ROW) {
      return CheckpointRecord{st.head_sequence, s.Text(0), absl::FromUnixNanos(s.Int(1))};
    }
  }
  IOTAUTH_RETURN_IF_ERROR(PutCheckpoint(writer_, st.head_sequence, st.head_hash, now));
  IOTAUTH_RETURN_IF_ERROR(txn.Commit());
  return CheckpointRecord{st.head_sequence, st.head_hash, now};
}

absl::StatusOr<std::optional<CheckpointRecord>> SqliteAuditStore::LatestCheckpoint() {
  absl::MutexLock lock(&reader_mu_);
  Stmt s(reader_,
         "SELECT sequence, head_hash, time_ns FROM audit_checkpoints "
         "ORDER BY sequence DESC LIMIT 1");
  IOTAUTH_RETURN_IF_ERROR(s.status());
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<CheckpointRecord>();
  if (rc != SQLITE_ROW) return SqlError(reader_, "latest checkpoint");
  return std::optional<CheckpointRecord>(
      CheckpointRecord{static_cast<uint64_t>(s.Int(0)), s.Text(1), absl::FromUnixNanos(s.Int(2))});
}

absl::StatusOr<std::optional<CheckpointRecord>> SqliteAuditStore::PlanRetention(
    const RetentionPolicy& policy, absl::Time now) {
  if (policy.max_bytes > 0) {
    return absl::InvalidArgumentError(
        "audit retention by size needs the segment log (storage.audit_backend=log): an "
        "SQLite file does not shrink when events are pruned");
  }
  absl::MutexLock lock(&writer_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(writer_, /*write=*/false));
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(writer_));
  uint64_t new_first = st.first_sequence;
  if (policy.max_rows > 0 && st.head_sequence >= st.first_sequence &&
      st.head_sequence - st.first_sequence + 1 > policy.max_rows) {
    new_first = st.head_sequence - policy.max_rows + 1;
  }
  if (policy.max_age > absl::ZeroDuration()) {
    google::protobuf::Timestamp cutoff;
    SetTimestamp(now - policy.max_age, &cutoff);
    // The first event at or after the cutoff: blocks that end before it are
    // skipped by their summary.
    Stmt s(writer_,
           "SELECT MIN(sequence) FROM audit_events WHERE sequence > ? AND sequence <= ? AND "
           "(time_s, time_nanos) >= (?, ?)");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    uint64_t young = st.head_sequence + 1;
    auto scan = [&](uint64_t lo, uint64_t hi) -> absl::StatusOr<bool> {
      s.Reset();
      s.Bind(1, static_cast<int64_t>(lo));
      s.Bind(2, static_cast<int64_t>(hi));
      s.Bind(3, cutoff.seconds());
      s.Bind(4, cutoff.nanos());
      if (s.Step() != SQLITE_ROW) return SqlError(writer_, "retention cutoff");
      if (s.IsNull(0)) return true;
      young = static_cast<uint64_t>(s.Int(0));
      return false;
    };
    IOTAUTH_RETURN_IF_ERROR(ForEachCandidateRange(
        writer_, st.first_sequence - 1, st.head_sequence,
        [&cutoff](const BlockRow& row) {
          return row.max_time_s.has_value() && *row.max_time_s >= cutoff.seconds();
        },
        scan));
    new_first = std::max(new_first, young);
  }
  if (new_first <= st.first_sequence) return std::optional<CheckpointRecord>();

  // Refuse to discard evidence of tampering: the part being pruned must verify.
  const uint64_t anchor = new_first - 1;
  IOTAUTH_ASSIGN_OR_RETURN(VerifyResult check, VerifyOn(writer_, st.first_sequence, anchor));
  if (!check.ok) {
    return absl::FailedPreconditionError(
        absl::StrCat("refusing to prune: the chain does not verify at ", check.first_bad_sequence,
                     " (", check.problem, ")"));
  }
  IOTAUTH_ASSIGN_OR_RETURN(std::string anchor_hash, StoredHash(writer_, anchor));
  return std::optional<CheckpointRecord>(CheckpointRecord{anchor, anchor_hash, now});
}

absl::StatusOr<uint64_t> SqliteAuditStore::PruneThrough(const CheckpointRecord& cut,
                                                        absl::Time now) {
  absl::MutexLock lock(&writer_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(writer_, /*write=*/true));
  IOTAUTH_ASSIGN_OR_RETURN(State st, ReadState(writer_));
  if (cut.sequence < st.first_sequence) return 0;  // pruned already
  if (cut.sequence > st.head_sequence) {
    return absl::FailedPreconditionError(absl::StrCat("audit store: cannot prune through event ",
                                                      cut.sequence, ": the log ends at ",
                                                      st.head_sequence));
  }
  // The cut is still the event it was planned on (PlanRetention verified the chain
  // up to it).
  IOTAUTH_ASSIGN_OR_RETURN(std::string stored_hash, StoredHash(writer_, cut.sequence));
  if (stored_hash != cut.head_hash) {
    return absl::FailedPreconditionError(absl::StrCat("refusing to prune: event ", cut.sequence,
                                                      " is not the one retention planned to cut"));
  }
  const uint64_t anchor = cut.sequence;
  const uint64_t new_first = anchor + 1;
  IOTAUTH_RETURN_IF_ERROR(PutCheckpoint(writer_, anchor, cut.head_hash, now));
  uint64_t removed = 0;
  {
    Stmt s(writer_, "DELETE FROM audit_events WHERE sequence < ?");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>(new_first));
    if (s.Step() != SQLITE_DONE) return SqlError(writer_, "prune events");
    removed = static_cast<uint64_t>(sqlite3_changes(writer_));
  }
  {
    Stmt s(writer_, "DELETE FROM audit_checkpoints WHERE sequence < ?");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>(anchor));
    if (s.Step() != SQLITE_DONE) return SqlError(writer_, "prune checkpoints");
  }
  {
    // Summaries of blocks that are now wholly pruned (a partly pruned block keeps
    // its summary: it still describes the events left).
    Stmt s(writer_, "DELETE FROM audit_blocks WHERE block < ?");
    IOTAUTH_RETURN_IF_ERROR(s.status());
    s.Bind(1, static_cast<int64_t>((new_first - 1) / kBlockEvents));
    if (s.Step() != SQLITE_DONE) return SqlError(writer_, "prune block summaries");
  }
  st.first_sequence = new_first;
  IOTAUTH_RETURN_IF_ERROR(WriteState(writer_, st));
  IOTAUTH_RETURN_IF_ERROR(txn.Commit());
  return removed;
}

absl::StatusOr<VerifyResult> SqliteAuditStore::Verify(uint64_t from_sequence,
                                                      uint64_t to_sequence) {
  // A private connection: a long walk must not hold up Query and Watch.
  IOTAUTH_ASSIGN_OR_RETURN(sqlite3 * db, OpenDb(options_.path, /*read_only=*/true));
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> closer(db, sqlite3_close);
  IOTAUTH_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db, /*write=*/false));
  return VerifyOn(db, from_sequence, to_sequence);
}

uint64_t SqliteAuditStore::StoredBytes() const {
  uint64_t bytes = 0;
  for (const std::string& path : {options_.path, options_.path + "-wal"}) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) bytes += static_cast<uint64_t>(st.st_size);
  }
  return bytes;
}

}  // namespace iotauth::audit
