// Offline: copies an SQLite audit log (storage.audit_backend: sqlite, the default
// before the segment log) into a new segment log, keeping every sequence and hash.
//
//   audit_migrate <data_dir>/audit.db <data_dir>/audit [events_per_segment]
//
// Stop iotauthd first. The target directory must be empty or absent. Exit 0 when
// the copy's head equals the old log's; the old file is left as it was.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/audit/migrate.h"
#include "services/audit/sqlite_audit_store.h"
#include "services/common/posix_file.h"

int main(int argc, char** argv) {
  using iotauth::audit::LogAuditStore;
  using iotauth::audit::SqliteAuditStore;
  using iotauth::posix_file::FileLock;
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr,
                 "usage: audit_migrate <data_dir>/audit.db <data_dir>/audit [events_per_segment]\n"
                 "Copies an SQLite audit log into a new segment log (stop iotauthd first).\n");
    return 2;
  }
  // The locks iotauthd holds on both stores: refused while a server runs on them.
  std::vector<std::unique_ptr<FileLock>> locks;
  for (const auto& [path, what] :
       {std::pair<std::string, std::string>{argv[1], "the audit database"},
        {argv[2], "the segment log"}}) {
    auto lock =
        FileLock::Acquire(iotauth::posix_file::LockPathFor(path), absl::StrCat(what, " ", path));
    if (!lock.ok()) {
      std::fprintf(stderr, "audit_migrate: %s\n", std::string(lock.status().message()).c_str());
      return 1;
    }
    locks.push_back(*std::move(lock));
  }
  SqliteAuditStore::Options so;
  so.path = argv[1];
  auto source = SqliteAuditStore::Open(so);
  if (!source.ok()) {
    std::fprintf(stderr, "audit_migrate: %s\n", source.status().ToString().c_str());
    return 1;
  }
  LogAuditStore::Options lo;
  lo.dir = argv[2];
  if (argc == 4 && !absl::SimpleAtoi(argv[3], &lo.events_per_segment)) {
    std::fprintf(stderr, "audit_migrate: events_per_segment must be a number\n");
    return 2;
  }
  uint64_t last_percent = 101;
  auto result = iotauth::audit::MigrateToSegmentLog(
      **source, lo, [&last_percent](uint64_t done, uint64_t total) {
        const uint64_t percent = total == 0 ? 100 : done * 100 / total;
        if (percent / 5 != last_percent / 5) {
          std::fprintf(stderr, "audit_migrate: %llu of %llu events (%llu%%)\n",
                       static_cast<unsigned long long>(done),
                       static_cast<unsigned long long>(total),
                       static_cast<unsigned long long>(percent));
          last_percent = percent;
        }
      });
  if (!result.ok()) {
    std::fprintf(stderr, "audit_migrate: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("copied %llu events (%llu..%llu); head %s\n",
              static_cast<unsigned long long>(result->events),
              static_cast<unsigned long long>(result->first_sequence),
              static_cast<unsigned long long>(result->head.sequence), result->head.hash.c_str());
  std::printf("now start iotauthd with storage.audit_backend=log (the default)\n");
  return 0;
}
