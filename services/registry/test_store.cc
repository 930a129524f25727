#include "services/registry/test_store.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/registry/secret_box.h"

namespace iotauth::registry::testing {
namespace {

// "Suite.Name" of the running test ("no_test" outside one), reduced to characters
// that are safe in a file name (parameterised names contain '/').
std::string TestNameForPath() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      info == nullptr ? "no_test" : absl::StrCat(info->test_suite_name(), ".", info->name());
  for (char& c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  }
  return name;
}

}  // namespace

std::string TestMasterKey() { return std::string(SecretBox::kKeySize, 'm'); }

absl::StatusOr<std::unique_ptr<SqliteStore>> OpenTestStore(const Clock* clock) {
  // ::testing::TempDir() ends with '/'.
  const std::string pattern =
      absl::StrCat(::testing::TempDir(), "registry_", TestNameForPath(), ".XXXXXX");
  std::string dir = pattern;  // mkdtemp replaces the XXXXXX in place
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  absl::StatusOr<std::unique_ptr<SecretBox>> box = SecretBox::Create(TestMasterKey());
  if (!box.ok()) return box.status();
  SqliteStore::Options options;
  options.path = absl::StrCat(dir, "/registry.db");
  options.secret_box = std::move(*box);
  options.clock = clock;
  return SqliteStore::Open(std::move(options));
}

absl::Status CopySealedDeviceKey(const std::string& db_path, absl::string_view column,
                                 absl::string_view from, absl::string_view to) {
  if (column != "primary_key" && column != "secondary_key") {
    return absl::InvalidArgumentError(absl::StrCat("not a sealed key column: ", column));
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(db_path.c_str(), &db) != SQLITE_OK) {
    absl::Status st = absl::InternalError(absl::StrCat("open ", db_path, ": ", sqlite3_errmsg(db)));
    sqlite3_close(db);
    return st;
  }
  const std::string sql =
      absl::StrCat("UPDATE devices SET ", column, " = (SELECT ", column,
                   " FROM devices WHERE device_id = '", from, "') WHERE device_id = '", to, "'");
  absl::Status st = absl::OkStatus();
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    st = absl::InternalError(absl::StrCat(sql, ": ", sqlite3_errmsg(db)));
  } else if (sqlite3_changes(db) != 1) {
    st = absl::InternalError(absl::StrCat(sql, ": changed ", sqlite3_changes(db), " rows"));
  }
  sqlite3_close(db);
  return st;
}

}  // namespace iotauth::registry::testing
