#include "services/audit/log_audit_store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "services/audit/block_filter.h"
#include "services/audit/canonical.h"
#include "services/audit/chain_check.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/common/scoped_file_size_limit.h"

namespace iotauth::audit {
namespace {

namespace fs = std::filesystem;
using iotauth::audit::v1::AuditEvent;

constexpr int64_t kBaseSeconds = 1700000000;
constexpr char kSegmentMagic[] = "IOTAUDL2";
constexpr char kSegmentMagicV1[] = "IOTAUDL1";
constexpr size_t kSegmentHeaderSize = 16;
constexpr size_t kFrameHeaderSize = 5;  // u32 body_length, u8 kind
constexpr size_t kHashSize = 32;

// ---------------------------------------------------------------------------
// Files and directories.

// An empty directory path of its own for each call (not created: Open must
// create it).
std::string FreshDir() {
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = absl::StrCat(info->test_suite_name(), ".", info->name(), ".", getpid(), ".",
                                  counter.fetch_add(1));
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const fs::path dir = fs::path(::testing::TempDir()) / "log_audit_store_test" / name;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir.parent_path(), ec);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Names of the files in `dir` ending in `suffix`, sorted.
std::vector<std::string> FilesEndingIn(const std::string& dir, absl::string_view suffix) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() >= suffix.size() &&
        absl::string_view(name).substr(name.size() - suffix.size()) == suffix) {
      out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------
// The segment format of log_audit_store.h, parsed independently.

uint32_t GetU32(absl::string_view s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

uint64_t GetU64(absl::string_view s, size_t at) {
  return (static_cast<uint64_t>(GetU32(s, at)) << 32) | GetU32(s, at + 4);
}

void PutU32(uint32_t v, std::string* s, size_t at) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
}

struct Frame {
  size_t offset = 0;  // of the length field, in the file
  size_t size = 0;    // length field + kind + body
  char kind = 0;
  uint64_t sequence = 0;     // the event's (from its canonical encoding) or the checkpoint's
  size_t device_offset = 0;  // events: file offset of the device id's first byte
  size_t device_size = 0;
};

// Every frame of a segment file; a test failure on anything the format does not
// allow (so it also checks that the store leaves no garbage behind).
std::vector<Frame> ParseSegment(const std::string& bytes, uint64_t* first_sequence = nullptr) {
  std::vector<Frame> frames;
  if (bytes.size() < kSegmentHeaderSize || bytes.compare(0, 8, kSegmentMagic) != 0) {
    ADD_FAILURE() << "bad segment header";
    return frames;
  }
  if (first_sequence != nullptr) *first_sequence = GetU64(bytes, 8);
  size_t at = kSegmentHeaderSize;
  while (at < bytes.size()) {
    // The active segment ends in its zero-filled preallocation (direct writes).
    if (std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(at), bytes.end(),
                    [](char c) { return c == '\0'; })) {
      break;
    }
    if (bytes.size() - at < kFrameHeaderSize) {
      ADD_FAILURE() << "frame header cut short at offset " << at;
      break;
    }
    Frame f;
    f.offset = at;
    const uint32_t len = GetU32(bytes, at);
    f.kind = bytes[at + 4];
    if (bytes.size() - at - kFrameHeaderSize < len) {
      ADD_FAILURE() << "frame at offset " << at << " runs past the end";
      break;
    }
    f.size = kFrameHeaderSize + len;
    const absl::string_view body(bytes.data() + at + kFrameHeaderSize, len);
    if (f.kind == 'E') {
      CanonicalFields c;
      if (len < kHashSize || !ParseCanonical(body.substr(kHashSize), &c)) {
        ADD_FAILURE() << "event frame at offset " << at << " does not parse";
        break;
      }
      f.sequence = c.sequence;
      f.device_offset = static_cast<size_t>(c.device_id.data() - bytes.data());
      f.device_size = c.device_id.size();
    } else if (f.kind == 'C') {
      if (len != 8 + kHashSize + 8) {
        ADD_FAILURE() << "checkpoint frame at offset " << at << " has length " << len;
        break;
      }
      f.sequence = GetU64(bytes, at + kFrameHeaderSize);
    } else {
      ADD_FAILURE() << "frame at offset " << at << " has kind " << static_cast<int>(f.kind);
      break;
    }
    frames.push_back(f);
    at += f.size;
  }
  return frames;
}

// "E1 E2 C2 ...": the frames of a segment in file order.
std::string FrameList(const std::vector<Frame>& frames) {
  std::vector<std::string> parts;
  parts.reserve(frames.size());
  for (const Frame& f : frames) parts.push_back(absl::StrCat(std::string(1, f.kind), f.sequence));
  return absl::StrJoin(parts, " ");
}

const Frame* FindFrame(const std::vector<Frame>& frames, char kind, uint64_t sequence) {
  for (const Frame& f : frames) {
    if (f.kind == kind && f.sequence == sequence) return &f;
  }
  ADD_FAILURE() << "no frame " << kind << sequence;
  return nullptr;
}

// ---------------------------------------------------------------------------
// Events.

AuditEvent MakeEvent(uint64_t i) {
  AuditEvent e;
  e.set_event_id(absl::StrCat("id-", i));
  e.mutable_time()->set_seconds(kBaseSeconds + static_cast<int64_t>(i));
  e.set_type(i % 2 ? iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION
                   : iotauth::audit::v1::EVENT_TYPE_ADMIN_MUTATION);
  e.set_tenant_id(i % 3 ? "t1" : "t2");
  e.set_product_key("pk");
  e.set_device_id(absl::StrCat("dev-", i % 4));
  e.set_outcome(i % 5 ? iotauth::audit::v1::OUTCOME_ALLOW : iotauth::audit::v1::OUTCOME_DENY);
  e.set_reason("R");
  e.set_credential_type("CREDENTIAL_TYPE_SAS");
  e.set_credential_fingerprint(absl::StrCat("sha256:", i % 11));
  e.set_caller("gateway-1");
  e.set_peer_address("ipv4:10.0.0.1:5555");
  e.set_request_id(absl::StrCat("req-", i));
  e.mutable_duration()->set_nanos(static_cast<int32_t>(1000 * (i % 1000)));
  (*e.mutable_attributes())["k"] = absl::StrCat("v", i);
  // Frames of different sizes.
  (*e.mutable_attributes())["pad"] = std::string(i % 37, 'x');
  return e;
}

absl::Time EventTime(const AuditEvent& e) {
  return absl::FromUnixSeconds(e.time().seconds()) + absl::Nanoseconds(e.time().nanos());
}

// Events spread over several segments and blocks: devices from a large set, some
// rare or confined to one segment or to the unsummarised tail; tenants likewise;
// times mostly increasing with stragglers and some events without a time.
std::vector<AuditEvent> ManyEvents(uint64_t n, uint64_t tail_from, uint64_t events_per_segment) {
  std::vector<AuditEvent> out;
  std::mt19937_64 rng(42);
  for (uint64_t i = 1; i <= n; ++i) {
    AuditEvent e = MakeEvent(i);
    e.set_device_id(absl::StrCat("dev-", rng() % 3000));
    if (i % 1777 == 0) e.set_device_id("rare");
    if (i > events_per_segment + 10 && i <= events_per_segment + 20) e.set_device_id("dev-seg2");
    if (i >= tail_from && i % 50 == 0) e.set_device_id("dev-tail");
    e.set_tenant_id(i % 7 == 0 ? "t-seven" : (i < 5000 ? "t-early" : "t-late"));
    if (i >= tail_from && i % 3 == 0) e.set_tenant_id("t-tail");
    e.set_outcome(rng() % 5 == 0 ? iotauth::audit::v1::OUTCOME_DENY
                                 : iotauth::audit::v1::OUTCOME_ALLOW);
    e.mutable_time()->set_nanos(static_cast<int32_t>((i * 7919) % 1000000000));
    if (i % 1001 == 0) e.mutable_time()->set_seconds(1600000000);  // an old straggler
    if (i % 997 == 0) e.clear_time();
    out.push_back(std::move(e));
  }
  return out;
}

// The filter semantics of audit_store.h, by brute force. An event without a time
// matches no time bound (as in SqliteAuditStore).
bool Matches(const AuditEvent& e, const EventFilter& f) {
  if (e.sequence() <= f.after_sequence) return false;
  if (f.max_sequence != 0 && e.sequence() > f.max_sequence) return false;
  const bool has_time = e.has_time();
  const absl::Time t = EventTime(e);
  if (f.start_time && (!has_time || t < *f.start_time)) return false;
  if (f.end_time && (!has_time || t >= *f.end_time)) return false;
  if (!f.tenant_id.empty() && e.tenant_id() != f.tenant_id) return false;
  if (!f.device_id.empty() && e.device_id() != f.device_id) return false;
  if (f.type != iotauth::audit::v1::EVENT_TYPE_UNSPECIFIED && e.type() != f.type) return false;
  return f.outcome == iotauth::audit::v1::OUTCOME_UNSPECIFIED || e.outcome() == f.outcome;
}

// Every field of an event, deterministically (protobuf's serialization of a map
// is not: entries come in hash-table order).
std::string AllFields(const AuditEvent& e) {
  return absl::StrCat(CanonicalEncoding(e), "|hash=", e.hash());
}

std::vector<uint64_t> Sequences(const std::vector<AuditEvent>& events) {
  std::vector<uint64_t> out;
  out.reserve(events.size());
  for (const auto& e : events) out.push_back(e.sequence());
  return out;
}

// ---------------------------------------------------------------------------
// Fixture: one log directory per test.

class LogStoreTest : public ::testing::Test {
 protected:
  LogStoreTest() {
    options_.dir = FreshDir();
    options_.clock = &clock_;
    options_.checkpoint_interval = 0;
  }
  ~LogStoreTest() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(options_.dir, ec);
  }

  void Open() {
    store_.reset();
    auto s = LogAuditStore::Open(options_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  void Close() { store_.reset(); }
  // A new, empty log in a directory of its own, written directly or buffered.
  void OpenFresh(bool direct_io) {
    options_.dir = FreshDir();
    options_.direct_io = direct_io;
    stored_.clear();
    Open();
  }

  // Appends `events` in batches of `batch`; all must be new. Keeps their stored
  // form in stored_ (index = sequence - 1).
  void AppendEvents(const std::vector<AuditEvent>& events, size_t batch) {
    for (size_t i = 0; i < events.size(); i += batch) {
      const size_t n = std::min(batch, events.size() - i);
      std::vector<AuditEvent> part(events.begin() + static_cast<std::ptrdiff_t>(i),
                                   events.begin() + static_cast<std::ptrdiff_t>(i + n));
      auto r = store_->Append(&part);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->size(), n);
      for (size_t j = 0; j < n; ++j) {
        ASSERT_FALSE((*r)[j].duplicate) << part[j].event_id();
        ASSERT_EQ((*r)[j].sequence, stored_.size() + 1);
        ASSERT_EQ(part[j].sequence(), stored_.size() + 1);
        stored_.push_back(std::move(part[j]));
      }
    }
  }
  void AppendRange(uint64_t from, uint64_t to, size_t batch = 1000) {
    std::vector<AuditEvent> events;
    for (uint64_t i = from; i <= to; ++i) events.push_back(MakeEvent(i));
    AppendEvents(events, batch);
  }

  // Every retained event, through ReadAfter pages.
  std::vector<AuditEvent> ReadAll() {
    std::vector<AuditEvent> out;
    uint64_t after = 0;
    for (int guard = 0; guard < 100000; ++guard) {
      auto r = store_->ReadAfter(after, 997);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok() || r->empty()) break;
      after = r->back().sequence();
      for (auto& e : *r) out.push_back(std::move(e));
    }
    return out;
  }
  // The store holds exactly stored_[first - 1 ..], every field as appended.
  void ExpectHolds(uint64_t first) {
    const std::vector<AuditEvent> all = ReadAll();
    ASSERT_EQ(all.size(), stored_.size() - (first - 1));
    for (size_t i = 0; i < all.size(); ++i) {
      const AuditEvent& want = stored_[first - 1 + i];
      ASSERT_EQ(AllFields(all[i]), AllFields(want)) << "sequence " << want.sequence();
    }
  }

