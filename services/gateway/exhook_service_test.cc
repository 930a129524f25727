#include "services/gateway/exhook_service.h"

#include <grpcpp/grpcpp.h>

#include <memory>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/gateway/fake_identity_backend.h"

namespace iotauth::gateway {
namespace {

namespace ev2 = ::emqx::exhook::v2;
namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

ev2::ClientInfo Client() {
  ev2::ClientInfo c;
  c.set_node("emqx@10.0.0.1");
  c.set_clientid("sensor-1");
  c.set_username("hub.example.net/sensor-1/?api-version=2021-04-12");
  c.set_password("SharedAccessSignature sr=x&sig=y&se=1");
  c.set_peerhost("203.0.113.7");
  c.set_peerport(50000);
  c.set_sockport(8883);
  c.set_protocol("mqtt");
  c.set_cn("sensor-1");
  c.set_is_superuser(true);  // never trusted
  return c;
}

iv1::AuthenticateResponse Allowed(absl::Time expires = absl::InfiniteFuture()) {
  iv1::AuthenticateResponse r;
  r.set_decision(iv1::DECISION_ALLOW);
  r.mutable_identity()->set_tenant_id("acme");
  r.mutable_identity()->set_product_key("pk");
  r.mutable_identity()->set_device_id("sensor-1");
  if (expires != absl::InfiniteFuture()) {
    r.mutable_credential_expires_at()->set_seconds(absl::ToUnixSeconds(expires));
  }
  return r;
}

class ExHookHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ExHookHandler::Options o;
    o.backend = &backend_;
    o.clock = &clock_;
    o.tenant_id = "acme";
    o.max_sessions = 16;
    auto h = ExHookHandler::Create(o);
    ASSERT_TRUE(h.ok()) << h.status();
    handler_ = *std::move(h);
  }

  ev2::ValuedResponse Connect(const ev2::ClientInfo& c) {
    ev2::ClientAuthenticateRequest req;
    *req.mutable_clientinfo() = c;
    req.set_result(true);
    return handler_->OnClientAuthenticate(req, {"emqx"});
  }
  ev2::ValuedResponse Authorize(const ev2::ClientInfo& c, int type, const std::string& topic) {
    ev2::ClientAuthorizeRequest req;
    *req.mutable_clientinfo() = c;
    req.set_type(static_cast<ev2::ClientAuthorizeRequest::AuthorizeReqType>(type));
    req.set_topic(topic);
    return handler_->OnClientAuthorize(req, {"emqx"});
  }

  FakeClock clock_;
  FakeIdentityBackend backend_;
  std::unique_ptr<ExHookHandler> handler_;
};

TEST(ExHookMappingTest, ClientInfoToAuthenticateRequest) {
  iv1::AuthenticateRequest req = exhook::ToAuthenticateRequest(Client());
  ASSERT_TRUE(req.has_connect());
  EXPECT_EQ(req.connect().client_id(), "sensor-1");
  EXPECT_EQ(req.connect().username(), "hub.example.net/sensor-1/?api-version=2021-04-12");
  EXPECT_EQ(req.connect().password(), "SharedAccessSignature sr=x&sig=y&se=1");
  EXPECT_EQ(req.connect().peer_address(), "203.0.113.7:50000");
  EXPECT_EQ(req.connect().listener(), "emqx:8883");
  EXPECT_EQ(req.connect().protocol(), iv1::PROTOCOL_MQTT);
  EXPECT_EQ(req.connect().peer_certificate_chain_size(), 0);
}

TEST(ExHookMappingTest, PeerAddress) {
  EXPECT_EQ(exhook::PeerAddress("10.1.2.3", 1883), "10.1.2.3:1883");
  EXPECT_EQ(exhook::PeerAddress("2001:db8::1", 1883), "[2001:db8::1]:1883");
  EXPECT_EQ(exhook::PeerAddress("", 1883), "");
}

TEST(ExHookMappingTest, AuthorizeTypes) {
  EXPECT_EQ(exhook::ToRuleAction(0), rv1::RULE_ACTION_PUBLISH);
  EXPECT_EQ(exhook::ToRuleAction(1), rv1::RULE_ACTION_SUBSCRIBE);
  EXPECT_EQ(exhook::ToRuleAction(2), rv1::RULE_ACTION_UNSPECIFIED);
  EXPECT_EQ(exhook::ToRuleAction(-1), rv1::RULE_ACTION_UNSPECIFIED);
}

