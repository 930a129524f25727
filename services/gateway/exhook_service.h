// EMQX ExHook v2 adapter: lets an EMQX 5.0-5.8 cluster delegate MQTT authentication
// and topic authorization to iotauth. On load it registers `client.authenticate`,
// `client.authorize` and `client.disconnected`; a connect is mapped to Authenticate
// (ClientInfo -> ConnectInfo) and answered ValuedResponse{STOP_AND_RETURN,
// bool_result}; the identity it establishes is remembered per (node, client id) so
// that each publish (type PUBLISH=0) and subscribe (SUBSCRIBE=1) can be mapped to
// Authorize. Every other hook answers EmptySuccess. Failures fail closed (false).
//
// EMQX passes only the certificate's CN and DN, not the certificate, so X.509 devices
// behind EMQX cannot be verified by iotauth; their connects are denied.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/emqx/exhook/v2/exhook.grpc.pb.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/gateway/identity_backend.h"
#include "services/gateway/session_table.h"

namespace iotauth::gateway {

namespace exhook {

// What EMQX saw at CONNECT, as an Authenticate request (tenant left to the caller).
iotauth::identity::v1::AuthenticateRequest ToAuthenticateRequest(
    const emqx::exhook::v2::ClientInfo& info);
// `ip:port`, bracketing IPv6 addresses; empty when the host is empty.
using ::iotauth::gateway::PeerAddress;
// PUBLISH -> RULE_ACTION_PUBLISH, SUBSCRIBE -> RULE_ACTION_SUBSCRIBE, anything
// else RULE_ACTION_UNSPECIFIED.
iotauth::registry::v1::RuleAction ToRuleAction(int authorize_type);
// The topic with a shared-subscription prefix (`$share/{group}/`, `$queue/`) removed.
absl::string_view RealTopic(absl::string_view topic);
// ValuedResponse{type: STOP_AND_RETURN, bool_result: allow}.
emqx::exhook::v2::ValuedResponse BoolResult(bool allow);

}  // namespace exhook

// The decision logic, free of gRPC: constructible in a unit test.
class ExHookHandler {
 public:
  struct Options {
    // Required; must outlive the handler.
    IdentityBackend* backend = nullptr;
    // Defaults to the real clock.
    const Clock* clock = nullptr;
    // Tenant hint sent with every connect (empty: resolved from the credential).
    std::string tenant_id;
    // Connected clients remembered for client.authorize (least recently used evicted).
    size_t max_sessions = 100000;
  };
  // INVALID_ARGUMENT when the backend is missing or max_sessions is 0.
  static absl::StatusOr<std::unique_ptr<ExHookHandler>> Create(Options options);

  static emqx::exhook::v2::LoadedResponse OnProviderLoaded(
      const emqx::exhook::v2::ProviderLoadedRequest& request);
  // Allow -> true (and the session is remembered for this connection, replacing any
  // other of the client id); deny or any backend error -> false, and this
  // connection's own session (if any) is forgotten.
  emqx::exhook::v2::ValuedResponse OnClientAuthenticate(
      const emqx::exhook::v2::ClientAuthenticateRequest& request,
      const GatewayCallContext& context);
  // True only for a remembered, unexpired client, on the connection that
  // authenticated, whose Authorize answer is allow.
  emqx::exhook::v2::ValuedResponse OnClientAuthorize(
      const emqx::exhook::v2::ClientAuthorizeRequest& request, const GatewayCallContext& context);
  // Forgets the client's session if it belongs to the connection that closed.
  void OnClientDisconnected(const emqx::exhook::v2::ClientDisconnectedRequest& request);

  const SessionTable& sessions() const { return sessions_; }

 private:
  explicit ExHookHandler(Options options);
  Options options_;
  const Clock* clock_;
  SessionTable sessions_;
};

// The gRPC service the lead registers as "emqx.exhook.v2.HookProvider". Callers need
// the gateway role (EMQX's ExHook client certificate).
class ExHookService final : public emqx::exhook::v2::HookProvider::CallbackService {
 public:
  struct Options {
    // Required.
    std::shared_ptr<ExHookHandler> handler;
    // Required; must outlive the service.
    const CallerResolver* caller_resolver = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<ExHookService>> Create(Options options);

  grpc::ServerUnaryReactor* OnProviderLoaded(grpc::CallbackServerContext* context,
                                             const emqx::exhook::v2::ProviderLoadedRequest* request,
                                             emqx::exhook::v2::LoadedResponse* response) override;
  grpc::ServerUnaryReactor* OnProviderUnloaded(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::ProviderUnloadedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientConnect(grpc::CallbackServerContext* context,
                                            const emqx::exhook::v2::ClientConnectRequest* request,
                                            emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientConnack(grpc::CallbackServerContext* context,
                                            const emqx::exhook::v2::ClientConnackRequest* request,
                                            emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientConnected(
      grpc::CallbackServerContext* context, const emqx::exhook::v2::ClientConnectedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientDisconnected(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::ClientDisconnectedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientAuthenticate(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::ClientAuthenticateRequest* request,
      emqx::exhook::v2::ValuedResponse* response) override;
  grpc::ServerUnaryReactor* OnClientAuthorize(
      grpc::CallbackServerContext* context, const emqx::exhook::v2::ClientAuthorizeRequest* request,
      emqx::exhook::v2::ValuedResponse* response) override;
  grpc::ServerUnaryReactor* OnClientSubscribe(
      grpc::CallbackServerContext* context, const emqx::exhook::v2::ClientSubscribeRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnClientUnsubscribe(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::ClientUnsubscribeRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionCreated(grpc::CallbackServerContext* context,
                                             const emqx::exhook::v2::SessionCreatedRequest* request,
                                             emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionSubscribed(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::SessionSubscribedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionUnsubscribed(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::SessionUnsubscribedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionResumed(grpc::CallbackServerContext* context,
                                             const emqx::exhook::v2::SessionResumedRequest* request,
                                             emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionDiscarded(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::SessionDiscardedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionTakenover(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::SessionTakenoverRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnSessionTerminated(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::SessionTerminatedRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnMessagePublish(grpc::CallbackServerContext* context,
                                             const emqx::exhook::v2::MessagePublishRequest* request,
                                             emqx::exhook::v2::ValuedResponse* response) override;
  grpc::ServerUnaryReactor* OnMessageDelivered(
      grpc::CallbackServerContext* context,
      const emqx::exhook::v2::MessageDeliveredRequest* request,
      emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnMessageDropped(grpc::CallbackServerContext* context,
                                             const emqx::exhook::v2::MessageDroppedRequest* request,
                                             emqx::exhook::v2::EmptySuccess* response) override;
  grpc::ServerUnaryReactor* OnMessageAcked(grpc::CallbackServerContext* context,
                                           const emqx::exhook::v2::MessageAckedRequest* request,
                                           emqx::exhook::v2::EmptySuccess* response) override;

 private:
  explicit ExHookService(Options options) : options_(std::move(options)) {}
  // Finishes with the caller's role check and nothing else (hooks we ignore).
  grpc::ServerUnaryReactor* Empty(grpc::CallbackServerContext* context) const;
  Options options_;
};

}  // namespace iotauth::gateway
