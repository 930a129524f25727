#include "services/audit/sqlite_audit_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/audit/block_filter.h"
#include "services/audit/canonical.h"
#include "services/audit/chain_check.h"
#include "services/common/clock.h"

namespace iotauth::audit {
namespace {

using iotauth::audit::v1::AuditEvent;

std::string TempDbPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string file = name;
  for (char& c : file) {
    if (c == '/') c = '_';
  }
  std::string path = absl::StrCat(dir ? dir : "/tmp", "/", file, ".db");
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  return path;
}

// Runs `sql` on its own connection: what an attacker with file access would do.
void Tamper(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  ASSERT_EQ(rc, SQLITE_OK) << (err ? err : "") << " in " << sql;
  sqlite3_close(db);
}

AuditEvent MakeEvent(int i, absl::Time t = absl::FromUnixSeconds(1700000000)) {
  AuditEvent e;
  e.set_event_id(absl::StrCat("id-", i));
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(t) + i);
  e.set_type(i % 2 ? iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION
                   : iotauth::audit::v1::EVENT_TYPE_ADMIN_MUTATION);
  e.set_tenant_id(i % 3 ? "t1" : "t2");
  e.set_device_id(absl::StrCat("dev-", i % 4));
  e.set_outcome(i % 5 ? iotauth::audit::v1::OUTCOME_ALLOW : iotauth::audit::v1::OUTCOME_DENY);
  e.set_reason("R");
  (*e.mutable_attributes())["k"] = absl::StrCat("v", i);
  return e;
}

class StoreTest : public ::testing::Test {
 protected:
  void Open(uint64_t checkpoint_interval = 4, int yield_every_events = 0) {
    store_.reset();
    SqliteAuditStore::Options o;
    o.path = path_;
    o.checkpoint_interval = checkpoint_interval;
    o.yield_every_events = yield_every_events;
    o.clock = &clock_;
    auto s = SqliteAuditStore::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  void AppendRange(int from, int to) {
    std::vector<AuditEvent> batch;
    for (int i = from; i <= to; ++i) batch.push_back(MakeEvent(i));
    auto r = store_->Append(&batch);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  VerifyResult VerifyAll(uint64_t from = 0, uint64_t to = 0) {
    auto r = store_->Verify(from, to);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyResult{};
  }
  // What a careful attacker does: edits event `first`'s reason, then re-chains it
  // and every event up to `last` (the head) and the head record, consistently.
  void ForgeAndRechain(uint64_t first, uint64_t last) {
    std::string prev = Get(first - 1).hash();
    std::string sql;
    for (uint64_t s = first; s <= last; ++s) {
      AuditEvent e = Get(s);
      if (s == first) e.set_reason("forged");
      ASSERT_TRUE(ChainEvent(prev, &e).ok());
      prev = e.hash();
      absl::StrAppend(&sql, "UPDATE audit_events SET reason = '", e.reason(), "', prev_hash = '",
                      e.prev_hash(), "', hash = '", e.hash(), "' WHERE sequence = ", s, ";");
    }
    absl::StrAppend(&sql, "UPDATE audit_state SET head_hash = '", prev, "';");
    Tamper(path_, sql);
  }
  AuditEvent Get(uint64_t seq) {
    EventFilter f;
    f.after_sequence = seq - 1;
    auto r = store_->Query(f, 1);
    EXPECT_TRUE(r.ok() && r->size() == 1);
    return r.ok() && !r->empty() ? (*r)[0] : AuditEvent();
  }

  FakeClock clock_;
  std::string path_ = TempDbPath(
      ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() +
      std::string("_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::unique_ptr<SqliteAuditStore> store_;
};

TEST_F(StoreTest, AppendAssignsGapFreeSequencesAndChains) {
  Open();
  std::vector<AuditEvent> batch = {MakeEvent(1), MakeEvent(2), MakeEvent(3)};
  batch[0].set_sequence(99);  // ignored
  batch[0].set_hash("bogus");
  auto r = store_->Append(&batch);
  const std::vector<AuditEvent>& committed = batch;  // the stored form, in place
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].sequence, 1u);
  EXPECT_EQ((*r)[2].sequence, 3u);
  ASSERT_EQ(committed.size(), 3u);
  EXPECT_EQ(committed[0].prev_hash(), kGenesisHash);
  EXPECT_EQ(committed[1].prev_hash(), committed[0].hash());
  AppendRange(4, 6);
  auto all = store_->ReadAfter(0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 6u);
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].sequence(), i + 1);
    EXPECT_EQ(*ComputeEventHash((*all)[i]), (*all)[i].hash());
    if (i > 0) {
      EXPECT_EQ((*all)[i].prev_hash(), (*all)[i - 1].hash());
    }
  }
  // Stored form round-trips every field.
  AuditEvent want = MakeEvent(1);
  want.set_sequence(1);
  want.set_prev_hash(std::string(kGenesisHash));
  want.set_hash(committed[0].hash());
  want.set_encoding(kEncodingV2);
  EXPECT_EQ((*all)[0].SerializeAsString(), want.SerializeAsString());
  auto head = store_->Head();
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->sequence, 6u);
  EXPECT_EQ(head->hash, (*all)[5].hash());
}

