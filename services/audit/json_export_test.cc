#include "services/audit/json_export.h"

#include <google/protobuf/util/json_util.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "services/audit/sqlite_audit_store.h"

namespace iotauth::audit {
namespace {

TEST(JsonExportTest, OneParsableLinePerEvent) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(dir ? dir : "/tmp", "/export.db");
  for (const char* s : {"", "-wal", "-shm"}) std::remove((path + s).c_str());
  SqliteAuditStore::Options so;
  so.path = path;
  auto store = SqliteAuditStore::Open(so);
  ASSERT_TRUE(store.ok());
  std::vector<iotauth::audit::v1::AuditEvent> events;
  for (int i = 0; i < 7; ++i) {
    iotauth::audit::v1::AuditEvent e;
    e.set_event_id(absl::StrCat("id", i));
    e.set_tenant_id(i < 5 ? "a" : "b");
    e.set_reason("line\nbreak \"quoted\"");
    (*e.mutable_attributes())["k"] = "v";
    events.push_back(e);
  }
  ASSERT_TRUE((*store)->Append(&events).ok());

  EventFilter f;
  f.tenant_id = "a";
  std::ostringstream out;
  auto n = ExportJsonLines(**store, f, out, /*page_size=*/2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5u);
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u);
  for (size_t i = 0; i < lines.size(); ++i) {
    iotauth::audit::v1::AuditEvent back;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[i], &back).ok()) << lines[i];
    EXPECT_EQ(back.sequence(), i + 1);
    EXPECT_EQ(back.reason(), "line\nbreak \"quoted\"");
    EXPECT_EQ(back.hash().size(), 64u);
  }
  EXPECT_NE(lines[0].find("\"event_id\":\"id0\""), std::string::npos) << lines[0];
}

}  // namespace
}  // namespace iotauth::audit