  VerifyResult Verify(uint64_t from = 0, uint64_t to = 0) {
    auto r = store_->Verify(from, to);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : VerifyResult{};
  }
  ChainHead Head() {
    auto r = store_->Head();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ChainHead{};
  }
  uint64_t First() {
    auto r = store_->FirstSequence();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : 0;
  }
  std::optional<CheckpointRecord> Latest() {
    auto r = store_->LatestCheckpoint();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nullopt;
  }

  std::string SegPath(uint64_t first) const {
    return (fs::path(options_.dir) / LogAuditStore::SegmentFileName(first)).string();
  }
  std::string IdxPath(uint64_t first) const {
    std::string p = SegPath(first);
    return p.substr(0, p.size() - 4) + ".idx";
  }
  // First sequence of the segment holding `sequence`.
  uint64_t SegmentStart(uint64_t sequence) const {
    return (sequence - 1) / options_.events_per_segment * options_.events_per_segment + 1;
  }

  FakeClock clock_;
  LogAuditStore::Options options_;
  std::unique_ptr<LogAuditStore> store_;
  std::vector<AuditEvent> stored_;
};

// ---------------------------------------------------------------------------
// Options.

struct OptionsCase {
  const char* name;
  std::function<void(LogAuditStore::Options*)> change;
  absl::StatusCode code;
};

void PrintTo(const OptionsCase& c, std::ostream* os) { *os << c.name; }

class OptionsTest : public LogStoreTest, public ::testing::WithParamInterface<OptionsCase> {};

TEST_P(OptionsTest, ValidatesOptions) {
  LogAuditStore::Options o = options_;
  GetParam().change(&o);
  auto s = LogAuditStore::Open(o);
  EXPECT_EQ(s.status().code(), GetParam().code) << s.status();
}

INSTANTIATE_TEST_SUITE_P(
    Rows, OptionsTest,
    ::testing::Values(
        OptionsCase{"Valid",
                    [](LogAuditStore::Options* o) { o->events_per_segment = kBlockEvents; },
                    absl::StatusCode::kOk},
        OptionsCase{"EmptyDir", [](LogAuditStore::Options* o) { o->dir.clear(); },
                    absl::StatusCode::kInvalidArgument},
        OptionsCase{"ZeroSegment", [](LogAuditStore::Options* o) { o->events_per_segment = 0; },
                    absl::StatusCode::kInvalidArgument},
        OptionsCase{"SegmentNotBlockMultiple",
                    [](LogAuditStore::Options* o) { o->events_per_segment = kBlockEvents + 1; },
                    absl::StatusCode::kInvalidArgument},
        OptionsCase{"SegmentSmallerThanBlock",
                    [](LogAuditStore::Options* o) { o->events_per_segment = kBlockEvents / 2; },
                    absl::StatusCode::kInvalidArgument}),
    [](const ::testing::TestParamInfo<OptionsCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------
// 1. Append, chain, head, reopen.

TEST_F(LogStoreTest, EmptyLog) {
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_TRUE(fs::is_directory(options_.dir));
  ChainHead head = Head();
  EXPECT_EQ(head.sequence, 0u);
  EXPECT_EQ(head.hash, kGenesisHash);
  EXPECT_EQ(First(), 1u);
  EXPECT_TRUE(ReadAll().empty());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 0u);
  ASSERT_NO_FATAL_FAILURE(Open());  // an empty log reopens
  EXPECT_EQ(Head().sequence, 0u);
  EXPECT_EQ(First(), 1u);
}

TEST_F(LogStoreTest, SegmentFileName) {
  EXPECT_EQ(LogAuditStore::SegmentFileName(1), "00000000000000000001.seg");
  EXPECT_EQ(LogAuditStore::SegmentFileName(262145), "00000000000000262145.seg");
  EXPECT_EQ(LogAuditStore::SegmentFileName(18446744073709551615u), "18446744073709551615.seg");
}

TEST_F(LogStoreTest, AppendAssignsGapFreeSequencesAndChains) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> batch = {MakeEvent(1), MakeEvent(2), MakeEvent(3)};
  batch[0].set_sequence(99);  // input values of the chain fields are ignored
  batch[0].set_hash("bogus");
  batch[1].set_prev_hash(std::string(64, 'f'));
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*r)[i].sequence, i + 1);
    EXPECT_FALSE((*r)[i].duplicate);
    EXPECT_EQ(batch[i].sequence(), i + 1);  // the stored form, in place
    EXPECT_EQ(batch[i].prev_hash(), i == 0 ? std::string(kGenesisHash) : batch[i - 1].hash());
    auto h = ComputeEventHash(batch[i]);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(batch[i].hash(), *h);
  }
  for (auto& e : batch) stored_.push_back(e);
  // Batches of different sizes.
  ASSERT_NO_FATAL_FAILURE(AppendRange(4, 4));
  ASSERT_NO_FATAL_FAILURE(AppendRange(5, 9));
  ASSERT_NO_FATAL_FAILURE(AppendRange(10, 19));
  for (size_t i = 1; i < stored_.size(); ++i) {
    EXPECT_EQ(stored_[i].prev_hash(), stored_[i - 1].hash());
    EXPECT_EQ(*ComputeEventHash(stored_[i]), stored_[i].hash());
  }
  // Every field round-trips.
  AuditEvent want = MakeEvent(1);
  want.set_sequence(1);
  want.set_prev_hash(std::string(kGenesisHash));
  want.set_hash(stored_[0].hash());
  EXPECT_EQ(AllFields(stored_[0]), AllFields(want));
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  ChainHead head = Head();
  EXPECT_EQ(head.sequence, 19u);
  EXPECT_EQ(head.hash, stored_.back().hash());
  EXPECT_EQ(First(), 1u);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 19u);
  EXPECT_EQ(v.last_sequence, 19u);

  // Reopen: same head and contents; the chain continues.
  ASSERT_NO_FATAL_FAILURE(Open());
  head = Head();
  EXPECT_EQ(head.sequence, 19u);
  EXPECT_EQ(head.hash, stored_.back().hash());
  EXPECT_EQ(First(), 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  ASSERT_NO_FATAL_FAILURE(AppendRange(20, 21));
  EXPECT_EQ(stored_[19].prev_hash(), stored_[18].hash());
  EXPECT_EQ(Head().sequence, 21u);
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 21u);
}

// The bytes on disk are exactly the documented format.
TEST_F(LogStoreTest, SegmentHoldsHashAndCanonicalEncoding) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 5, 2));
  Close();
  EXPECT_EQ(FilesEndingIn(options_.dir, ".seg"),
            std::vector<std::string>{LogAuditStore::SegmentFileName(1)});
  const std::string bytes = ReadFile(SegPath(1));
  uint64_t first = 0;
  const std::vector<Frame> frames = ParseSegment(bytes, &first);
  EXPECT_EQ(first, 1u);
  ASSERT_EQ(FrameList(frames), "E1 E2 E3 E4 E5");
  for (const Frame& f : frames) {
    const AuditEvent& e = stored_[f.sequence - 1];
    const std::string body = bytes.substr(f.offset + kFrameHeaderSize, f.size - kFrameHeaderSize);
    EXPECT_EQ(body.substr(0, kHashSize), absl::HexStringToBytes(e.hash())) << f.sequence;
    EXPECT_EQ(body.substr(kHashSize), CanonicalEncoding(e)) << f.sequence;
  }
}

// ---------------------------------------------------------------------------
// 2. Deduplication.

TEST_F(LogStoreTest, DeduplicatesByEventId) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 3));
  Close();
  const size_t size_before = ReadFile(SegPath(1)).size();
  ASSERT_NO_FATAL_FAILURE(Open());

  std::vector<AuditEvent> batch = {MakeEvent(2)};
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 2u);
  EXPECT_EQ(Head().sequence, 3u);
  EXPECT_EQ(Head().hash, stored_[2].hash());
  Close();
  EXPECT_EQ(ReadFile(SegPath(1)).size(), size_before) << "a duplicate wrote bytes";
  ASSERT_NO_FATAL_FAILURE(Open());

  // Within one batch, against stored events and against earlier batch members.
  batch = {MakeEvent(3), MakeEvent(4), MakeEvent(4), MakeEvent(1), MakeEvent(5)};
  r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 5u);
  const std::vector<std::pair<bool, uint64_t>> want = {
      {true, 3}, {false, 4}, {true, 4}, {true, 1}, {false, 5}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*r)[i].duplicate, want[i].first) << i;
    EXPECT_EQ((*r)[i].sequence, want[i].second) << i;
  }
  EXPECT_EQ(batch[1].sequence(), 4u);
  EXPECT_EQ(batch[1].prev_hash(), stored_[2].hash());
  EXPECT_EQ(batch[4].sequence(), 5u);
  EXPECT_EQ(batch[4].prev_hash(), batch[1].hash());
  EXPECT_EQ(*ComputeEventHash(batch[4]), batch[4].hash());
  stored_.push_back(batch[1]);
  stored_.push_back(batch[4]);
  EXPECT_EQ(Head().sequence, 5u);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));

  // Still deduplicated after reopen.
  ASSERT_NO_FATAL_FAILURE(Open());
  batch = {MakeEvent(5), MakeEvent(1), MakeEvent(6)};
  r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 5u);
  EXPECT_TRUE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, 1u);
  EXPECT_FALSE((*r)[2].duplicate);
  EXPECT_EQ((*r)[2].sequence, 6u);
  stored_.push_back(batch[2]);
  EXPECT_EQ(Head().sequence, 6u);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 6u);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
}

// A log written in canonical version 1 (before the upgrade) keeps verifying, and its
// chain continues in version 2: each event's hash covers the version it was written
// in, across a reopen, and an edit to an event of either version is found.
TEST_F(LogStoreTest, VersionOneEventsChainOnIntoVersionTwo) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> old_events;
  for (uint64_t i = 1; i <= 5; ++i) {
    old_events.push_back(MakeEvent(i));
    old_events.back().set_encoding(kEncodingV1);
  }
  ASSERT_NO_FATAL_FAILURE(AppendEvents(old_events, 100));
  // As a build before version 2 left the segment: headed "IOTAUDL1".
  Close();
  std::string bytes = ReadFile(SegPath(1));
  bytes.replace(0, 8, kSegmentMagicV1);
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), bytes));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(ReadFile(SegPath(1)).substr(0, 8), kSegmentMagicV1) << "opening changed the file";
  // The first version-2 write marks the segment, so that an older build (which
  // would skip version-2 frames as damage and append after them) refuses it.
  ASSERT_NO_FATAL_FAILURE(AppendRange(6, 10));
  EXPECT_EQ(ReadFile(SegPath(1)).substr(0, 8), kSegmentMagic);
  ASSERT_NO_FATAL_FAILURE(Open());  // reopened: the head is read from the file
  ASSERT_NO_FATAL_FAILURE(AppendRange(11, 12));
  const std::vector<AuditEvent> all = ReadAll();
  ASSERT_EQ(all.size(), 12u);
  for (const AuditEvent& e : all) {
    EXPECT_EQ(e.encoding(), e.sequence() <= 5 ? kEncodingV1 : kEncodingV2) << e.sequence();
    EXPECT_EQ(*ComputeEventHash(e), e.hash()) << e.sequence();
  }
  EXPECT_EQ(all[5].prev_hash(), all[4].hash());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 12u);
  // One byte of a version-1 event's request id, then of a version-2 event's.
  const std::string original = ReadFile(SegPath(1));
  for (const auto& [id, seq] : {std::pair<std::string, uint64_t>{"req-3", 3},
                                std::pair<std::string, uint64_t>{"req-8", 8}}) {
    Close();
    std::string edited = original;
    const size_t at = edited.find(id);
    ASSERT_NE(at, std::string::npos) << id;
    ASSERT_EQ(edited.find(id, at + 1), std::string::npos) << id;
    edited[at] = 'X';
    ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), edited));
    ASSERT_NO_FATAL_FAILURE(Open());
    v = Verify();
    EXPECT_FALSE(v.ok) << id;
    EXPECT_EQ(v.first_bad_sequence, seq) << v.problem << " " << v.detail;
  }
}