TEST_F(StoreTest, StoredBytesIsTheDatabaseAndItsWal) {
  Open();
  const uint64_t empty = store_->StoredBytes();
  EXPECT_GT(empty, 0u);  // the schema
  AppendRange(1, 500);
  const uint64_t filled = store_->StoredBytes();
  EXPECT_GT(filled, empty + uint64_t{50000}) << "500 events of some 200 bytes each";
  struct stat db {};
  struct stat wal {};
  ASSERT_EQ(::stat(path_.c_str(), &db), 0);
  const bool has_wal = ::stat((path_ + "-wal").c_str(), &wal) == 0;
  EXPECT_EQ(filled, static_cast<uint64_t>(db.st_size) +
                        (has_wal ? static_cast<uint64_t>(wal.st_size) : uint64_t{0}));
}

TEST_F(StoreTest, YieldingWriterStillWritesOneGapFreeChain) {
  Open(/*checkpoint_interval=*/4, /*yield_every_events=*/2);
  AppendRange(1, 9);
  AppendRange(10, 11);
  VerifyResult v = VerifyAll();
  EXPECT_TRUE(v.ok);
  EXPECT_EQ(v.events_checked, 11u);
  EXPECT_EQ(Get(11).sequence(), 11u);
}

TEST_F(StoreTest, RejectsEventWithoutId) {
  Open();
  AuditEvent e = MakeEvent(1);
  e.clear_event_id();
  std::vector<AuditEvent> batch = {e};
  EXPECT_EQ(store_->Append(&batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Head()->sequence, 0u);
}

// The AuditStore default: encoded events are decoded and appended like Append's
// (deduplicated unless every event is fresh); a malformed one fails the batch.
TEST_F(StoreTest, AppendEncodedDecodesIntoAppend) {
  Open();
  AppendRange(1, 2);
  std::string bytes;
  std::vector<EncodedEvent> events;
  for (int i : {2, 3, 4}) {
    const size_t offset = bytes.size();
    AppendUnchainedEncoding(MakeEvent(i), &bytes);
    events.push_back({offset, bytes.size() - offset, /*fresh=*/false});
  }
  auto r = store_->AppendEncoded(EncodedBatch{bytes, events});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[1].sequence, 3u);
  EXPECT_EQ((*r)[2].sequence, 4u);
  AuditEvent got = Get(4);
  AuditEvent want = MakeEvent(4);
  want.set_sequence(4);
  want.set_prev_hash(Get(3).hash());
  want.set_hash(got.hash());
  EXPECT_EQ(CanonicalEncoding(got), CanonicalEncoding(want));
  EXPECT_EQ(*ComputeEventHash(got), got.hash());
  EXPECT_TRUE(VerifyAll().ok);

  events.back().size -= 1;
  EXPECT_EQ(store_->AppendEncoded(EncodedBatch{bytes, events}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Head()->sequence, 4u);
}

TEST_F(StoreTest, DeduplicatesByEventId) {
  Open();
  AppendRange(1, 2);
  std::vector<AuditEvent> batch = {MakeEvent(2), MakeEvent(3), MakeEvent(3)};
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 2u);
  EXPECT_FALSE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, 3u);
  EXPECT_TRUE((*r)[2].duplicate);
  EXPECT_EQ((*r)[2].sequence, 3u);
  EXPECT_EQ(batch[1].sequence(), 3u);
  EXPECT_EQ(*ComputeEventHash(batch[1]), batch[1].hash());
  EXPECT_EQ(store_->Head()->sequence, 3u);
  EXPECT_TRUE(VerifyAll().ok);
}

TEST_F(StoreTest, QueryFiltersAndPages) {
  Open();
  AppendRange(1, 30);
  EventFilter f;
  f.tenant_id = "t2";  // i % 3 == 0
  auto r = store_->Query(f, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 10u);
  for (const auto& e : *r) EXPECT_EQ(e.tenant_id(), "t2");

  f = {};
  f.device_id = "dev-1";
  f.outcome = iotauth::audit::v1::OUTCOME_DENY;  // i % 4 == 1 and i % 5 == 0: 5, 25
  r = store_->Query(f, 100);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].sequence(), 5u);
  EXPECT_EQ((*r)[1].sequence(), 25u);

  f = {};
  f.type = iotauth::audit::v1::EVENT_TYPE_ADMIN_MUTATION;
  f.start_time = absl::FromUnixSeconds(1700000010);
  f.end_time = absl::FromUnixSeconds(1700000020);  // 10..19, even: 5 events
  r = store_->Query(f, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 5u);

  // Pagination by sequence cursor.
  f = {};
  std::vector<uint64_t> seen;
  for (;;) {
    r = store_->Query(f, 7);
    ASSERT_TRUE(r.ok());
    if (r->empty()) break;
    for (const auto& e : *r) seen.push_back(e.sequence());
    f.after_sequence = r->back().sequence();
  }
  ASSERT_EQ(seen.size(), 30u);
  EXPECT_EQ(seen.back(), 30u);

  f = {};
  f.after_sequence = 10;
  f.max_sequence = 12;
  r = store_->Query(f, 100);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 2u);
}

