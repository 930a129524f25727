// Test-only: a fresh, isolated SqliteStore for tests of code that runs over the
// registry's storage, so each test does not repeat the temporary directory, master
// key and Open boilerplate.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/clock.h"
#include "services/registry/sqlite_store.h"

namespace iotauth::registry::testing {

// The master key (32 raw bytes) sealing every store OpenTestStore makes, for tests
// that reopen the file under other keys (re-wrapping).
std::string TestMasterKey();

// Opens a new, empty SqliteStore at `<dir>/registry.db`, where `<dir>` is a directory
// created for this call alone under ::testing::TempDir() (TEST_TMPDIR under Bazel),
// named after the running test plus a unique suffix, so no two tests or calls share
// a file. The directory is left in place for inspecting a failure. `clock` is
// required and must outlive the store; the store keeps its SecretBox (under
// TestMasterKey()) alive itself. INTERNAL when the directory cannot be made, else
// the errors of SqliteStore::Open. Thread-safe.
absl::StatusOr<std::unique_ptr<SqliteStore>> OpenTestStore(const Clock* clock);

// Damages a stored device the way a bad row or a wrong key would: copies the sealed
// key in `column` ("primary_key" or "secondary_key") of device `from` over the same
// column of device `to`, in the SQLite file at `db_path` (through its own connection;
// the store may stay open). A sealed key is bound to its row, so `to`'s key then no
// longer opens. INVALID_ARGUMENT for another column, INTERNAL on a SQLite error.
absl::Status CopySealedDeviceKey(const std::string& db_path, absl::string_view column,
                                 absl::string_view from, absl::string_view to);

}  // namespace iotauth::registry::testing