// A segment format this build does not know, from a newer build: Open refuses it
// and says so (a rollback must not append to a log it cannot read).
TEST_F(LogStoreTest, SegmentOfANewerFormatIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 3));
  Close();
  std::string bytes = ReadFile(SegPath(1));
  bytes.replace(0, 8, "IOTAUDL9");
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), bytes));
  auto s = LogAuditStore::Open(options_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_NE(s.status().message().find("newer iotauthd"), absl::string_view::npos) << s.status();
}

// AppendFresh (the local pipeline's ids, generated in-process): no lookup, and the
// ids stay out of the dedup window; sequences and the chain are as for Append.
TEST_F(LogStoreTest, AppendFreshSkipsTheDuplicateLookup) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> batch = {MakeEvent(1), MakeEvent(2)};
  ASSERT_TRUE(store_->Append(&batch).ok());
  batch = {MakeEvent(3), MakeEvent(4)};
  auto r = store_->AppendFresh(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE((*r)[0].duplicate);
  EXPECT_EQ((*r)[1].sequence, 4u);
  EXPECT_EQ(*ComputeEventHash(batch[1]), batch[1].hash());
  // The caller vouched that the ids are new: an old one is written again.
  batch = {MakeEvent(1)};
  r = store_->AppendFresh(&batch);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 5u);
  // Ids written by Append are remembered, those by AppendFresh are not.
  batch = {MakeEvent(2), MakeEvent(3)};
  r = store_->Append(&batch);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 2u);
  EXPECT_FALSE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, 6u);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 6u);
}

// A batch of unchained encodings of `events` (as the local pipeline queues them).
struct Encoded {
  std::string bytes;
  std::vector<EncodedEvent> events;
  EncodedBatch batch() const { return EncodedBatch{bytes, events}; }
};
Encoded Encode(const std::vector<AuditEvent>& events, bool fresh) {
  Encoded out;
  for (const AuditEvent& e : events) {
    const size_t offset = out.bytes.size();
    AppendUnchainedEncoding(e, &out.bytes);
    out.events.push_back({offset, out.bytes.size() - offset, fresh});
  }
  return out;
}

// The producers' bytes are written as they are, chained: the log then holds exactly
// what Append of the same events writes (same hashes, same fields), and verifies.
TEST_F(LogStoreTest, AppendEncodedWritesWhatAppendWrites) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> events;
  for (uint64_t i = 1; i <= 40; ++i) events.push_back(MakeEvent(i));
  events[3].clear_time();
  events[4].clear_attributes();
  const Encoded encoded = Encode(events, /*fresh=*/true);
  // Two batches: the second continues the first one's chain.
  const EncodedBatch all = encoded.batch();
  for (const auto& part : {all.events.subspan(0, 25), all.events.subspan(25)}) {
    auto r = store_->AppendEncoded(EncodedBatch{all.buffer, part});
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), part.size());
    for (const AppendedEvent& a : *r) {
      EXPECT_FALSE(a.duplicate);
      EXPECT_EQ(a.sequence, stored_.size() + 1);
      stored_.emplace_back();
    }
  }
  // The reference: the same events through Append into another log.
  LogAuditStore::Options other = options_;
  other.dir = FreshDir();
  auto reference = LogAuditStore::Open(other);
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::vector<AuditEvent> want = events;
  ASSERT_TRUE((*reference)->Append(&want).ok());
  stored_ = want;
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  EXPECT_EQ(Head().hash, want.back().hash());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 40u);
  // Block summaries came from the encoded fields: queries by device still match.
  EventFilter f;
  f.device_id = "dev-2";
  auto q = store_->Query(f, 100);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->size(), 10u);
  reference->reset();
  std::error_code ec;
  fs::remove_all(other.dir, ec);
}

// Events that are not all fresh (resends in split mode) are deduplicated by id.
TEST_F(LogStoreTest, AppendEncodedDeduplicatesUnlessEveryEventIsFresh) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> events = {MakeEvent(1), MakeEvent(2)};
  auto r = store_->AppendEncoded(Encode(events, /*fresh=*/false).batch());
  ASSERT_TRUE(r.ok()) << r.status();
  events = {MakeEvent(2), MakeEvent(3), MakeEvent(3)};
  r = store_->AppendEncoded(Encode(events, /*fresh=*/false).batch());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 2u);
  EXPECT_FALSE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, 3u);
  EXPECT_TRUE((*r)[2].duplicate);  // within the batch
  EXPECT_EQ((*r)[2].sequence, 3u);
  // Fresh: the caller vouched for new ids, nothing is looked up.
  r = store_->AppendEncoded(Encode({MakeEvent(1)}, /*fresh=*/true).batch());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 4u);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 4u);
}

// A bad event fails the whole batch with INVALID_ARGUMENT before anything is written.
TEST_F(LogStoreTest, AppendEncodedRejectsMalformedBatchesAndWritesNothing) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 2));
  const ChainHead before = Head();
  auto expect_rejected = [&](const EncodedBatch& batch, absl::string_view what) {
    auto r = store_->AppendEncoded(batch);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_EQ(Head().sequence, before.sequence) << what;
  };
  Encoded good = Encode({MakeEvent(3), MakeEvent(4)}, true);
  Encoded bad = good;
  bad.events[1].offset = bad.bytes.size();  // past the end
  expect_rejected(bad.batch(), "outside the buffer");
  bad = good;
  bad.events[1].size -= 1;  // cut short
  expect_rejected(bad.batch(), "cut short");
  // (Version 1 only: version 2 keeps both chain fields in fixed slots, so any
  // encoding of it is also an unchained one.)
  AuditEvent chained = MakeEvent(5);
  chained.set_encoding(kEncodingV1);
  chained.set_prev_hash("abc");
  bad = good;
  const size_t offset = bad.bytes.size();
  bad.bytes += CanonicalEncoding(chained);  // not unchained
  bad.events.push_back({offset, bad.bytes.size() - offset, true});
  expect_rejected(bad.batch(), "chained encoding");
  AuditEvent no_id = MakeEvent(6);
  no_id.clear_event_id();
  expect_rejected(Encode({MakeEvent(3), no_id}, true).batch(), "no event_id");
  AuditEvent bad_time = MakeEvent(7);
  bad_time.mutable_time()->set_nanos(-1);
  expect_rejected(Encode({bad_time}, true).batch(), "bad time");
  // The good batch still goes in after the rejected ones.
  auto r = store_->AppendEncoded(good.batch());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[1].sequence, 4u);
  EXPECT_TRUE(Verify().ok);
}

// Direct I/O: the active segment is zero-filled ahead of its last frame; a sealed
// one is cut to its last frame. The buffered path (file systems without O_DIRECT)
// writes the same bytes.
TEST_F(LogStoreTest, DirectWritesPreallocateTheActiveSegmentAndTrimSealedOnes) {
  options_.events_per_segment = kBlockEvents;
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "buffered");
    ASSERT_NO_FATAL_FAILURE(OpenFresh(direct));
    ASSERT_NO_FATAL_FAILURE(AppendRange(1, kBlockEvents + 10, 333));
    const std::string sealed = ReadFile(SegPath(1));
    const std::string active = ReadFile(SegPath(kBlockEvents + 1));
    const std::vector<Frame> sealed_frames = ParseSegment(sealed);
    ASSERT_FALSE(sealed_frames.empty());
    EXPECT_EQ(sealed.size(), sealed_frames.back().offset + sealed_frames.back().size);
    const std::vector<Frame> active_frames = ParseSegment(active);
    ASSERT_EQ(active_frames.size(), 10u);
    const size_t end = active_frames.back().offset + active_frames.back().size;
    if (direct) {
      EXPECT_GE(active.size(), end + (256 << 10)) << "no zero-filled preallocation";
      EXPECT_EQ(active.size() % 4096, 0u);
    } else {
      EXPECT_EQ(active.size(), end);
    }
    // Reopen, continue, verify: the preallocation is the normal end, not damage.
    ASSERT_NO_FATAL_FAILURE(Open());
    EXPECT_EQ(ReadFile(SegPath(kBlockEvents + 1)), active) << "opening changed the file";
    ASSERT_NO_FATAL_FAILURE(AppendRange(kBlockEvents + 11, kBlockEvents + 20, 3));
    EXPECT_EQ(Head().sequence, kBlockEvents + 20);
    VerifyResult v = Verify();
    EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
    EXPECT_EQ(v.events_checked, kBlockEvents + 20);
    ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
    Close();
  }
}

// A crash after a segment's last batch but before its preallocation was cut: on
// open the segment (now sealed) is trimmed, and nothing else changes.
TEST_F(LogStoreTest, SealedSegmentWithLeftoverPreallocationIsTrimmed) {
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, kBlockEvents + 5, 500));
  Close();
  const std::string sealed = ReadFile(SegPath(1));
  fs::remove(SegPath(1).substr(0, SegPath(1).size() - 4) + ".idx");
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), sealed + std::string(3 << 20, '\0')));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(ReadFile(SegPath(1)), sealed);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, kBlockEvents + 5);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
}

TEST_F(LogStoreTest, DeduplicatesAcrossSealedSegmentsAfterReopen) {
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  const uint64_t n = kBlockEvents + 4;
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, n, 1500));
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> batch = {MakeEvent(1), MakeEvent(kBlockEvents), MakeEvent(n),
                                   MakeEvent(n + 1)};
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 1u);
  EXPECT_TRUE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, kBlockEvents);
  EXPECT_TRUE((*r)[2].duplicate);
  EXPECT_EQ((*r)[2].sequence, n);
  EXPECT_FALSE((*r)[3].duplicate);
  EXPECT_EQ((*r)[3].sequence, n + 1);
  EXPECT_EQ(Head().sequence, n + 1);
}

TEST_F(LogStoreTest, DedupWindowSpansAsManySegmentsAsItTakesAfterReopen) {
  // Small segments: the window (default 262,144 ids) reaches back over three sealed
  // segments, not only the one before the active segment.
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  const uint64_t n = 3 * kBlockEvents + 4;
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, n, 1500));
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> batch = {MakeEvent(100), MakeEvent(kBlockEvents + 7), MakeEvent(n)};
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 100u);
  EXPECT_TRUE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, kBlockEvents + 7);
  EXPECT_TRUE((*r)[2].duplicate);
  EXPECT_EQ(Head().sequence, n);
  // A window smaller than the log: the oldest ids fall out of it.
  options_.dedup_window = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  batch = {MakeEvent(n - kBlockEvents + 1), MakeEvent(1)};
  r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_FALSE((*r)[1].duplicate);
}

