#include "services/registry/sqlite_store.h"

#include <openssl/crypto.h>
#include <sqlite3.h>

#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/timestamp.pb.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/common/sqlite_setup.h"
#include "services/common/status_macros.h"
#include "services/registry/validation.h"

namespace iotauth::registry {
namespace sqlite_internal {

// A prepared statement borrowed from a connection's cache; reset on destruction.
class Stmt {
 public:
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  ~Stmt() {
    if (s_ != nullptr) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& Text(int i, absl::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Blob(int i, absl::string_view v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // NULL when empty.
  Stmt& BlobOrNull(int i, absl::string_view v) {
    if (v.empty()) {
      sqlite3_bind_null(s_, i);
      return *this;
    }
    return Blob(i, v);
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(s_); }
  absl::string_view ColText(int i) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p == nullptr ? absl::string_view() : absl::string_view(p, sqlite3_column_bytes(s_, i));
  }
  absl::string_view ColBlob(int i) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p == nullptr ? absl::string_view() : absl::string_view(p, sqlite3_column_bytes(s_, i));
  }
  int64_t ColInt(int i) { return sqlite3_column_int64(s_, i); }
  // Makes the statement runnable again (bindings are kept until rebound).
  void Reset() { sqlite3_reset(s_); }

 private:
  sqlite3_stmt* s_;
};

class Db {
 public:
  explicit Db(sqlite3* db) : db_(db) {}
  ~Db() {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    sqlite3_close(db_);
  }
  sqlite3* raw() { return db_; }

  // Maps the connection's last error to a status: lock contention (another
  // process holding the file past the busy timeout) is UNAVAILABLE, a full disk
  // RESOURCE_EXHAUSTED, anything else INTERNAL.
  absl::Status Error(absl::string_view what) {
    return FromCode(sqlite3_errcode(db_),
                    absl::StrCat("sqlite: ", what, ": ", sqlite3_errmsg(db_)));
  }
  // Statements run in one go (BEGIN, COMMIT, schema changes): mapped as Error().
  absl::Status Exec(const char* sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return FromCode(rc, absl::StrCat("sqlite: ", msg));
    }
    return absl::OkStatus();
  }
  static absl::Status FromCode(int code, absl::string_view msg) {
    return SqliteStatus(code, msg,
                        "free space on the volume holding the registry database; nothing of "
                        "this change was written");
  }
  absl::StatusOr<sqlite3_stmt*> Prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      return Error("prepare");
    }
    cache_.emplace(sql, s);
    return s;
  }

 private:
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

}  // namespace sqlite_internal

using sqlite_internal::Db;
using sqlite_internal::Stmt;

namespace {

// Migrations: each entry moves the schema from version-1 to version. Never edit a
// released entry; append a new one.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE tenants(
  id TEXT PRIMARY KEY,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  secrets BLOB
) WITHOUT ROWID;
CREATE TABLE products(
  product_key TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  secret BLOB
) WITHOUT ROWID;
CREATE INDEX products_by_tenant ON products(tenant_id, product_key);
CREATE TABLE devices(
  tenant_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  product_key TEXT NOT NULL,
  status INTEGER NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  primary_key BLOB,
  secondary_key BLOB,
  PRIMARY KEY(tenant_id, device_id)
) WITHOUT ROWID;
CREATE INDEX devices_by_product ON devices(tenant_id, product_key, device_id);
CREATE TABLE device_tags(
  tenant_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(tenant_id, device_id, key)
) WITHOUT ROWID;
CREATE INDEX device_tags_by_value ON device_tags(tenant_id, key, value);
CREATE TABLE enrollment_groups(
  tenant_id TEXT NOT NULL,
  id TEXT NOT NULL,
  product_key TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  group_key BLOB,
  PRIMARY KEY(tenant_id, id)
) WITHOUT ROWID;
CREATE TABLE ca_certificates(
  tenant_id TEXT NOT NULL,
  id TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  jit_product_key TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY(tenant_id, id),
  UNIQUE(tenant_id, fingerprint)
) WITHOUT ROWID;
CREATE TABLE changes(
  cursor INTEGER PRIMARY KEY AUTOINCREMENT,
  time_us INTEGER NOT NULL,
  type INTEGER NOT NULL,
  resource_type INTEGER NOT NULL,
  tenant_id TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  etag TEXT NOT NULL
);
)sql"},
    {2, R"sql(
CREATE INDEX changes_by_tenant ON changes(tenant_id, cursor);
)sql"},
    {3, R"sql(
CREATE TABLE change_log_meta(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  pruned_through INTEGER NOT NULL
);
INSERT INTO change_log_meta(id, pruned_through) VALUES(1, 0);
)sql"},
    {4, R"sql(
CREATE TABLE revocations(
  tenant_id TEXT NOT NULL,
  id TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY(tenant_id, id)
) WITHOUT ROWID;
CREATE TABLE crls(
  tenant_id TEXT NOT NULL,
  ca_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY(tenant_id, ca_id)
) WITHOUT ROWID;
CREATE TABLE issuing_cas(
  tenant_id TEXT NOT NULL PRIMARY KEY,
  ca_id TEXT NOT NULL,
  etag TEXT NOT NULL,
  body BLOB NOT NULL,
  private_key BLOB NOT NULL
) WITHOUT ROWID;
)sql"},
};

void ToTimestamp(absl::Time t, google::protobuf::Timestamp* ts) {
  int64_t us = absl::ToUnixMicros(t);
  int64_t s = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
  ts->set_seconds(s);
  ts->set_nanos(static_cast<int32_t>((us - s * 1000000) * 1000));
}

std::string EtagOf(int64_t cursor) { return absl::StrCat(cursor); }

absl::Status NotFound(absl::string_view what) {
  return WithErrorReason(absl::NotFoundError(absl::StrCat(what, " not found")), "NOT_FOUND");
}
absl::Status AlreadyExists(absl::string_view what) {
  return WithErrorReason(absl::AlreadyExistsError(absl::StrCat(what, " already exists")),
                         "ALREADY_EXISTS");
}
absl::Status Precondition(absl::string_view reason, absl::string_view message) {
  return WithErrorReason(absl::FailedPreconditionError(message), reason);
}

