// IdentityService: the gRPC adapter over Authenticator (callback API: the handler
// runs on gRPC's thread, decides inline and finishes; no locks besides the directory's
// shard reader locks, no allocation beyond the response). Callers need the gateway
// role (admins have every role). The lead registers it on the server.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "services/common/arena_message_allocator.h"
#include "services/common/caller.h"
#include "services/common/grpc_metrics.h"
#include "services/identity/authenticator.h"
#include "services/identity/authorizer.h"

namespace iotauth::identity {

class IdentityService final : public iotauth::identity::v1::IdentityService::CallbackService {
 public:
  struct Options {
    // Required.
    std::shared_ptr<Authenticator> authenticator;
    // Required; must outlive the service.
    const CallerResolver* caller_resolver = nullptr;
    // Optional: without it Authorize answers UNIMPLEMENTED.
    std::shared_ptr<Authorizer> authorizer;
  };
  // INVALID_ARGUMENT when a required option is missing.
  static absl::StatusOr<std::unique_ptr<IdentityService>> Create(Options options);

  // Allow and deny are OK responses; INVALID_ARGUMENT names a malformed field;
  // UNAUTHENTICATED / PERMISSION_DENIED when the caller lacks the gateway role.
  grpc::ServerUnaryReactor* Authenticate(
      grpc::CallbackServerContext* context,
      const iotauth::identity::v1::AuthenticateRequest* request,
      iotauth::identity::v1::AuthenticateResponse* response) override;

  // Each entry as Authenticate; INVALID_ARGUMENT for an empty batch, more than
  // kMaxBatchSize entries or any malformed entry (named by index).
  static constexpr int kMaxBatchSize = 1000;
  grpc::ServerUnaryReactor* AuthenticateBatch(
      grpc::CallbackServerContext* context,
      const iotauth::identity::v1::AuthenticateBatchRequest* request,
      iotauth::identity::v1::AuthenticateBatchResponse* response) override;

  // Authenticate, AuthenticateBatch and Authorize record their gRPC server metrics
  // in the handler instead of through the interceptor (the hot path; see
  // grpc_metrics.h). Call before serving starts; without it nothing is recorded
  // here (the interceptor does it).
  void AttachMetrics(GrpcServerMetrics* metrics);

  // Topic authorization (same role rule); UNIMPLEMENTED when no authorizer is set.
  grpc::ServerUnaryReactor* Authorize(grpc::CallbackServerContext* context,
                                      const iotauth::identity::v1::AuthorizeRequest* request,
                                      iotauth::identity::v1::AuthorizeResponse* response) override;

 private:
  explicit IdentityService(Options options);
  Options options_;
  // Authenticate's request and response on a pooled arena (the hot path).
  ArenaMessageAllocator<iotauth::identity::v1::AuthenticateRequest,
                        iotauth::identity::v1::AuthenticateResponse>
      authenticate_allocator_;
  GrpcServerMetrics* metrics_ = nullptr;
  GrpcServerMetrics::Method* authenticate_metrics_ = nullptr;
  GrpcServerMetrics::Method* batch_metrics_ = nullptr;
  GrpcServerMetrics::Method* authorize_metrics_ = nullptr;
};

}  // namespace iotauth::identity
