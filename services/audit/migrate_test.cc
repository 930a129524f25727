#include "services/audit/migrate.h"

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/audit/sqlite_audit_store.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;
namespace fs = std::filesystem;

class MigrateTest : public ::testing::Test {
 protected:
  MigrateTest() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = absl::StrCat(tmp ? tmp : "/tmp", "/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    SqliteAuditStore::Options so;
    so.path = root_ + "/audit.db";
    auto s = SqliteAuditStore::Open(so);
    EXPECT_TRUE(s.ok()) << s.status();
    source_ = std::move(*s);
    options_.dir = root_ + "/audit";
    options_.events_per_segment = 4096;
  }

  void Fill(int n) {
    std::vector<AuditEvent> batch;
    for (int i = 1; i <= n; ++i) {
      AuditEvent e;
      e.set_event_id(absl::StrCat("id-", i));
      e.mutable_time()->set_seconds(1764000000 + i);
      e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
      e.set_tenant_id("t");
      e.set_device_id(absl::StrCat("dev-", i % 37));
      e.set_outcome(i % 5 ? iotauth::audit::v1::OUTCOME_ALLOW : iotauth::audit::v1::OUTCOME_DENY);
      batch.push_back(std::move(e));
      if (batch.size() == 500 || i == n) {
        ASSERT_TRUE(source_->Append(&batch).ok());
        batch.clear();
      }
    }
  }

  // The copy holds the same events (every field, hashes included) as the source.
  void ExpectSameEvents(AuditStore& copy) {
    EventFilter f;
    f.device_id = "dev-3";
    auto a = source_->Query(f, 100000);
    auto b = copy.Query(f, 100000);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) {
      EXPECT_EQ((*a)[i].SerializeAsString(), (*b)[i].SerializeAsString()) << i;
    }
  }

  std::string root_;
  std::unique_ptr<SqliteAuditStore> source_;
  LogAuditStore::Options options_;
};

TEST_F(MigrateTest, CopiesEveryEventWithItsSequenceAndHash) {
  ASSERT_NO_FATAL_FAILURE(Fill(10000));
  std::vector<uint64_t> progress;
  auto r = MigrateToSegmentLog(*source_, options_,
                               [&progress](uint64_t done, uint64_t) { progress.push_back(done); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 1u);
  EXPECT_EQ(r->events, 10000u);
  EXPECT_EQ(r->head.hash, source_->Head()->hash);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), 10000u);
  auto copy = LogAuditStore::Open(options_);
  ASSERT_TRUE(copy.ok());
  auto v = (*copy)->Verify(0, 0);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem << " " << v->detail;
  EXPECT_EQ(v->events_checked, 10000u);
  ASSERT_NO_FATAL_FAILURE(ExpectSameEvents(**copy));
  // A second migration into the same directory is refused.
  auto again = MigrateToSegmentLog(*source_, options_);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MigrateTest, PrunedLogContinuesAfterItsAnchor) {
  ASSERT_NO_FATAL_FAILURE(Fill(10000));
  RetentionPolicy keep;
  keep.max_rows = 2999;
  ASSERT_TRUE(source_->ApplyRetention(keep, absl::Now()).ok());
  ASSERT_EQ(*source_->FirstSequence(), 7002u);
  auto r = MigrateToSegmentLog(*source_, options_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 7002u);
  EXPECT_EQ(r->events, 2999u);
  auto copy = LogAuditStore::Open(options_);
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(*(*copy)->FirstSequence(), 7002u);
  EXPECT_EQ((*copy)->Head()->hash, source_->Head()->hash);
  auto v = (*copy)->Verify(0, 0);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem << " " << v->detail;
  EXPECT_EQ(v->anchor_sequence, 7001u);
  ASSERT_NO_FATAL_FAILURE(ExpectSameEvents(**copy));
  // The copy goes on: the next event follows the old head.
  std::vector<AuditEvent> more(1);
  more[0].set_event_id("after-migration");
  ASSERT_TRUE((*copy)->Append(&more).ok());
  EXPECT_EQ(more[0].sequence(), 10001u);
  EXPECT_EQ(more[0].prev_hash(), source_->Head()->hash);
}

TEST_F(MigrateTest, RefusesAnOldLogThatDoesNotVerify) {
  ASSERT_NO_FATAL_FAILURE(Fill(300));
  source_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root_ + "/audit.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE audit_events SET device_id = 'x' WHERE sequence = 123",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  SqliteAuditStore::Options so;
  so.path = root_ + "/audit.db";
  source_ = *SqliteAuditStore::Open(so);
  auto r = MigrateToSegmentLog(*source_, options_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("123"), std::string::npos) << r.status();
  EXPECT_FALSE(fs::exists(options_.dir + "/" + LogAuditStore::SegmentFileName(1)));
}

}  // namespace
}  // namespace iotauth::audit
