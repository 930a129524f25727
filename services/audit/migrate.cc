#include "services/audit/migrate.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/common/status_macros.h"

namespace iotauth::audit {

using iotauth::audit::v1::AuditEvent;

absl::StatusOr<MigrationResult> MigrateToSegmentLog(
    AuditStore& source, LogAuditStore::Options options,
    const std::function<void(uint64_t, uint64_t)>& progress) {
  IOTAUTH_ASSIGN_OR_RETURN(VerifyResult check, source.Verify(0, 0));
  if (!check.ok) {
    return absl::FailedPreconditionError(absl::StrCat("the old audit log does not verify at event ",
                                                      check.first_bad_sequence, " (", check.problem,
                                                      ": ", check.detail, "); not copied"));
  }
  IOTAUTH_ASSIGN_OR_RETURN(const ChainHead source_head, source.Head());
  IOTAUTH_ASSIGN_OR_RETURN(const uint64_t first, source.FirstSequence());
  if (first > 1) {
    // Pruned: the new log starts after the old one's retention anchor (the event
    // before the first retained one).
    IOTAUTH_ASSIGN_OR_RETURN(std::vector<AuditEvent> head_events, source.ReadAfter(first - 1, 1));
    if (head_events.empty()) {
      return absl::FailedPreconditionError("the old audit log holds no event after its anchor");
    }
    CheckpointRecord anchor{first - 1, head_events[0].prev_hash(), absl::Now()};
    IOTAUTH_RETURN_IF_ERROR(LogAuditStore::StartAfter(options.dir, anchor));
  }
  IOTAUTH_ASSIGN_OR_RETURN(std::unique_ptr<LogAuditStore> dest, LogAuditStore::Open(options));
  IOTAUTH_ASSIGN_OR_RETURN(const ChainHead start, dest->Head());
  if (start.sequence != (first > 1 ? first - 1 : 0)) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.dir, " already holds an audit log (head ", start.sequence,
                     "); migrate into an empty directory"));
  }
  MigrationResult result;
  result.first_sequence = first;
  const uint64_t total = source_head.sequence >= first ? source_head.sequence - first + 1 : 0;
  uint64_t after = first - 1;
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(std::vector<AuditEvent> page, source.ReadAfter(after, 2048));
    if (page.empty()) break;
    std::vector<std::string> want;
    want.reserve(page.size());
    for (const AuditEvent& e : page) want.push_back(e.hash());
    const uint64_t first_in_page = page.front().sequence();
    // Ids are unique in the old log: no lookup needed.
    IOTAUTH_ASSIGN_OR_RETURN(std::vector<AppendedEvent> appended, dest->AppendFresh(&page));
    for (size_t i = 0; i < page.size(); ++i) {
      if (appended[i].sequence != first_in_page + i || page[i].hash() != want[i]) {
        return absl::DataLossError(absl::StrCat(
            "event ", first_in_page + i, " does not hash to what the old log holds; the copy in ",
            options.dir, " is incomplete: delete it and check the old log"));
      }
    }
    result.events += page.size();
    after = page.back().sequence();
    if (progress) progress(result.events, total);
  }
  IOTAUTH_ASSIGN_OR_RETURN(result.head, dest->Head());
  if (result.head.sequence != source_head.sequence || result.head.hash != source_head.hash) {
    return absl::DataLossError(absl::StrCat("the new log ends at ", result.head.sequence,
                                            ", the old one at ", source_head.sequence));
  }
  return result;
}

}  // namespace iotauth::audit
