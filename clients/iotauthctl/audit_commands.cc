// audit query|watch|verify|export|checkpoint over the AuditLog service.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"
#include "proto/iotauth/audit/v1/audit.grpc.pb.h"

namespace iotauth::cli {
namespace {

namespace av1 = ::iotauth::audit::v1;

const std::vector<Column>& EventColumns() {
  static const auto* kColumns = new std::vector<Column>{
      {"SEQ", "sequence"},    {"TIME", "time"},        {"TYPE", "type"},
      {"OUTCOME", "outcome"}, {"TENANT", "tenant_id"}, {"DEVICE", "device_id"},
      {"REASON", "reason"},   {"CALLER", "caller"}};
  return *kColumns;
}

google::protobuf::Timestamp ToProto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

// The filter flags shared by query and export.
absl::StatusOr<av1::QueryRequest> BuildQuery(const Invocation& inv) {
  av1::QueryRequest q;
  const absl::Time now = AppOf(inv).now();
  if (inv.flags.Has("since")) {
    auto t = ParseTimeFlag(inv.flags.Get("since"), now);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--since: ", t.status().message()));
    *q.mutable_start_time() = ToProto(*t);
  }
  if (inv.flags.Has("until")) {
    auto t = ParseTimeFlag(inv.flags.Get("until"), now);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--until: ", t.status().message()));
    *q.mutable_end_time() = ToProto(*t);
  }
  q.set_tenant_id(inv.flags.Get("tenant"));
  q.set_device_id(inv.flags.Get("device"));
  if (inv.flags.Has("type")) {
    auto v = ParseEnumName(av1::EventType_descriptor(), inv.flags.Get("type"));
    if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat("--type: ", v.status().message()));
    q.set_type(static_cast<av1::EventType>(*v));
  }
  if (inv.flags.Has("outcome")) {
    auto v = ParseEnumName(av1::Outcome_descriptor(), inv.flags.Get("outcome"));
    if (!v.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--outcome: ", v.status().message()));
    }
    q.set_outcome(static_cast<av1::Outcome>(*v));
  }
  return q;
}

void AddFilterFlags(Command& c) {
  c.Flag({"since", "TIME", "Events at or after: RFC 3339 time or a duration ago (15m, 2d)"})
      .Flag({"until", "TIME", "Events before: RFC 3339 time or a duration ago"})
      .Flag({"tenant", "ID", "Only this tenant", "", "IOTAUTH_TENANT"})
      .Flag({"device", "ID", "Only this device"})
      .Flag(
          {"type", "TYPE", absl::StrCat("Event type: ", EnumChoices(av1::EventType_descriptor()))})
      .Flag({"outcome", "OUTCOME",
             absl::StrCat("Outcome: ", EnumChoices(av1::Outcome_descriptor()))});
}

std::optional<ServiceClient<av1::AuditLog>> OpenAudit(const Invocation& inv, int* exit) {
  return OpenClient<av1::AuditLog>(inv, exit);
}

int Query(Invocation& inv) {
  auto base = BuildQuery(inv);
  if (!base.ok()) return inv.UsageError(base.status().message());
  int exit = 0;
  auto a = OpenAudit(inv, &exit);
  if (!a) return exit;
  std::vector<av1::AuditEvent> events;
  int rc = ListPages(
      inv, *a->conn, "AuditLog.Query",
      [&](grpc::ClientContext* c, int32_t size, const std::string& token, std::string* next) {
        av1::QueryRequest req = *base;
        req.set_page_size(size);
        req.set_page_token(token);
        av1::QueryResponse resp;
        grpc::Status s = a->stub->Query(c, req, &resp);
        for (auto& e : *resp.mutable_events()) events.push_back(std::move(e));
        *next = resp.next_page_token();
        return s;
      });
  if (rc != kExitOk) return rc;
  std::vector<google::protobuf::Message*> ms;
  ms.reserve(events.size());
  for (auto& e : events) ms.push_back(&e);
  PrintResources(inv, ms, EventColumns(), false);
  return kExitOk;
}

int Export(Invocation& inv) {
  auto base = BuildQuery(inv);
  if (!base.ok()) return inv.UsageError(base.status().message());
  auto page_size = inv.flags.GetInt("page_size");
  if (!page_size.ok()) return inv.UsageError(page_size.status().message());
  const std::string output = inv.flags.Get("output");
  ExportOutput sink;
  if (absl::Status st = sink.Open(output, &inv.out()); !st.ok()) {
    return inv.LocalError(st.message());
  }
  std::ostream* out = &sink.stream();
  int exit = 0;
  auto a = OpenAudit(inv, &exit);
  if (!a) return exit;
  std::string token;
  int64_t n = 0;
  ProgressBar progress(&inv.err(), inv.io.err_is_tty, ExportShowsProgress(inv, sink.to_file()));
  while (true) {
    av1::QueryRequest req = *base;
    req.set_page_size(static_cast<int32_t>(*page_size));
    req.set_page_token(token);
    av1::QueryResponse resp;
    grpc::ClientContext context;
    a->conn->PrepareUnary(&context);
    grpc::Status s = a->stub->Query(&context, req, &resp);
    if (!s.ok()) {
      progress.Finish(n, 0);
      inv.err() << "export incomplete: " << n << " events read"
                << (sink.to_file() ? ", nothing written to " + output : std::string()) << "\n";
      return ReportRpcError(inv, s, "AuditLog.Query", a->conn->settings());
    }
    for (const auto& e : resp.events()) {
      absl::StatusOr<std::string> json = ToJsonChecked(e);
      if (!json.ok()) {
        progress.Finish(n, 0);
        inv.err() << "export incomplete: " << n << " events read"
                  << (sink.to_file() ? ", nothing written to " + output : std::string()) << "\n";
        return inv.LocalError(absl::StrCat("event ", e.sequence(), " (", e.event_id(),
                                           ") cannot be exported: ", json.status().message(),
                                           " (the log itself is intact: `iotauthctl audit "
                                           "verify` checks it, `audit query` shows the event)"));
      }
      *out << *json << "\n";
      ++n;
    }
    progress.Update(n, 0, -1);
    if (resp.next_page_token().empty() || resp.next_page_token() == token) break;
    token = resp.next_page_token();
  }
  progress.Finish(n, 0);
  if (absl::Status st = sink.Commit(); !st.ok()) return inv.LocalError(st.message());
  if (sink.to_file()) inv.err() << "exported " << n << " events to " << output << "\n";
  return kExitOk;
}

int WatchEvents(Invocation& inv) {
  av1::WatchRequest req;
  if (inv.flags.Has("after")) {
    auto after = inv.flags.GetInt("after");
    if (!after.ok()) return inv.UsageError(after.status().message());
    if (*after < 0) return inv.UsageError("--after must not be negative");
    req.set_after_sequence(static_cast<uint64_t>(*after));
  } else {
    req.set_from_now(true);
  }
  if (inv.flags.Has("after") && inv.flags.IsSet("from_now")) {
    return inv.UsageError("give --after or --from_now, not both");
  }
  req.set_tenant_id(inv.flags.Get("tenant"));
  if (inv.flags.Has("type")) {
    auto v = ParseEnumName(av1::EventType_descriptor(), inv.flags.Get("type"));
    if (!v.ok()) return inv.UsageError(absl::StrCat("--type: ", v.status().message()));
    req.set_type(static_cast<av1::EventType>(*v));
  }
  int exit = 0;
  auto a = OpenAudit(inv, &exit);
  if (!a) return exit;
  grpc::ClientContext context;
  a->conn->PrepareStream(&context);
  auto reader = a->stub->Watch(&context, req);
  uint64_t last = req.after_sequence();
  // The server sends its headers once the stream's start is fixed (see
  // WatchRequest.from_now in audit.proto); say where that is.
  reader->WaitForInitialMetadata();
  const auto& headers = context.GetServerInitialMetadata();
  if (auto it = headers.find("iotauth-watch-cursor"); it != headers.end()) {
    uint64_t cursor = 0;
    if (absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &cursor)) {
      last = cursor;
      inv.err() << "watching events after sequence " << cursor << " (Ctrl-C stops)\n";
    }
  }
  av1::AuditEvent e;
  while (reader->Read(&e)) {
    last = e.sequence();
    if (JsonOutput(inv)) {
      inv.out() << ToJson(e) << "\n";
    } else {
      inv.out() << e.sequence() << "  " << FormatTimestamp(e.time()) << "  "
                << FieldValue(e, "type") << "  " << FieldValue(e, "outcome") << "  "
                << e.tenant_id() << "/" << e.device_id() << "  " << e.reason() << "\n";
    }
    inv.out().flush();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (last > 0) inv.err() << "resume with --after " << last << "\n";
    return ReportRpcError(inv, status, "AuditLog.Watch", a->conn->settings());
  }
  return kExitOk;
}

