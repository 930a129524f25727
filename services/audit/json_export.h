// JSON Lines export of audit events (for `iotauthctl audit export` and SIEM
// forwarding): one event per line, protobuf's canonical JSON mapping with the
// proto field names (snake_case); 64-bit integers are JSON strings, enums names.
#pragma once

#include <cstdint>
#include <ostream>

#include "absl/status/statusor.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/audit_store.h"

namespace iotauth::audit {

// Writes `event` as one JSON object followed by '\n'.
absl::Status WriteJsonLine(const iotauth::audit::v1::AuditEvent& event, std::ostream& out);

// Writes every event matching `filter`, oldest first, reading `page_size` at a time.
// Returns the number written. UNAVAILABLE when the stream fails.
absl::StatusOr<uint64_t> ExportJsonLines(AuditStore& store, EventFilter filter, std::ostream& out,
                                         int page_size = 1000);

}  // namespace iotauth::audit
