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

IdentityService::IdentityService(Options options) : options_(std::move(options)) {
  SetMessageAllocatorFor_Authenticate(&authenticate_allocator_);
}

void IdentityService::AttachMetrics(GrpcServerMetrics* metrics) {
  metrics_ = metrics;
  authenticate_metrics_ =
      metrics->MeterInHandler("/iotauth.identity.v1.IdentityService/Authenticate", "unary");
  batch_metrics_ =
      metrics->MeterInHandler("/iotauth.identity.v1.IdentityService/AuthenticateBatch", "unary");
  authorize_metrics_ =
      metrics->MeterInHandler("/iotauth.identity.v1.IdentityService/Authorize", "unary");
}

namespace {

// Finishes the call and records its metrics.
void FinishMetered(grpc::ServerUnaryReactor* reactor, CallMeter* meter, const absl::Status& s) {
  const grpc::Status status = ToGrpcStatus(s);
  meter->Done(status);
  reactor->Finish(status);
}

}  // namespace

grpc::ServerUnaryReactor* IdentityService::Authenticate(grpc::CallbackServerContext* context,
                                                        const v1::AuthenticateRequest* request,
                                                        v1::AuthenticateResponse* response) {
  CallMeter meter(metrics_, authenticate_metrics_, context);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authenticator->Authenticate(*request, CallContext{caller.principal}, response);
  }
  FinishMetered(reactor, &meter, s);
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::AuthenticateBatch(
    grpc::CallbackServerContext* context, const v1::AuthenticateBatchRequest* request,
    v1::AuthenticateBatchResponse* response) {
  CallMeter meter(metrics_, batch_metrics_, context);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  const int n = request->requests_size();
  if (s.ok() && (n == 0 || n > kMaxBatchSize)) {
    const std::string limit_text = absl::StrCat(kMaxBatchSize);
    s = InvalidFieldError("requests",
                          absl::StrCat("requests must hold 1 to ", kMaxBatchSize, " entries"),
                          {{"limit_entries", limit_text}});
  }
  for (int i = 0; s.ok() && i < n; ++i) {
    absl::Status v = options_.authenticator->ValidateRequest(request->requests(i));
    if (!v.ok()) s = WithMessagePrefix(v, absl::StrCat("requests[", i, "]."));
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
  FinishMetered(reactor, &meter, s);
  return reactor;
}

grpc::ServerUnaryReactor* IdentityService::Authorize(grpc::CallbackServerContext* context,
                                                     const v1::AuthorizeRequest* request,
                                                     v1::AuthorizeResponse* response) {
  CallMeter meter(metrics_, authorize_metrics_, context);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    s = options_.authorizer == nullptr
            ? WithErrorReason(absl::UnimplementedError("Authorize is not enabled on this server"),
                              "AUTHORIZE_DISABLED")
            : options_.authorizer->Authorize(*request, CallContext{caller.principal}, response);
  }
  FinishMetered(reactor, &meter, s);
  return reactor;
}

}  // namespace iotauth::identity
