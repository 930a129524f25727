#include "services/common/server_runner.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/common/grpc_log.h"
#include "services/common/log.h"
#include "services/common/memory_budget.h"
#include "services/common/metric_family.h"
#include "services/common/server_security.h"
#include "services/common/status_macros.h"

namespace iotauth {
namespace {

// The synchronous services' thread cap (see Start).
constexpr int kMaxSyncThreads = 1024;

absl::Mutex listener_failure_mu(absl::kConstInit);
std::string* listener_failure ABSL_GUARDED_BY(listener_failure_mu) = nullptr;

// Descriptors held back from the start, and let go when a listener fails for lack
// of them: the drain that follows (the audit log's last commit, the sanitizers'
// own checks) must not fail for the same reason.
constexpr int kReservedFds = 8;
int reserved_fds[kReservedFds] ABSL_GUARDED_BY(listener_failure_mu) = {-1, -1, -1, -1,
                                                                       -1, -1, -1, -1};

void ReserveFds() {
  absl::MutexLock lock(&listener_failure_mu);
  for (int& fd : reserved_fds) {
    if (fd < 0) fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
}

// On the gRPC thread that logged the failure: note it, free the reserve, and wake
// the main thread (blocked in WaitForTerminationSignal). Nothing here calls into
// gRPC.
void ReportListenerFailure(absl::string_view message) {
  {
    absl::MutexLock lock(&listener_failure_mu);
    if (listener_failure == nullptr) listener_failure = new std::string(message);
    for (int& fd : reserved_fds) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  kill(getpid(), SIGUSR2);
}

// The gate's refusals, read at scrape time.
class AuthGateMetrics final : public prometheus::Collectable {
 public:
  explicit AuthGateMetrics(std::shared_ptr<EarlyAuthGate> gate) : gate_(std::move(gate)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    return {CounterFamily("iotauth_grpc_unauthenticated_refused_total",
                          "Calls refused UNAUTHENTICATED as their headers arrived (no verified "
                          "client certificate, no valid bearer token), before their message "
                          "was read; they reach no handler, so grpc_server_handled_total does "
                          "not count them.",
                          static_cast<double>(gate_->refused())),
            CounterFamily("iotauth_grpc_backlog_refused_total",
                          "Calls with a credential refused RESOURCE_EXHAUSTED as their headers "
                          "arrived because their caller had 4,096 calls admitted that the "
                          "server had not started (streams reset before they started: HTTP/2 "
                          "rapid reset); not counted in grpc_server_handled_total.",
                          static_cast<double>(gate_->backlog_refused())),
            CounterFamily("iotauth_grpc_public_calls_shed_total",
                          "Health and reflection calls without a credential refused "
                          "RESOURCE_EXHAUSTED past their shared budget "
                          "(auth.public_calls_per_second and auth.public_calls_burst), as their "
                          "headers arrived; not counted in grpc_server_handled_total.",
                          static_cast<double>(gate_->shed()))};
  }

 private:
  std::shared_ptr<EarlyAuthGate> gate_;
};

// Failed TLS handshakes by cause (grpc_log.h), read at scrape time. Process-wide:
// in split mode they include the process's upstream channels.
class HandshakeFailureMetrics final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    const std::array<uint64_t, kHandshakeFailureKinds> counts = HandshakeFailuresSoFar();
    prometheus::MetricFamily family{
        "iotauth_tls_handshake_failures_total",
        "TLS handshakes that failed, by cause: refused_peer_certificate (the peer's "
        "certificate failed verification, or it sent none where one is required), "
        "peer_refused_certificate (the peer refused ours: unknown CA, expired...), "
        "protocol (not TLS, no common version or cipher, cut short).",
        prometheus::MetricType::Counter,
        {}};
    for (int i = 0; i < kHandshakeFailureKinds; ++i) {
      prometheus::ClientMetric m;
      m.label.push_back(
          {"cause", std::string(HandshakeFailureName(static_cast<HandshakeFailure>(i)))});
      m.counter.value = static_cast<double>(counts[i]);
      family.metric.push_back(std::move(m));
    }
    return {std::move(family)};
  }
};

}  // namespace

std::string ListenerFailure() {
  absl::MutexLock lock(&listener_failure_mu);
  return listener_failure != nullptr ? *listener_failure : "";
}

absl::StatusOr<std::unique_ptr<ServerRunner>> ServerRunner::Start(
    const iotauth::config::v1::ServerConfig& config, std::vector<HostedService> services,
    std::shared_ptr<prometheus::Registry> registry, std::shared_ptr<EarlyAuthGate> auth_gate,
    uint64_t transport_memory_bytes) {
  std::unique_ptr<ServerRunner> runner(new ServerRunner());
  // gRPC's log lines as JSON from here on, and a dead listener noticed (see
  // grpc_log.h).
  RouteGrpcLogs(ReportListenerFailure);
  ReserveFds();
  IOTAUTH_ASSIGN_OR_RETURN(ServerTls tls, BuildServerCredentials(config));
  runner->tls_reloader_ = std::move(tls.reloader);
  // Plaintext credentials take no metadata processor (gRPC aborts): the gate needs TLS.
  if (auth_gate != nullptr && runner->tls_reloader_ != nullptr) {
    tls.credentials->SetAuthMetadataProcessor(auth_gate);
    runner->auth_gate_metrics_ = std::make_shared<AuthGateMetrics>(auth_gate);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  // A leftover server on the same port must not silently take half the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Our own upstream channels ping every 2 s (app.cc UpstreamChannelArgs): allow
  // half that, so timer jitter never counts as a ping strike.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  // A connection that has not finished its TLS handshake after 20 s is closed (gRPC's
  // default, 120 s, lets idle unauthenticated sockets pile up six times longer).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 20000);
  builder.AddListeningPort(config.grpc().address(), tls.credentials, &runner->grpc_port_);
  // Threads of the synchronous services (registry, audit, X.509 Authenticate,
  // reflection): one per call in progress, up to this cap, beyond which a call is refused
  // RESOURCE_EXHAUSTED at once. Without it, a client that opens and resets streams
  // (HTTP/2 rapid reset) made gRPC start 7,000 threads from two connections.
  //
  // Memory the transports may hold: past it gRPC shrinks its read buffers, then
  // closes the connections holding the most. It bounds a header block that never
  // ends (see memory_budget.h).
  TransportMemoryBudget memory = DetectTransportMemory();
  if (transport_memory_bytes > 0) {
    memory = {transport_memory_bytes, "--grpc_memory_mb"};
  }
  builder.SetResourceQuota(grpc::ResourceQuota("iotauth-server")
                               .SetMaxThreads(kMaxSyncThreads)
                               .Resize(static_cast<size_t>(memory.bytes)));
  log::Info("grpc: transport memory quota",
            {{"mib", absl::StrCat(memory.bytes >> 20)}, {"from", memory.source}});

  runner->registry_ = registry;
  runner->grpc_metrics_ = std::make_unique<GrpcServerMetrics>(*registry);
  if (runner->auth_gate_metrics_ != nullptr) {
    runner->grpc_metrics_->SetCallBacklog(auth_gate->backlog());
  }
  std::vector<std::string> names;
  names.reserve(services.size());
  for (const auto& s : services) names.push_back(s.name);
  names.emplace_back("grpc.reflection.v1alpha.ServerReflection");
  runner->grpc_metrics_->RegisterServices(names);
  for (const auto& s : services) {
    if (s.attach_metrics) s.attach_metrics(runner->grpc_metrics_.get());
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(runner->grpc_metrics_->InterceptorFactory());
  // Reflection is synchronous and needs no credential: each open stream holds a
  // thread of the pool the registry, audit and certificate services share.
  runner->reflection_cap_ = std::make_unique<StreamCap>(StreamCap::Options{});
  runner->reflection_cap_->Start();
  creators.push_back(std::make_unique<StreamCap::Factory>(runner->reflection_cap_.get()));
  builder.experimental().SetInterceptorCreators(std::move(creators));

  for (const auto& s : services) {
    builder.RegisterService(s.service);
    runner->names_.push_back(s.name);
    if (!s.serving_at_start) {
      absl::MutexLock lock(&runner->health_mu_);
      runner->not_serving_.push_back(s.name);
    }
  }
  runner->server_ = builder.BuildAndStart();
  if (runner->server_ == nullptr || runner->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", config.grpc().address(),
        ": the address is in use or invalid (pick another with --set=grpc.address=HOST:PORT)"));
  }
  {
    absl::MutexLock lock(&runner->health_mu_);
    runner->PublishHealth();
  }

  if (!config.metrics().address().empty()) {
    try {
      runner->exposer_ = std::make_unique<prometheus::Exposer>(config.metrics().address());
    } catch (const std::exception& e) {
      runner->server_->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", config.metrics().address(), ": ", e.what()));
    }
    runner->exposer_->RegisterCollectable(registry);
    if (runner->tls_reloader_) runner->exposer_->RegisterCollectable(runner->tls_reloader_);
    if (runner->auth_gate_metrics_) {
      runner->exposer_->RegisterCollectable(runner->auth_gate_metrics_);
    }
    if (runner->tls_reloader_) {
      runner->handshake_metrics_ = std::make_shared<HandshakeFailureMetrics>();
      runner->exposer_->RegisterCollectable(runner->handshake_metrics_);
    }
    auto ports = runner->exposer_->GetListeningPorts();
    runner->metrics_port_ = ports.empty() ? 0 : ports[0];
  }
  return runner;
}

void ServerRunner::RegisterCollectable(const std::weak_ptr<prometheus::Collectable>& collectable) {
  if (exposer_) exposer_->RegisterCollectable(collectable);
}

ServerRunner::~ServerRunner() { Shutdown(absl::ZeroDuration()); }

void ServerRunner::PublishHealth() {
  if (shut_down_ || server_ == nullptr) return;
  auto* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  for (const auto& name : names_) {
    const bool waiting =
        std::find(not_serving_.begin(), not_serving_.end(), name) != not_serving_.end();
    health->SetServingStatus(name, !held_ && !waiting);
  }
  health->SetServingStatus("", !held_ && not_serving_.empty());
}

void ServerRunner::SetServing(const std::string& name) {
  absl::MutexLock lock(&health_mu_);
  not_serving_.erase(std::remove(not_serving_.begin(), not_serving_.end(), name),
                     not_serving_.end());
  PublishHealth();
}

void ServerRunner::Hold(bool held) {
  absl::MutexLock lock(&health_mu_);
  if (held_ == held) return;
  held_ = held;
  PublishHealth();
}

void ServerRunner::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  {
    // One flag, under the health lock: a second Shutdown (the destructor's, or one
    // from another thread) returns here, and no SetServing or Hold runs after it.
    absl::MutexLock lock(&health_mu_);
    if (shut_down_) return;
    shut_down_ = true;
    auto* health = server_->GetHealthCheckService();
    if (health != nullptr) health->Shutdown();  // every service now NOT_SERVING
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  exposer_.reset();
}

void BlockTerminationSignals() {
  // A log reader that went away (a restarted log collector, `| head`) must cost
  // log lines, not the process: the write fails with EPIPE instead.
  std::signal(SIGPIPE, SIG_IGN);
  // A file size limit (ulimit -f) reached must fail the write with EFBIG, as a full
  // volume fails it with ENOSPC: the audit log then reports that it loses events
  // and the process stays up, NOT_SERVING, until writes succeed again.
  std::signal(SIGXFSZ, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

bool TerminationSignalPending() {
  sigset_t pending;
  sigemptyset(&pending);
  if (sigpending(&pending) != 0) return false;
  return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGUSR2) {
      if (!ListenerFailure().empty()) return sig;
      log::Info("SIGUSR2 received: ignored");
      continue;
    }
    if (sig != SIGHUP) return sig;
    // By default SIGHUP would end the process at once: no drain, and audit events
    // not yet committed lost. Log rotation and `systemctl reload` send it.
    log::Info(
        "SIGHUP received: nothing to do (the TLS files are read again every second; "
        "other settings take effect at the next start)");
  }
}

}  // namespace iotauth
