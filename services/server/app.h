// Composition root: builds the stores, pipelines and services a process hosts
// from its configuration, and tears them down in order. This is the only place
// that knows every concrete implementation; services see each other only through
// interfaces and gRPC contracts.
#pragma once

#include <prometheus/registry.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/server_runner.h"

namespace iotauth {

class App {
 public:
  virtual ~App() = default;
  // Services to register on the server.
  virtual std::vector<HostedService> Services() = 0;
  // Called once the server is serving (in-process channels can be used now).
  virtual absl::Status OnServing(ServerRunner& runner) = 0;
  // Called on SIGTERM before the server drains: stop background clients of the
  // server (the registry mirror's in-process watch would otherwise hold the drain).
  virtual void BeginShutdown() = 0;
  // Called after the server stopped: flush pipelines, close stores.
  virtual void Stop() = 0;
  // Refuses unauthenticated calls before their message is read (null when caller
  // authentication is off).
  virtual std::shared_ptr<EarlyAuthGate> AuthGate() const = 0;
};

absl::StatusOr<std::unique_ptr<App>> CreateApp(const iotauth::config::v1::ServerConfig& config,
                                               std::shared_ptr<prometheus::Registry> registry);

}  // namespace iotauth