TEST_F(StoreTest, CheckpointsEveryNAndOnDemand) {
  Open(/*checkpoint_interval=*/4);
  EXPECT_FALSE(store_->LatestCheckpoint()->has_value());
  EXPECT_EQ(store_->CreateCheckpoint(clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  AppendRange(1, 10);
  auto ck = store_->LatestCheckpoint();
  ASSERT_TRUE(ck.ok() && ck->has_value());
  EXPECT_EQ((*ck)->sequence, 8u);
  EXPECT_EQ((*ck)->head_hash, Get(8).hash());
  auto made = store_->CreateCheckpoint(clock_.Now());
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->sequence, 10u);
  EXPECT_EQ(made->head_hash, store_->Head()->hash);
  EXPECT_EQ((*store_->LatestCheckpoint())->sequence, 10u);
}

TEST_F(StoreTest, ReopenContinuesTheChain) {
  Open();
  AppendRange(1, 5);
  Open();
  AppendRange(6, 9);
  EXPECT_EQ(store_->Head()->sequence, 9u);
  VerifyResult v = VerifyAll();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 9u);
}

TEST_F(StoreTest, VerifyCleanLogAndSubrange) {
  Open();
  VerifyResult v = VerifyAll();
  EXPECT_TRUE(v.ok);
  EXPECT_EQ(v.events_checked, 0u);
  AppendRange(1, 10);
  v = VerifyAll();
  EXPECT_TRUE(v.ok) << v.detail;
  EXPECT_EQ(v.events_checked, 10u);
  v = VerifyAll(6, 7);  // starts from checkpoint 4
  EXPECT_TRUE(v.ok) << v.detail;
  EXPECT_EQ(v.anchor_sequence, 4u);
  EXPECT_EQ(v.last_sequence, 7u);
}

struct TamperCase {
  const char* name;
  std::string sql;
  uint64_t bad_sequence;
  const char* problem;
};

class TamperTest : public StoreTest, public ::testing::WithParamInterface<TamperCase> {};

TEST_P(TamperTest, VerifyNamesTheFirstBadEvent) {
  Open(/*checkpoint_interval=*/4);
  AppendRange(1, 10);
  ASSERT_TRUE(VerifyAll().ok);
  Tamper(path_, GetParam().sql);
  VerifyResult v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, GetParam().bad_sequence) << v.detail;
  EXPECT_EQ(v.problem, GetParam().problem) << v.detail;
}

