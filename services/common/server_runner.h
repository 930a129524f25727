// Hosts gRPC services with everything a production server needs: health
// (grpc.health.v1, per service), reflection, Prometheus /metrics with the
// conventional gRPC server metrics, TLS / mTLS, and graceful shutdown.
#pragma once

#include <grpcpp/server.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/auth_gate.h"
#include "services/common/grpc_metrics.h"
#include "services/common/stream_cap.h"
#include "services/common/tls_reloader.h"

namespace iotauth {

struct HostedService {
  // Fully-qualified service name, e.g. "iotauth.identity.v1.IdentityService".
  std::string name;
  // Not owned; must outlive the runner.
  grpc::Service* service = nullptr;
  // Optional: called before serving starts, for services whose hot handlers record
  // the gRPC server metrics themselves (GrpcServerMetrics::MeterInHandler).
  std::function<void(GrpcServerMetrics*)> attach_metrics;
  // False for a service that cannot answer until the process has loaded its state
  // (the identity front-ends, until the registry mirror synced): its health, and the
  // whole server's (""), stay NOT_SERVING until SetServing(name).
  bool serving_at_start = true;
};

class ServerRunner {
 public:
  // Binds the listeners and starts serving. Port 0 in an address picks a free port.
  // With TLS, `auth_gate` (optional) refuses unauthenticated calls before their
  // message is read; its refusals are counted in
  // iotauth_grpc_unauthenticated_refused_total. gRPC's transports may hold
  // `transport_memory_bytes` (0: an eighth of the memory limit, see memory_budget.h).
  static absl::StatusOr<std::unique_ptr<ServerRunner>> Start(
      const iotauth::config::v1::ServerConfig& config, std::vector<HostedService> services,
      std::shared_ptr<prometheus::Registry> registry,
      std::shared_ptr<EarlyAuthGate> auth_gate = nullptr, uint64_t transport_memory_bytes = 0);

  ~ServerRunner();

  int grpc_port() const { return grpc_port_; }
  // 0 when metrics are disabled.
  int metrics_port() const { return metrics_port_; }
  grpc::Server* server() { return server_.get(); }
  // Adds metrics computed at scrape time (a no-op when metrics are disabled). The
  // runner keeps a weak reference: the caller keeps the collectable alive.
  void RegisterCollectable(const std::weak_ptr<prometheus::Collectable>& collectable);

  // Marks `name` SERVING; the whole server ("") becomes SERVING once every hosted
  // service is. No effect after Shutdown. Thread-safe.
  void SetServing(const std::string& name);

  // While held, every hosted service and the whole server report NOT_SERVING (the
  // process answers calls, but a readiness probe takes it out of rotation); on
  // release each goes back to what SetServing made it. For a condition the whole
  // process depends on, such as an audit log that cannot be written. No effect
  // after Shutdown. Thread-safe.
  void Hold(bool held);

  // Marks every service NOT_SERVING, stops accepting calls, lets in-flight calls
  // finish for up to `grace`, then cancels the rest. Idempotent; thread-safe (a
  // second caller returns at once, without waiting for the first to finish).
  void Shutdown(absl::Duration grace);

 private:
  ServerRunner() = default;

  // Sets every service's health from not_serving_ and held_.
  void PublishHealth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu_);

  std::vector<std::string> names_;
  absl::Mutex health_mu_;
  // Hosted services not yet SERVING.
  std::vector<std::string> not_serving_ ABSL_GUARDED_BY(health_mu_);
  bool held_ ABSL_GUARDED_BY(health_mu_) = false;
  // Set once by Shutdown.
  bool shut_down_ ABSL_GUARDED_BY(health_mu_) = false;
  // Declared before server_ so that it outlives it: gRPC reads the files it stages.
  std::shared_ptr<TlsReloader> tls_reloader_;
  // The metrics' families live in it: kept for as long as they are recorded.
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> auth_gate_metrics_;
  std::shared_ptr<prometheus::Collectable> handshake_metrics_;
  std::unique_ptr<GrpcServerMetrics> grpc_metrics_;
  // Reflection streams open at once and their age (before server_: it outlives it).
  std::unique_ptr<StreamCap> reflection_cap_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR2 in the calling thread and every thread it
// creates later, and ignores SIGPIPE and SIGXFSZ (a closed log pipe or a file size
// limit fails the write instead of ending the process); call first thing in main().
void BlockTerminationSignals();
// True when SIGTERM or SIGINT arrived (blocked, so still pending): long start-up
// steps poll it to stop early. The signal stays pending for
// WaitForTerminationSignal.
bool TerminationSignalPending();
// Waits for SIGTERM or SIGINT and returns its number. A SIGHUP meanwhile is logged
// and otherwise ignored. Returns SIGUSR2 when the gRPC listener failed for good
// (ListenerFailure() says why): the caller drains and exits for its supervisor to
// start it again.
int WaitForTerminationSignal();

// What gRPC reported when a listener stopped accepting ("Failed accept4: Too many
// open files"); empty while none did.
std::string ListenerFailure();

}  // namespace iotauth
