#include "services/gateway/ext_authz_service.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "services/common/caller.h"
#include "services/common/error_info.h"
#include "services/gateway/fake_identity_backend.h"

namespace iotauth::gateway {
namespace {

namespace auth = ::envoy::service::auth::v3;
namespace iv1 = ::iotauth::identity::v1;

constexpr char kPem[] =
    "-----BEGIN CERTIFICATE-----\nMIIB+zCCAaGgAwIBAgIU\n-----END CERTIFICATE-----\n";
constexpr char kPemUrlEncoded[] =
    "-----BEGIN%20CERTIFICATE-----%0AMIIB%2BzCCAaGgAwIBAgIU%0A-----END%20CERTIFICATE-----%0A";
constexpr char kToken[] = "SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=abc%3D&se=1";

std::map<std::string, std::string> Headers(
    const google::protobuf::RepeatedPtrField<envoy::config::core::v3::HeaderValueOption>& hs) {
  std::map<std::string, std::string> out;
  for (const auto& h : hs) {
    EXPECT_EQ(h.append_action(),
              envoy::config::core::v3::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD);
    out[h.header().key()] = h.header().value();
  }
  return out;
}

class ExtAuthzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ExtAuthzHandler::Options o;
    o.backend = &backend_;
    auto h = ExtAuthzHandler::Create(o);
    ASSERT_TRUE(h.ok());
    handler_ = *std::move(h);
  }
  auth::CheckResponse Check(const auth::CheckRequest& req) {
    return handler_->Check(req, {"envoy"});
  }
  FakeIdentityBackend backend_;
  std::unique_ptr<ExtAuthzHandler> handler_;
};

auth::CheckRequest WithToken(const std::string& value) {
  auth::CheckRequest r;
  (*r.mutable_attributes()->mutable_request()->mutable_http()->mutable_headers())["authorization"] =
      value;
  return r;
}

auth::CheckRequest WithCert(const std::string& url_pem) {
  auth::CheckRequest r;
  r.mutable_attributes()->mutable_source()->set_certificate(url_pem);
  return r;
}

TEST(ExtAuthzMappingTest, UrlDecode) {
  EXPECT_EQ(*ext_authz::UrlDecode(kPemUrlEncoded), kPem);
  EXPECT_EQ(*ext_authz::UrlDecode("a+b%2b"), "a+b+");
  EXPECT_FALSE(ext_authz::UrlDecode("%").ok());
  EXPECT_FALSE(ext_authz::UrlDecode("%4").ok());
  EXPECT_FALSE(ext_authz::UrlDecode("%zz").ok());
}

TEST(ExtAuthzMappingTest, ReasonsAndStatuses) {
  EXPECT_EQ(ext_authz::ReasonToken(iv1::DENY_REASON_BAD_SIGNATURE), "bad_signature");
  EXPECT_EQ(ext_authz::ReasonToken(iv1::DENY_REASON_UNSPECIFIED), "unspecified");
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_BAD_SIGNATURE), 401);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_EXPIRED), 401);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_UNKNOWN_DEVICE), 401);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_REVOKED), 401);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_DEVICE_DISABLED), 403);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED), 403);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_RATE_LIMITED), 429);
  EXPECT_EQ(ext_authz::DenyHttpStatus(iv1::DENY_REASON_INTERNAL), 503);
}

TEST_F(ExtAuthzTest, SasFromAuthorizationHeader) {
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  auth::CheckRequest req = WithToken(kToken);
  (*req.mutable_attributes()->mutable_context_extensions())["iotauth_tenant"] = "acme";
  req.mutable_attributes()->mutable_request()->mutable_http()->set_id("req-1");
  Check(req);
  ASSERT_EQ(backend_.authenticate_requests.size(), 1u);
  const iv1::AuthenticateRequest& a = backend_.authenticate_requests[0];
  ASSERT_TRUE(a.credential().has_sas());
  EXPECT_EQ(a.credential().sas().token(), kToken);
  EXPECT_EQ(a.credential().sas().device_id(), "");
  EXPECT_EQ(a.tenant_id(), "acme");
  EXPECT_EQ(a.request_id(), "req-1");
  EXPECT_EQ(a.credential().peer_address(), "");  // Envoy sent no source address
}

