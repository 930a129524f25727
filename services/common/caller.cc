#include "services/common/caller.h"

#include <grpcpp/server_context.h>

#include "services/common/error_info.h"

namespace iotauth {

bool ParseRole(absl::string_view name, Role* role) {
  if (name == "admin") {
    *role = Role::kAdmin;
  } else if (name == "reader") {
    *role = Role::kReader;
  } else if (name == "gateway") {
    *role = Role::kGateway;
  } else if (name == "audit-writer") {
    *role = Role::kAuditWriter;
  } else {
    return false;
  }
  return true;
}

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kReader:
      return "reader";
    case Role::kGateway:
      return "gateway";
    case Role::kAuditWriter:
      return "audit-writer";
  }
  return "unknown";
}

absl::Status RequireRole(const Caller& caller, Role role) {
  if (!caller.authenticated) {
    return WithErrorReason(
        absl::UnauthenticatedError("no caller credential: present a client certificate or a bearer "
                                   "token"),
        "NO_CALLER_CREDENTIAL");
  }
  if (!caller.Has(role)) {
    return WithErrorReason(
        absl::PermissionDeniedError("caller '" + caller.principal + "' lacks the " +
                                    std::string(RoleName(role)) + " role"),
        "ROLE_REQUIRED", {{"role", RoleName(role)}});
  }
  return absl::OkStatus();
}

Caller AllowAllCallerResolver::Resolve(const grpc::ServerContextBase& context) const {
  Caller c;
  c.authenticated = true;
  c.principal = "anonymous";
  c.roles = static_cast<uint32_t>(Role::kAdmin) | static_cast<uint32_t>(Role::kReader) |
            static_cast<uint32_t>(Role::kGateway) | static_cast<uint32_t>(Role::kAuditWriter);
  c.peer = context.peer();
  return c;
}

}  // namespace iotauth