TEST(ExHookMappingTest, RealTopic) {
  EXPECT_EQ(exhook::RealTopic("$share/g1/devices/a/#"), "devices/a/#");
  EXPECT_EQ(exhook::RealTopic("$queue/devices/a"), "devices/a");
  EXPECT_EQ(exhook::RealTopic("devices/a"), "devices/a");
  EXPECT_EQ(exhook::RealTopic("$share/nogroup"), "$share/nogroup");
}

TEST(ExHookMappingTest, BoolResultIsStopAndReturn) {
  ev2::ValuedResponse yes = exhook::BoolResult(true);
  EXPECT_EQ(yes.type(), ev2::ValuedResponse::STOP_AND_RETURN);
  EXPECT_EQ(yes.value_case(), ev2::ValuedResponse::kBoolResult);
  EXPECT_TRUE(yes.bool_result());
  ev2::ValuedResponse no = exhook::BoolResult(false);
  EXPECT_EQ(no.type(), ev2::ValuedResponse::STOP_AND_RETURN);
  EXPECT_EQ(no.value_case(), ev2::ValuedResponse::kBoolResult);
  EXPECT_FALSE(no.bool_result());
  // The wire form EMQX decodes: field 1 varint 2, field 3 varint.
  EXPECT_EQ(yes.SerializeAsString(), std::string("\x08\x02\x18\x01", 4));
  EXPECT_EQ(no.SerializeAsString(), std::string("\x08\x02\x18\x00", 4));
}

TEST(ExHookMappingTest, ClientInfoFieldNumbers) {
  // ClientInfo{clientid=2, password=4, peerport=13} as EMQX encodes them.
  const std::string wire = std::string(
      "\x12\x01"
      "c"
      "\x22\x02"
      "pw"
      "\x68\x05",
      9);
  ev2::ClientInfo c;
  ASSERT_TRUE(c.ParseFromString(wire));
  EXPECT_EQ(c.clientid(), "c");
  EXPECT_EQ(c.password(), "pw");
  EXPECT_EQ(c.peerport(), 5u);
}

TEST_F(ExHookHandlerTest, LoadedRegistersAuthHooks) {
  ev2::LoadedResponse r = handler_->OnProviderLoaded({});
  std::vector<std::string> names;
  for (const auto& h : r.hooks()) names.push_back(h.name());
  EXPECT_EQ(names, (std::vector<std::string>{"client.authenticate", "client.authorize",
                                             "client.disconnected"}));
}

TEST_F(ExHookHandlerTest, AllowIsTrueAndSendsTenantHint) {
  backend_.authenticate_response = Allowed();
  ev2::ValuedResponse r = Connect(Client());
  EXPECT_EQ(r.type(), ev2::ValuedResponse::STOP_AND_RETURN);
  EXPECT_TRUE(r.bool_result());
  ASSERT_EQ(backend_.authenticate_requests.size(), 1u);
  EXPECT_EQ(backend_.authenticate_requests[0].tenant_id(), "acme");
  EXPECT_EQ(handler_->sessions().size(), 1u);
}

TEST_F(ExHookHandlerTest, DenyIsFalse) {
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  backend_.authenticate_response.set_deny_reason(iv1::DENY_REASON_BAD_SIGNATURE);
  ev2::ValuedResponse r = Connect(Client());
  EXPECT_EQ(r.type(), ev2::ValuedResponse::STOP_AND_RETURN);
  EXPECT_FALSE(r.bool_result());
  EXPECT_EQ(handler_->sessions().size(), 0u);
}

TEST_F(ExHookHandlerTest, BackendErrorFailsClosed) {
  for (const absl::Status& err :
       {absl::InvalidArgumentError("connect.client_id too long"), absl::UnavailableError("down")}) {
    backend_.authenticate_error = err;
    ev2::ValuedResponse r = Connect(Client());
    EXPECT_EQ(r.type(), ev2::ValuedResponse::STOP_AND_RETURN) << err;
    EXPECT_FALSE(r.bool_result()) << err;
  }
}

