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

namespace {
constexpr char kServicePath[] = "/iotauth.identity.v1.IdentityService/";
}  // namespace

IdentityService::IdentityService(Options options) : options_(std::move(options)) {
  authenticate_series_ = MethodSeries("Authenticate");
  batch_series_ = MethodSeries("AuthenticateBatch");
  authorize_series_ = MethodSeries("Authorize");
}

GrpcServerMetrics::Method* IdentityService::MethodSeries(const char* name) const {
  if (options_.metrics == nullptr) return nullptr;
  return options_.metrics->Lookup(absl::StrCat(kServicePath, name), "unary");
}

std::vector<std::string> IdentityService::SelfMeteredMethods() const {
  if (options_.metrics == nullptr) return {};
  return {absl::StrCat(kServicePath, "Authenticate"),
          absl::StrCat(kServicePath, "AuthenticateBatch"), absl::StrCat(kServicePath, "Authorize")};
}

grpc::ServerUnaryReactor* IdentityService::Authenticate(grpc::CallbackServerContext* context,
                                                        const v1::AuthenticateRequest* request,
                                                        v1::AuthenticateResponse* response) {
  UnaryCallMeter meter(options_.metrics, authenticate_series_);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authenticator->Authenticate(*request, CallContext{caller.principal}, response);
  }
  const grpc::Status status = ToGrpcStatus(s);
  meter.Done(status);
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::AuthenticateBatch(
    grpc::CallbackServerContext* context, const v1::AuthenticateBatchRequest* request,
    v1::AuthenticateBatchResponse* response) {
  UnaryCallMeter meter(options_.metrics, batch_series_);
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
  const grpc::Status status = ToGrpcStatus(s);
  meter.Done(status);
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::Authorize(grpc::CallbackServerContext* context,
                                                     const v1::AuthorizeRequest* request,
                                                     v1::AuthorizeResponse* response) {
  UnaryCallMeter meter(options_.metrics, authorize_series_);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authorizer == nullptr
            ? absl::UnimplementedError("Authorize is not enabled on this server")
            : options_.authorizer->Authorize(*request, CallContext{caller.principal}, response);
  }
  const grpc::Status status = ToGrpcStatus(s);
  meter.Done(status);
  reactor->Finish(status);
  return reactor;
}

}  // namespace iotauth::identity