INSTANTIATE_TEST_SUITE_P(
    Rows, TamperTest,
    ::testing::Values(
        TamperCase{"EditDevice", "UPDATE audit_events SET device_id = 'x' WHERE sequence = 6", 6,
                   kProblemAltered},
        TamperCase{"EditOutcome", "UPDATE audit_events SET outcome = 1 WHERE sequence = 5", 5,
                   kProblemAltered},
        TamperCase{"EditTime", "UPDATE audit_events SET time_nanos = 1 WHERE sequence = 3", 3,
                   kProblemAltered},
        TamperCase{"EditAttributes", "UPDATE audit_events SET attributes = X'' WHERE sequence = 2",
                   2, kProblemAltered},
        // Rows that still decode to the event their hash covers, but whose stored
        // form Query's SQL filters would no longer match.
        TamperCase{"TypePast32Bits",
                   "UPDATE audit_events SET type = type + 4294967296 WHERE sequence = 4", 4,
                   kProblemAltered},
        TamperCase{"TenantAsBlob",
                   "UPDATE audit_events SET tenant_id = CAST(tenant_id AS BLOB) WHERE sequence = 6",
                   6, kProblemAltered},
        TamperCase{"HalfATime", "UPDATE audit_events SET time_nanos = NULL WHERE sequence = 3", 3,
                   kProblemAltered},
        TamperCase{"CorruptAttributes",
                   "UPDATE audit_events SET attributes = X'00' WHERE sequence = 2", 2,
                   kProblemAltered},
        TamperCase{"EditHash",
                   "UPDATE audit_events SET hash = lower(hex(randomblob(32))) "
                   "WHERE sequence = 7",
                   7, kProblemAltered},
        TamperCase{"EditFirstPrevHash",
                   "UPDATE audit_events SET prev_hash = lower(hex(randomblob(32))) "
                   "WHERE sequence = 1",
                   1, kProblemCheckpointMismatch},
        TamperCase{"DeleteMiddle", "DELETE FROM audit_events WHERE sequence = 7", 7,
                   kProblemMissing},
        TamperCase{"DeleteAndRenumber",
                   "DELETE FROM audit_events WHERE sequence = 4; "
                   "UPDATE audit_events SET sequence = sequence - 1 WHERE sequence > 4",
                   4, kProblemMissing},
        TamperCase{"DeleteTwoAndRenumber",
                   "DELETE FROM audit_events WHERE sequence IN (4, 5); "
                   "UPDATE audit_events SET sequence = sequence - 2 WHERE sequence > 5",
                   4, kProblemMissing},
        TamperCase{"DeleteFirst", "DELETE FROM audit_events WHERE sequence = 1", 1,
                   kProblemMissing},
        TamperCase{"DeleteTail", "DELETE FROM audit_events WHERE sequence >= 9", 9,
                   kProblemMissing},
        // The head record still holds event 10's hash. (Rewriting it too is only
        // caught against a checkpoint kept outside the database: GetCheckpoint.)
        TamperCase{"DeleteTailAndState",
                   "DELETE FROM audit_events WHERE sequence >= 9; "
                   "UPDATE audit_state SET head_sequence = 8",
                   8, kProblemCheckpointMismatch},
        TamperCase{"Swap",
                   "UPDATE audit_events SET sequence = -5 WHERE sequence = 5; "
                   "UPDATE audit_events SET sequence = 5 WHERE sequence = 6; "
                   "UPDATE audit_events SET sequence = 6 WHERE sequence = -5",
                   5, kProblemReordered},
        TamperCase{"MoveLater",
                   "UPDATE audit_events SET sequence = -2 WHERE sequence = 2; "
                   "UPDATE audit_events SET sequence = 2 WHERE sequence = 3; "
                   "UPDATE audit_events SET sequence = 3 WHERE sequence = 4; "
                   "UPDATE audit_events SET sequence = 4 WHERE sequence = -2",
                   2, kProblemReordered},
        TamperCase{"EditCheckpoint",
                   "UPDATE audit_checkpoints SET head_hash = lower(hex(randomblob(32))) "
                   "WHERE sequence = 8",
                   8, kProblemCheckpointMismatch},
        TamperCase{"EditStateHead", "UPDATE audit_state SET head_hash = lower(hex(randomblob(32)))",
                   10, kProblemCheckpointMismatch}),
    [](const ::testing::TestParamInfo<TamperCase>& info) { return info.param.name; });

// A careful attacker rewrites one event and recomputes its hash: the next event's
// prev_hash gives it away.
TEST_F(StoreTest, AlteredAndRehashedEventIsNamed) {
  Open();
  AppendRange(1, 10);
  AuditEvent e = Get(6);
  e.set_device_id("forged");
  ASSERT_TRUE(ChainEvent(e.prev_hash(), &e).ok());
  Tamper(path_, absl::StrCat("UPDATE audit_events SET device_id = 'forged', hash = '", e.hash(),
                             "' WHERE sequence = 6"));
  VerifyResult v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 6u) << v.detail;
  EXPECT_EQ(v.problem, kProblemAltered);
}

// Rewriting the whole suffix consistently is caught by the checkpoint after it.
TEST_F(StoreTest, RewrittenSuffixHitsCheckpoint) {
  Open(/*checkpoint_interval=*/4);
  AppendRange(1, 10);
  ASSERT_NO_FATAL_FAILURE(ForgeAndRechain(6, 10));
  VerifyResult v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 8u) << v.detail;
  EXPECT_EQ(v.problem, kProblemCheckpointMismatch);
}

// What the chain alone cannot show, an operator's copy of a checkpoint does: a tail
// cut off together with the head record, or a suffix rewritten whole with its
// checkpoints and head.
TEST_F(StoreTest, CheckpointKeptOutsideCatchesATruncatedTail) {
  Open(/*checkpoint_interval=*/4);
  AppendRange(1, 10);
  const CheckpointRecord kept{10, Get(10).hash(), clock_.Now()};
  Tamper(path_, absl::StrCat("DELETE FROM audit_events WHERE sequence >= 9; "
                             "DELETE FROM audit_checkpoints WHERE sequence >= 9; "
                             "UPDATE audit_state SET head_sequence = 8, head_hash = '",
                             Get(8).hash(), "'"));
  Open(/*checkpoint_interval=*/4);
  VerifyResult v = VerifyAll();
  ASSERT_TRUE(v.ok) << v.problem << " " << v.detail;  // the limit of the chain alone
  auto r = VerifyAgainstCheckpoint(*store_, 0, 0, kept);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_FALSE(r->expected_matched);
  EXPECT_EQ(r->problem, kProblemMissing);
  EXPECT_EQ(r->first_bad_sequence, 9u);
  EXPECT_NE(r->detail.find("ends at 8"), std::string::npos) << r->detail;
}

