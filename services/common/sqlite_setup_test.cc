#include "services/common/sqlite_setup.h"

#include <string>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

// A real SQLite database at its page limit fails as a full disk does (SQLITE_FULL),
// and that reaches the caller as RESOURCE_EXHAUSTED with what to do.
TEST(SqliteStatusTest, AFullDatabaseIsResourceExhaustedWithTheHint) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA max_page_count=8; CREATE TABLE t(v BLOB)", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  int rc = SQLITE_OK;
  for (int i = 0; i < 100 && rc == SQLITE_OK; ++i) {
    rc = sqlite3_exec(db, "INSERT INTO t VALUES (zeroblob(4000))", nullptr, nullptr, nullptr);
  }
  ASSERT_EQ(rc, SQLITE_FULL);
  absl::Status s =
      SqliteStatus(sqlite3_extended_errcode(db), sqlite3_errmsg(db), "free space on the volume");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("full"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("(free space on the volume)"), absl::string_view::npos) << s;
  sqlite3_close(db);
}

TEST(SqliteStatusTest, ContentionIsUnavailableAndTheRestInternal) {
  EXPECT_EQ(SqliteStatus(SQLITE_BUSY, "m", "h").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteStatus(SQLITE_BUSY_SNAPSHOT, "m", "h").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteStatus(SQLITE_LOCKED, "m", "h").code(), absl::StatusCode::kUnavailable);
  // A reason: the server answered (UNAVAILABLE without one means it was not reached).
  EXPECT_EQ(ErrorReason(SqliteStatus(SQLITE_BUSY, "m", "h")), "STORE_BUSY");
  EXPECT_EQ(ErrorReason(SqliteStatus(SQLITE_FULL, "m", "h")), "STORE_FULL");
  absl::Status io = SqliteStatus(SQLITE_IOERR_WRITE, "disk I/O error", "h");
  EXPECT_EQ(io.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(io.message(), "disk I/O error");  // the hint is for a full disk only
  EXPECT_EQ(SqliteStatus(SQLITE_CORRUPT, "m", "h").code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace iotauth