TEST_F(ExtAuthzTest, SourceAddressReachesTheCredential) {
  // For the per-source failure limiter and the audit event.
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  auth::CheckRequest req = WithToken(kToken);
  auto* sock =
      req.mutable_attributes()->mutable_source()->mutable_address()->mutable_socket_address();
  sock->set_address("2001:db8::7");
  sock->set_port_value(40001);
  Check(req);
  req = WithToken(kToken);
  sock = req.mutable_attributes()->mutable_source()->mutable_address()->mutable_socket_address();
  sock->set_address("203.0.113.9");
  sock->set_port_value(50000);
  Check(req);
  ASSERT_EQ(backend_.authenticate_requests.size(), 2u);
  EXPECT_EQ(backend_.authenticate_requests[0].credential().peer_address(), "[2001:db8::7]:40001");
  EXPECT_EQ(backend_.authenticate_requests[1].credential().peer_address(), "203.0.113.9:50000");
}

TEST_F(ExtAuthzTest, SasFromRawHeaderMap) {
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  auth::CheckRequest req;
  auto* h = req.mutable_attributes()
                ->mutable_request()
                ->mutable_http()
                ->mutable_header_map()
                ->add_headers();
  h->set_key("authorization");
  h->set_raw_value(kToken);
  Check(req);
  ASSERT_EQ(backend_.authenticate_requests.size(), 1u);
  EXPECT_EQ(backend_.authenticate_requests[0].credential().sas().token(), kToken);
}

TEST_F(ExtAuthzTest, CertificateFromSourceIsUrlDecodedPem) {
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  Check(WithCert(kPemUrlEncoded));
  ASSERT_EQ(backend_.authenticate_requests.size(), 1u);
  const iv1::AuthenticateRequest& a = backend_.authenticate_requests[0];
  ASSERT_TRUE(a.credential().has_x509());
  ASSERT_EQ(a.credential().x509().chain_size(), 1);
  EXPECT_EQ(a.credential().x509().chain(0), kPem);
}

TEST_F(ExtAuthzTest, TokenWinsOverCertificate) {
  backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
  auth::CheckRequest req = WithToken(kToken);
  req.mutable_attributes()->mutable_source()->set_certificate(kPemUrlEncoded);
  Check(req);
  ASSERT_EQ(backend_.authenticate_requests.size(), 1u);
  EXPECT_TRUE(backend_.authenticate_requests[0].credential().has_sas());
}

TEST_F(ExtAuthzTest, AllowAddsIdentityHeadersAndStripsToken) {
  iv1::AuthenticateResponse& r = backend_.authenticate_response;
  r.set_decision(iv1::DECISION_ALLOW);
  r.mutable_identity()->set_tenant_id("acme");
  r.mutable_identity()->set_product_key("pk");
  r.mutable_identity()->set_device_id("d1");
  auth::CheckResponse resp = Check(WithToken(kToken));
  EXPECT_EQ(resp.status().code(), 0);
  ASSERT_TRUE(resp.has_ok_response());
  EXPECT_EQ(
      Headers(resp.ok_response().headers()),
      (std::map<std::string, std::string>{
          {"x-iotauth-tenant", "acme"}, {"x-iotauth-product", "pk"}, {"x-iotauth-device", "d1"}}));
  std::vector<std::string> removed(resp.ok_response().headers_to_remove().begin(),
                                   resp.ok_response().headers_to_remove().end());
  EXPECT_EQ(removed, (std::vector<std::string>{"x-iotauth-module", "authorization"}));
}

struct DenyCase {
  iv1::DenyReason reason;
  int rpc_code;
  int http;
  std::string token;
};

TEST_F(ExtAuthzTest, DenialsCarryStatusAndReason) {
  const DenyCase cases[] = {
      {iv1::DENY_REASON_BAD_SIGNATURE, 16, 401, "bad_signature"},
      {iv1::DENY_REASON_EXPIRED, 16, 401, "expired"},
      {iv1::DENY_REASON_DEVICE_DISABLED, 7, 403, "device_disabled"},
      {iv1::DENY_REASON_RATE_LIMITED, 8, 429, "rate_limited"},
  };
  for (const DenyCase& c : cases) {
    backend_.authenticate_response = iv1::AuthenticateResponse();
    backend_.authenticate_response.set_decision(iv1::DECISION_DENY);
    backend_.authenticate_response.set_deny_reason(c.reason);
    backend_.authenticate_response.set_deny_detail("detail for the audit log only");
    auth::CheckResponse resp = Check(WithToken(kToken));
    EXPECT_EQ(resp.status().code(), c.rpc_code) << c.token;
    EXPECT_EQ(resp.status().message(), c.token);
    ASSERT_TRUE(resp.has_denied_response()) << c.token;
    EXPECT_EQ(static_cast<int>(resp.denied_response().status().code()), c.http) << c.token;
    EXPECT_EQ(Headers(resp.denied_response().headers())["x-iotauth-deny-reason"], c.token);
    EXPECT_EQ(resp.denied_response().body(), c.token);
    EXPECT_EQ(resp.denied_response().body().find("detail"), std::string::npos);
  }
}