int Verify(Invocation& inv) {
  auto from = inv.flags.GetInt("from");
  auto to = inv.flags.GetInt("to");
  if (!from.ok()) return inv.UsageError(from.status().message());
  if (!to.ok()) return inv.UsageError(to.status().message());
  if (*from < 0 || *to < 0) return inv.UsageError("--from and --to must not be negative");
  av1::VerifyRequest req;
  req.set_from_sequence(static_cast<uint64_t>(*from));
  req.set_to_sequence(static_cast<uint64_t>(*to));
  if (const std::string expect = inv.flags.Get("expect"); !expect.empty()) {
    // SEQ:HASH, as `audit checkpoint` prints it.
    const std::vector<std::string> parts = absl::StrSplit(expect, absl::MaxSplits(':', 1));
    uint64_t seq = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &seq) || seq == 0 ||
        parts[1].size() != 64) {
      return inv.UsageError(
          "--expect takes SEQUENCE:HASH, the line `iotauthctl audit checkpoint` prints "
          "(a sequence > 0 and 64 hex digits)");
    }
    req.set_expect_sequence(seq);
    req.set_expect_hash(parts[1]);
  }
  int exit = 0;
  auto a = OpenAudit(inv, &exit);
  if (!a) return exit;
  av1::VerifyResponse resp;
  grpc::ClientContext context;
  a->conn->PrepareStream(&context);  // long ranges take time: no default deadline
  grpc::Status s = a->stub->Verify(&context, req, &resp);
  if (!s.ok()) return ReportRpcError(inv, s, "AuditLog.Verify", a->conn->settings());
  if (JsonOutput(inv)) {
    inv.out() << ToJson(resp) << "\n";
  } else if (resp.ok()) {
    inv.out() << "ok: " << resp.events_checked() << " events verified";
    if (resp.expected_checkpoint_matched()) {
      inv.out() << "; event " << req.expect_sequence() << " matches the expected checkpoint";
    }
    inv.out() << "\n";
  } else {
    inv.out() << "FAILED at sequence " << resp.first_bad_sequence() << ": " << resp.problem();
    if (!resp.detail().empty()) inv.out() << " (" << resp.detail() << ")";
    inv.out() << "; " << resp.events_checked() << " events checked\n";
  }
  return resp.ok() ? kExitOk : kExitCheckFailed;
}