absl::Status CheckEtag(absl::string_view stored, absl::string_view expected) {
  if (!expected.empty() && stored != expected) {
    return Precondition("ETAG_MISMATCH", "etag does not match the stored version");
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status ParseBody(absl::string_view blob, T* out) {
  if (!out->ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
    return absl::DataLossError("stored record does not parse");
  }
  return absl::OkStatus();
}

template <typename T>
std::string Serialize(const T& msg) {
  std::string s;
  msg.SerializeToString(&s);
  return s;
}

absl::Status StepDone(Db& db, Stmt& st, absl::string_view what) {
  int rc = st.Step();
  if (rc != SQLITE_DONE) return db.Error(what);
  return absl::OkStatus();
}

bool IsConstraint(int rc) { return (rc & 0xff) == SQLITE_CONSTRAINT; }

// Collects one page of a List: `st` selects rows whose first column is the page key,
// bound with LIMIT page_size + 1 (the extra row only says there is more); `decode`
// turns the current row into an item. INTERNAL names `what` on a SQLite failure.
template <typename T, typename Decode>
absl::StatusOr<Page<T>> CollectPage(Db& db, Stmt& st, int32_t page_size, absl::string_view what,
                                    Decode decode) {
  Page<T> out;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    if (static_cast<int32_t>(out.items.size()) == page_size) {
      out.more = true;
      break;
    }
    IOTAUTH_ASSIGN_OR_RETURN(T item, decode(st));
    out.last_key = std::string(st.ColText(0));
    out.items.push_back(std::move(item));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db.Error(absl::StrCat("list ", what));
  return out;
}

// AADs: one per secret column, naming the row.
std::string DeviceAad(absl::string_view tenant, absl::string_view id, absl::string_view field) {
  return SecretAad("device", tenant, id, field);
}

}  // namespace

// Declares `Stmt var` prepared (and cached) on `db`, returning on failure.
#define IOTAUTH_PREPARE(var, db, sql)                                                           \
  IOTAUTH_ASSIGN_OR_RETURN(sqlite3_stmt* IOTAUTH_STATUS_CONCAT_(var, _raw), (db).Prepare(sql)); \
  Stmt var(IOTAUTH_STATUS_CONCAT_(var, _raw))

namespace {

// Runs a two-key statement (a DELETE by tenant and id, typically) to completion.
absl::Status ExecKeyed(Db& db, const char* sql, absl::string_view key1, absl::string_view key2,
                       absl::string_view what) {
  IOTAUTH_PREPARE(st, db, sql);
  st.Text(1, key1).Text(2, key2);
  return StepDone(db, st, what);
}

// The etag precondition of a Delete: NOT_FOUND naming `kind` when the row
// selected by `select_etag_sql` (two text parameters) does not exist,
// FAILED_PRECONDITION when `expected_etag` is set and differs.
absl::Status CheckRowEtag(Db& db, const char* select_etag_sql, absl::string_view key1,
                          absl::string_view key2, absl::string_view kind,
                          absl::string_view expected_etag) {
  IOTAUTH_PREPARE(st, db, select_etag_sql);
  st.Text(1, key1).Text(2, key2);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound(kind);
  if (rc != SQLITE_ROW) return db.Error(absl::StrCat("get ", kind));
  return CheckEtag(st.ColText(0), expected_etag);
}

}  // namespace

// State of one write transaction.
struct SqliteStore::Txn {
  Db* db;
  absl::Time now;
  std::shared_ptr<const SecretBox> box;
  // Highest cursor allocated so far (committed, or by this transaction).
  int64_t last_cursor;

  // The etag the next AppendChange will produce.
  std::string NextEtag() const { return EtagOf(last_cursor + 1); }

  absl::Status AppendChange(v1::ChangeType type, v1::ResourceType resource,
                            absl::string_view tenant, absl::string_view id) {
    int64_t cursor = last_cursor + 1;
    IOTAUTH_PREPARE(st, *db,
                    "INSERT INTO changes(cursor, time_us, type, resource_type, tenant_id, "
                    "resource_id, etag) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    st.Int(1, cursor)
        .Int(2, absl::ToUnixMicros(now))
        .Int(3, type)
        .Int(4, resource)
        .Text(5, tenant)
        .Text(6, id)
        .Text(7, type == v1::CHANGE_TYPE_DELETED ? "" : EtagOf(cursor));
    IOTAUTH_RETURN_IF_ERROR(StepDone(*db, st, "append change"));
    last_cursor = cursor;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Seal(absl::string_view plaintext, const std::string& aad) {
    if (plaintext.empty()) return std::string();
    return box->Seal(plaintext, aad);
  }
};

// Returns a reader connection to the pool when it goes out of scope.
class SqliteStore::ReaderLease {
 public:
  ReaderLease(SqliteStore* store, std::unique_ptr<Db>* db) : store_(store), db_(db) {}
  ~ReaderLease() {
    if (*db_) store_->ReleaseReader(std::move(*db_));
  }

 private:
  SqliteStore* store_;
  std::unique_ptr<Db>* db_;
};

// `db` names variables (and is pasted into two more), so it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define IOTAUTH_WITH_READER(db)                                                     \
  IOTAUTH_ASSIGN_OR_RETURN(std::unique_ptr<Db> db##_owned, AcquireReaderOrError()); \
  ReaderLease db##_lease(this, &db##_owned);                                        \
  Db& db = *db##_owned
// NOLINTEND(bugprone-macro-parentheses)

namespace {

absl::Status OpenSealed(const SecretBox& box, absl::string_view sealed, const std::string& aad,
                        std::string* out) {
  if (sealed.empty()) return absl::OkStatus();
  IOTAUTH_ASSIGN_OR_RETURN(*out, box.Open(sealed, aad));
  return absl::OkStatus();
}

// ---- Row codecs: the body column holds the resource without secrets. ----

std::string TenantAad(absl::string_view id) { return SecretAad("tenant", id, id, "policies"); }
std::string ProductAad(absl::string_view tenant, absl::string_view key) {
  return SecretAad("product", tenant, key, "product_secret");
}
std::string GroupAad(absl::string_view tenant, absl::string_view id) {
  return SecretAad("enrollment_group", tenant, id, "group_key");
}

absl::StatusOr<v1::Tenant> DecodeTenant(absl::string_view body, absl::string_view sealed,
                                        absl::string_view etag, const SecretBox* box) {
  v1::Tenant t;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &t));
  t.set_etag(std::string(etag));
  if (box != nullptr && !sealed.empty()) {
    std::string plain;
    IOTAUTH_RETURN_IF_ERROR(OpenSealed(*box, sealed, TenantAad(t.id()), &plain));
    v1::Tenant keys;
    bool ok = keys.ParseFromString(plain);
    OPENSSL_cleanse(plain.data(), plain.size());
    if (!ok || keys.policies_size() != t.policies_size()) {
      return absl::DataLossError("stored tenant policy keys do not parse");
    }
    for (int i = 0; i < t.policies_size(); ++i) {
      t.mutable_policies(i)->set_primary_key(keys.policies(i).primary_key());
      t.mutable_policies(i)->set_secondary_key(keys.policies(i).secondary_key());
    }
  }
  return t;
}

absl::StatusOr<v1::Product> DecodeProduct(absl::string_view body, absl::string_view sealed,
                                          absl::string_view etag, const SecretBox* box) {
  v1::Product p;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &p));
  p.set_etag(std::string(etag));
  if (box != nullptr) {
    IOTAUTH_RETURN_IF_ERROR(OpenSealed(*box, sealed, ProductAad(p.tenant_id(), p.product_key()),
                                       p.mutable_product_secret()));
  }
  return p;
}

absl::StatusOr<v1::Device> DecodeDevice(absl::string_view body, absl::string_view primary,
                                        absl::string_view secondary, absl::string_view etag,
                                        const SecretBox* box) {
  v1::Device d;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &d));
  d.set_etag(std::string(etag));
  if (box != nullptr) {
    v1::SymmetricKey* k = d.mutable_credentials()->mutable_symmetric_key();
    IOTAUTH_RETURN_IF_ERROR(OpenSealed(*box, primary,
                                       DeviceAad(d.tenant_id(), d.device_id(), "primary_key"),
                                       k->mutable_primary_key()));
    IOTAUTH_RETURN_IF_ERROR(OpenSealed(*box, secondary,
                                       DeviceAad(d.tenant_id(), d.device_id(), "secondary_key"),
                                       k->mutable_secondary_key()));
  }
  return d;
}

// DecodeDevice, except that keys which do not open (DATA_LOSS from `box`: a damaged
// row, or sealed under another master key) leave the device without symmetric keys
// and marked keys_unreadable instead of failing; a body that does not parse still
// fails.
absl::StatusOr<v1::Device> DecodeDeviceMarkingUnreadableKeys(absl::string_view body,
                                                             absl::string_view primary,
                                                             absl::string_view secondary,
                                                             absl::string_view etag,
                                                             const SecretBox* box) {
  absl::StatusOr<v1::Device> d = DecodeDevice(body, primary, secondary, etag, box);
  if (d.ok() || box == nullptr || d.status().code() != absl::StatusCode::kDataLoss) return d;
  absl::StatusOr<v1::Device> bare = DecodeDevice(body, primary, secondary, etag, nullptr);
  if (!bare.ok()) return d.status();  // the record itself is damaged
  bare->set_keys_unreadable(true);
  return bare;
}

absl::StatusOr<v1::EnrollmentGroup> DecodeGroup(absl::string_view body, absl::string_view sealed,
                                                absl::string_view etag, const SecretBox* box) {
  v1::EnrollmentGroup g;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &g));
  g.set_etag(std::string(etag));
  if (box != nullptr) {
    IOTAUTH_RETURN_IF_ERROR(
        OpenSealed(*box, sealed, GroupAad(g.tenant_id(), g.id()), g.mutable_group_key()));
  }
  return g;
}

absl::StatusOr<v1::CaCertificate> DecodeCa(absl::string_view body, absl::string_view etag) {
  v1::CaCertificate c;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &c));
  c.set_etag(std::string(etag));
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------
// Open, migrations, connections, transactions.

SqliteStore::SqliteStore(Options options)
    : options_(std::move(options)), box_(options_.secret_box) {}

SqliteStore::~SqliteStore() = default;

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(Options options) {
  if (options.path.empty() || options.path == ":memory:" ||
      options.path.rfind("file::memory:", 0) == 0) {
    // Every connection must see one database, so it has to be a file.
    return absl::InvalidArgumentError("sqlite path must name a file");
  }
  if (options.secret_box == nullptr) return absl::InvalidArgumentError("secret_box is required");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (options.max_readers < 1) options.max_readers = 1;
  if (options.target_schema_version < 1 || options.target_schema_version > kLatestSchemaVersion) {
    return absl::InvalidArgumentError("target_schema_version out of range");
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(options)));
  IOTAUTH_RETURN_IF_ERROR(store->Init());
  return store;
}

