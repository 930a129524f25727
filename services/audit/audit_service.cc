#include "services/audit/audit_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/audit/canonical.h"
#include "services/audit/chain_check.h"
#include "services/audit/event_util.h"
#include "services/audit/retention.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/status_macros.h"
#include "services/common/utf8.h"

namespace iotauth::audit {

namespace {
constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
// A Query page stops growing past this many bytes (always holding one event), so a
// page of large events stays well inside a client's message limit.
constexpr size_t kMaxPageBytes = size_t{4} << 20;
// An ingested event's time may run this far ahead of the audit server's clock.
constexpr absl::Duration kMaxIngestTimeAhead = absl::Hours(24);
}  // namespace

absl::StatusOr<EventFilter> FilterFromQuery(const v1::QueryRequest& r) {
  EventFilter f;
  if (r.has_start_time()) f.start_time = FromTimestamp(r.start_time());
  if (r.has_end_time()) f.end_time = FromTimestamp(r.end_time());
  if (f.start_time && f.end_time && *f.end_time < *f.start_time) {
    return InvalidFieldError("end_time", "end_time precedes start_time");
  }
  f.tenant_id = r.tenant_id();
  f.device_id = r.device_id();
  f.type = r.type();
  f.outcome = r.outcome();
  return f;
}

absl::StatusOr<std::unique_ptr<AuditService>> AuditService::Create(Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("audit service: no store");
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("audit service: no caller resolver");
  }
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  if (options.watch_poll_interval <= absl::ZeroDuration() ||
      options.watch_poll_interval > absl::Milliseconds(200)) {
    options.watch_poll_interval = absl::Milliseconds(200);
  }
  options.watch_batch = std::max(options.watch_batch, 1);
  options.max_ingest_batch = std::max(options.max_ingest_batch, 1);
  return std::unique_ptr<AuditService>(new AuditService(options));
}

absl::StatusOr<v1::QueryResponse> AuditService::RunQuery(const v1::QueryRequest& request) const {
  IOTAUTH_ASSIGN_OR_RETURN(EventFilter filter, FilterFromQuery(request));
  if (request.page_size() < 0) return InvalidFieldError("page_size", "negative page_size");
  const int page_size =
      request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  if (!request.page_token().empty() &&
      !absl::SimpleAtoi(request.page_token(), &filter.after_sequence)) {
    return InvalidFieldError("page_token",
                             "malformed page_token: pass next_page_token back unchanged");
  }
  IOTAUTH_ASSIGN_OR_RETURN(std::vector<v1::AuditEvent> events,
                           options_.store->Query(filter, page_size + 1));
  v1::QueryResponse response;
  bool more = static_cast<int>(events.size()) > page_size;
  if (more) events.resize(page_size);
  size_t bytes = 0;
  for (auto& e : events) {
    bytes += e.ByteSizeLong();
    if (bytes > kMaxPageBytes && response.events_size() > 0) {
      more = true;
      break;
    }
    *response.add_events() = std::move(e);
  }
  if (more) response.set_next_page_token(absl::StrCat(response.events().rbegin()->sequence()));
  return response;
}

