// A scriptable IdentityBackend for the adapters' unit tests: records the requests
// it receives and answers with canned responses or a canned error.
#pragma once

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "services/gateway/identity_backend.h"

namespace iotauth::gateway {

class FakeIdentityBackend final : public IdentityBackend {
 public:
  absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request,
      const GatewayCallContext& context) override {
    absl::MutexLock lock(&mu_);
    authenticate_requests.push_back(request);
    if (!authenticate_error.ok()) return authenticate_error;
    return authenticate_response;
  }

  absl::StatusOr<iotauth::identity::v1::AuthorizeResponse> Authorize(
      const iotauth::identity::v1::AuthorizeRequest& request,
      const GatewayCallContext& context) override {
    absl::MutexLock lock(&mu_);
    authorize_requests.push_back(request);
    if (!authorize_error.ok()) return authorize_error;
    return authorize_response;
  }

  // Scripted answers (set before the call under test).
  iotauth::identity::v1::AuthenticateResponse authenticate_response;
  absl::Status authenticate_error;
  iotauth::identity::v1::AuthorizeResponse authorize_response;
  absl::Status authorize_error;

  // What the adapter sent.
  std::vector<iotauth::identity::v1::AuthenticateRequest> authenticate_requests;
  std::vector<iotauth::identity::v1::AuthorizeRequest> authorize_requests;

 private:
  absl::Mutex mu_;
};

}  // namespace iotauth::gateway
