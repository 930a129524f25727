// Test-only: a fresh, isolated SqliteStore for tests of code that runs over the
// registry's storage, so each test does not repeat the temporary directory, master
// key and Open boilerplate.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
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

}  // namespace iotauth::registry::testing