TEST_F(LogStoreTest, FrameTornAtASectorBoundaryIsCut) {
  // A device persists whole 512-byte sectors: a crash can leave a frame whose bytes
  // after the last sector boundary it crosses are zeros, fewer than the 8-byte run
  // the first check looks for. Append single events until the last frame ends 1-7
  // bytes past a sector boundary, then tear it there. (Small segments: a small
  // zero-filled preallocation to read back each time.)
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  Frame last;
  for (uint64_t i = 1;; ++i) {
    ASSERT_LT(i, 3000u) << "no frame ended just past a sector boundary";
    ASSERT_NO_FATAL_FAILURE(AppendRange(i, i, 1));
    // Each append is durable when it returns: the file can be read while open.
    const std::vector<Frame> frames = ParseSegment(ReadFile(SegPath(1)));
    ASSERT_FALSE(frames.empty());
    last = frames.back();
    const size_t end = last.offset + last.size;
    if (end % 512 >= 1 && end % 512 <= 7) break;
  }
  Close();
  const uint64_t n = stored_.size();
  std::string seg = ReadFile(SegPath(1));
  const size_t end = last.offset + last.size;
  std::fill(seg.begin() + static_cast<std::ptrdiff_t>(end - end % 512),
            seg.begin() + static_cast<std::ptrdiff_t>(end), '\0');
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), seg));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Head().sequence, n - 1);
  stored_.resize(n - 1);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
}

// The head is the last event of a full (sealed) segment when the store reopens.
TEST_F(LogStoreTest, ReopenWithFullSegmentContinuesTheChain) {
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, kBlockEvents, 1000));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Head().sequence, kBlockEvents);
  EXPECT_EQ(Head().hash, stored_.back().hash());
  ASSERT_NO_FATAL_FAILURE(AppendRange(kBlockEvents + 1, kBlockEvents + 2));
  EXPECT_EQ(stored_[kBlockEvents].prev_hash(), stored_[kBlockEvents - 1].hash());
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Head().sequence, kBlockEvents + 2);
  EXPECT_EQ(Head().hash, stored_.back().hash());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, kBlockEvents + 2);
}

// The next segment's frames copied onto the end of the sealed segment before it: the
// walk must not verify the copies in place of the events queries read.
TEST_F(LogStoreTest, FramesCopiedPastASegmentsRangeFailVerify) {
  options_.events_per_segment = kBlockEvents;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, kBlockEvents + 10, 1000));
  Close();
  const std::string next = ReadFile(SegPath(kBlockEvents + 1));
  ASSERT_GT(next.size(), kSegmentHeaderSize);
  WriteFile(SegPath(1), ReadFile(SegPath(1)) + next.substr(kSegmentHeaderSize));
  ASSERT_NO_FATAL_FAILURE(Open());
  VerifyResult v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, kBlockEvents + 1);
  EXPECT_EQ(v.problem, kProblemAltered);
  EXPECT_NE(v.detail.find("frames were added to the file"), std::string::npos) << v.detail;
}

// A segment replaced behind the process's back (a copy renamed over it) or removed:
// verify says so, and no event is reported committed into the file the process
// still holds.
TEST_F(LogStoreTest, ASegmentReplacedWhileOpenFailsVerifyAndRefusesWrites) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 10));
  const std::string path = SegPath(1);
  WriteFile(path + ".copy", ReadFile(path));
  ASSERT_EQ(rename((path + ".copy").c_str(), path.c_str()), 0);
  VerifyResult v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, kProblemMissing);
  EXPECT_NE(v.detail.find("removed or replaced"), std::string::npos) << v.detail;
  std::vector<AuditEvent> batch = {MakeEvent(11)};
  auto r = store_->Append(&batch);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_EQ(Head().sequence, 10U);
  ASSERT_EQ(unlink(path.c_str()), 0);
  EXPECT_FALSE(Verify().ok);
}

TEST_F(LogStoreTest, RejectsEventWithoutIdAndWritesNothing) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 2));
  Close();
  const std::string before = ReadFile(SegPath(1));
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<AuditEvent> batch = {MakeEvent(3), MakeEvent(4)};
  batch[1].clear_event_id();
  auto r = store_->Append(&batch);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_EQ(Head().sequence, 2u);
  EXPECT_EQ(Head().hash, stored_[1].hash());
  // An out-of-range time is refused the same way.
  std::vector<AuditEvent> late = {MakeEvent(3)};
  late[0].mutable_time()->set_nanos(1000000000);
  EXPECT_EQ(store_->Append(&late).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Head().sequence, 2u);
  EXPECT_EQ(ReadAll().size(), 2u);
  Close();
  EXPECT_EQ(ReadFile(SegPath(1)), before) << "a rejected batch wrote bytes";
  ASSERT_NO_FATAL_FAILURE(Open());
  // Nothing of the failed batch was remembered: the same vector, fixed, goes in whole.
  batch[1].set_event_id(MakeEvent(4).event_id());
  r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_FALSE((*r)[0].duplicate);
  EXPECT_EQ((*r)[0].sequence, 3u);
  EXPECT_FALSE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, 4u);
  EXPECT_EQ(batch[0].prev_hash(), stored_[1].hash());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, 4u);
}

// A volume that fills in the middle of a write (RLIMIT_FSIZE stands in for it: the
// write is cut short, then the next one fails with EFBIG) is reported with the
// failing call's errno, never a stale one, and leaves the log whole: the batch is
// taken back and not remembered, and later batches continue the chain.
TEST_F(LogStoreTest, AWriteCutShortByAFullVolumeSaysWhyAndLeavesTheLogWhole) {
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "buffered");
    ASSERT_NO_FATAL_FAILURE(OpenFresh(direct));
    ASSERT_NO_FATAL_FAILURE(AppendRange(1, 5));
    const std::vector<Frame> frames = ParseSegment(ReadFile(SegPath(1)));
    ASSERT_EQ(frames.size(), 5u);
    const uint64_t end = frames.back().offset + frames.back().size;
    std::vector<AuditEvent> big;  // ~25 KB: more than the one block allowed below
    for (uint64_t i = 6; i <= 105; ++i) big.push_back(MakeEvent(i));

    absl::StatusOr<std::vector<AppendedEvent>> r;
    {
      const iotauth::testing::ScopedFileSizeLimit limit(end - end % 4096 + 4096);
      ASSERT_TRUE(limit.ok());
      errno = ETIMEDOUT;  // what a stale errno would say
      r = store_->Append(&big);
    }

    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_NE(r.status().message().find(std::strerror(EFBIG)), absl::string_view::npos)
        << r.status();
    EXPECT_EQ(r.status().message().find(std::strerror(ETIMEDOUT)), absl::string_view::npos)
        << r.status();
    EXPECT_EQ(Head().sequence, 5u);
    ASSERT_NO_FATAL_FAILURE(AppendRange(6, 10));  // same ids: none was remembered
    ASSERT_NO_FATAL_FAILURE(Open());
    VerifyResult v = Verify();
    EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
    EXPECT_EQ(v.events_checked, 10u);
    ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
    Close();
  }
}

// ---------------------------------------------------------------------------
// 3. Queries over sealed segments, complete blocks and the incomplete tail.

class BlockQueryTest : public LogStoreTest, public ::testing::WithParamInterface<uint64_t> {
 protected:
  BlockQueryTest() {
    options_.events_per_segment = GetParam();
    options_.checkpoint_interval = 1000;
    eps_ = GetParam();
    // Three sealed segments and half a segment plus 700 events in the active one:
    // with one block per segment the active block is incomplete; with two, the
    // active segment holds a complete block and an incomplete one.
    n_ = 3 * eps_ + eps_ / 2 + 700;
    tail_from_ = n_ - 500;
    // One more segment's worth, appended by some tests after reopening.
    all_ = ManyEvents(n_ + eps_, tail_from_, eps_);
  }

  void Fill() {
    ASSERT_NO_FATAL_FAILURE(Open());
    // Uneven batches, some crossing block and segment boundaries.
    for (size_t i = 0; i < n_;) {
      const size_t n = std::min<size_t>(n_ - i, 1 + (i * 7919) % 2500);
      std::vector<AuditEvent> batch(all_.begin() + static_cast<std::ptrdiff_t>(i),
                                    all_.begin() + static_cast<std::ptrdiff_t>(i + n));
      ASSERT_NO_FATAL_FAILURE(AppendEvents(batch, batch.size()));
      i += n;
    }
    ASSERT_EQ(stored_.size(), n_);
  }

  // Query, `page` events at a time, must equal brute force (full events).
  void ExpectExact(EventFilter f, int page, const std::string& what) {
    std::vector<uint64_t> want;
    for (const auto& e : stored_) {
      if (Matches(e, f)) want.push_back(e.sequence());
    }
    std::vector<uint64_t> got;
    for (int guard = 0; guard < 100000; ++guard) {
      auto r = store_->Query(f, page);
      ASSERT_TRUE(r.ok()) << r.status() << " " << what;
      ASSERT_LE(r->size(), static_cast<size_t>(page)) << what;
      for (const AuditEvent& e : *r) {
        got.push_back(e.sequence());
        ASSERT_GE(e.sequence(), 1u);
        ASSERT_LE(e.sequence(), stored_.size()) << what;
        // Every event's hash (it covers the canonical content); every field of a
        // sample (a decoding bug is systematic; comparing all made this test
        // dominate the suite under ASan).
        const AuditEvent& want_event = stored_[e.sequence() - 1];
        ASSERT_EQ(e.hash(), want_event.hash()) << what;
        if (e.sequence() % 16 == 1) {
          ASSERT_EQ(AllFields(e), AllFields(want_event)) << what;
        }
      }
      if (static_cast<int>(r->size()) < page) break;
      f.after_sequence = r->back().sequence();
    }
    EXPECT_EQ(got, want) << what;
  }