int Checkpoint(Invocation& inv) {
  int exit = 0;
  auto a = OpenAudit(inv, &exit);
  if (!a) return exit;
  av1::GetCheckpointRequest req;
  req.set_create(inv.flags.IsSet("create"));
  av1::Checkpoint resp;
  if (int rc = CallUnary(inv, *a->conn, "AuditLog.GetCheckpoint", [&](grpc::ClientContext* c) {
        return a->stub->GetCheckpoint(c, req, &resp);
      })) {
    return rc;
  }
  if (JsonOutput(inv)) {
    PrintResource(inv, &resp, false);
    return kExitOk;
  }
  // One line a script can keep outside the log and hand back to `verify --expect`.
  inv.out() << resp.sequence() << ":" << resp.head_hash() << "\n";
  inv.err() << "checkpoint of event " << resp.sequence() << " recorded at "
            << FormatTimestamp(resp.time())
            << "; keep this line outside the server (a truncated or rewritten log then fails "
               "`iotauthctl audit verify --expect <line>`)\n";
  return kExitOk;
}

}  // namespace

void AddAuditCommands(Command& root) {
  Command& audit = root.Sub("audit", "Query, tail, verify and export the audit log");
  Command& query = audit.Sub("query", "Events matching a filter, oldest first").Run(Query);
  AddFilterFlags(query);
  AddPageFlags(query);
  audit.Sub("watch", "Live tail of the audit log until interrupted")
      .Flag({"after", "SEQ", "Start after this sequence number (0: the whole retained log)"})
      .Flag({"from_now", "", "Only new events (the default without --after)"})
      .Flag({"tenant", "ID", "Only this tenant", "", "IOTAUTH_TENANT"})
      .Flag({"type", "TYPE", "Only this event type"})
      .Run(WatchEvents);
  audit.Sub("verify", "Recompute the hash chain; exit 5 and name the first bad event on failure")
      .Flag({"from", "SEQ", "First sequence (0: the oldest retained)"})
      .Flag({"to", "SEQ", "Last sequence (0: the head)"})
      .Flag({"expect", "SEQ:HASH",
             "A checkpoint kept outside the log (from `audit checkpoint`): that event must still "
             "be there with that hash (catches a truncated or rewritten log)"})
      .Run(Verify);
  Command& exp = audit.Sub("export", "Every matching event as JSON Lines (all Query pages)")
                     .Flag({"output", "FILE", "Write to a file instead of stdout"})
                     .Flag({"page_size", "N", "Events per Query page", "1000"})
                     .Flag({"no_progress", "", "No progress line on stderr"})
                     .Run(Export);
  AddFilterFlags(exp);
  audit
      .Sub("checkpoint",
           "The latest checkpoint as SEQ:HASH (keep it outside the server for `verify --expect`)")
      .Flag({"create", "", "First record one at the current head (admin role)"})
      .Run(Checkpoint);
}

}  // namespace iotauth::cli
