// The iotauth.audit.v1.AuditLog gRPC service: Query, Watch (backlog then live
// tail), Ingest (split mode), Verify and GetCheckpoint over an AuditStore. The
// handlers are thin adapters: they resolve the caller, check its role and call the
// Run* methods, which unit tests can also call directly.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.grpc.pb.h"
#include "services/audit/audit_store.h"
#include "services/audit/commit_notifier.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/common/stream_slots.h"

namespace iotauth::audit {

// Response header of Watch: the sequence the stream starts after. It is sent as
// soon as that starting point is fixed (see WatchRequest.from_now).
inline constexpr absl::string_view kWatchCursorHeader = "iotauth-watch-cursor";

class AuditService final : public iotauth::audit::v1::AuditLog::Service {
 public:
  struct Options {
    AuditStore* store = nullptr;                      // required; outlives the service
    const CallerResolver* caller_resolver = nullptr;  // required
    // Commits published here wake Watch streams at once (the pipeline's notifier).
    // Ingest publishes its own commits here too. Optional: without it Watch polls.
    CommitNotifier* notifier = nullptr;
    const Clock* clock = nullptr;  // checkpoint times; default RealClock
    // Watch checks for cancellation (and polls the store without a notifier) at
    // least this often.
    absl::Duration watch_poll_interval = absl::Milliseconds(200);
    int watch_batch = 256;
    // Largest IngestRequest accepted (events).
    int max_ingest_batch = 1000;
    // Watch streams open at once; more are refused with RESOURCE_EXHAUSTED (each
    // holds a server thread while open; see stream_slots.h).
    int max_watch_streams = 256;
  };

  // INVALID_ARGUMENT when a required collaborator is missing.
  static absl::StatusOr<std::unique_ptr<AuditService>> Create(Options options);

  // gRPC handlers. Reads need Role::kReader, Ingest Role::kGateway, creating a
  // checkpoint Role::kAdmin.
  grpc::Status Query(grpc::ServerContext* context, const iotauth::audit::v1::QueryRequest* request,
                     iotauth::audit::v1::QueryResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const iotauth::audit::v1::WatchRequest* request,
                     grpc::ServerWriter<iotauth::audit::v1::AuditEvent>* writer) override;
  grpc::Status Ingest(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<iotauth::audit::v1::IngestAck,
                                               iotauth::audit::v1::IngestRequest>* stream) override;
  grpc::Status Verify(grpc::ServerContext* context,
                      const iotauth::audit::v1::VerifyRequest* request,
                      iotauth::audit::v1::VerifyResponse* response) override;
  grpc::Status GetCheckpoint(grpc::ServerContext* context,
                             const iotauth::audit::v1::GetCheckpointRequest* request,
                             iotauth::audit::v1::Checkpoint* response) override;

  // The logic behind the handlers (no role checks).
  absl::StatusOr<iotauth::audit::v1::QueryResponse> RunQuery(
      const iotauth::audit::v1::QueryRequest& request) const;
  // `ingested_by`: the principal sending the events, stamped on each (attribute
  // "ingested_by"), so a record says which service's credential wrote it.
  absl::StatusOr<iotauth::audit::v1::IngestAck> RunIngest(
      const iotauth::audit::v1::IngestRequest& request, absl::string_view ingested_by = "") const;
  absl::StatusOr<iotauth::audit::v1::VerifyResponse> RunVerify(
      const iotauth::audit::v1::VerifyRequest& request) const;
  absl::StatusOr<iotauth::audit::v1::Checkpoint> RunGetCheckpoint(bool create) const;

 private:
  explicit AuditService(const Options& options)
      : options_(options), watch_slots_(options.max_watch_streams) {}
  const Options options_;
  StreamSlots watch_slots_;
};

// QueryRequest filters as an EventFilter (page token and size excluded).
// INVALID_ARGUMENT when end_time precedes start_time.
absl::StatusOr<EventFilter> FilterFromQuery(const iotauth::audit::v1::QueryRequest& request);

}  // namespace iotauth::audit