absl::StatusOr<std::unique_ptr<Db>> SqliteStore::OpenConnection(bool writer) const {
  ConfigureSqliteOnce();
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(options_.path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto db = std::make_unique<Db>(raw);
  if (rc != SQLITE_OK) return db->Error(absl::StrCat("open ", options_.path));
  sqlite3_busy_timeout(raw, static_cast<int>(absl::ToInt64Milliseconds(options_.busy_timeout)));
  IOTAUTH_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
  // FULL: the WAL is fsynced at every commit, so an acknowledged write survives
  // a crash of the process or the machine.
  IOTAUTH_RETURN_IF_ERROR(db->Exec("PRAGMA synchronous=FULL"));
  IOTAUTH_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys=OFF"));
  IOTAUTH_RETURN_IF_ERROR(
      db->Exec(absl::StrCat("PRAGMA cache_size=-",
                            writer ? options_.cache_size_kib : options_.cache_size_kib / 4)
                   .c_str()));
  IOTAUTH_RETURN_IF_ERROR(db->Exec(
      absl::StrCat("PRAGMA wal_autocheckpoint=", options_.wal_autocheckpoint_pages).c_str()));
  return db;
}

absl::Status SqliteStore::Init() {
  absl::MutexLock lock(&write_mu_);
  IOTAUTH_ASSIGN_OR_RETURN(writer_, OpenConnection(/*writer=*/true));
  IOTAUTH_RETURN_IF_ERROR(Migrate());
  IOTAUTH_PREPARE(st, *writer_, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'");
  int rc = st.Step();
  int64_t latest = 0;
  if (rc == SQLITE_ROW) {
    latest = st.ColInt(0);
  } else if (rc != SQLITE_DONE) {
    return writer_->Error("read change cursor");
  }
  notifier_.Publish(latest);
  return absl::OkStatus();
}

absl::Status SqliteStore::Migrate() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Db& db = *writer_;
  IOTAUTH_RETURN_IF_ERROR(
      db.Exec("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY, "
              "applied_us INTEGER NOT NULL)"));
  int current = 0;
  {
    IOTAUTH_PREPARE(st, db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
    if (st.Step() != SQLITE_ROW) return db.Error("read schema version");
    current = static_cast<int>(st.ColInt(0));
  }
  if (current > kLatestSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("database schema version ", current,
                                                      " is newer than this binary's (",
                                                      kLatestSchemaVersion, ")"));
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= current || m.version > options_.target_schema_version) continue;
    IOTAUTH_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
    absl::Status s = db.Exec(m.sql);
    if (s.ok()) {
      IOTAUTH_PREPARE(st, db, "INSERT INTO schema_version(version, applied_us) VALUES(?1, ?2)");
      st.Int(1, m.version).Int(2, absl::ToUnixMicros(options_.clock->Now()));
      s = StepDone(db, st, "record schema version");
    }
    if (s.ok()) s = db.Exec("COMMIT");
    if (!s.ok()) {
      db.Exec("ROLLBACK").IgnoreError();
      return absl::InternalError(
          absl::StrCat("migration to schema version ", m.version, " failed: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SqliteStore::SchemaVersion() {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  if (st.Step() != SQLITE_ROW) return db.Error("read schema version");
  return static_cast<int>(st.ColInt(0));
}

std::shared_ptr<const SecretBox> SqliteStore::box() const {
  absl::MutexLock lock(&box_mu_);
  return box_;
}

absl::StatusOr<std::unique_ptr<Db>> SqliteStore::AcquireReaderOrError() {
  {
    absl::MutexLock lock(&readers_mu_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(readers_mu_) {
      return !idle_readers_.empty() || open_readers_ < options_.max_readers;
    };
    readers_mu_.Await(absl::Condition(&available));
    if (!idle_readers_.empty()) {
      std::unique_ptr<Db> db = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return db;
    }
    ++open_readers_;
  }
  absl::StatusOr<std::unique_ptr<Db>> db = OpenConnection(/*writer=*/false);
  if (!db.ok()) {
    absl::MutexLock lock(&readers_mu_);
    --open_readers_;
  }
  return db;
}

void SqliteStore::ReleaseReader(std::unique_ptr<Db> db) {
  absl::MutexLock lock(&readers_mu_);
  idle_readers_.push_back(std::move(db));
}

absl::Status SqliteStore::WriteTxn(const std::function<absl::Status(Txn&)>& fn) {
  int64_t committed = 0;
  {
    absl::MutexLock lock(&write_mu_);
    Db& db = *writer_;
    IOTAUTH_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
    Txn txn{&db, options_.clock->Now(), box(), 0};
    absl::Status s;
    {
      IOTAUTH_PREPARE(st, db, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'");
      int rc = st.Step();
      if (rc == SQLITE_ROW) {
        txn.last_cursor = st.ColInt(0);
      } else if (rc != SQLITE_DONE) {
        s = db.Error("read change cursor");
      }
    }
    int64_t start = txn.last_cursor;
    if (s.ok()) s = fn(txn);
    if (s.ok()) s = db.Exec("COMMIT");
    if (!s.ok()) {
      db.Exec("ROLLBACK").IgnoreError();
      return s;
    }
    if (txn.last_cursor != start) committed = txn.last_cursor;
  }
  if (committed != 0) notifier_.Publish(committed);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Tenants.

namespace {

// Splits a tenant into its stored body and the sealed policy keys.
absl::StatusOr<std::pair<std::string, std::string>> EncodeTenant(const v1::Tenant& t,
                                                                 const SecretBox& box) {
  v1::Tenant body = t;
  body.clear_etag();
  v1::Tenant keys;
  for (v1::SharedAccessPolicy& p : *body.mutable_policies()) {
    v1::SharedAccessPolicy* k = keys.add_policies();
    k->set_primary_key(p.primary_key());
    k->set_secondary_key(p.secondary_key());
    p.clear_primary_key();
    p.clear_secondary_key();
  }
  std::string sealed;
  if (keys.policies_size() > 0) {
    std::string plain = Serialize(keys);
    absl::StatusOr<std::string> s = box.Seal(plain, TenantAad(t.id()));
    OPENSSL_cleanse(plain.data(), plain.size());
    if (!s.ok()) return s.status();
    sealed = *std::move(s);
  }
  return std::make_pair(Serialize(body), sealed);
}

}  // namespace

namespace {

// FAILED_PRECONDITION HUB_HOST_TAKEN when another tenant than `tenant_id` already
// has `hub_host`: the identity service resolves a SAS token's tenant from the host,
// so two tenants sharing one would take each other's devices' tokens. A scan of the
// tenants (few; tenant writes are rare), inside the write transaction.
absl::Status CheckHubHostFree(Db& db, absl::string_view tenant_id, absl::string_view hub_host) {
  if (hub_host.empty()) return absl::OkStatus();
  const std::string want = absl::AsciiStrToLower(hub_host);
  IOTAUTH_PREPARE(st, db, "SELECT id, body FROM tenants WHERE id != ?1");
  st.Text(1, tenant_id);
  for (;;) {
    const int rc = st.Step();
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return db.Error("scan tenants");
    v1::Tenant other;
    IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &other));
    if (absl::AsciiStrToLower(other.hub_host()) == want) {
      return Precondition("HUB_HOST_TAKEN",
                          absl::StrCat("hub_host ", want, " is already tenant ", st.ColText(0),
                                       "'s; each tenant needs its own"));
    }
  }
}

}  // namespace

absl::StatusOr<v1::Tenant> SqliteStore::CreateTenant(const v1::Tenant& tenant) {
  v1::Tenant out = tenant;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(CheckHubHostFree(*txn.db, out.id(), out.hub_host()));
    ToTimestamp(txn.now, out.mutable_create_time());
    ToTimestamp(txn.now, out.mutable_update_time());
    IOTAUTH_ASSIGN_OR_RETURN(auto encoded, EncodeTenant(out, *txn.box));
    out.set_etag(txn.NextEtag());
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO tenants(id, etag, body, secrets) VALUES(?1, ?2, ?3, ?4)");
    st.Text(1, out.id()).Text(2, out.etag()).Blob(3, encoded.first).BlobOrNull(4, encoded.second);
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("tenant");
    if (rc != SQLITE_DONE) return txn.db->Error("insert tenant");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_TENANT, out.id(), out.id());
  }));
  return out;
}

absl::StatusOr<v1::Tenant> SqliteStore::GetTenant(absl::string_view tenant_id, Secrets secrets) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT etag, body, secrets FROM tenants WHERE id = ?1");
  st.Text(1, tenant_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("tenant");
  if (rc != SQLITE_ROW) return db.Error("get tenant");
  std::shared_ptr<const SecretBox> b = box();
  return DecodeTenant(st.ColBlob(1), st.ColBlob(2), st.ColText(0),
                      secrets == Secrets::kInclude ? b.get() : nullptr);
}

absl::StatusOr<v1::Tenant> SqliteStore::UpdateTenant(const v1::Tenant& tenant,
                                                     absl::string_view expected_etag) {
  v1::Tenant out = tenant;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::Tenant old;
    {
      IOTAUTH_PREPARE(st, *txn.db, "SELECT etag, body FROM tenants WHERE id = ?1");
      st.Text(1, tenant.id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("tenant");
      if (rc != SQLITE_ROW) return txn.db->Error("get tenant");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &old));
    }
    IOTAUTH_RETURN_IF_ERROR(CheckHubHostFree(*txn.db, out.id(), out.hub_host()));
    *out.mutable_create_time() = old.create_time();
    ToTimestamp(txn.now, out.mutable_update_time());
    IOTAUTH_ASSIGN_OR_RETURN(auto encoded, EncodeTenant(out, *txn.box));
    out.set_etag(txn.NextEtag());
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE tenants SET etag = ?2, body = ?3, secrets = ?4 WHERE id = ?1");
    st.Text(1, out.id()).Text(2, out.etag()).Blob(3, encoded.first).BlobOrNull(4, encoded.second);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update tenant"));
    return txn.AppendChange(v1::CHANGE_TYPE_UPDATED, v1::RESOURCE_TYPE_TENANT, out.id(), out.id());
  }));
  return out;
}

absl::Status SqliteStore::DeleteTenant(absl::string_view tenant_id,
                                       absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    {
      IOTAUTH_PREPARE(st, *txn.db, "SELECT etag FROM tenants WHERE id = ?1");
      st.Text(1, tenant_id);
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("tenant");
      if (rc != SQLITE_ROW) return txn.db->Error("get tenant");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
    }
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT EXISTS(SELECT 1 FROM products WHERE tenant_id = ?1) OR "
                      "EXISTS(SELECT 1 FROM devices WHERE tenant_id = ?1) OR "
                      "EXISTS(SELECT 1 FROM enrollment_groups WHERE tenant_id = ?1) OR "
                      "EXISTS(SELECT 1 FROM ca_certificates WHERE tenant_id = ?1) OR "
                      "EXISTS(SELECT 1 FROM revocations WHERE tenant_id = ?1)");
      st.Text(1, tenant_id);
      if (st.Step() != SQLITE_ROW) return txn.db->Error("check tenant contents");
      if (st.ColInt(0) != 0) {
        return Precondition("TENANT_NOT_EMPTY",
                            "tenant still owns products, devices, groups, CA certificates or "
                            "revocations");
      }
    }
    IOTAUTH_PREPARE(st, *txn.db, "DELETE FROM tenants WHERE id = ?1");
    st.Text(1, tenant_id);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "delete tenant"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_TENANT, tenant_id,
                            tenant_id);
  });
}

absl::StatusOr<Page<v1::Tenant>> SqliteStore::ListTenants(const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT id, etag, body FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2");
  st.Text(1, page.after_key).Int(2, page.page_size + 1);
  return CollectPage<v1::Tenant>(db, st, page.page_size, "tenants", [&](Stmt& row) {
    return DecodeTenant(row.ColBlob(2), "", row.ColText(1), nullptr);
  });
}

// ---------------------------------------------------------------------------
// Products.

namespace {

absl::Status RequireTenant(Db& db, absl::string_view tenant_id) {
  IOTAUTH_PREPARE(st, db, "SELECT 1 FROM tenants WHERE id = ?1");
  st.Text(1, tenant_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return Precondition("UNKNOWN_TENANT", "tenant does not exist");
  if (rc != SQLITE_ROW) return db.Error("check tenant");
  return absl::OkStatus();
}

absl::Status RequireProduct(Db& db, absl::string_view tenant_id, absl::string_view product_key) {
  IOTAUTH_PREPARE(st, db, "SELECT 1 FROM products WHERE product_key = ?1 AND tenant_id = ?2");
  st.Text(1, product_key).Text(2, tenant_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) {
    return Precondition("UNKNOWN_PRODUCT", "product does not exist in the tenant");
  }
  if (rc != SQLITE_ROW) return db.Error("check product");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Product> SqliteStore::CreateProduct(const v1::Product& product) {
  v1::Product out = product;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireTenant(*txn.db, out.tenant_id()));
    ToTimestamp(txn.now, out.mutable_create_time());
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(
        std::string sealed,
        txn.Seal(out.product_secret(), ProductAad(out.tenant_id(), out.product_key())));
    v1::Product body = out;
    body.clear_product_secret();
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO products(product_key, tenant_id, etag, body, secret) "
                    "VALUES(?1, ?2, ?3, ?4, ?5)");
    st.Text(1, out.product_key())
        .Text(2, out.tenant_id())
        .Text(3, out.etag())
        .Blob(4, Serialize(body))
        .BlobOrNull(5, sealed);
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("product key");
    if (rc != SQLITE_DONE) return txn.db->Error("insert product");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_PRODUCT, out.tenant_id(),
                            out.product_key());
  }));
  return out;
}

