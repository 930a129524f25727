// IdentityBackend: the seam between the broker/gateway adapters in this package
// (EMQX ExHook, Envoy ext_authz) and the identity logic. The adapters translate the
// foreign contracts into iotauth.identity.v1 requests and never see how a decision is
// made; the composition root implements this over the identity service's
// Authenticator and Authorizer (in-process) or over its gRPC contract (split mode).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/identity/v1/identity.pb.h"

namespace iotauth::gateway {

// `ip:port` of a peer the broker or proxy reports, bracketing IPv6 addresses; empty
// when the host is empty.
inline std::string PeerAddress(absl::string_view host, uint32_t port) {
  if (host.empty()) return "";
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

// Per-call facts from the transport.
struct GatewayCallContext {
  // Authenticated principal of the broker or proxy calling us (audit `caller`).
  absl::string_view caller;
};

class IdentityBackend {
 public:
  virtual ~IdentityBackend() = default;

  // Decides a connect. Allow and deny are both OK answers (deny carries the reason);
  // an error status means "could not decide" (INVALID_ARGUMENT for a malformed
  // request, UNAVAILABLE, ...), and the adapters fail closed on it. Thread-safe.
  virtual absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request,
      const GatewayCallContext& context) = 0;

  // Decides one publish or subscribe of an authenticated device; same error
  // contract as Authenticate. Thread-safe.
  virtual absl::StatusOr<iotauth::identity::v1::AuthorizeResponse> Authorize(
      const iotauth::identity::v1::AuthorizeRequest& request,
      const GatewayCallContext& context) = 0;
};

}  // namespace iotauth::gateway