  void ExpectAllFiltersExact(bool small_pages = true) {
    const absl::Time base = absl::FromUnixSeconds(kBaseSeconds);
    const uint64_t eps = eps_;
    const uint64_t n = stored_.size();
    const absl::Time t_boundary_start = EventTime(stored_[eps - 1]);  // last of segment 1
    const absl::Time t_boundary_end = EventTime(stored_[eps + 3]);
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
    add("everything", [](EventFilter&) {});
    add("rare device", [](EventFilter& f) { f.device_id = "rare"; });
    add("common device", [](EventFilter& f) { f.device_id = "dev-17"; });
    add("absent device", [](EventFilter& f) { f.device_id = "nobody"; });
    add("device only in segment 2", [](EventFilter& f) { f.device_id = "dev-seg2"; });
    add("device only in the tail", [](EventFilter& f) { f.device_id = "dev-tail"; });
    add("tenant only in early events", [](EventFilter& f) { f.tenant_id = "t-early"; });
    add("tenant everywhere", [](EventFilter& f) { f.tenant_id = "t-seven"; });
    add("tenant only in the tail", [](EventFilter& f) { f.tenant_id = "t-tail"; });
    add("tenant and device", [](EventFilter& f) {
      f.tenant_id = "t-late";
      f.device_id = "rare";
    });
    add("time window", [base](EventFilter& f) {
      f.start_time = base + absl::Seconds(5000);
      f.end_time = base + absl::Seconds(9000);
    });
    add("time window in the tail", [base, n](EventFilter& f) {
      f.start_time = base + absl::Seconds(static_cast<int64_t>(n) - 300);
      f.end_time = base + absl::Seconds(static_cast<int64_t>(n) - 100);
    });
    add("time bounds exactly on events across a segment boundary",
        [t_boundary_start, t_boundary_end](EventFilter& f) {
          f.start_time = t_boundary_start;  // inclusive
          f.end_time = t_boundary_end;      // exclusive
        });
    add("empty time window", [base](EventFilter& f) {
      f.start_time = base + absl::Seconds(100);
      f.end_time = base + absl::Seconds(100);
    });
    add("old stragglers", [](EventFilter& f) { f.end_time = absl::FromUnixSeconds(1600000001); });
    add("from a time on", [base](EventFilter& f) { f.start_time = base + absl::Seconds(12000); });
    add("type only",
        [](EventFilter& f) { f.type = iotauth::audit::v1::EVENT_TYPE_ADMIN_MUTATION; });
    add("outcome only", [](EventFilter& f) { f.outcome = iotauth::audit::v1::OUTCOME_DENY; });
    add("device, type and outcome after a cursor", [](EventFilter& f) {
      f.device_id = "rare";
      f.after_sequence = 5000;
      f.max_sequence = 12000;
      f.type = iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION;
    });
    add("tenant, time and outcome", [base](EventFilter& f) {
      f.tenant_id = "t-seven";
      f.start_time = base + absl::Seconds(3000);
      f.outcome = iotauth::audit::v1::OUTCOME_DENY;
    });
    add("after a cursor in a sealed segment",
        [eps](EventFilter& f) { f.after_sequence = eps + eps / 3; });
    add("up to a bound in a sealed segment",
        [eps](EventFilter& f) { f.max_sequence = 2 * eps + 17; });
    add("range across segment boundaries", [eps](EventFilter& f) {
      f.after_sequence = eps - 5;
      f.max_sequence = 2 * eps + 5;
    });
    add("range inside the tail", [n](EventFilter& f) {
      f.after_sequence = n - 200;
      f.max_sequence = n - 20;
    });
    add("max_sequence past the head", [n](EventFilter& f) { f.max_sequence = n + 1000; });
    add("after the head", [n](EventFilter& f) { f.after_sequence = n; });
    for (const Case& c : cases) {
      ExpectExact(c.f, 1000, c.name);
      if (small_pages) ExpectExact(c.f, 97, c.name + " (pages of 97)");
    }
    // Single-event pages over a short stretch across a segment boundary.
    EventFilter f;
    f.after_sequence = eps - 3;
    f.max_sequence = eps + 3;
    ExpectExact(f, 1, "pages of 1 across a segment boundary");
  }

  void ExpectSameState() {
    ChainHead head = Head();
    EXPECT_EQ(head.sequence, stored_.size());
    EXPECT_EQ(head.hash, stored_.back().hash());
    EXPECT_EQ(First(), 1u);
  }

  std::vector<uint64_t> SealedStarts() const {
    std::vector<uint64_t> out;
    for (uint64_t s = 1; s + eps_ <= n_; s += eps_) out.push_back(s);
    return out;
  }

  uint64_t eps_ = 0;
  uint64_t n_ = 0;
  uint64_t tail_from_ = 0;
  std::vector<AuditEvent> all_;
};

TEST_P(BlockQueryTest, QueriesAreExact) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  ExpectAllFiltersExact();
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, n_);
}

TEST_P(BlockQueryTest, QueriesAreExactAfterReopen) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  Close();
  std::vector<std::string> want_seg;
  std::vector<std::string> want_idx;
  for (uint64_t s = 1; s <= n_; s += eps_) want_seg.push_back(LogAuditStore::SegmentFileName(s));
  for (uint64_t s : SealedStarts()) {
    want_idx.push_back(fs::path(IdxPath(s)).filename().string());
  }
  EXPECT_EQ(FilesEndingIn(options_.dir, ".seg"), want_seg);
  EXPECT_EQ(FilesEndingIn(options_.dir, ".idx"), want_idx) << "one summary per sealed segment";
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  ExpectAllFiltersExact();
  // The reopened active segment fills up and is sealed; a new one starts.
  std::vector<AuditEvent> more(all_.begin() + static_cast<std::ptrdiff_t>(n_), all_.end());
  ASSERT_NO_FATAL_FAILURE(AppendEvents(more, 1234));
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ExpectAllFiltersExact(/*small_pages=*/false);
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ExpectAllFiltersExact(/*small_pages=*/false);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, stored_.size());
}

TEST_P(BlockQueryTest, MissingSummariesAreRebuilt) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  Close();
  for (uint64_t s : SealedStarts()) {
    ASSERT_TRUE(fs::remove(IdxPath(s))) << IdxPath(s);
  }
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  ExpectAllFiltersExact();
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  // And once more, from whatever the rebuild left.
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(ExpectSameState());
  ExpectAllFiltersExact(/*small_pages=*/false);
}

TEST_P(BlockQueryTest, DamagedSummaryOnlyCostsSpeed) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  Close();
  const std::string idx = IdxPath(eps_ + 1);  // the middle sealed segment
  const std::string original = ReadFile(idx);
  ASSERT_GT(original.size(), 64u);
  struct Damage {
    const char* name;
    std::function<void(std::string*)> apply;
  };
  const std::vector<Damage> damages = {
      {"flip a byte in the middle", [](std::string* b) { (*b)[b->size() / 2] ^= 0x5a; }},
      {"flip the first byte", [](std::string* b) { (*b)[0] ^= 0x01; }},
      {"flip the last byte",
       [](std::string* b) { (*b)[b->size() - 1] ^= static_cast<char>(0x80); }},
      {"zero the second half",
       [](std::string* b) {
         std::fill(b->begin() + static_cast<std::ptrdiff_t>(b->size() / 2), b->end(), '\0');
       }},
      {"zero all but the first 16 bytes",
       [](std::string* b) { std::fill(b->begin() + 16, b->end(), '\0'); }},
      {"truncated to half", [](std::string* b) { b->resize(b->size() / 2); }},
      {"empty", [](std::string* b) { b->clear(); }},
  };
  for (const Damage& d : damages) {
    SCOPED_TRACE(d.name);
    std::string bytes = original;
    d.apply(&bytes);
    ASSERT_NO_FATAL_FAILURE(WriteFile(idx, bytes));
    ASSERT_NO_FATAL_FAILURE(Open());
    ASSERT_NO_FATAL_FAILURE(ExpectSameState());
    ExpectAllFiltersExact(/*small_pages=*/false);
    Close();
  }
  ASSERT_NO_FATAL_FAILURE(Open());
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, n_);
}

// A .idx forged with a valid checksum (anyone can recompute a plain SHA-256): its last
// sequence cut short hides events from queries, its times steer retention. Verify
// compares every sealed segment's summaries with its frames.
TEST_P(BlockQueryTest, ForgedSummaryWithAValidChecksumFailsVerify) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  Close();
  const std::string idx = IdxPath(eps_ + 1);  // the middle sealed segment
  std::string bytes = ReadFile(idx);
  constexpr size_t kLastAt = 32;  // magic, first, capacity, file size, then last
  ASSERT_GT(bytes.size(), kLastAt + 8 + 32);
  const uint64_t forged_last = eps_ + 100;  // the segment starts at eps_ + 1
  for (int i = 0; i < 8; ++i) {
    bytes[kLastAt + i] = static_cast<char>((forged_last >> (56 - 8 * i)) & 0xff);  // big-endian
  }
  bytes.resize(bytes.size() - 32);
  bytes += crypto::Sha256(bytes);
  ASSERT_NO_FATAL_FAILURE(WriteFile(idx, bytes));
  ASSERT_NO_FATAL_FAILURE(Open());
  VerifyResult v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_sequence, eps_ + 1);
  EXPECT_EQ(v.problem, kProblemAltered);
  EXPECT_NE(v.detail.find("does not describe the segment"), std::string::npos) << v.detail;
  // Removing the .idx (as the detail says) rebuilds it from the segment.
  Close();
  ASSERT_TRUE(fs::remove(idx));
  ASSERT_NO_FATAL_FAILURE(Open());
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, n_);
}

INSTANTIATE_TEST_SUITE_P(SegmentSizes, BlockQueryTest,
                         ::testing::Values(kBlockEvents, 2 * kBlockEvents),
                         [](const ::testing::TestParamInfo<uint64_t>& info) {
                           return absl::StrCat(info.param / kBlockEvents, "BlocksPerSegment");
                         });

// ---------------------------------------------------------------------------
// 4. Checkpoints.

TEST_F(LogStoreTest, CheckpointsEveryIntervalAndOnDemand) {
  options_.checkpoint_interval = 4;
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_FALSE(Latest().has_value());
  EXPECT_EQ(store_->CreateCheckpoint(clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  const absl::Time t0 = clock_.Now();
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 10));  // one batch: checkpoints after 4 and 8
  std::optional<CheckpointRecord> ck = Latest();
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->sequence, 8u);
  EXPECT_EQ(ck->head_hash, stored_[7].hash());
  EXPECT_EQ(ck->time, t0) << "automatic checkpoints take the clock's time";

  const absl::Time t1 = t0 + absl::Minutes(1);
  auto made = store_->CreateCheckpoint(t1);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->sequence, 10u);
  EXPECT_EQ(made->head_hash, Head().hash);
  EXPECT_EQ(made->time, t1);
  // Idempotent: the head's checkpoint exists already.
  made = store_->CreateCheckpoint(t1 + absl::Minutes(1));
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->sequence, 10u);
  EXPECT_EQ(made->time, t1);
  ck = Latest();
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->sequence, 10u);
  EXPECT_EQ(ck->head_hash, stored_[9].hash());
  EXPECT_EQ(ck->time, t1);

  // Persisted as frames right after their events, once each.
  Close();
  EXPECT_EQ(FrameList(ParseSegment(ReadFile(SegPath(1)))),
            "E1 E2 E3 E4 C4 E5 E6 E7 E8 C8 E9 E10 C10");
  ASSERT_NO_FATAL_FAILURE(Open());
  ck = Latest();
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->sequence, 10u);
  EXPECT_EQ(ck->head_hash, stored_[9].hash());
  EXPECT_EQ(ck->time, t1);
  made = store_->CreateCheckpoint(t1 + absl::Minutes(5));
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->time, t1) << "idempotent after reopen too";

  // Two batches reaching 12: the automatic checkpoint is the head's.
  clock_.Advance(absl::Hours(1));
  ASSERT_NO_FATAL_FAILURE(AppendRange(11, 11));
  ASSERT_NO_FATAL_FAILURE(AppendRange(12, 12));
  ck = Latest();
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->sequence, 12u);
  EXPECT_EQ(ck->time, clock_.Now());
  made = store_->CreateCheckpoint(clock_.Now() + absl::Minutes(1));
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->sequence, 12u);
  EXPECT_EQ(made->time, clock_.Now());
  Close();
  EXPECT_EQ(FrameList(ParseSegment(ReadFile(SegPath(1)))),
            "E1 E2 E3 E4 C4 E5 E6 E7 E8 C8 E9 E10 C10 E11 E12 C12");
  ASSERT_NO_FATAL_FAILURE(Open());

  // Verify starts from the newest checkpoint before `from`.
  VerifyResult v = Verify(6, 7);
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, 4u);
  EXPECT_EQ(v.last_sequence, 7u);
  v = Verify(9, 0);
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, 8u);
  EXPECT_EQ(v.last_sequence, 12u);
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.anchor_sequence, 0u);
  EXPECT_EQ(v.events_checked, 12u);
}

TEST_F(LogStoreTest, NoAutomaticCheckpointsWithIntervalZero) {
  options_.checkpoint_interval = 0;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 2000, 300));
  EXPECT_FALSE(Latest().has_value());
  auto made = store_->CreateCheckpoint(clock_.Now());
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->sequence, 2000u);
  EXPECT_EQ(made->head_hash, stored_.back().hash());
}

// ---------------------------------------------------------------------------
// 5. Tampering with the segment files.