absl::StatusOr<v1::Product> SqliteStore::GetProduct(absl::string_view tenant_id,
                                                    absl::string_view product_key,
                                                    Secrets secrets) {
  IOTAUTH_ASSIGN_OR_RETURN(v1::Product p, FindProduct(product_key, secrets));
  if (p.tenant_id() != tenant_id) return NotFound("product");
  return p;
}

absl::StatusOr<v1::Product> SqliteStore::FindProduct(absl::string_view product_key,
                                                     Secrets secrets) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT etag, body, secret FROM products WHERE product_key = ?1");
  st.Text(1, product_key);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("product");
  if (rc != SQLITE_ROW) return db.Error("get product");
  std::shared_ptr<const SecretBox> b = box();
  return DecodeProduct(st.ColBlob(1), st.ColBlob(2), st.ColText(0),
                       secrets == Secrets::kInclude ? b.get() : nullptr);
}

absl::StatusOr<v1::Product> SqliteStore::UpdateProduct(const v1::Product& product,
                                                       absl::string_view expected_etag) {
  v1::Product out = product;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::Product old;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT etag, body FROM products WHERE product_key = ?1 AND tenant_id = ?2");
      st.Text(1, out.product_key()).Text(2, out.tenant_id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("product");
      if (rc != SQLITE_ROW) return txn.db->Error("get product");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &old));
    }
    *out.mutable_create_time() = old.create_time();
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(
        std::string sealed,
        txn.Seal(out.product_secret(), ProductAad(out.tenant_id(), out.product_key())));
    v1::Product body = out;
    body.clear_product_secret();
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE products SET etag = ?2, body = ?3, secret = ?4 WHERE product_key = ?1");
    st.Text(1, out.product_key())
        .Text(2, out.etag())
        .Blob(3, Serialize(body))
        .BlobOrNull(4, sealed);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update product"));
    return txn.AppendChange(v1::CHANGE_TYPE_UPDATED, v1::RESOURCE_TYPE_PRODUCT, out.tenant_id(),
                            out.product_key());
  }));
  return out;
}

absl::Status SqliteStore::DeleteProduct(absl::string_view tenant_id, absl::string_view product_key,
                                        absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM products WHERE product_key = ?1 AND tenant_id = ?2",
                     product_key, tenant_id, "product", expected_etag));
    {
      IOTAUTH_PREPARE(
          st, *txn.db,
          "SELECT EXISTS(SELECT 1 FROM devices WHERE tenant_id = ?1 AND product_key = ?2) OR "
          "EXISTS(SELECT 1 FROM enrollment_groups WHERE tenant_id = ?1 AND product_key = ?2) OR "
          "EXISTS(SELECT 1 FROM ca_certificates WHERE tenant_id = ?1 AND jit_product_key = ?2)");
      st.Text(1, tenant_id).Text(2, product_key);
      if (st.Step() != SQLITE_ROW) return txn.db->Error("check product use");
      if (st.ColInt(0) != 0) {
        return Precondition("PRODUCT_IN_USE",
                            "devices, enrollment groups or CA certificates use the product");
      }
    }
    IOTAUTH_PREPARE(st, *txn.db, "DELETE FROM products WHERE product_key = ?1");
    st.Text(1, product_key);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "delete product"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_PRODUCT, tenant_id,
                            product_key);
  });
}

absl::StatusOr<Page<v1::Product>> SqliteStore::ListProducts(absl::string_view tenant_id,
                                                            const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT product_key, etag, body FROM products WHERE tenant_id = ?1 AND "
                  "product_key > ?2 ORDER BY product_key LIMIT ?3");
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  return CollectPage<v1::Product>(db, st, page.page_size, "products", [&](Stmt& row) {
    return DecodeProduct(row.ColBlob(2), "", row.ColText(1), nullptr);
  });
}

// ---------------------------------------------------------------------------
// Devices.

namespace {

struct SealedKeys {
  std::string primary;
  std::string secondary;
};

absl::StatusOr<SealedKeys> SealDeviceKeys(const v1::Device& d, const SecretBox& box) {
  SealedKeys out;
  const v1::SymmetricKey& k = d.credentials().symmetric_key();
  if (!k.primary_key().empty()) {
    IOTAUTH_ASSIGN_OR_RETURN(
        out.primary,
        box.Seal(k.primary_key(), DeviceAad(d.tenant_id(), d.device_id(), "primary_key")));
  }
  if (!k.secondary_key().empty()) {
    IOTAUTH_ASSIGN_OR_RETURN(
        out.secondary,
        box.Seal(k.secondary_key(), DeviceAad(d.tenant_id(), d.device_id(), "secondary_key")));
  }
  return out;
}

std::string DeviceBody(const v1::Device& d) {
  v1::Device body = d;
  body.mutable_credentials()->clear_symmetric_key();
  body.clear_etag();
  body.clear_keys_unreadable();  // output only: said of a read, never stored
  return Serialize(body);
}

absl::Status WriteTags(Db& db, const v1::Device& d, bool replace) {
  if (replace) {
    IOTAUTH_RETURN_IF_ERROR(
        ExecKeyed(db, "DELETE FROM device_tags WHERE tenant_id = ?1 AND device_id = ?2",
                  d.tenant_id(), d.device_id(), "delete tags"));
  }
  if (d.tags().empty()) return absl::OkStatus();
  IOTAUTH_PREPARE(st, db,
                  "INSERT INTO device_tags(tenant_id, device_id, key, value) "
                  "VALUES(?1, ?2, ?3, ?4)");
  for (const auto& [k, v] : d.tags()) {
    st.Text(1, d.tenant_id()).Text(2, d.device_id()).Text(3, k).Text(4, v);
    IOTAUTH_RETURN_IF_ERROR(StepDone(db, st, "insert tag"));
    st.Reset();
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// Inserts one device. ALREADY_EXISTS (the statement alone is rolled back) when the
// id is taken; the caller has checked the product.
absl::Status InsertDevice(Db& db, v1::Device* d, const SecretBox& box, absl::Time now,
                          const std::string& etag) {
  if (d->status() == v1::DEVICE_STATUS_UNSPECIFIED) d->set_status(v1::DEVICE_STATUS_ENABLED);
  ToTimestamp(now, d->mutable_create_time());
  ToTimestamp(now, d->mutable_update_time());
  d->set_etag(etag);
  IOTAUTH_ASSIGN_OR_RETURN(SealedKeys sealed, SealDeviceKeys(*d, box));
  IOTAUTH_PREPARE(st, db,
                  "INSERT INTO devices(tenant_id, device_id, product_key, status, etag, body, "
                  "primary_key, secondary_key) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  st.Text(1, d->tenant_id())
      .Text(2, d->device_id())
      .Text(3, d->product_key())
      .Int(4, d->status())
      .Text(5, etag)
      .Blob(6, DeviceBody(*d))
      .BlobOrNull(7, sealed.primary)
      .BlobOrNull(8, sealed.secondary);
  int rc = st.Step();
  if (IsConstraint(rc)) return AlreadyExists("device");
  if (rc != SQLITE_DONE) return db.Error("insert device");
  return WriteTags(db, *d, /*replace=*/false);
}

v1::ChangeType DeviceChangeType(const v1::Device& old_device, const v1::Device& new_device) {
  bool status_changed = old_device.status() != new_device.status();
  if (status_changed && new_device.status() == v1::DEVICE_STATUS_DISABLED) {
    return v1::CHANGE_TYPE_DISABLED;
  }
  const v1::DeviceCredentials& a = old_device.credentials();
  const v1::DeviceCredentials& b = new_device.credentials();
  bool creds_changed = !crypto::ConstantTimeEquals(a.symmetric_key().primary_key(),
                                                   b.symmetric_key().primary_key()) ||
                       !crypto::ConstantTimeEquals(a.symmetric_key().secondary_key(),
                                                   b.symmetric_key().secondary_key()) ||
                       a.primary_thumbprint() != b.primary_thumbprint() ||
                       a.secondary_thumbprint() != b.secondary_thumbprint() ||
                       a.ca_signed_allowed() != b.ca_signed_allowed();
  if (creds_changed) return v1::CHANGE_TYPE_CREDENTIALS_CHANGED;
  if (status_changed && new_device.status() == v1::DEVICE_STATUS_ENABLED) {
    return v1::CHANGE_TYPE_ENABLED;
  }
  return v1::CHANGE_TYPE_UPDATED;
}

}  // namespace

absl::StatusOr<v1::Device> SqliteStore::CreateDevice(const v1::Device& device) {
  v1::Device out = device;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.product_key()));
    IOTAUTH_RETURN_IF_ERROR(InsertDevice(*txn.db, &out, *txn.box, txn.now, txn.NextEtag()));
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_DEVICE, out.tenant_id(),
                            out.device_id());
  }));
  return out;
}

