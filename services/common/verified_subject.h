// The subject of a connection's verified client certificate, as the auth gate, the
// caller resolver and the per-caller backlog all read it: one rule, so that they
// cannot key or resolve the same caller differently.
#pragma once

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>

#include <vector>

#include "absl/strings/string_view.h"

namespace iotauth {

// Empty when there is no context, the peer is not authenticated (no certificate,
// or one not verified) or the certificate has no subject. The view points into
// `auth` and lives as long as it does.
inline absl::string_view VerifiedSubject(const grpc::AuthContext* auth) {
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return {};
  const std::vector<grpc::string_ref> values =
      auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
  if (values.empty()) return {};
  return {values[0].data(), values[0].size()};
}

}  // namespace iotauth