TEST_F(StoreTest, CheckpointKeptOutsideCatchesARewrittenSuffix) {
  Open(/*checkpoint_interval=*/4);
  AppendRange(1, 10);
  const CheckpointRecord kept{10, Get(10).hash(), clock_.Now()};
  ASSERT_NO_FATAL_FAILURE(ForgeAndRechain(9, 10));
  Open(/*checkpoint_interval=*/4);
  ASSERT_TRUE(VerifyAll().ok);
  auto r = VerifyAgainstCheckpoint(*store_, 0, 0, kept);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->problem, kProblemCheckpointMismatch);
  EXPECT_EQ(r->first_bad_sequence, 10u) << r->detail;
  // An older copy, from before the rewrite, still holds.
  r = VerifyAgainstCheckpoint(*store_, 0, 0, {8, Get(8).hash(), clock_.Now()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok) << r->problem << " " << r->detail;
  EXPECT_TRUE(r->expected_matched);
}

TEST_F(StoreTest, CheckpointKeptOutsideWidensTheRangeAndNeedsItsEvent) {
  Open(/*checkpoint_interval=*/0);
  AppendRange(1, 10);
  const CheckpointRecord at7{7, Get(7).hash(), clock_.Now()};
  // A range that stops short of the checkpoint is widened to reach it.
  auto r = VerifyAgainstCheckpoint(*store_, 2, 3, at7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched) << r->problem << " " << r->detail;
  EXPECT_EQ(r->last_sequence, 7u);
  r = VerifyAgainstCheckpoint(*store_, 9, 10, at7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched);
  EXPECT_EQ(r->last_sequence, 10u);
  // The walk still runs first: damage before the checkpoint is named as such.
  Tamper(path_, "UPDATE audit_events SET reason = 'forged' WHERE sequence = 5");
  r = VerifyAgainstCheckpoint(*store_, 0, 0, at7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->problem, kProblemAltered);
  EXPECT_EQ(r->first_bad_sequence, 5u);
  Tamper(path_, absl::StrCat("UPDATE audit_events SET reason = 'R' WHERE sequence = 5"));
  // Pruned by retention (events 9 and 10 kept, the anchor at 8).
  const CheckpointRecord at8{8, Get(8).hash(), clock_.Now()};
  ASSERT_TRUE(store_->ApplyRetention({absl::ZeroDuration(), 2}, clock_.Now()).ok());
  // The chain cannot vouch for a pruned event: fail closed, saying why.
  r = VerifyAgainstCheckpoint(*store_, 0, 0, at7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->problem, kProblemMissing);
  EXPECT_EQ(r->first_bad_sequence, 7u);
  EXPECT_NE(r->detail.find("newer checkpoint"), std::string::npos) << r->detail;
  // The retention anchor still records the last pruned event's hash.
  r = VerifyAgainstCheckpoint(*store_, 0, 0, at8);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched) << r->problem << " " << r->detail;
  r = VerifyAgainstCheckpoint(*store_, 0, 0, {8, Get(9).hash(), clock_.Now()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->problem, kProblemCheckpointMismatch);
  r = VerifyAgainstCheckpoint(*store_, 0, 0, {9, Get(9).hash(), clock_.Now()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched) << r->problem << " " << r->detail;
}

// Removing the start of the log and dressing it up as retention (a forged start
// and anchor that chain to the first kept event) passes the chain alone; against a
// checkpoint kept outside it fails.
TEST_F(StoreTest, CheckpointKeptOutsideCatchesAStartRemovedAsIfPruned) {
  Open(/*checkpoint_interval=*/0);
  AppendRange(1, 10);
  const CheckpointRecord kept{3, Get(3).hash(), clock_.Now()};
  const std::string prev_of_5 = Get(5).prev_hash();
  Tamper(path_, absl::StrCat("DELETE FROM audit_events WHERE sequence <= 4; "
                             "UPDATE audit_state SET first_sequence = 5; "
                             "INSERT INTO audit_checkpoints VALUES (4, '",
                             prev_of_5, "', 0)"));
  Open(/*checkpoint_interval=*/0);
  ASSERT_TRUE(VerifyAll().ok);  // looks like retention
  auto r = VerifyAgainstCheckpoint(*store_, 0, 0, kept);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_FALSE(r->expected_matched);
  EXPECT_EQ(r->problem, kProblemMissing);
  EXPECT_EQ(r->first_bad_sequence, 3u);
}

TEST_F(StoreTest, RetentionByRowsKeepsTheRestVerifiable) {
  Open(/*checkpoint_interval=*/5);
  AppendRange(1, 20);
  auto removed = store_->ApplyRetention({absl::ZeroDuration(), 8}, clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 12u);
  EXPECT_EQ(*store_->FirstSequence(), 13u);
  EXPECT_EQ(store_->ReadAfter(0, 100)->front().sequence(), 13u);
  VerifyResult v = VerifyAll();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, 12u);  // the anchor retention left at the new start
  v = VerifyAll(13, 0);
  EXPECT_TRUE(v.ok) << v.detail;
  EXPECT_EQ(v.anchor_sequence, 12u);
  EXPECT_EQ(v.events_checked, 8u);
  AppendRange(21, 23);
  v = VerifyAll(1, 0);
  EXPECT_TRUE(v.ok) << v.detail;
  EXPECT_EQ(v.events_checked, 11u);

  // Tampering in the retained part is still caught, and so is a forged anchor.
  Tamper(path_, "DELETE FROM audit_events WHERE sequence = 13");
  v = VerifyAll(1, 0);
  EXPECT_EQ(v.problem, kProblemMissing);
  EXPECT_EQ(v.first_bad_sequence, 13u);
}