absl::StatusOr<BatchResult> SqliteStore::CreateDevices(absl::string_view tenant_id,
                                                       absl::Span<const v1::Device> devices) {
  BatchResult result;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    result = BatchResult();
    std::unordered_map<std::string, absl::Status> products;
    std::unordered_set<std::string> seen;
    seen.reserve(devices.size());
    for (size_t i = 0; i < devices.size(); ++i) {
      v1::Device d = devices[i];
      d.set_tenant_id(std::string(tenant_id));
      if (!seen.insert(d.device_id()).second) {
        result.errors.push_back(
            {i, WithErrorReason(absl::AlreadyExistsError("device id repeated in the batch"),
                                "ALREADY_EXISTS")});
        continue;
      }
      auto it = products.find(d.product_key());
      if (it == products.end()) {
        it = products.emplace(d.product_key(), RequireProduct(*txn.db, tenant_id, d.product_key()))
                 .first;
      }
      if (!it->second.ok()) {
        if (it->second.code() != absl::StatusCode::kFailedPrecondition) return it->second;
        result.errors.push_back({i, it->second});
        continue;
      }
      absl::Status s = InsertDevice(*txn.db, &d, *txn.box, txn.now, txn.NextEtag());
      if (s.code() == absl::StatusCode::kAlreadyExists) {
        result.errors.push_back({i, s});
        continue;
      }
      IOTAUTH_RETURN_IF_ERROR(s);
      IOTAUTH_RETURN_IF_ERROR(txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_DEVICE,
                                               tenant_id, d.device_id()));
      ++result.inserted;
    }
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<v1::Device> SqliteStore::GetDevice(absl::string_view tenant_id,
                                                  absl::string_view device_id, Secrets secrets) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT etag, body, primary_key, secondary_key FROM devices "
                  "WHERE tenant_id = ?1 AND device_id = ?2");
  st.Text(1, tenant_id).Text(2, device_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("device");
  if (rc != SQLITE_ROW) return db.Error("get device");
  std::shared_ptr<const SecretBox> b = box();
  return DecodeDevice(st.ColBlob(1), st.ColBlob(2), st.ColBlob(3), st.ColText(0),
                      secrets == Secrets::kInclude ? b.get() : nullptr);
}

absl::StatusOr<v1::Device> SqliteStore::UpdateDevice(const v1::Device& device,
                                                     absl::string_view expected_etag) {
  v1::Device out = device;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::Device old;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT etag, body, primary_key, secondary_key FROM devices "
                      "WHERE tenant_id = ?1 AND device_id = ?2");
      st.Text(1, out.tenant_id()).Text(2, out.device_id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("device");
      if (rc != SQLITE_ROW) return txn.db->Error("get device");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      // Old keys that do not open may be being replaced (RegenerateDeviceKey on a
      // device read keys_unreadable): the rest of the record is what is kept.
      IOTAUTH_ASSIGN_OR_RETURN(
          old, DecodeDeviceMarkingUnreadableKeys(st.ColBlob(1), st.ColBlob(2), st.ColBlob(3),
                                                 st.ColText(0), txn.box.get()));
    }
    if (out.product_key() != old.product_key()) {
      IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.product_key()));
    }
    if (out.status() == v1::DEVICE_STATUS_UNSPECIFIED) out.set_status(old.status());
    *out.mutable_create_time() = old.create_time();
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(SealedKeys sealed, SealDeviceKeys(out, *txn.box));
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE devices SET product_key = ?3, status = ?4, etag = ?5, body = ?6, "
                    "primary_key = ?7, secondary_key = ?8 WHERE tenant_id = ?1 AND device_id = ?2");
    st.Text(1, out.tenant_id())
        .Text(2, out.device_id())
        .Text(3, out.product_key())
        .Int(4, out.status())
        .Text(5, out.etag())
        .Blob(6, DeviceBody(out))
        .BlobOrNull(7, sealed.primary)
        .BlobOrNull(8, sealed.secondary);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update device"));
    IOTAUTH_RETURN_IF_ERROR(WriteTags(*txn.db, out, /*replace=*/true));
    return txn.AppendChange(DeviceChangeType(old, out), v1::RESOURCE_TYPE_DEVICE, out.tenant_id(),
                            out.device_id());
  }));
  return out;
}

absl::Status SqliteStore::DeleteDevice(absl::string_view tenant_id, absl::string_view device_id,
                                       absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
                     tenant_id, device_id, "device", expected_etag));
    IOTAUTH_RETURN_IF_ERROR(ExecKeyed(*txn.db,
                                      "DELETE FROM devices WHERE tenant_id = ?1 AND device_id = ?2",
                                      tenant_id, device_id, "delete device"));
    IOTAUTH_RETURN_IF_ERROR(
        ExecKeyed(*txn.db, "DELETE FROM device_tags WHERE tenant_id = ?1 AND device_id = ?2",
                  tenant_id, device_id, "delete device tags"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_DEVICE, tenant_id,
                            device_id);
  });
}

absl::StatusOr<Page<v1::Device>> SqliteStore::ListDevices(absl::string_view tenant_id,
                                                          const DeviceFilter& filter,
                                                          const PageRequest& page,
                                                          Secrets secrets) {
  // The SQL text depends only on which filters are present (and the tag count),
  // so the statement cache stays small.
  std::string sql =
      "SELECT device_id, etag, body, primary_key, secondary_key FROM devices "
      "WHERE tenant_id = ?1 AND device_id > ?2";
  int next = 4;
  if (!filter.product_key.empty()) absl::StrAppend(&sql, " AND product_key = ?", next++);
  if (filter.status != v1::DEVICE_STATUS_UNSPECIFIED) {
    absl::StrAppend(&sql, " AND status = ?", next++);
  }
  for (size_t i = 0; i < filter.tags.size(); ++i) {
    absl::StrAppend(&sql,
                    " AND EXISTS(SELECT 1 FROM device_tags t WHERE t.tenant_id = devices.tenant_id"
                    " AND t.device_id = devices.device_id AND t.key = ?",
                    next, " AND t.value = ?", next + 1, ")");
    next += 2;
  }
  absl::StrAppend(&sql, " ORDER BY device_id LIMIT ?3");

  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, sql);
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  next = 4;
  if (!filter.product_key.empty()) st.Text(next++, filter.product_key);
  if (filter.status != v1::DEVICE_STATUS_UNSPECIFIED) st.Int(next++, filter.status);
  for (const auto& [k, v] : filter.tags) {
    st.Text(next, k).Text(next + 1, v);
    next += 2;
  }
  std::shared_ptr<const SecretBox> b = box();
  const SecretBox* open_with = secrets == Secrets::kInclude ? b.get() : nullptr;
  // With secrets, a device whose keys do not open comes marked keys_unreadable, so
  // that an export goes on with the next device instead of failing on this one.
  return CollectPage<v1::Device>(db, st, page.page_size, "devices", [&](Stmt& row) {
    return DecodeDeviceMarkingUnreadableKeys(row.ColBlob(2), row.ColBlob(3), row.ColBlob(4),
                                             row.ColText(1), open_with);
  });
}

// ---------------------------------------------------------------------------
// Enrollment groups.

absl::StatusOr<v1::EnrollmentGroup> SqliteStore::CreateEnrollmentGroup(
    const v1::EnrollmentGroup& group) {
  v1::EnrollmentGroup out = group;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.product_key()));
    ToTimestamp(txn.now, out.mutable_create_time());
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(std::string sealed,
                             txn.Seal(out.group_key(), GroupAad(out.tenant_id(), out.id())));
    v1::EnrollmentGroup body = out;
    body.clear_group_key();
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO enrollment_groups(tenant_id, id, product_key, etag, body, "
                    "group_key) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    st.Text(1, out.tenant_id())
        .Text(2, out.id())
        .Text(3, out.product_key())
        .Text(4, out.etag())
        .Blob(5, Serialize(body))
        .BlobOrNull(6, sealed);
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("enrollment group");
    if (rc != SQLITE_DONE) return txn.db->Error("insert enrollment group");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_ENROLLMENT_GROUP,
                            out.tenant_id(), out.id());
  }));
  return out;
}

absl::StatusOr<v1::EnrollmentGroup> SqliteStore::GetEnrollmentGroup(absl::string_view tenant_id,
                                                                    absl::string_view group_id,
                                                                    Secrets secrets) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT etag, body, group_key FROM enrollment_groups "
                  "WHERE tenant_id = ?1 AND id = ?2");
  st.Text(1, tenant_id).Text(2, group_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("enrollment group");
  if (rc != SQLITE_ROW) return db.Error("get enrollment group");
  std::shared_ptr<const SecretBox> b = box();
  return DecodeGroup(st.ColBlob(1), st.ColBlob(2), st.ColText(0),
                     secrets == Secrets::kInclude ? b.get() : nullptr);
}

absl::StatusOr<v1::EnrollmentGroup> SqliteStore::UpdateEnrollmentGroup(
    const v1::EnrollmentGroup& group, absl::string_view expected_etag) {
  v1::EnrollmentGroup out = group;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::EnrollmentGroup old;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT etag, body FROM enrollment_groups WHERE tenant_id = ?1 AND id = ?2");
      st.Text(1, out.tenant_id()).Text(2, out.id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("enrollment group");
      if (rc != SQLITE_ROW) return txn.db->Error("get enrollment group");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &old));
    }
    if (out.product_key() != old.product_key()) {
      IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.product_key()));
    }
    *out.mutable_create_time() = old.create_time();
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(std::string sealed,
                             txn.Seal(out.group_key(), GroupAad(out.tenant_id(), out.id())));
    v1::EnrollmentGroup body = out;
    body.clear_group_key();
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE enrollment_groups SET product_key = ?3, etag = ?4, body = ?5, "
                    "group_key = ?6 WHERE tenant_id = ?1 AND id = ?2");
    st.Text(1, out.tenant_id())
        .Text(2, out.id())
        .Text(3, out.product_key())
        .Text(4, out.etag())
        .Blob(5, Serialize(body))
        .BlobOrNull(6, sealed);
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update enrollment group"));
    return txn.AppendChange(v1::CHANGE_TYPE_UPDATED, v1::RESOURCE_TYPE_ENROLLMENT_GROUP,
                            out.tenant_id(), out.id());
  }));
  return out;
}

absl::Status SqliteStore::DeleteEnrollmentGroup(absl::string_view tenant_id,
                                                absl::string_view group_id,
                                                absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM enrollment_groups WHERE tenant_id = ?1 AND id = ?2",
                     tenant_id, group_id, "enrollment group", expected_etag));
    IOTAUTH_RETURN_IF_ERROR(
        ExecKeyed(*txn.db, "DELETE FROM enrollment_groups WHERE tenant_id = ?1 AND id = ?2",
                  tenant_id, group_id, "delete enrollment group"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_ENROLLMENT_GROUP, tenant_id,
                            group_id);
  });
}

