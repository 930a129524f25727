#include "services/audit/event_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace iotauth::audit {
namespace {

bool IsLowerHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

TEST(EventUtilTest, EventIdsAreUniqueHex) {
  std::set<std::string> ids;
  for (int i = 0; i < 5000; ++i) {  // spans several refills of the pool
    const std::string id = NewEventId();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_TRUE(IsLowerHex(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 5000u);
}

// Into an existing string: replaced whole (not appended to), reusing its storage.
TEST(EventUtilTest, EventIdIntoReplacesTheString) {
  std::string id = std::string(100, 'x');
  const char* storage = id.data();
  NewEventIdInto(&id);
  EXPECT_EQ(id.size(), 32u);
  EXPECT_TRUE(IsLowerHex(id)) << id;
  EXPECT_EQ(id.data(), storage);
  const std::string first = id;
  NewEventIdInto(&id);
  EXPECT_NE(id, first);
}

TEST(EventUtilTest, ForkedChildDoesNotRepeatParentIds) {
  (void)NewEventId();  // the parent's pool now holds unused random bytes
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string id = NewEventId();
    _exit(write(fds[1], id.data(), id.size()) == 32 ? 0 : 1);
  }
  const std::string mine = NewEventId();
  char buf[32];
  ASSERT_EQ(read(fds[0], buf, sizeof(buf)), 32);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_NE(std::string(buf, 32), mine);
}

TEST(EventUtilTest, PrepareForRecordFillsDefaultsAndClearsStoreFields) {
  FakeClock clock(absl::FromUnixSeconds(1700000000) + absl::Nanoseconds(5));
  iotauth::audit::v1::AuditEvent e;
  e.set_sequence(3);
  e.set_hash("x");
  e.set_prev_hash("y");
  PrepareForRecord(clock, &e);
  EXPECT_EQ(e.event_id().size(), 32u);
  EXPECT_EQ(e.time().seconds(), 1700000000);
  EXPECT_EQ(e.time().nanos(), 5);
  EXPECT_EQ(e.sequence(), 0u);
  EXPECT_TRUE(e.hash().empty());
  EXPECT_TRUE(e.prev_hash().empty());
  iotauth::audit::v1::AuditEvent kept;
  kept.set_event_id("mine");
  kept.mutable_time()->set_seconds(1);
  PrepareForRecord(clock, &kept);
  EXPECT_EQ(kept.event_id(), "mine");
  EXPECT_EQ(kept.time().seconds(), 1);
  EXPECT_EQ(FromTimestamp(e.time()), clock.Now());
  iotauth::audit::v1::AuditEvent bad;
  bad.mutable_time()->set_nanos(-1);
  PrepareForRecord(clock, &bad);
  EXPECT_EQ(FromTimestamp(bad.time()), clock.Now());
  EXPECT_EQ(bad.attributes().at("invalid_time_replaced"), "true");
}

TEST(EventUtilTest, CapEventFieldsLeavesOrdinaryEventsAlone) {
  iotauth::audit::v1::AuditEvent e;
  e.set_event_id(NewEventId());
  e.set_tenant_id("t1");
  e.set_device_id(std::string(kMaxAuditFieldBytes, 'd'));  // at the limit: kept
  (*e.mutable_attributes())["detail"] = "bad signature";
  const std::string before = e.SerializeAsString();
  EXPECT_FALSE(CapEventFields(&e));
  EXPECT_EQ(e.SerializeAsString(), before);
}

TEST(EventUtilTest, CapEventFieldsCutsEveryLongFieldAtACharacterBoundary) {
  iotauth::audit::v1::AuditEvent e;
  const std::string id(40, 'a');
  e.set_event_id(id);
  // "é" is two bytes: 1023 'x' then "é" crosses the limit and is dropped whole.
  const std::string utf8 = std::string(kMaxAuditFieldBytes - 1, 'x') + "\xc3\xa9tail";
  e.set_device_id(utf8);
  e.set_tenant_id(std::string(8 << 20, 't'));
  e.set_product_key(std::string(5000, 'p'));
  e.set_reason(std::string(5000, 'r'));
  e.set_credential_type(std::string(5000, 'c'));
  e.set_credential_fingerprint(std::string(5000, 'f'));
  e.set_caller(std::string(5000, 'k'));
  e.set_peer_address(std::string(5000, 'a'));
  e.set_request_id(std::string(5000, 'q'));
  (*e.mutable_attributes())[std::string(3000, 'K')] = "v";
  (*e.mutable_attributes())["detail"] = std::string(3000, 'v');
  EXPECT_TRUE(CapEventFields(&e));
  EXPECT_EQ(e.event_id(), id);
  EXPECT_EQ(e.device_id(), std::string(kMaxAuditFieldBytes - 1, 'x'));
  for (const std::string* f :
       {&e.tenant_id(), &e.product_key(), &e.reason(), &e.credential_type(),
        &e.credential_fingerprint(), &e.caller(), &e.peer_address(), &e.request_id()}) {
    EXPECT_EQ(f->size(), kMaxAuditFieldBytes);
  }
  EXPECT_EQ(e.attributes().at(std::string(kMaxAuditFieldBytes, 'K')), "v");
  EXPECT_EQ(e.attributes().at("detail"), std::string(kMaxAuditFieldBytes, 'v'));
  EXPECT_EQ(e.attributes().at("truncated"), "true");
  EXPECT_EQ(e.attributes().size(), 3u);
}

TEST(EventUtilTest, PrepareForRecordCaps) {
  iotauth::audit::v1::AuditEvent e;
  e.set_device_id(std::string(1 << 20, 'd'));
  PrepareForRecord(RealClock::Get(), &e);
  EXPECT_EQ(e.device_id().size(), kMaxAuditFieldBytes);
  EXPECT_EQ(e.attributes().at("truncated"), "true");
}

}  // namespace
}  // namespace iotauth::audit
