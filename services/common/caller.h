// Who is calling: the principal and roles resolved from the caller's mTLS client
// certificate or bearer token. Service logic checks roles with RequireRole and
// never looks at certificates or headers itself.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ServerContextBase;
}

namespace iotauth {

enum class Role : uint32_t {
  kAdmin = 1u << 0,    // registry mutations; implies every other role
  kReader = 1u << 1,   // registry and audit reads
  kGateway = 1u << 2,  // Authenticate / Authorize (brokers and gateways)
  // AuditLog.Ingest: split-mode services streaming their own events to the audit
  // service. Not the gateway role: a broker's credential must not write audit records.
  kAuditWriter = 1u << 3,
};

// Parses "admin", "reader", "gateway", "audit-writer".
bool ParseRole(absl::string_view name, Role* role);
absl::string_view RoleName(Role role);

// The principal of this process's own in-process calls; no configured token or
// certificate binding may use it (ValidateConfig).
inline constexpr absl::string_view kInternalPrincipal = "iotauth-internal";

struct Caller {
  // False when the caller presented no usable credential while auth is on.
  bool authenticated = false;
  // Certificate subject CN or token name; "anonymous" when auth is off.
  std::string principal;
  // Bitmask of Role values.
  uint32_t roles = 0;
  // Peer address as gRPC reports it (for audit).
  std::string peer;
  // This process calling one of its own services over the in-process channel (the
  // token of ConfiguredCallerResolver::AddInternalToken), never a name a client can
  // choose: the identity mirror's key reads are not audited on that ground alone.
  bool internal = false;

  bool Has(Role r) const {
    return (roles & static_cast<uint32_t>(Role::kAdmin)) != 0 ||
           (roles & static_cast<uint32_t>(r)) != 0;
  }
};

// UNAUTHENTICATED when the caller is not authenticated, PERMISSION_DENIED when it
// lacks `role`, OK otherwise.
absl::Status RequireRole(const Caller& caller, Role role);

// Resolves the caller of an RPC. Thread-safe.
class CallerResolver {
 public:
  virtual ~CallerResolver() = default;
  virtual Caller Resolve(const grpc::ServerContextBase& context) const = 0;
};

// A resolver for deployments with caller authentication off: every caller has
// every role. Also used by unit tests.
class AllowAllCallerResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& context) const override;
};

}  // namespace iotauth
