#include "services/gateway/ext_authz_service.h"

#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"
#include "services/common/percent_encoding.h"

namespace iotauth::gateway {

namespace auth = ::envoy::service::auth::v3;
namespace core = ::envoy::config::core::v3;
namespace iv1 = ::iotauth::identity::v1;

namespace ext_authz {

namespace {}  // namespace

absl::StatusOr<std::string> UrlDecode(absl::string_view in) { return PercentDecode(in); }

std::string ReasonToken(iv1::DenyReason reason) {
  std::string name = iv1::DenyReason_Name(reason);
  absl::string_view v(name);
  if (!absl::ConsumePrefix(&v, "DENY_REASON_") || v.empty()) return "unspecified";
  return absl::AsciiStrToLower(v);
}

int DenyHttpStatus(iv1::DenyReason reason) {
  switch (reason) {
    case iv1::DENY_REASON_RATE_LIMITED:
      return 429;
    case iv1::DENY_REASON_DEVICE_DISABLED:
    case iv1::DENY_REASON_PENDING_APPROVAL:
    case iv1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED:
    case iv1::DENY_REASON_WEAK_ALGORITHM:
      return 403;
    case iv1::DENY_REASON_INTERNAL:
      return 503;
    default:
      return 401;
  }
}

}  // namespace ext_authz

namespace {

// google.rpc.Code values.
constexpr int kRpcPermissionDenied = 7;
constexpr int kRpcResourceExhausted = 8;
constexpr int kRpcUnavailable = 14;
constexpr int kRpcUnauthenticated = 16;

// The request header `name` (lower case), from the map or the raw header list.
const std::string* FindHeader(const auth::AttributeContext::HttpRequest& http,
                              const std::string& name) {
  auto it = http.headers().find(name);
  if (it != http.headers().end()) return &it->second;
  for (const core::HeaderValue& h : http.header_map().headers()) {
    if (absl::EqualsIgnoreCase(h.key(), name)) {
      return h.raw_value().empty() ? &h.value() : &h.raw_value();
    }
  }
  return nullptr;
}

void AddHeader(google::protobuf::RepeatedPtrField<core::HeaderValueOption>* out,
               absl::string_view key, absl::string_view value) {
  core::HeaderValueOption* h = out->Add();
  h->mutable_header()->set_key(std::string(key));
  h->mutable_header()->set_value(std::string(value));
  // Replace anything the client sent under the same name.
  h->set_append_action(core::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExtAuthzHandler>> ExtAuthzHandler::Create(Options options) {
  if (options.backend == nullptr) {
    return absl::InvalidArgumentError("ExtAuthzHandler needs an identity backend");
  }
  return std::unique_ptr<ExtAuthzHandler>(new ExtAuthzHandler(std::move(options)));
}

absl::StatusOr<iv1::AuthenticateRequest> ExtAuthzHandler::ToAuthenticateRequest(
    const auth::CheckRequest& request, iv1::DenyReason* reason) const {
  const auth::AttributeContext& attrs = request.attributes();
  const auth::AttributeContext::HttpRequest& http = attrs.request().http();
  iv1::AuthenticateRequest req;
  auto tenant = attrs.context_extensions().find("iotauth_tenant");
  req.set_tenant_id(tenant != attrs.context_extensions().end() ? tenant->second
                                                               : options_.tenant_id);
  if (!http.id().empty() && http.id().size() <= 128) req.set_request_id(http.id());
  // The device's address, for the per-source failure limiter and the audit event.
  const auto& source = attrs.source().address().socket_address();
  const std::string peer = PeerAddress(source.address(), source.port_value());
  if (peer.size() <= 256) req.mutable_credential()->set_peer_address(peer);

  // An explicit token wins over a certificate the TLS layer happened to see.
  const std::string* authz = FindHeader(http, "authorization");
  if (authz != nullptr && absl::StartsWith(*authz, "SharedAccessSignature ")) {
    req.mutable_credential()->mutable_sas()->set_token(*authz);
    return req;
  }
  const std::string& cert = attrs.source().certificate();
  if (!cert.empty()) {
    if (cert.size() > options_.max_certificate_bytes) {
      *reason = iv1::DENY_REASON_MALFORMED;
      return absl::InvalidArgumentError("source certificate too large");
    }
    absl::StatusOr<std::string> pem = ext_authz::UrlDecode(cert);
    if (!pem.ok()) {
      *reason = iv1::DENY_REASON_MALFORMED;
      return absl::InvalidArgumentError(
          absl::StrCat("source certificate: ", pem.status().message()));
    }
    req.mutable_credential()->mutable_x509()->add_chain(*std::move(pem));
    return req;
  }
  *reason = iv1::DENY_REASON_NO_CREDENTIAL;
  return absl::InvalidArgumentError("no SAS token and no client certificate");
}

auth::CheckResponse ExtAuthzHandler::Deny(iv1::DenyReason reason,
                                          absl::string_view token_override) const {
  const int http = ext_authz::DenyHttpStatus(reason);
  const std::string token =
      token_override.empty() ? ext_authz::ReasonToken(reason) : std::string(token_override);
  auth::CheckResponse r;
  switch (http) {
    case 429:
      r.mutable_status()->set_code(kRpcResourceExhausted);
      break;
    case 403:
      r.mutable_status()->set_code(kRpcPermissionDenied);
      break;
    case 503:
      r.mutable_status()->set_code(kRpcUnavailable);
      break;
    default:
      r.mutable_status()->set_code(kRpcUnauthenticated);
  }
  r.mutable_status()->set_message(token);
  auth::DeniedHttpResponse* d = r.mutable_denied_response();
  d->mutable_status()->set_code(static_cast<envoy::type::v3::StatusCode>(http));
  AddHeader(d->mutable_headers(), options_.reason_header, token);
  if (http == 401) AddHeader(d->mutable_headers(), "www-authenticate", "SharedAccessSignature");
  d->set_body(token);
  return r;
}

auth::CheckResponse ExtAuthzHandler::Allow(const iv1::AuthenticateResponse& resp) const {
  auth::CheckResponse r;
  r.mutable_status()->set_code(0);
  auth::OkHttpResponse* ok = r.mutable_ok_response();
  const iv1::Identity& id = resp.identity();
  AddHeader(ok->mutable_headers(), options_.tenant_header, id.tenant_id());
  AddHeader(ok->mutable_headers(), options_.device_header, id.device_id());
  if (!id.product_key().empty()) {
    AddHeader(ok->mutable_headers(), options_.product_header, id.product_key());
  } else {
    ok->add_headers_to_remove(options_.product_header);
  }
  if (!id.module_id().empty()) {
    AddHeader(ok->mutable_headers(), options_.module_header, id.module_id());
  } else {
    ok->add_headers_to_remove(options_.module_header);
  }
  if (options_.strip_authorization) ok->add_headers_to_remove("authorization");
  return r;
}

auth::CheckResponse ExtAuthzHandler::Check(const auth::CheckRequest& request,
                                           const GatewayCallContext& context) const {
  iv1::DenyReason reason = iv1::DENY_REASON_UNSPECIFIED;
  absl::StatusOr<iv1::AuthenticateRequest> req = ToAuthenticateRequest(request, &reason);
  if (!req.ok()) return Deny(reason);
  absl::StatusOr<iv1::AuthenticateResponse> resp = options_.backend->Authenticate(*req, context);
  if (!resp.ok()) {
    if (resp.status().code() == absl::StatusCode::kInvalidArgument) {
      return Deny(iv1::DENY_REASON_MALFORMED);
    }
    // iotauth cannot decide now: fail closed with a 503 the client may retry. With a
    // stable reason (AUDIT_UNWRITABLE: the audit log cannot record the decision) the
    // token names it, so the edge's logs tell a refusal from a fault.
    const std::string reason = ErrorReason(resp.status());
    auth::CheckResponse r = Deny(iv1::DENY_REASON_INTERNAL, absl::AsciiStrToLower(reason));
    AddHeader(r.mutable_denied_response()->mutable_headers(), "retry-after", "1");
    return r;
  }
  if (resp->decision() != iv1::DECISION_ALLOW) {
    return Deny(resp->deny_reason() == iv1::DENY_REASON_UNSPECIFIED ? iv1::DENY_REASON_INTERNAL
                                                                    : resp->deny_reason());
  }
  return Allow(*resp);
}

absl::StatusOr<std::unique_ptr<ExtAuthzService>> ExtAuthzService::Create(Options options) {
  if (options.handler == nullptr) {
    return absl::InvalidArgumentError("ExtAuthzService needs a handler");
  }
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("ExtAuthzService needs a caller resolver");
  }
  return std::unique_ptr<ExtAuthzService>(new ExtAuthzService(std::move(options)));
}

grpc::ServerUnaryReactor* ExtAuthzService::Check(grpc::CallbackServerContext* context,
                                                 const auth::CheckRequest* request,
                                                 auth::CheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) *response = options_.handler->Check(*request, {caller.principal});
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace iotauth::gateway
