#include "services/audit/spool.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/canonical.h"

namespace iotauth::audit {
namespace {

namespace fs = std::filesystem;
using iotauth::audit::v1::AuditEvent;

std::string Unchained(int i) {
  AuditEvent e;
  e.set_event_id(absl::StrCat("spooled-", i));
  e.mutable_time()->set_seconds(1700000000 + i);
  e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  e.set_outcome(iotauth::audit::v1::OUTCOME_ALLOW);
  e.set_device_id(absl::StrCat("dev-", i));
  (*e.mutable_attributes())["k"] = "v";
  std::string out;
  AppendUnchainedEncoding(e, &out);
  return out;
}

SpooledEvents Three() { return {Unchained(1), Unchained(2), Unchained(3)}; }

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const fs::path d = fs::path(dir ? dir : "/tmp") / "spool_test";
  fs::create_directories(d);
  const fs::path p = d / name;
  fs::remove(p);
  return p.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(SpoolTest, RoundTripsInOrder) {
  for (const SpooledEvents& events : {SpooledEvents{}, Three()}) {
    absl::StatusOr<SpooledEvents> back = ParseSpool(SerializeSpool(events));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, events);
  }
}

TEST(SpoolTest, SavesLoadsReplacesAndRemoves) {
  const std::string path = TempPath("spool");
  absl::StatusOr<std::optional<SpooledEvents>> none = LoadSpool(path);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(SaveSpool(path, Three()).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  absl::StatusOr<std::optional<SpooledEvents>> got = LoadSpool(path);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, Three());
  ASSERT_TRUE(SaveSpool(path, {Unchained(9)}).ok());  // replaced, not appended
  got = LoadSpool(path);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, SpooledEvents{Unchained(9)});
  ASSERT_TRUE(RemoveSpool(path).ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(RemoveSpool(path).ok());  // nothing to remove
}

TEST(SpoolTest, SaveIntoAMissingDirectoryNamesThePath) {
  const std::string path = TempPath("missing") + "/dir/spool";
  absl::Status st = SaveSpool(path, Three());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_NE(st.message().find(path), std::string::npos) << st;
}

// Every cut and every flipped bit of a real file is refused (never a crash, never a
// partial list).
TEST(SpoolTest, EveryCutAndEveryFlippedBitIsDataLoss) {
  const std::string good = SerializeSpool(Three());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(ParseSpool(good.substr(0, n)).status().code(), absl::StatusCode::kDataLoss) << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      ASSERT_EQ(ParseSpool(bad).status().code(), absl::StatusCode::kDataLoss) << i << "/" << bit;
    }
  }
  EXPECT_EQ(ParseSpool(good + "x").status().code(), absl::StatusCode::kDataLoss);
}

// A file whose checksum holds but whose contents a store would refuse.
TEST(SpoolTest, RefusesWhatAStoreWouldRefuse) {
  AuditEvent no_id;
  no_id.mutable_time()->set_seconds(1700000000);
  std::string without_id;
  AppendUnchainedEncoding(no_id, &without_id);
  std::string chained = Unchained(4);
  ChainUnchainedEncoding(7, std::string(32, '\x01'), chained.data(), chained.size());
  std::string bad_nanos;
  AuditEvent e;
  e.set_event_id("x");
  e.mutable_time()->set_seconds(1);
  e.mutable_time()->set_nanos(1000000000);
  AppendUnchainedEncoding(e, &bad_nanos);
  // A retention record is the store's own: a planted one would vouch for a cut log.
  AuditEvent retention;
  retention.set_event_id("r");
  retention.mutable_time()->set_seconds(1700000000);
  retention.set_type(iotauth::audit::v1::EVENT_TYPE_RETENTION);
  std::string planted;
  AppendUnchainedEncoding(retention, &planted);
  for (const std::string& bad :
       {without_id, chained, bad_nanos, planted, std::string("not an event")}) {
    absl::StatusOr<SpooledEvents> r = ParseSpool(SerializeSpool({Unchained(1), bad}));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find("event 1"), std::string::npos) << r.status();
  }
}

TEST(SpoolTest, DamagedSpoolIsSetAsideAndLoadNamesIt) {
  const std::string path = TempPath("damaged");
  std::string bytes = SerializeSpool(Three());
  bytes.back() = static_cast<char>(bytes.back() ^ 1);
  std::ofstream(path, std::ios::binary) << bytes;
  absl::StatusOr<std::optional<SpooledEvents>> got = LoadSpool(path);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find(path), std::string::npos) << got.status();
  absl::StatusOr<std::string> aside = SetAsideSpool(path, 1700000000);
  ASSERT_TRUE(aside.ok()) << aside.status();
  EXPECT_EQ(*aside, path + ".damaged.1700000000");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(ReadFile(*aside), bytes);
}

}  // namespace
}  // namespace iotauth::audit