absl::StatusOr<Page<v1::EnrollmentGroup>> SqliteStore::ListEnrollmentGroups(
    absl::string_view tenant_id, const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT id, etag, body FROM enrollment_groups WHERE tenant_id = ?1 AND "
                  "id > ?2 ORDER BY id LIMIT ?3");
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  return CollectPage<v1::EnrollmentGroup>(
      db, st, page.page_size, "enrollment groups",
      [&](Stmt& row) { return DecodeGroup(row.ColBlob(2), "", row.ColText(1), nullptr); });
}

// ---------------------------------------------------------------------------
// CA certificates.

absl::StatusOr<v1::CaCertificate> SqliteStore::CreateCaCertificate(const v1::CaCertificate& ca) {
  v1::CaCertificate out = ca;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireTenant(*txn.db, out.tenant_id()));
    if (!out.jit_product_key().empty()) {
      IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.jit_product_key()));
    }
    ToTimestamp(txn.now, out.mutable_create_time());
    out.set_etag(txn.NextEtag());
    v1::CaCertificate body = out;
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO ca_certificates(tenant_id, id, fingerprint, jit_product_key, "
                    "etag, body) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    st.Text(1, out.tenant_id())
        .Text(2, out.id())
        .Text(3, out.sha256_fingerprint())
        .Text(4, out.jit_product_key())
        .Text(5, out.etag())
        .Blob(6, Serialize(body));
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("CA certificate (id or fingerprint)");
    if (rc != SQLITE_DONE) return txn.db->Error("insert CA certificate");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_CA_CERTIFICATE,
                            out.tenant_id(), out.id());
  }));
  return out;
}

absl::StatusOr<v1::CaCertificate> SqliteStore::GetCaCertificate(absl::string_view tenant_id,
                                                                absl::string_view ca_id) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT etag, body FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2");
  st.Text(1, tenant_id).Text(2, ca_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("CA certificate");
  if (rc != SQLITE_ROW) return db.Error("get CA certificate");
  return DecodeCa(st.ColBlob(1), st.ColText(0));
}

absl::StatusOr<v1::CaCertificate> SqliteStore::UpdateCaCertificate(
    const v1::CaCertificate& ca, absl::string_view expected_etag) {
  v1::CaCertificate out = ca;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::CaCertificate old;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT etag, body FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2");
      st.Text(1, out.tenant_id()).Text(2, out.id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("CA certificate");
      if (rc != SQLITE_ROW) return txn.db->Error("get CA certificate");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &old));
    }
    if (!out.jit_product_key().empty() && out.jit_product_key() != old.jit_product_key()) {
      IOTAUTH_RETURN_IF_ERROR(RequireProduct(*txn.db, out.tenant_id(), out.jit_product_key()));
    }
    // The certificate itself and what is derived from it are immutable.
    out.set_certificate_pem(old.certificate_pem());
    out.set_sha256_fingerprint(old.sha256_fingerprint());
    out.set_subject(old.subject());
    *out.mutable_not_after() = old.not_after();
    *out.mutable_create_time() = old.create_time();
    out.set_etag(txn.NextEtag());
    v1::CaCertificate body = out;
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE ca_certificates SET jit_product_key = ?3, etag = ?4, body = ?5 "
                    "WHERE tenant_id = ?1 AND id = ?2");
    st.Text(1, out.tenant_id())
        .Text(2, out.id())
        .Text(3, out.jit_product_key())
        .Text(4, out.etag())
        .Blob(5, Serialize(body));
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update CA certificate"));
    v1::ChangeType type = v1::CHANGE_TYPE_UPDATED;
    if (out.status() != old.status() && out.status() == v1::CA_STATUS_DISABLED) {
      type = v1::CHANGE_TYPE_DISABLED;
    } else if (out.status() != old.status() && out.status() == v1::CA_STATUS_VERIFIED) {
      type = v1::CHANGE_TYPE_ENABLED;
    }
    return txn.AppendChange(type, v1::RESOURCE_TYPE_CA_CERTIFICATE, out.tenant_id(), out.id());
  }));
  return out;
}

absl::Status SqliteStore::DeleteCaCertificate(absl::string_view tenant_id, absl::string_view ca_id,
                                              absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2",
                     tenant_id, ca_id, "CA certificate", expected_etag));
    IOTAUTH_RETURN_IF_ERROR(
        ExecKeyed(*txn.db, "DELETE FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2",
                  tenant_id, ca_id, "delete CA certificate"));
    IOTAUTH_RETURN_IF_ERROR(txn.AppendChange(v1::CHANGE_TYPE_DELETED,
                                             v1::RESOURCE_TYPE_CA_CERTIFICATE, tenant_id, ca_id));
    // The CA's CRL and, for the issuing CA, its key go with it.
    IOTAUTH_RETURN_IF_ERROR(ExecKeyed(*txn.db,
                                      "DELETE FROM crls WHERE tenant_id = ?1 AND ca_id = ?2",
                                      tenant_id, ca_id, "delete CRL"));
    if (sqlite3_changes(txn.db->raw()) > 0) {
      IOTAUTH_RETURN_IF_ERROR(
          txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_CRL, tenant_id, ca_id));
    }
    IOTAUTH_RETURN_IF_ERROR(ExecKeyed(*txn.db,
                                      "DELETE FROM issuing_cas WHERE tenant_id = ?1 AND ca_id = ?2",
                                      tenant_id, ca_id, "delete issuing CA"));
    if (sqlite3_changes(txn.db->raw()) > 0) {
      IOTAUTH_RETURN_IF_ERROR(txn.AppendChange(v1::CHANGE_TYPE_DELETED,
                                               v1::RESOURCE_TYPE_ISSUING_CA, tenant_id, ca_id));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<Page<v1::CaCertificate>> SqliteStore::ListCaCertificates(absl::string_view tenant_id,
                                                                        const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT id, etag, body FROM ca_certificates WHERE tenant_id = ?1 AND "
                  "id > ?2 ORDER BY id LIMIT ?3");
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  return CollectPage<v1::CaCertificate>(db, st, page.page_size, "CA certificates", [&](Stmt& row) {
    return DecodeCa(row.ColBlob(2), row.ColText(1));
  });
}

absl::StatusOr<v1::CaCertificate> SqliteStore::SetCaVerification(
    absl::string_view tenant_id, absl::string_view ca_id, v1::CaStatus status,
    absl::string_view verification_code, absl::string_view expected_etag) {
  v1::CaCertificate out;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    v1::CaStatus old_status;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT etag, body FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2");
      st.Text(1, tenant_id).Text(2, ca_id);
      int rc = st.Step();
      if (rc == SQLITE_DONE) return NotFound("CA certificate");
      if (rc != SQLITE_ROW) return txn.db->Error("get CA certificate");
      IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      IOTAUTH_RETURN_IF_ERROR(ParseBody(st.ColBlob(1), &out));
    }
    old_status = out.status();
    if (status != v1::CA_STATUS_UNSPECIFIED) out.set_status(status);
    if (status == v1::CA_STATUS_VERIFIED) {
      const absl::Time now = options_.clock->Now();
      out.mutable_possession_verified_time()->set_seconds(absl::ToUnixSeconds(now));
    }
    out.set_verification_code(std::string(verification_code));
    out.set_etag(txn.NextEtag());
    v1::CaCertificate body = out;
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE ca_certificates SET etag = ?3, body = ?4 "
                    "WHERE tenant_id = ?1 AND id = ?2");
    st.Text(1, out.tenant_id()).Text(2, out.id()).Text(3, out.etag()).Blob(4, Serialize(body));
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "update CA certificate"));
    v1::ChangeType type = v1::CHANGE_TYPE_UPDATED;
    if (out.status() != old_status && out.status() == v1::CA_STATUS_DISABLED) {
      type = v1::CHANGE_TYPE_DISABLED;
    } else if (out.status() != old_status && out.status() == v1::CA_STATUS_VERIFIED) {
      type = v1::CHANGE_TYPE_ENABLED;
    }
    return txn.AppendChange(type, v1::RESOURCE_TYPE_CA_CERTIFICATE, out.tenant_id(), out.id());
  }));
  return out;
}

// ---------------------------------------------------------------------------
// Certificate revocations.

namespace {

template <typename T>
absl::StatusOr<T> DecodePlain(absl::string_view body, absl::string_view etag) {
  T m;
  IOTAUTH_RETURN_IF_ERROR(ParseBody(body, &m));
  m.set_etag(std::string(etag));
  return m;
}

std::string IssuingCaAad(absl::string_view tenant, absl::string_view ca_id) {
  return SecretAad("issuing_ca", tenant, ca_id, "private_key");
}

}  // namespace

absl::StatusOr<v1::CertificateRevocation> SqliteStore::CreateRevocation(
    const v1::CertificateRevocation& revocation) {
  v1::CertificateRevocation out = revocation;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireTenant(*txn.db, out.tenant_id()));
    ToTimestamp(txn.now, out.mutable_create_time());
    out.set_etag(txn.NextEtag());
    v1::CertificateRevocation body = out;
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO revocations(tenant_id, id, etag, body) VALUES(?1, ?2, ?3, ?4)");
    st.Text(1, out.tenant_id()).Text(2, out.id()).Text(3, out.etag()).Blob(4, Serialize(body));
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("revocation");
    if (rc != SQLITE_DONE) return txn.db->Error("insert revocation");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_REVOCATION, out.tenant_id(),
                            out.id());
  }));
  return out;
}

absl::StatusOr<v1::CertificateRevocation> SqliteStore::GetRevocation(
    absl::string_view tenant_id, absl::string_view revocation_id) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT etag, body FROM revocations WHERE tenant_id = ?1 AND id = ?2");
  st.Text(1, tenant_id).Text(2, revocation_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("revocation");
  if (rc != SQLITE_ROW) return db.Error("get revocation");
  return DecodePlain<v1::CertificateRevocation>(st.ColBlob(1), st.ColText(0));
}

absl::Status SqliteStore::DeleteRevocation(absl::string_view tenant_id,
                                           absl::string_view revocation_id,
                                           absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM revocations WHERE tenant_id = ?1 AND id = ?2",
                     tenant_id, revocation_id, "revocation", expected_etag));
    IOTAUTH_RETURN_IF_ERROR(ExecKeyed(*txn.db,
                                      "DELETE FROM revocations WHERE tenant_id = ?1 AND id = ?2",
                                      tenant_id, revocation_id, "delete revocation"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_REVOCATION, tenant_id,
                            revocation_id);
  });
}