TEST_F(StoreTest, CursorsPastTwoToTheSixtyThreeDoNotWrap) {
  // A client's page token or verify range reaches these as uint64: bound to SQLite's
  // int64 they must clamp, not wrap to a negative number.
  Open(/*checkpoint_interval=*/5);
  AppendRange(1, 20);
  EventFilter f;
  f.after_sequence = uint64_t{1} << 63;
  auto r = store_->Query(f, 100);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->empty()) << "got the first page back: " << r->size() << " events";
  ASSERT_TRUE(store_->ApplyRetention({absl::ZeroDuration(), 8}, clock_.Now()).ok());
  VerifyResult v = VerifyAll(uint64_t{1} << 63, 0);
  EXPECT_NE(v.problem, kProblemCheckpointMismatch) << v.detail;
}

TEST_F(StoreTest, RetentionBySizeIsRefused) {
  // The file would not shrink: a byte budget it cannot keep is an error, not a no-op.
  auto plan = store_->PlanRetention({absl::ZeroDuration(), 0, 1 << 20}, clock_.Now());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("storage.audit_backend=log"), std::string::npos);
}

TEST_F(StoreTest, RetentionAnchorIsChecked) {
  Open(/*checkpoint_interval=*/0);
  AppendRange(1, 10);
  ASSERT_TRUE(store_->ApplyRetention({absl::ZeroDuration(), 4}, clock_.Now()).ok());
  Tamper(path_,
         "UPDATE audit_checkpoints SET head_hash = lower(hex(randomblob(32))) "
         "WHERE sequence = 6");
  VerifyResult v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 7u);
  EXPECT_EQ(v.problem, kProblemCheckpointMismatch);
  Tamper(path_, "DELETE FROM audit_checkpoints");
  v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 7u);
  EXPECT_EQ(v.problem, kProblemCheckpointMismatch);
}

TEST_F(StoreTest, RetentionByAge) {
  Open(/*checkpoint_interval=*/0);
  AppendRange(1, 10);  // times 1700000001..1700000010
  clock_.Set(absl::FromUnixSeconds(1700000010));
  auto removed = store_->ApplyRetention({absl::Seconds(3), 0}, clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 6u);  // keeps 7..10
  EXPECT_EQ(*store_->FirstSequence(), 7u);
  EXPECT_TRUE(VerifyAll().ok);
  // Everything expires: the anchor keeps the chain going.
  clock_.Set(absl::FromUnixSeconds(1800000000));
  removed = store_->ApplyRetention({absl::Seconds(3), 0}, clock_.Now());
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 4u);
  EXPECT_TRUE(store_->ReadAfter(0, 10)->empty());
  AppendRange(11, 12);
  VerifyResult v = VerifyAll();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 2u);
}

TEST_F(StoreTest, RetentionRefusesToPruneTamperedEvents) {
  Open();
  AppendRange(1, 10);
  Tamper(path_, "UPDATE audit_events SET reason = 'x' WHERE sequence = 2");
  auto removed = store_->ApplyRetention({absl::ZeroDuration(), 3}, clock_.Now());
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*store_->FirstSequence(), 1u);
}

// Events spread over several summarised blocks plus an incomplete tail: devices
// from a large set, some rare; times mostly increasing with a few stragglers.
std::vector<AuditEvent> ManyBlockEvents(int n) {
  std::vector<AuditEvent> out;
  std::mt19937_64 rng(42);
  for (int i = 1; i <= n; ++i) {
    AuditEvent e = MakeEvent(i);
    e.set_device_id(absl::StrCat("dev-", rng() % 3000));
    if (i % 1777 == 0) e.set_device_id("rare");
    e.set_tenant_id(i % 7 == 0 ? "t-seven" : (i < 5000 ? "t-early" : "t-late"));
    if (i % 1001 == 0) e.mutable_time()->set_seconds(1600000000);  // an old straggler
    if (i % 997 == 0) e.clear_time();
    out.push_back(std::move(e));
  }
  return out;
}

