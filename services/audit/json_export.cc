#include "services/audit/json_export.h"

#include <google/protobuf/util/json_util.h>

#include <string>

#include "services/common/status_macros.h"

namespace iotauth::audit {

absl::Status WriteJsonLine(const iotauth::audit::v1::AuditEvent& event, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(event, &json, options);
  if (!status.ok()) return absl::InternalError("cannot print audit event as JSON");
  out << json << '\n';
  if (!out) return absl::UnavailableError("export stream failed");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ExportJsonLines(AuditStore& store, EventFilter filter, std::ostream& out,
                                         int page_size) {
  if (page_size <= 0) page_size = 1000;
  uint64_t written = 0;
  for (;;) {
    IOTAUTH_ASSIGN_OR_RETURN(auto page, store.Query(filter, page_size));
    for (const auto& e : page) {
      IOTAUTH_RETURN_IF_ERROR(WriteJsonLine(e, out));
      ++written;
    }
    if (static_cast<int>(page.size()) < page_size) break;
    filter.after_sequence = page.back().sequence();
  }
  out.flush();
  return written;
}

}  // namespace iotauth::audit