using SegmentEdit =
    std::function<void(std::string* seg, const std::vector<Frame>& frames, uint64_t k)>;

void FlipDevice(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  const Frame* f = FindFrame(frames, 'E', k);
  ASSERT_NE(f, nullptr);
  ASSERT_GT(f->device_size, 0u);
  (*seg)[f->device_offset] ^= 0x01;
}

void FlipStoredHash(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  const Frame* f = FindFrame(frames, 'E', k);
  ASSERT_NE(f, nullptr);
  (*seg)[f->offset + kFrameHeaderSize + 3] ^= 0x40;
}

// A careful attacker: changes the device id and writes the event's new hash.
void FlipDeviceAndRehash(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  ASSERT_NO_FATAL_FAILURE(FlipDevice(seg, frames, k));
  const Frame* f = FindFrame(frames, 'E', k);
  const size_t canonical_at = f->offset + kFrameHeaderSize + kHashSize;
  const absl::string_view canonical(seg->data() + canonical_at, f->offset + f->size - canonical_at);
  CanonicalFields fields;
  ASSERT_TRUE(ParseCanonical(canonical, &fields));
  AuditEvent e;
  ASSERT_TRUE(CanonicalFieldsToEvent(fields, &e));
  ASSERT_EQ(CanonicalEncoding(e), canonical);
  auto h = ComputeEventHash(e);
  ASSERT_TRUE(h.ok()) << h.status();
  seg->replace(f->offset + kFrameHeaderSize, kHashSize, absl::HexStringToBytes(*h));
}

void RemoveFrame(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  const Frame* f = FindFrame(frames, 'E', k);
  ASSERT_NE(f, nullptr);
  seg->erase(f->offset, f->size);
}

void SwapWithNext(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  const Frame* a = FindFrame(frames, 'E', k);
  const Frame* b = FindFrame(frames, 'E', k + 1);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_LT(a->offset, b->offset);
  const std::string first = seg->substr(a->offset, a->size);
  const std::string middle = seg->substr(a->offset + a->size, b->offset - a->offset - a->size);
  const std::string second = seg->substr(b->offset, b->size);
  seg->replace(a->offset, b->offset + b->size - a->offset, second + middle + first);
}

void FlipCheckpointHash(std::string* seg, const std::vector<Frame>& frames, uint64_t k) {
  const Frame* f = FindFrame(frames, 'C', k);
  ASSERT_NE(f, nullptr);
  (*seg)[f->offset + kFrameHeaderSize + 8 + 5] ^= 0x10;
}

struct TamperCase {
  const char* name;
  uint64_t events;
  uint64_t events_per_segment;
  uint64_t checkpoint_interval;
  uint64_t k;  // the event (or checkpoint) edited
  SegmentEdit edit;
  const char* problem;
  // first_bad_sequence: the only value allowed, or any of several where the
  // contract does not say which event of a pair is the bad one. (A swap of k and
  // k + 1 is named at k, where the order first breaks, as SqliteAuditStore does.)
  std::vector<uint64_t> bad;
};

void PrintTo(const TamperCase& c, std::ostream* os) { *os << c.name; }

class TamperTest : public LogStoreTest, public ::testing::WithParamInterface<TamperCase> {};

TEST_P(TamperTest, VerifyNamesTheFirstBadEvent) {
  const TamperCase& c = GetParam();
  options_.events_per_segment = c.events_per_segment;
  options_.checkpoint_interval = c.checkpoint_interval;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, c.events, 700));
  VerifyResult v = Verify();
  ASSERT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, c.events);
  Close();

  const std::string path = SegPath(SegmentStart(c.k));
  std::string seg = ReadFile(path);
  const std::vector<Frame> frames = ParseSegment(seg);
  ASSERT_NO_FATAL_FAILURE(c.edit(&seg, frames, c.k));
  ASSERT_NO_FATAL_FAILURE(WriteFile(path, seg));

  ASSERT_NO_FATAL_FAILURE(Open());
  v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, c.problem) << v.detail;
  if (c.bad.size() == 1) {
    EXPECT_EQ(v.first_bad_sequence, c.bad[0]) << v.detail;
  } else {
    EXPECT_TRUE(std::find(c.bad.begin(), c.bad.end(), v.first_bad_sequence) != c.bad.end())
        << v.first_bad_sequence << ": " << v.detail;
  }
  // The part before it still verifies.
  const uint64_t first_bad = *std::min_element(c.bad.begin(), c.bad.end());
  if (first_bad > 1) {
    v = Verify(1, first_bad - 1);
    EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
    EXPECT_EQ(v.last_sequence, first_bad - 1);
  }
  // Evidence is left in place.
  Close();
  EXPECT_TRUE(ReadFile(path) == seg) << "the store rewrote the tampered segment";
}

// One active segment of 10 events, checkpoint frames after events 4 and 8.
TamperCase InActive(const char* name, uint64_t k, SegmentEdit edit, const char* problem,
                    std::vector<uint64_t> bad) {
  return {name, 10, 64 * kBlockEvents, 4, k, std::move(edit), problem, std::move(bad)};
}

// A sealed segment (with its .idx) of kBlockEvents and an active one of 50;
// checkpoints every 1000.
TamperCase InSealed(const char* name, uint64_t k, SegmentEdit edit, const char* problem,
                    std::vector<uint64_t> bad) {
  return {name, kBlockEvents + 50, kBlockEvents, 1000, k, std::move(edit), problem, std::move(bad)};
}

INSTANTIATE_TEST_SUITE_P(
    Rows, TamperTest,
    ::testing::Values(
        InActive("EditDevice", 6, FlipDevice, kProblemAltered, {6}),
        InActive("EditFirstEvent", 1, FlipDevice, kProblemAltered, {1}),
        InActive("EditLastEvent", 10, FlipDevice, kProblemAltered, {10}),
        InActive("EditStoredHash", 7, FlipStoredHash, kProblemAltered, {7}),
        InActive("EditAndRehash", 6, FlipDeviceAndRehash, kProblemAltered, {6}),
        InActive("RemoveMiddle", 6, RemoveFrame, kProblemMissing, {6}),
        InActive("RemoveFirst", 1, RemoveFrame, kProblemMissing, {1}),
        // Checkpoint 8's frame then follows event 7: event 8 is the one missing.
        InActive("RemoveEventBeforeItsCheckpoint", 8, RemoveFrame, kProblemMissing, {8}),
        InActive("SwapMiddle", 6, SwapWithNext, kProblemReordered, {6}),
        InActive("SwapFirstTwo", 1, SwapWithNext, kProblemReordered, {1}),
        InActive("EditCheckpoint", 8, FlipCheckpointHash, kProblemCheckpointMismatch, {8}),
        InActive("EditFirstCheckpoint", 4, FlipCheckpointHash, kProblemCheckpointMismatch, {4}),
        InSealed("EditDeviceInSealedSegment", 2000, FlipDevice, kProblemAltered, {2000}),
        InSealed("RemoveFromSealedSegment", 3000, RemoveFrame, kProblemMissing, {3000}),
        InSealed("RemoveLastOfSealedSegment", kBlockEvents, RemoveFrame, kProblemMissing,
                 {kBlockEvents}),
        InSealed("SwapInSealedSegment", 2500, SwapWithNext, kProblemReordered, {2500}),
        InSealed("EditCheckpointInSealedSegment", 3000, FlipCheckpointHash,
                 kProblemCheckpointMismatch, {3000})),
    [](const ::testing::TestParamInfo<TamperCase>& info) { return info.param.name; });

// The newest event rewritten whole (new content, its hash recomputed) chains
// correctly and no checkpoint covers it yet; the head the running store committed
// still tells.
TEST_F(LogStoreTest, NewestEventRewrittenWhileRunningIsCaught) {
  options_.checkpoint_interval = 4;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 10, 700));
  VerifyResult v = Verify();
  ASSERT_TRUE(v.ok) << v.problem << " " << v.detail;
  std::string seg = ReadFile(SegPath(1));
  ASSERT_NO_FATAL_FAILURE(FlipDeviceAndRehash(&seg, ParseSegment(seg), 10));
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), seg));
  v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, kProblemAltered) << v.detail;
  EXPECT_EQ(v.first_bad_sequence, 10u) << v.detail;
  // A range that stops before the head has nothing to compare with it.
  v = Verify(1, 9);
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  // The documented limit: a reopened store reads its head from the file, and only
  // an exported checkpoint still tells.
  Close();
  ASSERT_NO_FATAL_FAILURE(Open());
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  auto r = VerifyAgainstCheckpoint(*store_, 0, 0, {10, stored_[9].hash(), clock_.Now()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->problem, kProblemCheckpointMismatch);
  EXPECT_EQ(r->first_bad_sequence, 10u) << r->detail;
}

// The tail cut off at a frame boundary while the service is down (the checkpoint
// frames with it) leaves a shorter log that chains and verifies; a checkpoint kept
// outside the log names what is missing.
TEST_F(LogStoreTest, TruncatedTailIsCaughtByACheckpointKeptOutside) {
  options_.checkpoint_interval = 4;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 10, 3));
  const CheckpointRecord kept{10, stored_[9].hash(), clock_.Now()};
  auto r = VerifyAgainstCheckpoint(*store_, 0, 0, kept);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched) << r->problem << " " << r->detail;
  Close();
  std::string seg = ReadFile(SegPath(1));
  const std::vector<Frame> frames = ParseSegment(seg);
  const auto cut = std::find_if(frames.begin(), frames.end(),
                                [](const Frame& f) { return f.kind == 'E' && f.sequence == 8; });
  ASSERT_NE(cut, frames.end());
  std::fill(seg.begin() + static_cast<std::ptrdiff_t>(cut->offset), seg.end(), '\0');
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), seg));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Head().sequence, 7u);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;  // the chain alone cannot tell
  r = VerifyAgainstCheckpoint(*store_, 0, 0, kept);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->problem, kProblemMissing);
  EXPECT_EQ(r->first_bad_sequence, 8u) << r->detail;
  // A copy taken before the cut point still holds.
  r = VerifyAgainstCheckpoint(*store_, 0, 0, {6, stored_[5].hash(), clock_.Now()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok && r->expected_matched) << r->problem << " " << r->detail;
}

// ---------------------------------------------------------------------------
// 6. Crash recovery.

// Edits the active segment; `last` is its last frame.
using TailEdit = std::function<void(std::string* seg, const Frame& last)>;

struct CrashCase {
  const char* name;
  uint64_t events;
  uint64_t events_per_segment;
  uint64_t checkpoint_interval;
  TailEdit edit;
  uint64_t head_after;        // what recovery must leave
  uint64_t checkpoint_after;  // LatestCheckpoint's sequence, 0 = none
};

void PrintTo(const CrashCase& c, std::ostream* os) { *os << c.name; }

class CrashTest : public LogStoreTest, public ::testing::WithParamInterface<CrashCase> {};