TEST_F(ExHookHandlerTest, FailedConnectFromElsewhereKeepsTheConnectedClient) {
  // Someone who only knows the client id cannot cut the device off.
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  backend_.authenticate_response = iv1::AuthenticateResponse();
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  ev2::ClientInfo stranger = Client();
  stranger.set_peerhost("198.51.100.9");
  stranger.set_peerport(40000);
  ASSERT_FALSE(Connect(stranger).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_TRUE(Authorize(Client(), 0, "devices/sensor-1/telemetry").bool_result());
  // ... and the stranger's connection is not authorized as the device.
  EXPECT_FALSE(Authorize(stranger, 0, "devices/sensor-1/telemetry").bool_result());
  EXPECT_EQ(backend_.authorize_requests.size(), 1u);
}

TEST_F(ExHookHandlerTest, FailedReauthenticationEndsThatConnectionsSession) {
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  backend_.authenticate_response = iv1::AuthenticateResponse();
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  ASSERT_FALSE(Connect(Client()).bool_result());
  EXPECT_FALSE(Authorize(Client(), 0, "devices/sensor-1/telemetry").bool_result());
  EXPECT_TRUE(backend_.authorize_requests.empty());
  EXPECT_EQ(handler_->sessions().size(), 0u);
}

TEST_F(ExHookHandlerTest, TakeoverKeepsTheNewConnectionsSession) {
  // The device reconnects before EMQX notices its old socket is gone: the new
  // connection authenticates, then the old one's disconnect (reason "takenover")
  // arrives.
  backend_.authenticate_response = Allowed();
  const ev2::ClientInfo old_conn = Client();
  ASSERT_TRUE(Connect(old_conn).bool_result());
  ev2::ClientInfo new_conn = Client();
  new_conn.set_peerport(50001);
  ASSERT_TRUE(Connect(new_conn).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_FALSE(Authorize(old_conn, 0, "devices/sensor-1/telemetry").bool_result());
  ev2::ClientDisconnectedRequest d;
  *d.mutable_clientinfo() = old_conn;
  d.set_reason("takenover");
  handler_->OnClientDisconnected(d);
  EXPECT_TRUE(Authorize(new_conn, 0, "devices/sensor-1/telemetry").bool_result());
  // Its own disconnect ends it.
  *d.mutable_clientinfo() = new_conn;
  d.set_reason("normal");
  handler_->OnClientDisconnected(d);
  EXPECT_FALSE(Authorize(new_conn, 0, "devices/sensor-1/telemetry").bool_result());
  EXPECT_EQ(handler_->sessions().size(), 0u);
}

TEST_F(ExHookHandlerTest, AuthorizeMapsToIdentityAndAction) {
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_TRUE(Authorize(Client(), 0, "devices/sensor-1/telemetry").bool_result());
  EXPECT_TRUE(Authorize(Client(), 1, "$share/g/devices/sensor-1/#").bool_result());
  ASSERT_EQ(backend_.authorize_requests.size(), 2u);
  const iv1::AuthorizeRequest& pub = backend_.authorize_requests[0];
  EXPECT_EQ(pub.identity().tenant_id(), "acme");
  EXPECT_EQ(pub.identity().device_id(), "sensor-1");
  EXPECT_EQ(pub.action(), rv1::RULE_ACTION_PUBLISH);
  EXPECT_EQ(pub.topic(), "devices/sensor-1/telemetry");
  EXPECT_EQ(pub.client_id(), "sensor-1");
  // EMQX's cn was never verified by iotauth (ClientInfo carries no certificate).
  EXPECT_EQ(pub.cert_cn(), "");
  EXPECT_EQ(backend_.authorize_requests[1].action(), rv1::RULE_ACTION_SUBSCRIBE);
  EXPECT_EQ(backend_.authorize_requests[1].topic(), "devices/sensor-1/#");
  // A publish to a literal `$share/...` or `$queue/...` topic is checked as published.
  EXPECT_TRUE(Authorize(Client(), 0, "$queue/devices/sensor-1/x").bool_result());
  EXPECT_TRUE(Authorize(Client(), 0, "$share/g/devices/sensor-1/x").bool_result());
  ASSERT_EQ(backend_.authorize_requests.size(), 4u);
  EXPECT_EQ(backend_.authorize_requests[2].topic(), "$queue/devices/sensor-1/x");
  EXPECT_EQ(backend_.authorize_requests[3].topic(), "$share/g/devices/sensor-1/x");
}

// EMQX before 5.4 sends no peerport: a failed connect from the same address cannot be
// told from the device's own connection, and must not end its session.
TEST_F(ExHookHandlerTest, FailedConnectWithoutAPeerPortKeepsTheSession) {
  ev2::ClientInfo old_emqx = Client();
  old_emqx.set_peerport(0);
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(old_emqx).bool_result());
  backend_.authenticate_response = iv1::AuthenticateResponse();
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  ASSERT_FALSE(Connect(old_emqx).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_TRUE(Authorize(old_emqx, 0, "devices/sensor-1/telemetry").bool_result());
}

TEST_F(ExHookHandlerTest, AuthorizeDeny) {
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_DENY);
  ev2::ValuedResponse r = Authorize(Client(), 0, "devices/other/telemetry");
  EXPECT_EQ(r.type(), ev2::ValuedResponse::STOP_AND_RETURN);
  EXPECT_FALSE(r.bool_result());
  backend_.authorize_error = absl::InvalidArgumentError("topic: invalid");
  EXPECT_FALSE(Authorize(Client(), 0, "bad/#").bool_result());
}

TEST_F(ExHookHandlerTest, UnknownClientOrTypeIsDeniedWithoutBackend) {
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_FALSE(Authorize(Client(), 0, "devices/sensor-1/t").bool_result());
  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  EXPECT_FALSE(Authorize(Client(), 7, "devices/sensor-1/t").bool_result());
  ev2::ClientInfo other_node = Client();
  other_node.set_node("emqx@10.0.0.2");
  EXPECT_FALSE(Authorize(other_node, 0, "devices/sensor-1/t").bool_result());
  EXPECT_TRUE(backend_.authorize_requests.empty());
}

TEST_F(ExHookHandlerTest, SessionEndsAtCredentialExpiryAndDisconnect) {
  backend_.authenticate_response = Allowed(clock_.Now() + absl::Minutes(10));
  ASSERT_TRUE(Connect(Client()).bool_result());
  backend_.authorize_response.set_decision(iv1::DECISION_ALLOW);
  EXPECT_TRUE(Authorize(Client(), 0, "t").bool_result());
  clock_.Advance(absl::Minutes(10));
  EXPECT_FALSE(Authorize(Client(), 0, "t").bool_result());

  backend_.authenticate_response = Allowed();
  ASSERT_TRUE(Connect(Client()).bool_result());
  ev2::ClientDisconnectedRequest d;
  *d.mutable_clientinfo() = Client();
  handler_->OnClientDisconnected(d);
  EXPECT_FALSE(Authorize(Client(), 0, "t").bool_result());
}

TEST(ExHookHandlerCreateTest, NeedsBackend) { EXPECT_FALSE(ExHookHandler::Create({}).ok()); }

// The gRPC adapter over an in-process server, as EMQX would call it.
TEST(ExHookServiceTest, ServesOverGrpc) {
  FakeIdentityBackend backend;
  backend.authenticate_response = Allowed();
  ExHookHandler::Options ho;
  ho.backend = &backend;
  auto handler = ExHookHandler::Create(ho);
  ASSERT_TRUE(handler.ok());
  AllowAllCallerResolver resolver;
  auto service =
      ExHookService::Create({std::shared_ptr<ExHookHandler>(*std::move(handler)), &resolver});
  ASSERT_TRUE(service.ok()) << service.status();
  grpc::ServerBuilder b;
  b.RegisterService(service->get());
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  auto stub = ev2::HookProvider::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  grpc::ClientContext c1;
  ev2::LoadedResponse loaded;
  ASSERT_TRUE(stub->OnProviderLoaded(&c1, {}, &loaded).ok());
  EXPECT_EQ(loaded.hooks_size(), 3);

  grpc::ClientContext c2;
  ev2::ClientAuthenticateRequest req;
  *req.mutable_clientinfo() = Client();
  ev2::ValuedResponse resp;
  ASSERT_TRUE(stub->OnClientAuthenticate(&c2, req, &resp).ok());
  EXPECT_TRUE(resp.bool_result());

  grpc::ClientContext c3;
  ev2::EmptySuccess empty;
  EXPECT_TRUE(stub->OnSessionCreated(&c3, {}, &empty).ok());
  server->Shutdown();
}

}  // namespace
}  // namespace iotauth::gateway