absl::StatusOr<v1::IngestAck> AuditService::RunIngest(const v1::IngestRequest& request,
                                                      absl::string_view ingested_by) const {
  if (request.events_size() > options_.max_ingest_batch) {
    const std::string limit_text = absl::StrCat(options_.max_ingest_batch);
    return InvalidFieldError(
        "events", absl::StrCat("at most ", options_.max_ingest_batch, " events per IngestRequest"),
        {{"limit_events", limit_text}});
  }
  std::vector<v1::AuditEvent> events(request.events().begin(), request.events().end());
  for (auto& e : events) {
    if (e.event_id().empty()) return InvalidFieldError("event_id", "event without event_id");
    if (e.event_id().size() > kMaxEventIdBytes) {
      const std::string limit_text = absl::StrCat(kMaxEventIdBytes);
      return InvalidFieldError("event_id",
                               absl::StrCat("event_id longer than ", kMaxEventIdBytes, " bytes"),
                               {{"limit_bytes", limit_text}});
    }
    // Retention records are the store's own: one ingested would vouch for a start of
    // the log that was cut by hand.
    if (e.type() == v1::EVENT_TYPE_RETENTION) {
      return InvalidFieldError("type",
                               "RETENTION events are written by the audit store itself, never "
                               "ingested");
    }
    // As the sending service's PrepareForRecord did (a sender's clock may still be
    // wrong: a time over a day ahead is replaced too), then the sender's name, which
    // the sender cannot set itself.
    FixEventTimes(*options_.clock, kMaxIngestTimeAhead, &e);
    CapEventFields(&e);
    if (!ingested_by.empty()) {
      (*e.mutable_attributes())["ingested_by"] =
          std::string(TruncateUtf8(ingested_by, kMaxAuditFieldBytes));
    }
    e.clear_encoding();  // the store writes the current version, whatever was sent
  }
  IOTAUTH_ASSIGN_OR_RETURN(std::vector<AppendedEvent> appended, options_.store->Append(&events));
  v1::IngestAck ack;
  uint64_t head = 0;
  for (size_t i = 0; i < appended.size(); ++i) {
    ack.add_event_ids(events[i].event_id());
    head = std::max(head, appended[i].sequence);
  }
  if (options_.notifier != nullptr && head > 0) options_.notifier->Publish(head);
  return ack;
}

absl::StatusOr<v1::VerifyResponse> AuditService::RunVerify(const v1::VerifyRequest& request) const {
  if (request.to_sequence() != 0 && request.to_sequence() < request.from_sequence()) {
    return InvalidFieldError("to_sequence", "to_sequence precedes from_sequence");
  }
  const bool has_expected = request.expect_sequence() != 0 || !request.expect_hash().empty();
  VerifyResult r;
  if (has_expected) {
    CheckpointRecord expected;
    expected.sequence = request.expect_sequence();
    expected.head_hash = absl::AsciiStrToLower(request.expect_hash());
    if (expected.sequence == 0 || !IsWellFormedHash(expected.head_hash)) {
      return WithErrorReason(
          absl::InvalidArgumentError(
              "expect_sequence and expect_hash go together: a sequence > 0 and its 64-hex-digit "
              "hash, as GetCheckpoint returns them"),
          "INVALID_EXPECTED_CHECKPOINT");
    }
    IOTAUTH_ASSIGN_OR_RETURN(r, VerifyAgainstCheckpoint(*options_.store, request.from_sequence(),
                                                        request.to_sequence(), expected));
  } else {
    IOTAUTH_ASSIGN_OR_RETURN(
        r, options_.store->Verify(request.from_sequence(), request.to_sequence()));
  }
  // A walk from the retained start to the head also answers for the start itself.
  IOTAUTH_ASSIGN_OR_RETURN(r, CheckRetentionRecorded(*options_.store, std::move(r)));
  v1::VerifyResponse response;
  response.set_ok(r.ok);
  response.set_events_checked(r.events_checked);
  response.set_first_bad_sequence(r.first_bad_sequence);
  response.set_problem(r.problem);
  response.set_detail(r.detail);
  response.set_anchor_sequence(r.anchor_sequence);
  response.set_last_sequence(r.last_sequence);
  response.set_expected_checkpoint_matched(r.expected_matched);
  return response;
}

absl::StatusOr<v1::Checkpoint> AuditService::RunGetCheckpoint(bool create) const {
  CheckpointRecord record;
  if (create) {
    IOTAUTH_ASSIGN_OR_RETURN(record, options_.store->CreateCheckpoint(options_.clock->Now()));
  } else {
    IOTAUTH_ASSIGN_OR_RETURN(std::optional<CheckpointRecord> latest,
                             options_.store->LatestCheckpoint());
    if (!latest) {
      return WithErrorReason(
          absl::NotFoundError("no checkpoint recorded yet: create one with GetCheckpoint "
                              "{create: true} (`iotauthctl audit checkpoint --create`)"),
          "NO_CHECKPOINT");
    }
    record = *latest;
  }
  v1::Checkpoint out;
  out.set_sequence(record.sequence);
  out.set_head_hash(record.head_hash);
  SetTimestamp(record.time, out.mutable_time());
  return out;
}