TEST_F(ExtAuthzTest, MalformedAndMissingCredentials) {
  // Nothing usable: 401 without asking the backend.
  auth::CheckResponse none = Check(WithToken("Bearer abc"));
  EXPECT_EQ(static_cast<int>(none.denied_response().status().code()), 401);
  EXPECT_EQ(none.status().message(), "no_credential");
  auth::CheckResponse bad = Check(WithCert("%ZZ"));
  EXPECT_EQ(bad.status().message(), "malformed");
  EXPECT_EQ(Check(WithCert(std::string(70000, 'A'))).status().message(), "malformed");
  EXPECT_TRUE(backend_.authenticate_requests.empty());
  // The backend refuses an oversized field: malformed, 401.
  backend_.authenticate_error = absl::InvalidArgumentError("credential.sas.token too long");
  auth::CheckResponse inv = Check(WithToken(kToken));
  EXPECT_EQ(inv.status().message(), "malformed");
  EXPECT_EQ(static_cast<int>(inv.denied_response().status().code()), 401);
  // The backend cannot decide: fail closed with 503.
  backend_.authenticate_error = absl::UnavailableError("store down");
  auth::CheckResponse down = Check(WithToken(kToken));
  EXPECT_EQ(down.status().code(), 14);
  EXPECT_EQ(static_cast<int>(down.denied_response().status().code()), 503);
  EXPECT_EQ(down.status().message(), "internal");
  auto header = [](const auth::CheckResponse& r, const std::string& name) {
    for (const auto& h : r.denied_response().headers()) {
      if (h.header().key() == name) return h.header().value();
    }
    return std::string();
  };
  EXPECT_EQ(header(down, "retry-after"), "1");
  // iotauth refuses what its audit log cannot record: still a 503 to retry, and the
  // token says why.
  backend_.authenticate_error =
      WithErrorReason(absl::UnavailableError("audit log unwritable"), "AUDIT_UNWRITABLE");
  auth::CheckResponse refused = Check(WithToken(kToken));
  EXPECT_EQ(refused.status().code(), 14);
  EXPECT_EQ(static_cast<int>(refused.denied_response().status().code()), 503);
  EXPECT_EQ(refused.status().message(), "audit_unwritable");
  EXPECT_EQ(refused.denied_response().body(), "audit_unwritable");
  EXPECT_EQ(header(refused, "x-iotauth-deny-reason"), "audit_unwritable");
  EXPECT_EQ(header(refused, "retry-after"), "1");
}

TEST(ExtAuthzServiceTest, ServesOverGrpc) {
  FakeIdentityBackend backend;
  backend.authenticate_response.set_decision(iv1::DECISION_ALLOW);
  backend.authenticate_response.mutable_identity()->set_tenant_id("acme");
  backend.authenticate_response.mutable_identity()->set_device_id("d1");
  ExtAuthzHandler::Options ho;
  ho.backend = &backend;
  auto handler = ExtAuthzHandler::Create(ho);
  ASSERT_TRUE(handler.ok());
  AllowAllCallerResolver resolver;
  auto service =
      ExtAuthzService::Create({std::shared_ptr<ExtAuthzHandler>(*std::move(handler)), &resolver});
  ASSERT_TRUE(service.ok());
  grpc::ServerBuilder b;
  b.RegisterService(service->get());
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  auto stub = auth::Authorization::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  auth::CheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, WithToken(kToken), &resp).ok());
  EXPECT_EQ(resp.status().code(), 0);
  EXPECT_TRUE(resp.has_ok_response());
  server->Shutdown();
}

}  // namespace
}  // namespace iotauth::gateway
