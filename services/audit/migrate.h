// Copies an SQLite audit log into a new segment log (LogAuditStore), event by
// event, keeping every sequence and hash: the chain, and any checkpoint exported
// from the old log, stay valid. For deployments that ran the SQLite backend (the
// default before the segment log) and want their history in the new one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "services/audit/audit_store.h"
#include "services/audit/log_audit_store.h"

namespace iotauth::audit {

struct MigrationResult {
  uint64_t first_sequence = 0;  // first event copied (1 unless the old log was pruned)
  uint64_t events = 0;
  ChainHead head;  // of the new log; equal to the old log's
};

// Copies every retained event of `source` into `options.dir`, which must be empty
// or absent. The old log is verified first (a log that does not verify is not
// copied: FAILED_PRECONDITION naming the event); each copied event must hash to
// what the old log holds (DATA_LOSS otherwise). A pruned old log starts the new one
// after its retention anchor. `progress(copied, total)` is called now and then.
absl::StatusOr<MigrationResult> MigrateToSegmentLog(
    AuditStore& source, LogAuditStore::Options options,
    const std::function<void(uint64_t, uint64_t)>& progress = nullptr);

}  // namespace iotauth::audit
