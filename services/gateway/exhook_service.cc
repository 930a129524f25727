#include "services/gateway/exhook_service.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "services/common/grpc_status.h"

namespace iotauth::gateway {

namespace ev2 = ::emqx::exhook::v2;
namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

namespace exhook {

namespace {
iv1::Protocol ToProtocol(absl::string_view protocol) {
  const std::string p = absl::AsciiStrToLower(protocol);
  if (p == "mqtt" || p == "mqtt-sn") return iv1::PROTOCOL_MQTT;
  if (p == "coap" || p == "lwm2m") return iv1::PROTOCOL_COAP;
  if (p == "http") return iv1::PROTOCOL_HTTP;
  return iv1::PROTOCOL_UNSPECIFIED;
}
}  // namespace

iv1::AuthenticateRequest ToAuthenticateRequest(const ev2::ClientInfo& info) {
  iv1::AuthenticateRequest req;
  iv1::ConnectInfo* c = req.mutable_connect();
  c->set_client_id(info.clientid());
  c->set_username(info.username());
  c->set_password(info.password());
  c->set_peer_address(PeerAddress(info.peerhost(), info.peerport()));
  if (info.sockport() != 0) c->set_listener(absl::StrCat("emqx:", info.sockport()));
  c->set_protocol(ToProtocol(info.protocol()));
  return req;
}

rv1::RuleAction ToRuleAction(int authorize_type) {
  switch (authorize_type) {
    case ev2::ClientAuthorizeRequest::PUBLISH:
      return rv1::RULE_ACTION_PUBLISH;
    case ev2::ClientAuthorizeRequest::SUBSCRIBE:
      return rv1::RULE_ACTION_SUBSCRIBE;
    default:
      return rv1::RULE_ACTION_UNSPECIFIED;
  }
}

absl::string_view RealTopic(absl::string_view topic) {
  if (absl::ConsumePrefix(&topic, "$queue/")) return topic;
  absl::string_view rest = topic;
  if (absl::ConsumePrefix(&rest, "$share/")) {
    const size_t slash = rest.find('/');
    if (slash != absl::string_view::npos) return rest.substr(slash + 1);
  }
  return topic;
}

ev2::ValuedResponse BoolResult(bool allow) {
  ev2::ValuedResponse r;
  r.set_type(ev2::ValuedResponse::STOP_AND_RETURN);
  r.set_bool_result(allow);
  return r;
}

}  // namespace exhook

absl::StatusOr<std::unique_ptr<ExHookHandler>> ExHookHandler::Create(Options options) {
  if (options.backend == nullptr) {
    return absl::InvalidArgumentError("ExHookHandler needs an identity backend");
  }
  if (options.max_sessions == 0) {
    return absl::InvalidArgumentError("ExHookHandler max_sessions must be positive");
  }
  return std::unique_ptr<ExHookHandler>(new ExHookHandler(std::move(options)));
}

ExHookHandler::ExHookHandler(Options options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &RealClock::Get()),
      sessions_(options_.max_sessions) {}

ev2::LoadedResponse ExHookHandler::OnProviderLoaded(const ev2::ProviderLoadedRequest& /*unused*/) {
  ev2::LoadedResponse r;
  for (const char* name : {"client.authenticate", "client.authorize", "client.disconnected"}) {
    r.add_hooks()->set_name(name);
  }
  return r;
}

ev2::ValuedResponse ExHookHandler::OnClientAuthenticate(
    const ev2::ClientAuthenticateRequest& request, const GatewayCallContext& context) {
  const ev2::ClientInfo& info = request.clientinfo();
  const std::string& node = info.node();
  iv1::AuthenticateRequest req = exhook::ToAuthenticateRequest(info);
  req.set_tenant_id(options_.tenant_id);
  absl::StatusOr<iv1::AuthenticateResponse> resp = options_.backend->Authenticate(req, context);
  const std::string connection = exhook::PeerAddress(info.peerhost(), info.peerport());
  if (!resp.ok() || resp->decision() != iv1::DECISION_ALLOW) {
    // A failed re-authentication ends this connection's own session. Another
    // connection's session stays: EMQX keeps a connected client up when someone else
    // fails to connect with its client id, and a stranger who knows the id must not
    // be able to cut the device off.
    // EMQX before 5.4 sends no peerport: then "this connection" cannot be told from
    // another client behind the same address, and no session is ended.
    if (info.peerport() != 0) sessions_.RemoveIfConnection(node, info.clientid(), connection);
    return exhook::BoolResult(false);
  }
  Session s;
  s.connection = connection;
  s.identity = resp->identity();
  s.username = info.username();
  // ClientInfo carries no certificate, so iotauth never verified info.cn(): a
  // `${cert_cn}` rule must not resolve to a name the device may have chosen (it
  // resolves to nothing, and its allow rules are dropped).
  s.cert_cn.clear();
  if (resp->has_credential_expires_at()) {
    s.expires_at = absl::FromUnixSeconds(resp->credential_expires_at().seconds()) +
                   absl::Nanoseconds(resp->credential_expires_at().nanos());
  }
  sessions_.Put(node, info.clientid(), std::move(s));
  return exhook::BoolResult(true);
}

ev2::ValuedResponse ExHookHandler::OnClientAuthorize(const ev2::ClientAuthorizeRequest& request,
                                                     const GatewayCallContext& context) {
  const ev2::ClientInfo& info = request.clientinfo();
  const rv1::RuleAction action = exhook::ToRuleAction(request.type());
  if (action == rv1::RULE_ACTION_UNSPECIFIED) return exhook::BoolResult(false);
  std::optional<Session> s = sessions_.Get(info.node(), info.clientid(), clock_->Now());
  // Only the connection that authenticated: an older one being taken over is not.
  if (!s.has_value() || s->connection != exhook::PeerAddress(info.peerhost(), info.peerport())) {
    return exhook::BoolResult(false);
  }
  iv1::AuthorizeRequest req;
  *req.mutable_identity() = s->identity;
  req.set_action(action);
  // `$share/{group}/` and `$queue/` name a shared subscription; a publish to such a
  // topic publishes to that literal topic, which is what is checked.
  req.set_topic(action == rv1::RULE_ACTION_SUBSCRIBE
                    ? std::string(exhook::RealTopic(request.topic()))
                    : request.topic());
  req.set_client_id(info.clientid());
  req.set_username(s->username);
  req.set_cert_cn(s->cert_cn);
  absl::StatusOr<iv1::AuthorizeResponse> resp = options_.backend->Authorize(req, context);
  return exhook::BoolResult(resp.ok() && resp->decision() == iv1::DECISION_ALLOW);
}

void ExHookHandler::OnClientDisconnected(const ev2::ClientDisconnectedRequest& request) {
  // Only this connection's session: on a takeover (reason "takenover" or
  // "discarded") the old connection's disconnect arrives after the new one
  // authenticated, and must not end the new session.
  const ev2::ClientInfo& info = request.clientinfo();
  sessions_.RemoveIfConnection(info.node(), info.clientid(),
                               exhook::PeerAddress(info.peerhost(), info.peerport()));
}

// ---- gRPC adapter ----

absl::StatusOr<std::unique_ptr<ExHookService>> ExHookService::Create(Options options) {
  if (options.handler == nullptr) {
    return absl::InvalidArgumentError("ExHookService needs a handler");
  }
  if (options.caller_resolver == nullptr) {
    return absl::InvalidArgumentError("ExHookService needs a caller resolver");
  }
  return std::unique_ptr<ExHookService>(new ExHookService(std::move(options)));
}

grpc::ServerUnaryReactor* ExHookService::Empty(grpc::CallbackServerContext* context) const {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  reactor->Finish(ToGrpcStatus(RequireRole(caller, Role::kGateway)));
  return reactor;
}

grpc::ServerUnaryReactor* ExHookService::OnProviderLoaded(grpc::CallbackServerContext* context,
                                                          const ev2::ProviderLoadedRequest* request,
                                                          ev2::LoadedResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) *response = options_.handler->OnProviderLoaded(*request);
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* ExHookService::OnClientAuthenticate(
    grpc::CallbackServerContext* context, const ev2::ClientAuthenticateRequest* request,
    ev2::ValuedResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) {
    *response = options_.handler->OnClientAuthenticate(*request, {caller.principal});
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* ExHookService::OnClientAuthorize(
    grpc::CallbackServerContext* context, const ev2::ClientAuthorizeRequest* request,
    ev2::ValuedResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) *response = options_.handler->OnClientAuthorize(*request, {caller.principal});
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* ExHookService::OnClientDisconnected(
    grpc::CallbackServerContext* context, const ev2::ClientDisconnectedRequest* request,
    ev2::EmptySuccess* /*unused*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const Caller caller = options_.caller_resolver->Resolve(*context);
  absl::Status s = RequireRole(caller, Role::kGateway);
  if (s.ok()) options_.handler->OnClientDisconnected(*request);
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* ExHookService::OnMessagePublish(
    grpc::CallbackServerContext* context, const ev2::MessagePublishRequest* /*unused*/,
    ev2::ValuedResponse* response) {
  // Not registered on load; if EMQX calls it anyway, leave the message untouched.
  response->set_type(ev2::ValuedResponse::IGNORE);
  return Empty(context);
}

grpc::ServerUnaryReactor* ExHookService::OnProviderUnloaded(
    grpc::CallbackServerContext* context, const ev2::ProviderUnloadedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnClientConnect(
    grpc::CallbackServerContext* context, const ev2::ClientConnectRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnClientConnack(
    grpc::CallbackServerContext* context, const ev2::ClientConnackRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnClientConnected(
    grpc::CallbackServerContext* context, const ev2::ClientConnectedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnClientSubscribe(
    grpc::CallbackServerContext* context, const ev2::ClientSubscribeRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnClientUnsubscribe(
    grpc::CallbackServerContext* context, const ev2::ClientUnsubscribeRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionCreated(
    grpc::CallbackServerContext* context, const ev2::SessionCreatedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionSubscribed(
    grpc::CallbackServerContext* context, const ev2::SessionSubscribedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionUnsubscribed(
    grpc::CallbackServerContext* context, const ev2::SessionUnsubscribedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionResumed(
    grpc::CallbackServerContext* context, const ev2::SessionResumedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionDiscarded(
    grpc::CallbackServerContext* context, const ev2::SessionDiscardedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionTakenover(
    grpc::CallbackServerContext* context, const ev2::SessionTakenoverRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnSessionTerminated(
    grpc::CallbackServerContext* context, const ev2::SessionTerminatedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnMessageDelivered(
    grpc::CallbackServerContext* context, const ev2::MessageDeliveredRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnMessageDropped(
    grpc::CallbackServerContext* context, const ev2::MessageDroppedRequest* /*unused*/,
    ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}
grpc::ServerUnaryReactor* ExHookService::OnMessageAcked(grpc::CallbackServerContext* context,
                                                        const ev2::MessageAckedRequest* /*unused*/,
                                                        ev2::EmptySuccess* /*unused*/) {
  return Empty(context);
}

}  // namespace iotauth::gateway