TEST_P(CrashTest, CutTailIsDroppedAndTheLogContinues) {
  const CrashCase& c = GetParam();
  options_.events_per_segment = c.events_per_segment;
  options_.checkpoint_interval = c.checkpoint_interval;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, c.events - 1, 1000));
  ASSERT_NO_FATAL_FAILURE(AppendRange(c.events, c.events));  // the last batch: one event
  Close();

  const uint64_t active = SegmentStart(c.events);
  const std::string path = SegPath(active);
  std::string seg = ReadFile(path);
  const std::vector<Frame> frames = ParseSegment(seg);
  ASSERT_FALSE(frames.empty());
  ASSERT_NO_FATAL_FAILURE(c.edit(&seg, frames.back()));
  ASSERT_NO_FATAL_FAILURE(WriteFile(path, seg));

  ASSERT_NO_FATAL_FAILURE(Open());
  ChainHead head = Head();
  EXPECT_EQ(head.sequence, c.head_after);
  EXPECT_EQ(head.hash, stored_[c.head_after - 1].hash());
  EXPECT_EQ(First(), 1u);
  std::optional<CheckpointRecord> ck = Latest();
  EXPECT_EQ(ck.has_value() ? ck->sequence : 0u, c.checkpoint_after);
  stored_.resize(c.head_after);
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, c.head_after);

  // The cut event was never committed: resending it stores it anew.
  std::vector<AuditEvent> batch = {MakeEvent(c.events), MakeEvent(c.events + 1)};
  auto r = store_->Append(&batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  const bool was_cut = c.head_after < c.events;
  EXPECT_EQ((*r)[0].duplicate, !was_cut);
  EXPECT_EQ((*r)[0].sequence, c.events);
  EXPECT_FALSE((*r)[1].duplicate);
  EXPECT_EQ((*r)[1].sequence, c.events + 1);
  if (was_cut) stored_.push_back(batch[0]);
  stored_.push_back(batch[1]);
  EXPECT_EQ(stored_[c.events - 1].prev_hash(), stored_[c.events - 2].hash());
  EXPECT_EQ(Head().sequence, c.events + 1);
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, c.events + 1);

  // No garbage left between the old frames and the new ones.
  Close();
  const std::vector<Frame> after = ParseSegment(ReadFile(path));
  std::vector<uint64_t> event_seqs;
  for (const Frame& f : after) {
    if (f.kind == 'E') event_seqs.push_back(f.sequence);
  }
  std::vector<uint64_t> want_seqs;
  for (uint64_t s = active; s <= c.events + 1; ++s) want_seqs.push_back(s);
  EXPECT_EQ(event_seqs, want_seqs);
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_EQ(Head().sequence, c.events + 1);
  EXPECT_EQ(Head().hash, stored_.back().hash());
  ASSERT_NO_FATAL_FAILURE(ExpectHolds(1));
  v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
}

// Keeps the first `keep` bytes of the last frame (a write cut short).
TailEdit CutLastFrameTo(size_t keep) {
  return [keep](std::string* seg, const Frame& last) {
    ASSERT_LT(keep, last.size);
    seg->resize(last.offset + keep);
  };
}

// The last frame's header made it to disk, the rest of its (short) extent is zeros.
void TornLastFrame(std::string* seg, const Frame& last) {
  seg->resize(last.offset + kFrameHeaderSize + 2);
  seg->resize(last.offset + last.size - 1, '\0');
}

// The file grew but the last frame's bytes never arrived.
void ZeroLastFrame(std::string* seg, const Frame& last) {
  std::fill(seg->begin() + static_cast<std::ptrdiff_t>(last.offset), seg->end(), '\0');
}

// The last frame has its full length but its second half is zeros.
void ZeroEndOfLastFrame(std::string* seg, const Frame& last) {
  std::fill(seg->begin() + static_cast<std::ptrdiff_t>(last.offset + last.size / 2), seg->end(),
            '\0');
}

// The whole file zeros, `size` bytes long (0: an empty file).
TailEdit ZeroWholeFile(size_t size) {
  return [size](std::string* seg, const Frame&) { seg->assign(size, '\0'); };
}

TailEdit AppendZeros(size_t n) {
  return [n](std::string* seg, const Frame&) { seg->append(n, '\0'); };
}

// 10 events in one segment; the last batch holds only event 10.
CrashCase Small(const char* name, uint64_t checkpoint_interval, TailEdit edit, uint64_t head_after,
                uint64_t checkpoint_after = 0) {
  return {name,
          10,
          64 * kBlockEvents,
          checkpoint_interval,
          std::move(edit),
          head_after,
          checkpoint_after};
}

// Event kBlockEvents + 1 alone in a new active segment.
CrashCase NewSegment(const char* name, TailEdit edit, uint64_t head_after) {
  return {name, kBlockEvents + 1, kBlockEvents, 0, std::move(edit), head_after, 0};
}

INSTANTIATE_TEST_SUITE_P(
    Rows, CrashTest,
    ::testing::Values(
        Small("CutInsideLengthField", 0, CutLastFrameTo(2), 9),
        Small("CutAfterKind", 0, CutLastFrameTo(kFrameHeaderSize), 9),
        Small("CutInsideHash", 0, CutLastFrameTo(kFrameHeaderSize + 16), 9),
        Small("CutInsideCanonical", 0, CutLastFrameTo(kFrameHeaderSize + 80), 9),
        Small("TornFrameFilledWithZeros", 0, TornLastFrame, 9),
        Small("LastFrameZeroed", 0, ZeroLastFrame, 9),
        // Full length, but the second half of its pages never arrived.
        Small("LastFrameEndsInZeros", 0, ZeroEndOfLastFrame, 9),
        Small("ZeroFilledTail", 0, AppendZeros(4096), 10),
        Small("ShortZeroTail", 0, AppendZeros(3), 10),
        // The last frame is checkpoint 10: event 10 stays, checkpoint 5 is the latest.
        Small("CutCheckpointFrame", 5, CutLastFrameTo(20), 10, 5),
        NewSegment("CutOnlyFrameOfNewSegment", CutLastFrameTo(10), kBlockEvents),
        NewSegment("NewSegmentHeaderOnly", CutLastFrameTo(0), kBlockEvents),
        NewSegment("ZeroTailInNewSegment", AppendZeros(512), kBlockEvents + 1),
        // The last frame is checkpoint 10, its hash half zeros: cut, checkpoint 5 stays.
        Small("CheckpointFrameEndsInZeros", 5, ZeroEndOfLastFrame, 10, 5),
        // The new segment was created and zero-filled ahead, but the first batch (whose
        // write starts with the header) never arrived; or the crash came right after
        // the file was created.
        NewSegment("NewSegmentOnlyItsPreallocation", ZeroWholeFile(1 << 20), kBlockEvents),
        NewSegment("NewSegmentEmptyFile", ZeroWholeFile(0), kBlockEvents)),
    [](const ::testing::TestParamInfo<CrashCase>& info) { return info.param.name; });

TEST_F(LogStoreTest, BrokenLengthMidSegmentIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 10, 3));
  Close();
  std::string seg = ReadFile(SegPath(1));
  const std::vector<Frame> frames = ParseSegment(seg);
  const Frame* f = FindFrame(frames, 'E', 5);
  ASSERT_NE(f, nullptr);
  PutU32(0xFFFFFF00u, &seg, f->offset);
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), seg));
  {
    auto s = LogAuditStore::Open(options_);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
    EXPECT_NE(s.status().message().find(absl::StrCat(f->offset)), absl::string_view::npos)
        << "the message names the offset: " << s.status();
  }
  EXPECT_TRUE(ReadFile(SegPath(1)) == seg) << "Open changed the damaged segment";
}

TEST_F(LogStoreTest, AnEventOverTheFrameLimitIsRefusedNotWritten) {
  // A frame the reader refuses would end every later read of its segment and the
  // log's recovery at start-up: the store must refuse the event, not write it.
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(AppendRange(1, 3));
  std::vector<AuditEvent> huge = {MakeEvent(4)};
  huge[0].set_event_id(std::string(size_t{16} << 20, 'x'));
  auto r = store_->Append(&huge);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  ASSERT_NO_FATAL_FAILURE(AppendRange(4, 5));
  Close();
  ASSERT_NO_FATAL_FAILURE(Open());
  auto v = store_->Verify(0, 0);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok) << v->detail;
  EXPECT_EQ(v->events_checked, 5u);
}

// ---------------------------------------------------------------------------
// 7. Retention.

// Three sealed segments of kBlockEvents and 100 events in the active one:
// segments start at 1, 4097, 8193 and 12289.
constexpr uint64_t kRetentionEvents = 3 * kBlockEvents + 100;

class RetentionTest : public LogStoreTest {
 protected:
  static constexpr uint64_t kEvents = kRetentionEvents;

  RetentionTest() {
    options_.events_per_segment = kBlockEvents;
    options_.checkpoint_interval = 0;
  }
  // Events 1..kEvents at kBaseSeconds + i; `young` (if set) at the clock's time.
  void Fill(uint64_t young = 0) {
    clock_.Set(absl::FromUnixSeconds(kBaseSeconds + static_cast<int64_t>(kEvents) + 10));
    ASSERT_NO_FATAL_FAILURE(Open());
    std::vector<AuditEvent> events;
    for (uint64_t i = 1; i <= kEvents; ++i) {
      events.push_back(MakeEvent(i));
      if (i == young) events.back().mutable_time()->set_seconds(absl::ToUnixSeconds(clock_.Now()));
    }
    ASSERT_NO_FATAL_FAILURE(AppendEvents(events, 1500));
  }

  // After removing the first `removed` events (whole segments).
  void ExpectRetained(uint64_t removed) {
    const uint64_t first = removed + 1;
    EXPECT_EQ(First(), first);
    for (uint64_t s = 1; s <= kEvents; s += kBlockEvents) {
      EXPECT_EQ(fs::exists(SegPath(s)), s >= first) << s;
      if (s < first) {
        EXPECT_FALSE(fs::exists(IdxPath(s))) << s;
      }
    }
    ASSERT_NO_FATAL_FAILURE(ExpectHolds(first));
    ChainHead head = Head();
    EXPECT_EQ(head.sequence, stored_.size());
    EXPECT_EQ(head.hash, stored_.back().hash());
    // Verifiable from the anchor retention left.
    for (uint64_t from : {uint64_t{0}, uint64_t{1}, first}) {
      VerifyResult v = Verify(from, 0);
      EXPECT_TRUE(v.ok) << from << ": " << v.problem << " " << v.detail;
      EXPECT_EQ(v.events_checked, stored_.size() - removed) << from;
      EXPECT_EQ(v.anchor_sequence, removed) << from;
    }
    if (removed > 0) {
      std::optional<CheckpointRecord> ck = Latest();
      ASSERT_TRUE(ck.has_value());
      EXPECT_EQ(ck->sequence, removed);
      EXPECT_EQ(ck->head_hash, stored_[removed - 1].hash());
    }
    // Queries see the retained events only.
    EventFilter f;
    f.device_id = "dev-1";
    std::vector<uint64_t> want;
    for (uint64_t s = first; s <= stored_.size(); ++s) {
      if (stored_[s - 1].device_id() == "dev-1") want.push_back(s);
    }
    auto r = store_->Query(f, 100000);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(Sequences(*r), want);
    f = {};
    f.end_time = EventTime(stored_[first - 1]) + absl::Seconds(10);
    r = store_->Query(f, 100000);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), 10u);
    EXPECT_EQ(r->front().sequence(), first);
  }

  void RetainAndCheck(const RetentionPolicy& policy, uint64_t want_removed) {
    auto removed = store_->ApplyRetention(policy, clock_.Now());
    ASSERT_TRUE(removed.ok()) << removed.status();
    EXPECT_EQ(*removed, want_removed);
    ASSERT_NO_FATAL_FAILURE(ExpectRetained(want_removed));
    // Again: nothing more to remove.
    removed = store_->ApplyRetention(policy, clock_.Now());
    ASSERT_TRUE(removed.ok()) << removed.status();
    EXPECT_EQ(*removed, 0u);
    // Survives a reopen (the anchor file), and the log continues.
    ASSERT_NO_FATAL_FAILURE(Open());
    ASSERT_NO_FATAL_FAILURE(ExpectRetained(want_removed));
    ASSERT_NO_FATAL_FAILURE(AppendRange(kEvents + 1, kEvents + 3));
    VerifyResult v = Verify();
    EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
    EXPECT_EQ(v.events_checked, stored_.size() - want_removed);
    auto ck = store_->CreateCheckpoint(clock_.Now());
    ASSERT_TRUE(ck.ok()) << ck.status();
    EXPECT_EQ(ck->sequence, kEvents + 3);
  }
};

