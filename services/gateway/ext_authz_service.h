// Envoy external authorization v3 adapter: Envoy's ext_authz filter asks iotauth
// whether an HTTP request from a device may pass. The device's credential is a SAS
// token in the `authorization` header (`SharedAccessSignature sr=...`), or else the
// TLS client certificate Envoy forwards in attributes.source.certificate (URL-encoded
// PEM). Allowed requests go upstream with headers naming the tenant, product and
// device (overwriting any the client sent) and without the token; denied ones get
// 401 (unauthenticated), 403 (forbidden) or 429 (rate limited) with the stable
// reason in a header. Failures to decide fail closed (503).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/envoy/service/auth/v3/external_auth.grpc.pb.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/common/caller.h"
#include "services/gateway/identity_backend.h"

namespace iotauth::gateway {

namespace ext_authz {

// Percent-decodes `in` (`+` stays literal); INVALID_ARGUMENT on a bad escape.
absl::StatusOr<std::string> UrlDecode(absl::string_view in);
// `deny_reason` as a stable lower-case token (`DENY_REASON_BAD_SIGNATURE` ->
// `bad_signature`).
std::string ReasonToken(iotauth::identity::v1::DenyReason reason);
// HTTP status for a deny: 429 rate limited; 403 for a known credential that is not
// allowed (disabled, pending approval, credential type or algorithm not allowed);
// 503 when iotauth could not decide; 401 otherwise.
int DenyHttpStatus(iotauth::identity::v1::DenyReason reason);

}  // namespace ext_authz

// The decision logic, free of gRPC: constructible in a unit test.
class ExtAuthzHandler {
 public:
  struct Options {
    // Required; must outlive the handler.
    IdentityBackend* backend = nullptr;
    // Tenant hint for every request (empty: resolved from the credential). A route's
    // `context_extensions["iotauth_tenant"]` overrides it.
    std::string tenant_id;
    std::string tenant_header = "x-iotauth-tenant";
    std::string product_header = "x-iotauth-product";
    std::string device_header = "x-iotauth-device";
    std::string module_header = "x-iotauth-module";
    std::string reason_header = "x-iotauth-deny-reason";
    // Remove the `authorization` header (the SAS token) before the request goes upstream.
    bool strip_authorization = true;
    // Larger forwarded certificates are denied as malformed before decoding.
    size_t max_certificate_bytes = 64 * 1024;
  };
  // INVALID_ARGUMENT when the backend is missing.
  static absl::StatusOr<std::unique_ptr<ExtAuthzHandler>> Create(Options options);

  // The Authenticate request for a Check, or a deny reason when the request carries
  // no usable credential (NO_CREDENTIAL, MALFORMED).
  absl::StatusOr<iotauth::identity::v1::AuthenticateRequest> ToAuthenticateRequest(
      const envoy::service::auth::v3::CheckRequest& request,
      iotauth::identity::v1::DenyReason* reason) const;

  // Always a complete answer: OK with headers, or a denial.
  envoy::service::auth::v3::CheckResponse Check(
      const envoy::service::auth::v3::CheckRequest& request,
      const GatewayCallContext& context) const;

  // The denial for `reason` (exposed for tests); `token`, when not empty, replaces
  // the reason's token in the status message, the reason header and the body.
  envoy::service::auth::v3::CheckResponse Deny(iotauth::identity::v1::DenyReason reason,
                                               absl::string_view token = {}) const;

 private:
  explicit ExtAuthzHandler(Options options) : options_(std::move(options)) {}
  envoy::service::auth::v3::CheckResponse Allow(
      const iotauth::identity::v1::AuthenticateResponse& response) const;
  Options options_;
};

// The gRPC service the lead registers as "envoy.service.auth.v3.Authorization".
// Callers need the gateway role (Envoy's client certificate for the ext_authz cluster).
class ExtAuthzService final : public envoy::service::auth::v3::Authorization::CallbackService {
 public:
  struct Options {
    // Required.
    std::shared_ptr<ExtAuthzHandler> handler;
    // Required; must outlive the service.
    const CallerResolver* caller_resolver = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<ExtAuthzService>> Create(Options options);

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const envoy::service::auth::v3::CheckRequest* request,
                                  envoy::service::auth::v3::CheckResponse* response) override;

 private:
  explicit ExtAuthzService(Options options) : options_(std::move(options)) {}
  Options options_;
};

}  // namespace iotauth::gateway
