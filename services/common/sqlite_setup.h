// Process-wide SQLite settings, applied once before the first connection opens.
#pragma once

#include <sqlite3.h>

#include <mutex>

namespace iotauth {

// Turns off SQLite's memory statistics: with them on (Debian's default), every
// sqlite3_malloc/free takes one global mutex, which shows up in the audit writer's
// profile at tens of thousands of inserts per second. Must run before SQLite
// initializes itself; a later call is a no-op (sqlite3_config then refuses).
inline void ConfigureSqliteOnce() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
}

}  // namespace iotauth