bool Matches(const AuditEvent& e, const EventFilter& f) {
  if (e.sequence() <= f.after_sequence) return false;
  if (f.max_sequence != 0 && e.sequence() > f.max_sequence) return false;
  const bool has_time = e.has_time();
  const absl::Time t =
      absl::FromUnixSeconds(e.time().seconds()) + absl::Nanoseconds(e.time().nanos());
  if (f.start_time && (!has_time || t < *f.start_time)) return false;
  if (f.end_time && (!has_time || t >= *f.end_time)) return false;
  if (!f.tenant_id.empty() && e.tenant_id() != f.tenant_id) return false;
  if (!f.device_id.empty() && e.device_id() != f.device_id) return false;
  if (f.type != iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED && e.type() != f.type) return false;
  return f.outcome == iotauth::audit::v1::OUTCOME_UNSPECIFIED || e.outcome() == f.outcome;
}

std::vector<uint64_t> Sequences(const std::vector<AuditEvent>& events) {
  std::vector<uint64_t> out;
  out.reserve(events.size());
  for (const auto& e : events) out.push_back(e.sequence());
  return out;
}

class BlockQueryTest : public StoreTest {
 protected:
  static constexpr int kEvents = 3 * static_cast<int>(kBlockEvents) + 700;
  // `encoding`: the canonical version the rows are written in (0: the current one).
  void Fill(uint32_t encoding = 0) {
    Open(/*checkpoint_interval=*/1000);
    std::vector<AuditEvent> all = ManyBlockEvents(kEvents);
    for (AuditEvent& e : all) e.set_encoding(encoding);
    // Uneven batches, some crossing block boundaries.
    for (size_t i = 0; i < all.size();) {
      const size_t n = std::min(all.size() - i, static_cast<size_t>(1 + (i * 7919) % 2500));
      const auto from = all.begin() + static_cast<std::ptrdiff_t>(i);
      std::vector<AuditEvent> batch(from, from + static_cast<std::ptrdiff_t>(n));
      auto r = store_->Append(&batch);
      ASSERT_TRUE(r.ok()) << r.status();
      for (auto& e : batch) stored_.push_back(std::move(e));
      i += n;
    }
  }
  // Query, paging with `page` events at a time, must equal brute force.
  void ExpectExact(EventFilter f, int page, const std::string& what) {
    std::vector<uint64_t> want;
    for (const auto& e : stored_) {
      if (Matches(e, f)) want.push_back(e.sequence());
    }
    std::vector<uint64_t> got;
    for (int guard = 0; guard < 100000; ++guard) {
      auto r = store_->Query(f, page);
      ASSERT_TRUE(r.ok()) << r.status();
      for (uint64_t s : Sequences(*r)) got.push_back(s);
      if (static_cast<int>(r->size()) < page) break;
      f.after_sequence = r->back().sequence();
    }
    EXPECT_EQ(got, want) << what;
  }
  int64_t CountRows(const std::string& table) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, ("SELECT COUNT(*) FROM " + table).c_str(), -1, &st, nullptr);
    int64_t n = -1;
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  }
  void ExpectAllFiltersExact() {
    const absl::Time base = absl::FromUnixSeconds(1700000000);
    struct Case {
      std::string name;
      EventFilter f;
    };
    std::vector<Case> cases;
    auto add = [&cases](std::string name, auto set) {
      EventFilter f;
      set(f);
      cases.push_back({std::move(name), f});
    };
    add("rare device", [](EventFilter& f) { f.device_id = "rare"; });
    add("common device", [](EventFilter& f) { f.device_id = "dev-17"; });
    add("absent device", [](EventFilter& f) { f.device_id = "nobody"; });
    add("tenant only in early blocks", [](EventFilter& f) { f.tenant_id = "t-early"; });
    add("tenant everywhere", [](EventFilter& f) { f.tenant_id = "t-seven"; });
    add("tenant and device", [](EventFilter& f) {
      f.tenant_id = "t-late";
      f.device_id = "rare";
    });
    add("time window", [base](EventFilter& f) {
      f.start_time = base + absl::Seconds(5000);
      f.end_time = base + absl::Seconds(9000);
    });
    add("old stragglers", [](EventFilter& f) { f.end_time = absl::FromUnixSeconds(1600000001); });
    add("from a time on", [base](EventFilter& f) { f.start_time = base + absl::Seconds(12000); });
    add("device, type and outcome after a cursor", [](EventFilter& f) {
      f.device_id = "rare";
      f.after_sequence = 5000;
      f.max_sequence = 12000;
      f.type = iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION;
    });
    add("outcome only", [](EventFilter& f) { f.outcome = iotauth::audit::v1::OUTCOME_DENY; });
    for (const Case& c : cases) {
      ExpectExact(c.f, 1000, c.name);
      ExpectExact(c.f, 7, c.name + " (pages of 7)");
    }
  }
  std::vector<AuditEvent> stored_;
};

TEST_F(BlockQueryTest, QueriesThroughBlockSummariesAreExact) {
  Fill();
  EXPECT_EQ(CountRows("audit_blocks"), 3);  // three complete blocks, the tail unsummarised
  ExpectAllFiltersExact();
}

