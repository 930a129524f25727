// Process-wide SQLite settings, applied once before the first connection opens; and
// how an SQLite failure becomes a status.
#pragma once

#include <sqlite3.h>

#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/error_info.h"

namespace iotauth {

// Turns off SQLite's memory statistics: with them on (Debian's default), every
// sqlite3_malloc/free takes one global mutex, which shows up in the audit writer's
// profile at tens of thousands of inserts per second. Must run before SQLite
// initializes itself; a later call is a no-op (sqlite3_config then refuses).
inline void ConfigureSqliteOnce() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
}

// Maps an SQLite result code (primary or extended) and its message: lock contention
// (another process holding the file past the busy timeout) is UNAVAILABLE with reason
// STORE_BUSY; a full disk (or a database at its page limit) RESOURCE_EXHAUSTED with
// reason STORE_FULL and `full_hint` (what to do) after the message; anything else
// INTERNAL.
inline absl::Status SqliteStatus(int code, absl::string_view msg, absl::string_view full_hint) {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return WithErrorReason(absl::UnavailableError(msg), "STORE_BUSY");
    case SQLITE_FULL:
      return WithErrorReason(absl::ResourceExhaustedError(absl::StrCat(msg, " (", full_hint, ")")),
                             "STORE_FULL");
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace iotauth