grpc::Status AuditService::Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                                 v1::QueryResponse* response) {
  const Caller caller = options_.caller_resolver->Resolve(*context);
  if (absl::Status s = RequireRole(caller, Role::kReader); !s.ok()) return ToGrpcStatus(s);
  auto r = RunQuery(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status AuditService::Watch(grpc::ServerContext* context, const v1::WatchRequest* request,
                                 grpc::ServerWriter<v1::AuditEvent>* writer) {
  const Caller caller = options_.caller_resolver->Resolve(*context);
  if (absl::Status s = RequireRole(caller, Role::kReader); !s.ok()) return ToGrpcStatus(s);
  const StreamSlots::Slot slot(&watch_slots_);
  if (!slot.ok()) {
    return ToGrpcStatus(
        WithErrorReason(absl::ResourceExhaustedError(absl::StrCat(
                            "too many Watch streams open (", watch_slots_.capacity(),
                            "): cancel idle ones (a client that reconnects should cancel its old "
                            "stream first), then retry")),
                        "TOO_MANY_STREAMS"));
  }
  EventFilter filter;
  filter.tenant_id = request->tenant_id();
  filter.device_id = request->device_id();
  filter.type = request->type();
  filter.outcome = request->outcome();
  uint64_t cursor = request->after_sequence();
  if (request->from_now()) {
    auto head = options_.store->Head();
    if (!head.ok()) return ToGrpcStatus(head.status());
    cursor = head->sequence;
  }
  // Tell the client where the stream starts. Once it has these headers every
  // event recorded afterwards will be delivered, so a client (or a test) that
  // waits for them cannot miss an event it records next.
  context->AddInitialMetadata(std::string(kWatchCursorHeader), absl::StrCat(cursor));
  writer->SendInitialMetadata();
  while (!context->IsCancelled()) {
    auto head = options_.store->Head();
    if (!head.ok()) return ToGrpcStatus(head.status());
    filter.after_sequence = cursor;
    filter.max_sequence = head->sequence;
    std::vector<v1::AuditEvent> page;
    if (head->sequence > cursor) {
      auto r = options_.store->Query(filter, options_.watch_batch);
      if (!r.ok()) return ToGrpcStatus(r.status());
      page = std::move(*r);
    }
    for (const v1::AuditEvent& e : page) {
      if (!writer->Write(e)) return grpc::Status::OK;  // the client went away
    }
    if (static_cast<int>(page.size()) == options_.watch_batch) {
      cursor = page.back().sequence();
      continue;  // more backlog
    }
    // Every event up to the head has been seen (matching ones were sent).
    cursor = std::max(cursor, head->sequence);
    if (options_.notifier != nullptr) {
      options_.notifier->WaitAbove(cursor, options_.watch_poll_interval);
    } else {
      absl::SleepFor(options_.watch_poll_interval);
    }
  }
  return {grpc::StatusCode::CANCELLED, "watch cancelled"};
}

grpc::Status AuditService::Ingest(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::IngestAck, v1::IngestRequest>* stream) {
  const Caller caller = options_.caller_resolver->Resolve(*context);
  if (absl::Status s = RequireRole(caller, Role::kAuditWriter); !s.ok()) return ToGrpcStatus(s);
  v1::IngestRequest request;
  while (stream->Read(&request)) {
    auto ack = RunIngest(request, caller.principal);
    if (!ack.ok()) return ToGrpcStatus(ack.status());
    if (!stream->Write(*ack)) return grpc::Status::OK;
  }
  return grpc::Status::OK;
}

grpc::Status AuditService::Verify(grpc::ServerContext* context, const v1::VerifyRequest* request,
                                  v1::VerifyResponse* response) {
  const Caller caller = options_.caller_resolver->Resolve(*context);
  if (absl::Status s = RequireRole(caller, Role::kReader); !s.ok()) return ToGrpcStatus(s);
  auto r = RunVerify(*request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status AuditService::GetCheckpoint(grpc::ServerContext* context,
                                         const v1::GetCheckpointRequest* request,
                                         v1::Checkpoint* response) {
  const Caller caller = options_.caller_resolver->Resolve(*context);
  if (absl::Status s = RequireRole(caller, request->create() ? Role::kAdmin : Role::kReader);
      !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto r = RunGetCheckpoint(request->create());
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

}  // namespace iotauth::audit