absl::StatusOr<Page<v1::CertificateRevocation>> SqliteStore::ListRevocations(
    absl::string_view tenant_id, const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT id, etag, body FROM revocations WHERE tenant_id = ?1 AND id > ?2 "
                  "ORDER BY id LIMIT ?3");
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  return CollectPage<v1::CertificateRevocation>(
      db, st, page.page_size, "revocations", [&](Stmt& row) {
        return DecodePlain<v1::CertificateRevocation>(row.ColBlob(2), row.ColText(1));
      });
}

// ---------------------------------------------------------------------------
// CRLs.

absl::StatusOr<v1::CertificateRevocationList> SqliteStore::PutCrl(
    const v1::CertificateRevocationList& crl, absl::string_view expected_etag) {
  v1::CertificateRevocationList out = crl;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT 1 FROM ca_certificates WHERE tenant_id = ?1 AND id = ?2");
      st.Text(1, out.tenant_id()).Text(2, out.ca_id());
      int rc = st.Step();
      if (rc == SQLITE_DONE) return Precondition("UNKNOWN_CA", "CA certificate does not exist");
      if (rc != SQLITE_ROW) return txn.db->Error("check CA certificate");
    }
    bool exists = false;
    {
      IOTAUTH_PREPARE(st, *txn.db, "SELECT etag FROM crls WHERE tenant_id = ?1 AND ca_id = ?2");
      st.Text(1, out.tenant_id()).Text(2, out.ca_id());
      int rc = st.Step();
      if (rc == SQLITE_ROW) {
        exists = true;
        IOTAUTH_RETURN_IF_ERROR(CheckEtag(st.ColText(0), expected_etag));
      } else if (rc != SQLITE_DONE) {
        return txn.db->Error("get CRL");
      } else if (!expected_etag.empty()) {
        return Precondition("ETAG_MISMATCH", "etag does not match the stored version");
      }
    }
    ToTimestamp(txn.now, out.mutable_update_time());
    out.set_etag(txn.NextEtag());
    v1::CertificateRevocationList body = out;
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT OR REPLACE INTO crls(tenant_id, ca_id, etag, body) "
                    "VALUES(?1, ?2, ?3, ?4)");
    st.Text(1, out.tenant_id()).Text(2, out.ca_id()).Text(3, out.etag()).Blob(4, Serialize(body));
    IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "put CRL"));
    return txn.AppendChange(exists ? v1::CHANGE_TYPE_UPDATED : v1::CHANGE_TYPE_CREATED,
                            v1::RESOURCE_TYPE_CRL, out.tenant_id(), out.ca_id());
  }));
  return out;
}

absl::StatusOr<v1::CertificateRevocationList> SqliteStore::GetCrl(absl::string_view tenant_id,
                                                                  absl::string_view ca_id) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT etag, body FROM crls WHERE tenant_id = ?1 AND ca_id = ?2");
  st.Text(1, tenant_id).Text(2, ca_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("CRL");
  if (rc != SQLITE_ROW) return db.Error("get CRL");
  return DecodePlain<v1::CertificateRevocationList>(st.ColBlob(1), st.ColText(0));
}

absl::Status SqliteStore::DeleteCrl(absl::string_view tenant_id, absl::string_view ca_id,
                                    absl::string_view expected_etag) {
  return WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(
        CheckRowEtag(*txn.db, "SELECT etag FROM crls WHERE tenant_id = ?1 AND ca_id = ?2",
                     tenant_id, ca_id, "CRL", expected_etag));
    IOTAUTH_RETURN_IF_ERROR(ExecKeyed(*txn.db,
                                      "DELETE FROM crls WHERE tenant_id = ?1 AND ca_id = ?2",
                                      tenant_id, ca_id, "delete CRL"));
    return txn.AppendChange(v1::CHANGE_TYPE_DELETED, v1::RESOURCE_TYPE_CRL, tenant_id, ca_id);
  });
}

absl::StatusOr<Page<v1::CertificateRevocationList>> SqliteStore::ListCrls(
    absl::string_view tenant_id, const PageRequest& page) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db,
                  "SELECT ca_id, etag, body FROM crls WHERE tenant_id = ?1 AND ca_id > ?2 "
                  "ORDER BY ca_id LIMIT ?3");
  st.Text(1, tenant_id).Text(2, page.after_key).Int(3, page.page_size + 1);
  return CollectPage<v1::CertificateRevocationList>(db, st, page.page_size, "CRLs", [&](Stmt& row) {
    return DecodePlain<v1::CertificateRevocationList>(row.ColBlob(2), row.ColText(1));
  });
}

// ---------------------------------------------------------------------------
// Issuing CAs.

absl::StatusOr<v1::IssuingCa> SqliteStore::CreateIssuingCa(const v1::IssuingCa& issuing,
                                                           const v1::CaCertificate& ca) {
  if (!ca.issuing() || ca.id() != issuing.ca_id() || ca.tenant_id() != issuing.tenant_id()) {
    return absl::InvalidArgumentError("issuing CA and its CA certificate do not match");
  }
  if (issuing.private_key_pem().empty()) {
    return absl::InvalidArgumentError("issuing CA private key is required");
  }
  v1::IssuingCa out = issuing;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    IOTAUTH_RETURN_IF_ERROR(RequireTenant(*txn.db, out.tenant_id()));
    {
      IOTAUTH_PREPARE(st, *txn.db, "SELECT 1 FROM issuing_cas WHERE tenant_id = ?1");
      st.Text(1, out.tenant_id());
      int rc = st.Step();
      if (rc == SQLITE_ROW) return AlreadyExists("issuing CA of the tenant");
      if (rc != SQLITE_DONE) return txn.db->Error("check issuing CA");
    }
    v1::CaCertificate stored = ca;
    ToTimestamp(txn.now, stored.mutable_create_time());
    stored.set_etag(txn.NextEtag());
    {
      v1::CaCertificate body = stored;
      body.clear_etag();
      IOTAUTH_PREPARE(st, *txn.db,
                      "INSERT INTO ca_certificates(tenant_id, id, fingerprint, jit_product_key, "
                      "etag, body) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
      st.Text(1, stored.tenant_id())
          .Text(2, stored.id())
          .Text(3, stored.sha256_fingerprint())
          .Text(4, stored.jit_product_key())
          .Text(5, stored.etag())
          .Blob(6, Serialize(body));
      int rc = st.Step();
      if (IsConstraint(rc)) return AlreadyExists("CA certificate (id or fingerprint)");
      if (rc != SQLITE_DONE) return txn.db->Error("insert CA certificate");
    }
    IOTAUTH_RETURN_IF_ERROR(txn.AppendChange(v1::CHANGE_TYPE_CREATED,
                                             v1::RESOURCE_TYPE_CA_CERTIFICATE, stored.tenant_id(),
                                             stored.id()));
    ToTimestamp(txn.now, out.mutable_create_time());
    out.set_etag(txn.NextEtag());
    IOTAUTH_ASSIGN_OR_RETURN(
        std::string sealed,
        txn.Seal(out.private_key_pem(), IssuingCaAad(out.tenant_id(), out.ca_id())));
    v1::IssuingCa body = out;
    body.clear_private_key_pem();
    body.clear_etag();
    IOTAUTH_PREPARE(st, *txn.db,
                    "INSERT INTO issuing_cas(tenant_id, ca_id, etag, body, private_key) "
                    "VALUES(?1, ?2, ?3, ?4, ?5)");
    st.Text(1, out.tenant_id())
        .Text(2, out.ca_id())
        .Text(3, out.etag())
        .Blob(4, Serialize(body))
        .Blob(5, sealed);
    int rc = st.Step();
    if (IsConstraint(rc)) return AlreadyExists("issuing CA of the tenant");
    if (rc != SQLITE_DONE) return txn.db->Error("insert issuing CA");
    return txn.AppendChange(v1::CHANGE_TYPE_CREATED, v1::RESOURCE_TYPE_ISSUING_CA, out.tenant_id(),
                            out.ca_id());
  }));
  OPENSSL_cleanse(out.mutable_private_key_pem()->data(), out.private_key_pem().size());
  out.clear_private_key_pem();
  return out;
}

