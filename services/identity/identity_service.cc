#include "services/identity/identity_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"

namespace iotauth::identity {

absl::StatusOr<std::unique_ptr<IdentityService>> IdentityService::Create(Options options) {
  if (options.authenticator == nullptr) {
    return absl::InvalidArgumentError("IdentityService needs an authenticator");
  }
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("IdentityService needs a caller resolver");
  }
  return std::unique_ptr<IdentityService>(new IdentityService(std::move(options)));
}

grpc::ServerUnaryReactor* IdentityService::Authenticate(grpc::CallbackServerContext* context,
                                                        const v1::AuthenticateRequest* request,
                                                        v1::AuthenticateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authenticator->Authenticate(*request, CallContext{caller.principal}, response);
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::AuthenticateBatch(
    grpc::CallbackServerContext* context, const v1::AuthenticateBatchRequest* request,
    v1::AuthenticateBatchResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  const int n = request->requests_size();
  if (s.ok() && (n == 0 || n > kMaxBatchSize)) {
    s = absl::InvalidArgumentError(
        absl::StrCat("requests must hold 1 to ", kMaxBatchSize, " entries"));
  }
  for (int i = 0; s.ok() && i < n; ++i) {
    absl::Status v = options_.authenticator->ValidateRequest(request->requests(i));
    if (!v.ok()) s = absl::InvalidArgumentError(absl::StrCat("requests[", i, "].", v.message()));
  }
  if (s.ok()) {
    response->mutable_responses()->Reserve(n);
    const CallContext call{caller.principal};
    for (int i = 0; s.ok() && i < n; ++i) {
      s = options_.authenticator->Authenticate(request->requests(i), call,
                                               response->add_responses());
    }
  }
  if (!s.ok()) response->Clear();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::Authorize(grpc::CallbackServerContext* context,
                                                     const v1::AuthorizeRequest* request,
                                                     v1::AuthorizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authorizer == nullptr
            ? absl::UnimplementedError("Authorize is not enabled on this server")
            : options_.authorizer->Authorize(*request, CallContext{caller.principal}, response);
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace iotauth::identity