struct RowsCase {
  const char* name;
  uint64_t max_rows;
  uint64_t removed;
};

void PrintTo(const RowsCase& c, std::ostream* os) { *os << c.name; }

class RetentionByRowsTest : public RetentionTest, public ::testing::WithParamInterface<RowsCase> {};

TEST_P(RetentionByRowsTest, DeletesWholeSealedSegmentsOutsideTheNewest) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  ASSERT_NO_FATAL_FAILURE(
      RetainAndCheck({absl::ZeroDuration(), GetParam().max_rows}, GetParam().removed));
}

INSTANTIATE_TEST_SUITE_P(
    Rows, RetentionByRowsTest,
    ::testing::Values(
        RowsCase{"NoLimit", 0, 0}, RowsCase{"EverythingFits", kRetentionEvents, 0},
        // The newest rows start at 4096: segment 1 still holds one.
        RowsCase{"OneEventOfFirstSegmentKept", kRetentionEvents - kBlockEvents + 1, 0},
        RowsCase{"FirstSegmentExactlyOutside", kRetentionEvents - kBlockEvents, kBlockEvents},
        RowsCase{"FirstSegmentAndPartOfSecond", kRetentionEvents - kBlockEvents - 1, kBlockEvents},
        RowsCase{"TwoSegments", kBlockEvents + 100, 2 * kBlockEvents},
        RowsCase{"AllSealed", 100, 3 * kBlockEvents},
        RowsCase{"ActiveSegmentStays", 1, 3 * kBlockEvents}),
    [](const ::testing::TestParamInfo<RowsCase>& info) { return info.param.name; });

struct AgeCase {
  const char* name;
  int64_t cutoff;  // seconds after kBaseSeconds; event i is at i
  uint64_t young;  // an event given the current time (0 = none)
  uint64_t removed;
};

void PrintTo(const AgeCase& c, std::ostream* os) { *os << c.name; }

class RetentionByAgeTest : public RetentionTest, public ::testing::WithParamInterface<AgeCase> {};

TEST_P(RetentionByAgeTest, DeletesWholeSealedSegmentsOlderThanMaxAge) {
  ASSERT_NO_FATAL_FAILURE(Fill(GetParam().young));
  const absl::Time cutoff = absl::FromUnixSeconds(kBaseSeconds + GetParam().cutoff);
  ASSERT_NO_FATAL_FAILURE(RetainAndCheck({clock_.Now() - cutoff, 0}, GetParam().removed));
}

INSTANTIATE_TEST_SUITE_P(
    Rows, RetentionByAgeTest,
    ::testing::Values(AgeCase{"NothingOldEnough", 10, 0, 0},
                      // Event 4096 is exactly max_age old: not older, so it stays.
                      AgeCase{"LastEventOfSegmentAtCutoff", kBlockEvents, 0, 0},
                      AgeCase{"FirstSegmentOlder", kBlockEvents + 1, 0, kBlockEvents},
                      AgeCase{"TwoSegments", 2 * kBlockEvents + 1, 0, 2 * kBlockEvents},
                      AgeCase{"EverythingOlderActiveStays", kRetentionEvents + 5, 0,
                              3 * kBlockEvents},
                      // A young event keeps its segment and so every later one.
                      AgeCase{"YoungEventInFirstSegment", kRetentionEvents + 5, 50, 0},
                      AgeCase{"YoungEventInSecondSegment", kRetentionEvents + 5, kBlockEvents + 50,
                              kBlockEvents}),
    [](const ::testing::TestParamInfo<AgeCase>& info) { return info.param.name; });

// A byte budget: the oldest sealed segments go while the segments hold more than
// it (their committed bytes; a sealed segment's file is exactly that size).
struct BytesCase {
  const char* name;
  size_t fit_after;  // the budget is what is left after removing this many segments...
  int64_t delta;     // ...plus this
  uint64_t removed;
};

void PrintTo(const BytesCase& c, std::ostream* os) { *os << c.name; }

class RetentionByBytesTest : public RetentionTest,
                             public ::testing::WithParamInterface<BytesCase> {};

TEST_P(RetentionByBytesTest, DeletesTheOldestSealedSegmentsUntilTheRestFits) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  const uint64_t total = store_->StoredBytes();
  uint64_t budget = total;
  uint64_t sealed = 0;
  for (uint64_t s = 1; s + kBlockEvents <= kEvents; s += kBlockEvents) {
    const uint64_t size = fs::file_size(SegPath(s));
    sealed += size;
    if ((s - 1) / kBlockEvents < GetParam().fit_after) budget -= size;
  }
  ASSERT_GT(total, sealed);  // the active segment holds the last 100 events
  budget = static_cast<uint64_t>(static_cast<int64_t>(budget) + GetParam().delta);
  ASSERT_NO_FATAL_FAILURE(RetainAndCheck({absl::ZeroDuration(), 0, budget}, GetParam().removed));
}

INSTANTIATE_TEST_SUITE_P(
    Bytes, RetentionByBytesTest,
    ::testing::Values(BytesCase{"EverythingFits", 0, 0, 0},
                      BytesCase{"OneByteOver", 0, -1, kBlockEvents},
                      BytesCase{"FitsWithoutTheFirst", 1, 0, kBlockEvents},
                      BytesCase{"OneByteOverWithoutTheFirst", 1, -1, 2 * kBlockEvents},
                      BytesCase{"AllSealedGo", 2, -1, 3 * kBlockEvents},
                      // Smaller than the active segment: it stays anyway.
                      BytesCase{"ActiveSegmentStays", 3, -1, 3 * kBlockEvents}),
    [](const ::testing::TestParamInfo<BytesCase>& info) { return info.param.name; });

TEST_F(RetentionTest, PrunedSegmentsThatSurviveACrashAreRemovedOnOpen) {
  // Retention writes the anchor, then unlinks; a crash before the unlinks are
  // durable leaves the pruned segments beside the anchor that replaced them.
  ASSERT_NO_FATAL_FAILURE(Fill());
  std::vector<std::pair<std::string, std::string>> saved;
  for (uint64_t first : {uint64_t{1}, kBlockEvents + 1}) {
    for (const std::string& path : {SegPath(first), IdxPath(first)}) {
      if (fs::exists(path)) saved.emplace_back(path, ReadFile(path));
    }
  }
  auto removed = store_->ApplyRetention({absl::ZeroDuration(), kBlockEvents + 100}, clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  ASSERT_EQ(*removed, 2 * kBlockEvents);
  Close();
  for (const auto& [path, data] : saved) ASSERT_NO_FATAL_FAILURE(WriteFile(path, data));
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(ExpectRetained(2 * kBlockEvents));
  // The next pass counts nothing twice (it used to wrap around on these segments).
  removed = store_->ApplyRetention({absl::ZeroDuration(), kBlockEvents + 100}, clock_.Now());
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0u);
}

TEST_F(RetentionTest, RefusesToPruneTamperedSegment) {
  ASSERT_NO_FATAL_FAILURE(Fill());
  Close();
  std::string seg = ReadFile(SegPath(1));
  ASSERT_NO_FATAL_FAILURE(FlipDevice(&seg, ParseSegment(seg), 10));
  ASSERT_NO_FATAL_FAILURE(WriteFile(SegPath(1), seg));
  ASSERT_NO_FATAL_FAILURE(Open());
  auto removed = store_->ApplyRetention({absl::ZeroDuration(), 100}, clock_.Now());
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kFailedPrecondition) << removed.status();
  removed = store_->ApplyRetention({absl::Seconds(1), 0}, clock_.Now());
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kFailedPrecondition) << removed.status();
  EXPECT_EQ(First(), 1u);
  EXPECT_TRUE(fs::exists(SegPath(1)));
  VerifyResult v = Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.problem, kProblemAltered) << v.detail;
  EXPECT_EQ(v.first_bad_sequence, 10u) << v.detail;
}

// ---------------------------------------------------------------------------
// 8. Concurrency: readers only ever see committed, gap-free, hash-valid prefixes.

TEST_F(LogStoreTest, ReadersSeeGapFreePrefixesWhileAppending) {
  options_.events_per_segment = kBlockEvents;
  options_.checkpoint_interval = 1000;
  ASSERT_NO_FATAL_FAILURE(Open());
  constexpr uint64_t kBatches = 120;
  constexpr uint64_t kBatch = 83;  // 9,960 events: two segment rollovers
  constexpr uint64_t kTotal = kBatches * kBatch;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t b = 0; b < kBatches; ++b) {
      std::vector<AuditEvent> batch;
      for (uint64_t i = b * kBatch + 1; i <= (b + 1) * kBatch; ++i) batch.push_back(MakeEvent(i));
      auto r = store_->Append(&batch);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) break;
    }
    done.store(true);
  });

  uint64_t cursor = 0;
  std::string last_hash(kGenesisHash);
  // A lambda so that a failed ASSERT still reaches writer.join().
  auto read_while_writing = [&] {
    int rounds = 0;
    bool last_round = false;
    while (!last_round && !::testing::Test::HasFailure()) {
      last_round = done.load();
      ++rounds;
      auto head = store_->Head();
      ASSERT_TRUE(head.ok()) << head.status();
      ASSERT_GE(head->sequence, cursor);
      // Everything up to the head is readable, chained and gap-free.
      while (cursor < head->sequence) {
        auto r = store_->ReadAfter(cursor, 300);
        ASSERT_TRUE(r.ok()) << r.status();
        ASSERT_FALSE(r->empty()) << "head " << head->sequence << " but nothing after " << cursor;
        for (const AuditEvent& e : *r) {
          ASSERT_EQ(e.sequence(), cursor + 1);
          ASSERT_EQ(e.event_id(), MakeEvent(cursor + 1).event_id());
          ASSERT_EQ(e.prev_hash(), last_hash) << e.sequence();
          auto h = ComputeEventHash(e);
          ASSERT_TRUE(h.ok() && *h == e.hash()) << e.sequence();
          cursor = e.sequence();
          last_hash = e.hash();
        }
      }
      if (cursor == head->sequence && cursor > 0) {
        ASSERT_EQ(last_hash, head->hash);
      }
      // A filtered query bounded by the head is exact.
      if (head->sequence > 0) {  // (max_sequence 0 would mean no bound)
        EventFilter f;
        f.device_id = "dev-1";
        f.max_sequence = head->sequence;
        auto r = store_->Query(f, 100000);
        ASSERT_TRUE(r.ok()) << r.status();
        std::vector<uint64_t> want;
        for (uint64_t i = 1; i <= head->sequence; ++i) {
          if (i % 4 == 1) want.push_back(i);
        }
        ASSERT_EQ(Sequences(*r), want) << "head " << head->sequence;
      }
      if (rounds % 8 == 0 && head->sequence > 0) {
        auto v = store_->Verify(0, head->sequence);
        ASSERT_TRUE(v.ok()) << v.status();
        ASSERT_TRUE(v->ok) << v->problem << " " << v->detail;
        ASSERT_EQ(v->last_sequence, head->sequence);
      }
    }
  };
  read_while_writing();
  writer.join();
  EXPECT_EQ(cursor, kTotal);
  EXPECT_EQ(Head().sequence, kTotal);
  VerifyResult v = Verify();
  EXPECT_TRUE(v.ok) << v.problem << " " << v.detail;
  EXPECT_EQ(v.events_checked, kTotal);
}

}  // namespace
}  // namespace iotauth::audit