TEST_F(BlockQueryTest, MissingOrDamagedSummariesOnlyCostSpeed) {
  Fill();
  Tamper(path_,
         "DELETE FROM audit_blocks WHERE block = 1; "
         "UPDATE audit_blocks SET filter = x'00' WHERE block = 0; "
         "UPDATE audit_blocks SET filter_version = 99 WHERE block = 2;");
  ExpectAllFiltersExact();
}

TEST_F(BlockQueryTest, Version1LogIsMigratedOnOpen) {
  Fill(kEncodingV1);
  store_.reset();
  // What schema version 1 left: per-column indexes, no block summaries, no
  // encoding column (its rows are canonical version 1).
  Tamper(path_,
         "DELETE FROM audit_blocks; UPDATE audit_state SET schema_version = 1; "
         "ALTER TABLE audit_events DROP COLUMN encoding; "
         "CREATE INDEX audit_events_device ON audit_events(device_id, sequence); "
         "CREATE INDEX audit_events_tenant ON audit_events(tenant_id, sequence); "
         "CREATE INDEX audit_events_time ON audit_events(time_s, time_nanos);");
  Open(/*checkpoint_interval=*/1000);
  EXPECT_EQ(CountRows("audit_blocks"), 3);
  EXPECT_EQ(CountRows("sqlite_master WHERE type = 'index' AND name LIKE 'audit_events_%'"), 1)
      << "only the event_id index stays";
  EXPECT_EQ(CountRows("audit_state WHERE schema_version = 3"), 1);
  ExpectAllFiltersExact();
  EXPECT_TRUE(VerifyAll().ok);
}

// Schema 2 had no encoding column: its rows are canonical version 1. Opened by
// this build, they keep verifying, and new rows chain on in version 2.
TEST_F(BlockQueryTest, SchemaTwoRowsStayVersionOneAndTheChainContinues) {
  Open(/*checkpoint_interval=*/1000);
  std::vector<AuditEvent> old_rows;
  for (int i = 1; i <= 5; ++i) {
    AuditEvent e;
    e.set_event_id(absl::StrCat("old-", i));
    e.set_device_id("dev-old");
    e.set_encoding(kEncodingV1);
    old_rows.push_back(e);
  }
  ASSERT_TRUE(store_->Append(&old_rows).ok());
  store_.reset();
  Tamper(path_,
         "ALTER TABLE audit_events DROP COLUMN encoding; "
         "UPDATE audit_state SET schema_version = 2;");
  Open(/*checkpoint_interval=*/1000);
  EXPECT_EQ(CountRows("audit_state WHERE schema_version = 3"), 1);
  std::vector<AuditEvent> new_rows(2);
  new_rows[0].set_event_id("new-1");
  new_rows[1].set_event_id("new-2");
  ASSERT_TRUE(store_->Append(&new_rows).ok());
  auto all = store_->ReadAfter(0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 7u);
  for (const AuditEvent& e : *all) {
    EXPECT_EQ(e.encoding(), e.sequence() <= 5 ? kEncodingV1 : kEncodingV2);
    EXPECT_EQ(*ComputeEventHash(e), e.hash());
  }
  EXPECT_TRUE(VerifyAll().ok);
  // The version a row claims is part of what its hash covers.
  store_.reset();
  Tamper(path_, "UPDATE audit_events SET encoding = 2 WHERE sequence = 3;");
  Open(/*checkpoint_interval=*/1000);
  VerifyResult v = VerifyAll();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, 3u) << v.problem << " " << v.detail;
}

TEST_F(BlockQueryTest, NewerSchemaIsRefused) {
  Open();
  AppendRange(1, 3);
  store_.reset();
  Tamper(path_, "UPDATE audit_state SET schema_version = 4");
  SqliteAuditStore::Options o;
  o.path = path_;
  auto s = SqliteAuditStore::Open(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("newer iotauthd"), absl::string_view::npos) << s.status();
}

TEST_F(BlockQueryTest, RetentionByAgeAcrossBlocksDropsOldSummaries) {
  Open(/*checkpoint_interval=*/0);
  const int n = 2 * static_cast<int>(kBlockEvents) + 300;
  AppendRange(1, n);  // event i at 1700000000 + i
  const int keep_from = static_cast<int>(kBlockEvents) + 1000;
  clock_.Set(absl::FromUnixSeconds(1700000000 + n));
  auto removed = store_->ApplyRetention({absl::Seconds(n - keep_from), 0}, clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, static_cast<uint64_t>(keep_from - 1));
  EXPECT_EQ(*store_->FirstSequence(), static_cast<uint64_t>(keep_from));
  EXPECT_EQ(CountRows("audit_blocks"), 1) << "block 0 went with its events; block 1 is partly kept";
  EXPECT_TRUE(VerifyAll().ok);
  EventFilter f;
  f.device_id = "dev-1";
  auto r = store_->Query(f, 1);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_GE((*r)[0].sequence(), static_cast<uint64_t>(keep_from));
}

}  // namespace
}  // namespace iotauth::audit