absl::StatusOr<v1::IssuingCa> SqliteStore::GetIssuingCa(absl::string_view tenant_id,
                                                        Secrets secrets) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT etag, body, private_key FROM issuing_cas WHERE tenant_id = ?1");
  st.Text(1, tenant_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return NotFound("issuing CA");
  if (rc != SQLITE_ROW) return db.Error("get issuing CA");
  IOTAUTH_ASSIGN_OR_RETURN(v1::IssuingCa out,
                           DecodePlain<v1::IssuingCa>(st.ColBlob(1), st.ColText(0)));
  if (secrets == Secrets::kInclude) {
    std::shared_ptr<const SecretBox> b = box();
    IOTAUTH_RETURN_IF_ERROR(OpenSealed(*b, st.ColBlob(2),
                                       IssuingCaAad(out.tenant_id(), out.ca_id()),
                                       out.mutable_private_key_pem()));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Change log.

absl::StatusOr<ChangeBatch> SqliteStore::ReadChanges(int64_t after_cursor, int32_t limit,
                                                     absl::string_view tenant_id) {
  if (limit <= 0) return absl::InvalidArgumentError("limit must be positive");
  IOTAUTH_WITH_READER(db);
  // One read transaction: the scanned range and the "highest cursor" come from the
  // same snapshot, so advancing past non-matching events never skips a match.
  IOTAUTH_RETURN_IF_ERROR(db.Exec("BEGIN"));
  ChangeBatch out;
  out.next_cursor = after_cursor;
  absl::Status s = [&]() -> absl::Status {
    {
      IOTAUTH_PREPARE(meta, db, "SELECT pruned_through FROM change_log_meta WHERE id = 1");
      int rc = meta.Step();
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db.Error("read change log horizon");
      int64_t pruned_through = rc == SQLITE_ROW ? meta.ColInt(0) : 0;
      if (after_cursor == 0) {
        after_cursor = pruned_through;
        out.next_cursor = after_cursor;
      } else if (after_cursor < pruned_through) {
        return WithErrorReason(
            absl::OutOfRangeError("change cursor is older than the retained log; "
                                  "resynchronise and watch from now"),
            "CURSOR_EXPIRED");
      }
    }
    if (after_cursor > 0) {
      // A cursor past the newest one ever issued came from another database (one
      // restored from a backup, or recreated): reading on from it would skip every
      // change until the log caught up, silently.
      IOTAUTH_PREPARE(seq, db, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'");
      int rc = seq.Step();
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db.Error("read newest cursor");
      const int64_t issued = rc == SQLITE_ROW ? seq.ColInt(0) : 0;
      if (after_cursor > issued) {
        return WithErrorReason(
            absl::OutOfRangeError("change cursor is ahead of this registry's log (was the "
                                  "database restored or recreated?); resynchronise and watch "
                                  "from now"),
            "CURSOR_UNKNOWN");
      }
    }
    std::string sql =
        "SELECT cursor, time_us, type, resource_type, tenant_id, resource_id, etag "
        "FROM changes WHERE cursor > ?1";
    if (!tenant_id.empty()) sql += " AND tenant_id = ?3";
    sql += " ORDER BY cursor LIMIT ?2";
    IOTAUTH_PREPARE(st, db, sql);
    st.Int(1, after_cursor).Int(2, limit);
    if (!tenant_id.empty()) st.Text(3, tenant_id);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      v1::ChangeEvent e;
      int64_t cursor = st.ColInt(0);
      e.set_cursor(absl::StrCat(cursor));
      ToTimestamp(absl::FromUnixMicros(st.ColInt(1)), e.mutable_time());
      e.set_type(static_cast<v1::ChangeType>(st.ColInt(2)));
      e.set_resource_type(static_cast<v1::ResourceType>(st.ColInt(3)));
      e.set_tenant_id(std::string(st.ColText(4)));
      e.set_resource_id(std::string(st.ColText(5)));
      e.set_etag(std::string(st.ColText(6)));
      out.next_cursor = cursor;
      out.events.push_back(std::move(e));
    }
    if (rc != SQLITE_DONE) return db.Error("read changes");
    if (static_cast<int32_t>(out.events.size()) < limit) {
      // Everything up to the snapshot's newest change has been examined.
      IOTAUTH_PREPARE(mx, db, "SELECT COALESCE(MAX(cursor), 0) FROM changes");
      if (mx.Step() != SQLITE_ROW) return db.Error("read newest change");
      out.next_cursor = std::max(out.next_cursor, mx.ColInt(0));
    }
    return absl::OkStatus();
  }();
  db.Exec("COMMIT").IgnoreError();
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::optional<absl::Time>> SqliteStore::ChangeTime(int64_t cursor) {
  IOTAUTH_WITH_READER(db);
  IOTAUTH_PREPARE(st, db, "SELECT time_us FROM changes WHERE cursor = ?1");
  st.Int(1, cursor);
  const int rc = st.Step();
  if (rc == SQLITE_DONE) return std::optional<absl::Time>();
  if (rc != SQLITE_ROW) return db.Error("read change time");
  return std::optional<absl::Time>(absl::FromUnixMicros(st.ColInt(0)));
}

absl::StatusOr<int64_t> SqliteStore::PruneChanges(absl::Time older_than) {
  int64_t deleted = 0;
  IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
    int64_t through = 0;
    {
      IOTAUTH_PREPARE(st, *txn.db,
                      "SELECT COALESCE(MAX(cursor), 0) FROM changes WHERE time_us < ?1");
      st.Int(1, absl::ToUnixMicros(older_than));
      if (st.Step() != SQLITE_ROW) return txn.db->Error("find prune horizon");
      through = st.ColInt(0);
    }
    if (through == 0) return absl::OkStatus();
    {
      IOTAUTH_PREPARE(st, *txn.db, "DELETE FROM changes WHERE cursor <= ?1");
      st.Int(1, through);
      IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "prune changes"));
      deleted = sqlite3_changes(txn.db->raw());
    }
    IOTAUTH_PREPARE(st, *txn.db,
                    "UPDATE change_log_meta SET pruned_through = MAX(pruned_through, ?1) "
                    "WHERE id = 1");
    st.Int(1, through);
    return StepDone(*txn.db, st, "record prune horizon");
  }));
  return deleted;
}

// ---------------------------------------------------------------------------
// Re-wrapping secrets under a new master key.

namespace {

struct SecretTable {
  const char* table;
  const char* kind;
  const char* tenant_col;
  const char* id_col;
  std::vector<std::string> columns;  // sealed columns; the AAD field name of each
  std::vector<std::string> fields;
};

const std::vector<SecretTable>& SecretTables() {
  static const auto* tables = new std::vector<SecretTable>{
      {"tenants", "tenant", "id", "id", {"secrets"}, {"policies"}},
      {"products", "product", "tenant_id", "product_key", {"secret"}, {"product_secret"}},
      {"devices",
       "device",
       "tenant_id",
       "device_id",
       {"primary_key", "secondary_key"},
       {"primary_key", "secondary_key"}},
      {"enrollment_groups", "enrollment_group", "tenant_id", "id", {"group_key"}, {"group_key"}},
      {"issuing_cas", "issuing_ca", "tenant_id", "ca_id", {"private_key"}, {"private_key"}},
  };
  return *tables;
}

}  // namespace

absl::Status SqliteStore::RewrapSecrets(
    std::shared_ptr<const SecretBox> new_box, int batch_size,
    const std::function<void(const RewrapProgress&)>& progress) {
  if (new_box == nullptr) return absl::InvalidArgumentError("new_box is required");
  if (batch_size <= 0) batch_size = 1000;
  {
    // The new box must open what the current key sealed, or rows not yet
    // re-wrapped would become unreadable.
    std::shared_ptr<const SecretBox> current = box();
    std::string aad = SecretAad("probe", "", "", "");
    IOTAUTH_ASSIGN_OR_RETURN(std::string probe, current->Seal("probe", aad));
    if (!new_box->Open(probe, aad).ok()) {
      return absl::FailedPreconditionError(
          "the new secret box must also hold the current master key");
    }
    absl::MutexLock lock(&box_mu_);
    box_ = new_box;
  }
  RewrapProgress prog;
  {
    IOTAUTH_WITH_READER(db);
    for (const SecretTable& t : SecretTables()) {
      IOTAUTH_PREPARE(st, db, absl::StrCat("SELECT COUNT(*) FROM ", t.table));
      if (st.Step() != SQLITE_ROW) return db.Error("count rows");
      prog.rows_total += st.ColInt(0);
    }
  }
  for (const SecretTable& t : SecretTables()) {
    std::string cols;
    for (const std::string& c : t.columns) absl::StrAppend(&cols, ", ", c);
    std::string select = absl::StrCat(
        "SELECT ", t.tenant_col, ", ", t.id_col, cols, " FROM ", t.table, " WHERE (", t.tenant_col,
        ", ", t.id_col, ") > (?1, ?2) ORDER BY ", t.tenant_col, ", ", t.id_col, " LIMIT ?3");
    // Ids are never empty, so ("", "") precedes every row.
    std::string last_tenant;
    std::string last_id;
    for (;;) {
      int64_t rows = 0;
      IOTAUTH_RETURN_IF_ERROR(WriteTxn([&](Txn& txn) -> absl::Status {
        struct Update {
          std::string tenant, id;
          std::vector<std::string> sealed;
          bool changed = false;
        };
        std::vector<Update> updates;
        {
          IOTAUTH_PREPARE(st, *txn.db, select);
          st.Text(1, last_tenant).Text(2, last_id).Int(3, batch_size);
          int rc;
          while ((rc = st.Step()) == SQLITE_ROW) {
            Update u;
            u.tenant = std::string(st.ColText(0));
            u.id = std::string(st.ColText(1));
            for (size_t c = 0; c < t.columns.size(); ++c) {
              absl::string_view sealed = st.ColBlob(static_cast<int>(2 + c));
              if (sealed.empty() || new_box->SealedWithPrimary(sealed)) {
                u.sealed.emplace_back(sealed);
                continue;
              }
              std::string aad = SecretAad(t.kind, u.tenant, u.id, t.fields[c]);
              IOTAUTH_ASSIGN_OR_RETURN(std::string plain, new_box->Open(sealed, aad));
              absl::StatusOr<std::string> resealed = new_box->Seal(plain, aad);
              OPENSSL_cleanse(plain.data(), plain.size());
              if (!resealed.ok()) return resealed.status();
              u.sealed.push_back(*std::move(resealed));
              u.changed = true;
            }
            updates.push_back(std::move(u));
          }
          if (rc != SQLITE_DONE) return txn.db->Error("read secrets");
        }
        for (const Update& u : updates) {
          if (!u.changed) continue;
          std::string sql = absl::StrCat("UPDATE ", t.table, " SET ");
          for (size_t c = 0; c < t.columns.size(); ++c) {
            absl::StrAppend(&sql, c == 0 ? "" : ", ", t.columns[c], " = ?", c + 3);
          }
          absl::StrAppend(&sql, " WHERE ", t.tenant_col, " = ?1 AND ", t.id_col, " = ?2");
          IOTAUTH_PREPARE(st, *txn.db, sql);
          st.Text(1, u.tenant).Text(2, u.id);
          for (size_t c = 0; c < u.sealed.size(); ++c) {
            st.BlobOrNull(static_cast<int>(c + 3), u.sealed[c]);
          }
          IOTAUTH_RETURN_IF_ERROR(StepDone(*txn.db, st, "rewrap secret"));
        }
        rows = static_cast<int64_t>(updates.size());
        if (!updates.empty()) {
          last_tenant = updates.back().tenant;
          last_id = updates.back().id;
        }
        return absl::OkStatus();
      }));
      prog.rows_done += rows;
      if (progress) progress(prog);
      if (rows < batch_size) break;
    }
  }
  return absl::OkStatus();
}

}  // namespace iotauth::registry
