#include "services/server/app.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <prometheus/client_metric.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/audit/audit_gate.h"
#include "services/audit/audit_service.h"
#include "services/audit/commit_notifier.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/pipeline.h"
#include "services/audit/refused_call_reporter.h"
#include "services/audit/remote_sink.h"
#include "services/audit/sink_interface.h"
#include "services/audit/sqlite_audit_store.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/common/config.h"
#include "services/common/crypto.h"
#include "services/common/dev_pki.h"
#include "services/common/log.h"
#include "services/common/metric_family.h"
#include "services/common/posix_file.h"
#include "services/common/proto_time.h"
#include "services/common/server_security.h"
#include "services/common/status_macros.h"
#include "services/common/tls_reloader.h"
#include "services/gateway/exhook_service.h"
#include "services/gateway/ext_authz_service.h"
#include "services/gateway/identity_backend.h"
#include "services/identity/authenticator.h"
#include "services/identity/authorizer.h"
#include "services/identity/directory_cache.h"
#include "services/identity/identity_service.h"
#include "services/identity/sync/ca_target.h"
#include "services/identity/sync/cert_registrar.h"
#include "services/identity/sync/directory_target.h"
#include "services/identity/sync/registry_mirror.h"
#include "services/identity/sync/registry_registrar.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/certificate_service.h"
#include "services/identity/x509/x509_certificate_verifier.h"
#include "services/registry/change_log_pruner.h"
#include "services/registry/registry_service.h"
#include "services/registry/secret_box.h"
#include "services/registry/sqlite_store.h"

namespace iotauth {
namespace {

using iotauth::config::v1::ServerConfig;

// Exposes the audit pipeline's counters as Prometheus metrics.
class AuditMetrics final : public audit::AuditPipelineObserver {
 public:
  explicit AuditMetrics(prometheus::Registry& r)
      : enqueued_(prometheus::BuildCounter()
                      .Name("iotauth_audit_events_enqueued_total")
                      .Help("Audit events accepted by the pipeline (counted as the writer "
                            "takes them from the queue).")
                      .Register(r)
                      .Add({})),
        dropped_(prometheus::BuildCounter()
                     .Name("iotauth_audit_events_dropped_total")
                     .Help("Audit events lost (queue full or commit failed); each loss is "
                           "also recorded in the log as a GAP event.")
                     .Register(r)
                     .Add({})),
        committed_(prometheus::BuildCounter()
                       .Name("iotauth_audit_events_committed_total")
                       .Help("Audit events durably committed.")
                       .Register(r)
                       .Add({})),
        failures_(prometheus::BuildCounter()
                      .Name("iotauth_audit_commit_failures_total")
                      .Help("Failed audit commit attempts (retried).")
                      .Register(r)
                      .Add({})),
        writable_(prometheus::BuildGauge()
                      .Name("iotauth_audit_writable")
                      .Help("1 while audit events get through; 0 while they are lost (the "
                            "store refuses commits, or the remote audit service has left the "
                            "resend queue full). Unless audit.when_unwritable=serve, the "
                            "process reports NOT_SERVING meanwhile (and with =refuse, refuses "
                            "the calls it would audit).")
                      .Register(r)
                      .Add({})),
        latency_(
            prometheus::BuildHistogram()
                .Name("iotauth_audit_batch_commit_seconds")
                .Help("Wall time of one audit batch commit.")
                .Register(r)
                .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                                 0.025, 0.05, 0.1, 0.25, 0.5, 1})) {
    writable_.Set(1);
  }
  // Called with each change of the audit log's writability (see OnWritable), on the
  // sink's thread; set before the sink starts.
  void SetWritableHook(std::function<void(bool)> hook) { writable_hook_ = std::move(hook); }
  void OnEnqueued(uint64_t count) override { enqueued_.Increment(static_cast<double>(count)); }
  void OnDropped(uint64_t count) override { dropped_.Increment(static_cast<double>(count)); }
  void OnBatchCommitted(const audit::CommittedBatch& batch) override {
    committed_.Increment(static_cast<double>(batch.events));
    latency_.Observe(absl::ToDoubleSeconds(batch.latency));
  }
  void OnCommitFailed(const absl::Status& status) override {
    failures_.Increment();
    log::Warn("audit commit failed", {{"error", std::string(status.message())}});
  }
  void OnWritable(bool writable, const absl::Status& cause) override {
    // The hook (the gate, health) first: once the gauge reads 0 calls are refused,
    // and once it reads 1 they are admitted.
    if (writable_hook_) writable_hook_(writable);
    writable_.Set(writable ? 1 : 0);
    if (writable) {
      log::Info("audit: events get through again; any loss is recorded as a GAP event");
    } else {
      log::Error(
          "audit: events cannot be recorded: they are retried, and counted as lost "
          "(iotauth_audit_events_dropped_total; a GAP event once the log recovers) when "
          "the retries or the resend queue run out. Free space or fix the audit store, or "
          "bring the remote audit service back",
          {{"error", cause.ToString()}});
    }
  }

 private:
  prometheus::Counter& enqueued_;
  prometheus::Counter& dropped_;
  prometheus::Counter& committed_;
  prometheus::Counter& failures_;
  prometheus::Gauge& writable_;
  prometheus::Histogram& latency_;
  std::function<void(bool)> writable_hook_;
};

// Holds the server NOT_SERVING while the audit log loses events (unless
// audit.when_unwritable=serve). The sink may report before the server exists: the
// state waits for Attach.
class AuditHealthHold {
 public:
  explicit AuditHealthHold(bool enabled) : enabled_(enabled) {}
  void Set(bool writable) {
    absl::MutexLock lock(&mu_);
    unwritable_ = !writable;
    if (runner_ != nullptr && enabled_) runner_->Hold(unwritable_);
  }
  // `runner` outlives the sink's reports (main stops the app before destroying it).
  void Attach(ServerRunner* runner) {
    absl::MutexLock lock(&mu_);
    runner_ = runner;
    if (enabled_ && unwritable_) runner_->Hold(true);
  }

 private:
  const bool enabled_;
  absl::Mutex mu_;
  ServerRunner* runner_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool unwritable_ ABSL_GUARDED_BY(mu_) = false;
};

// The identity service's own metrics, read at scrape time:
// iotauth_identity_decisions_total{decision,reason,credential_type}, every
// authentication decision (every known label set listed from the start, at zero);
// iotauth_identity_authorizations_total{decision,action,basis}, every topic
// authorization decision;
// the brute-force limiters' iotauth_identity_limiter_tracked_keys and
// iotauth_identity_limiter_evictions_total,
// labelled limiter="device" or "source" (absent when that limiter is off). A rising
// eviction count means the limiter's table is full of failing keys: someone is
// spraying fresh device ids or addresses. With the ExHook adapter, also its session
// table's size and evictions.
class IdentityMetrics final : public prometheus::Collectable {
 public:
  IdentityMetrics(std::shared_ptr<const identity::Authenticator> authn,
                  std::shared_ptr<const identity::Authorizer> authz)
      : authn_(std::move(authn)), authz_(std::move(authz)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily tracked{
        "iotauth_identity_limiter_tracked_keys",
        "Keys (device ids or source addresses) the brute-force limiter tracks: those with "
        "recent failures.",
        prometheus::MetricType::Gauge,
        {}};
    prometheus::MetricFamily evictions{
        "iotauth_identity_limiter_evictions_total",
        "Keys the brute-force limiter dropped to make room for new ones (its table was full "
        "of failing keys: a sign of key spraying).",
        prometheus::MetricType::Counter,
        {}};
    for (const auto& [name, stats] : {std::pair<const char*, identity::Authenticator::LimiterStats>{
                                          "device", authn_->device_limiter_stats()},
                                      std::pair<const char*, identity::Authenticator::LimiterStats>{
                                          "source", authn_->source_limiter_stats()}}) {
      if (!stats.enabled) continue;
      prometheus::ClientMetric t;
      t.label = {{"limiter", name}};
      t.gauge.value = static_cast<double>(stats.tracked);
      tracked.metric.push_back(t);
      prometheus::ClientMetric e;
      e.label = {{"limiter", name}};
      e.counter.value = static_cast<double>(stats.evictions);
      evictions.metric.push_back(e);
    }
    prometheus::MetricFamily decisions{
        "iotauth_identity_decisions_total",
        "Authentication decisions by outcome (allow, deny), deny reason (none for an "
        "allow) and credential type (none when the request named none).",
        prometheus::MetricType::Counter,
        {}};
    for (const auto& row : authn_->decisions().Snapshot()) {
      prometheus::ClientMetric m;
      m.label = {{"decision", row.decision},
                 {"reason", row.reason},
                 {"credential_type", row.credential_type}};
      m.counter.value = static_cast<double>(row.count);
      decisions.metric.push_back(std::move(m));
    }
    prometheus::MetricFamily authorizations{
        "iotauth_identity_authorizations_total",
        "Topic authorization decisions (Authorize, ExHook, ext_authz) by outcome, action "
        "(publish, subscribe) and basis: rule (a rule matched), default_effect (none did), "
        "device (unknown, not enabled or named with another product).",
        prometheus::MetricType::Counter,
        {}};
    for (const auto& row : authz_->DecisionCounts()) {
      prometheus::ClientMetric m;
      m.label = {{"decision", row.decision}, {"action", row.action}, {"basis", row.basis}};
      m.counter.value = static_cast<double>(row.count);
      authorizations.metric.push_back(std::move(m));
    }
    std::vector<prometheus::MetricFamily> out{std::move(tracked), std::move(evictions),
                                              std::move(decisions), std::move(authorizations)};
    if (exhook_ != nullptr) {
      const gateway::SessionTable& table = exhook_->sessions();
      out.push_back(GaugeFamily("iotauth_exhook_sessions",
                                "EMQX ExHook clients remembered between client.authenticate and "
                                "client.authorize (limit: identity.exhook_max_sessions).",
                                static_cast<double>(table.size())));
      out.push_back(CounterFamily("iotauth_exhook_session_evictions_total",
                                  "ExHook sessions dropped because the table was full: those "
                                  "clients' publishes and subscribes are refused until they "
                                  "reconnect. Raise identity.exhook_max_sessions.",
                                  static_cast<double>(table.evicted())));
    }
    return out;
  }

  // Set once, before the metrics endpoint serves.
  void set_exhook(std::shared_ptr<const gateway::ExHookHandler> exhook) {
    exhook_ = std::move(exhook);
  }

 private:
  std::shared_ptr<const identity::Authenticator> authn_;
  std::shared_ptr<const identity::Authorizer> authz_;
  std::shared_ptr<const gateway::ExHookHandler> exhook_;
};

// iotauth_audit_log_bytes: what the hosted audit log takes, read at scrape time
// (with the segment log, what audit.retention_max_bytes counts).
class AuditLogSize final : public prometheus::Collectable {
 public:
  explicit AuditLogSize(const audit::AuditStore* store) : store_(store) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    return {GaugeFamily("iotauth_audit_log_bytes",
                        "Bytes the audit log takes: the segment log's events (what "
                        "audit.retention_max_bytes keeps under its budget), or the SQLite "
                        "database and its WAL (storage.audit_backend=sqlite; the file does not "
                        "shrink when retention deletes rows).",
                        static_cast<double>(store_->StoredBytes()))};
  }

 private:
  const audit::AuditStore* store_;
};

// iotauth_audit_refused_calls_total: calls refused UNAVAILABLE because the audit log
// could not record them (audit.when_unwritable=refuse only), read at scrape time.
class AuditRefusals final : public prometheus::Collectable {
 public:
  explicit AuditRefusals(const audit::AuditGate* gate) : gate_(gate) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    return {CounterFamily("iotauth_audit_refused_calls_total",
                          "Calls refused UNAVAILABLE while the audit log could not record them "
                          "(audit.when_unwritable=refuse): authentications, audited "
                          "authorizations, registry mutations, certificate operations.",
                          static_cast<double>(gate_->refused()))};
  }

 private:
  const audit::AuditGate* gate_;
};

// The registry mirror's counters, read at scrape time. failed_closed is the one to
// alert on: each is a resource the identity cache refuses because it could not be
// read (a change that cannot be read, a device whose keys do not open); the logs name
// them.
class MirrorMetrics final : public prometheus::Collectable {
 public:
  MirrorMetrics(std::shared_ptr<const identity::RegistryMirror> mirror,
                std::shared_ptr<const identity::DirectoryMirrorTarget> target)
      : mirror_(std::move(mirror)), target_(std::move(target)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    auto counter = [](const char* name, const char* help, int64_t value) {
      return CounterFamily(name, help, static_cast<double>(value));
    };
    return {
        counter("iotauth_registry_mirror_applied_changes_total",
                "Registry changes the identity cache applied from the change stream.",
                mirror_->applied_changes()),
        counter("iotauth_registry_mirror_failed_closed_total",
                "Registry resources the identity cache dropped because they could not be read "
                "(a change that cannot be read, a device whose stored keys do not open): they "
                "are refused until written again. The logs name each one.",
                mirror_->failed_closed_changes()),
        counter("iotauth_registry_mirror_silent_streams_total",
                "Change streams found silent (no heartbeat for a second) and reconnected.",
                mirror_->silent_streams()),
        counter("iotauth_registry_mirror_malformed_records_total",
                "Registry records the identity cache found malformed (the logs name the field).",
                target_ == nullptr ? 0 : target_->malformed_records()),
    };
  }

 private:
  std::shared_ptr<const identity::RegistryMirror> mirror_;
  std::shared_ptr<const identity::DirectoryMirrorTarget> target_;
};

// Credentials for calls to other iotauth services (split mode). The CA bundle and
// client certificate are read again every second like the listener's (`*tls`, made
// by the first call and shared by the next), so a renewed client certificate is
// presented on new connections without a restart.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> UpstreamCredentials(
    const ServerConfig& c, std::string* bearer_token, std::shared_ptr<TlsReloader>* tls) {
  const auto& u = c.upstream();
  if (!u.bearer_token_file().empty()) {
    IOTAUTH_ASSIGN_OR_RETURN(std::string tok, ReadTextFile(u.bearer_token_file()));
    while (!tok.empty() && (tok.back() == '\n' || tok.back() == '\r')) tok.pop_back();
    *bearer_token = tok;
  }
  if (u.insecure()) return grpc::InsecureChannelCredentials();
  TlsSourcePaths paths{u.cert_file(), u.key_file(), u.ca_file()};
  const bool dev = c.grpc().tls().mode() == iotauth::config::v1::TLS_MODE_DEV_PKI ||
                   c.grpc().tls().mode() == iotauth::config::v1::TLS_MODE_UNSPECIFIED;
  if (dev) {
    // This process may call out before its own server made the development PKI, and
    // a peer started at the same moment may be making it: wait for it, or make it.
    IOTAUTH_RETURN_IF_ERROR(EnsureDevPki(DevPkiDir(c), absl::Now()).status());
    DevPkiPaths p = DevPkiLayout(DevPkiDir(c));
    if (paths.ca_file.empty()) paths.ca_file = p.ca_cert;
    if (paths.cert_file.empty() && bearer_token->empty()) {
      paths.cert_file = p.admin_cert;
      paths.key_file = p.admin_key;
    }
  }
  if (paths.cert_file.empty() && paths.ca_file.empty()) {
    return grpc::SslCredentials(grpc::SslCredentialsOptions());  // the system's roots
  }
  if (*tls == nullptr) {
    TlsReloader::Options options;
    options.staging_root = TlsStagingRoot(c);
    options.use = "upstream";
    IOTAUTH_ASSIGN_OR_RETURN(*tls, TlsReloader::Start(paths, std::move(options)));
  }
  return ChannelCredentialsFrom(**tls);
}

// Channels to the other services (the registry the identity mirror follows, the
// audit log events stream to). Keepalive pings find a dead connection (a peer gone
// without a FIN, a NAT or load balancer that dropped an idle flow) within ~4 s,
// even on a stream that carries nothing, and the channel then connects afresh (the
// mirror's heartbeats notice a silent stream within a second, but a new call on a
// half-open connection would be just as silent). Large enough for the largest
// response (a page of CRLs of up to 4 MiB each).
grpc::ChannelArguments UpstreamChannelArgs() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  return args;
}

// The broker and gateway contracts (EMQX ExHook, Envoy ext_authz) decide through
// the same Authenticator and Authorizer as IdentityService.
class LocalIdentityBackend final : public gateway::IdentityBackend {
 public:
  LocalIdentityBackend(std::shared_ptr<identity::Authenticator> authn,
                       std::shared_ptr<identity::Authorizer> authz)
      : authn_(std::move(authn)), authz_(std::move(authz)) {}
  absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& req,
      const gateway::GatewayCallContext& ctx) override {
    iotauth::identity::v1::AuthenticateResponse resp;
    IOTAUTH_RETURN_IF_ERROR(authn_->Authenticate(req, identity::CallContext{ctx.caller}, &resp));
    return resp;
  }
  absl::StatusOr<iotauth::identity::v1::AuthorizeResponse> Authorize(
      const iotauth::identity::v1::AuthorizeRequest& req,
      const gateway::GatewayCallContext& ctx) override {
    iotauth::identity::v1::AuthorizeResponse resp;
    IOTAUTH_RETURN_IF_ERROR(authz_->Authorize(req, identity::CallContext{ctx.caller}, &resp));
    return resp;
  }

 private:
  std::shared_ptr<identity::Authenticator> authn_;
  std::shared_ptr<identity::Authorizer> authz_;
};

constexpr char kIdentityName[] = "iotauth.identity.v1.IdentityService";
constexpr char kExHookName[] = "emqx.exhook.v2.HookProvider";
constexpr char kExtAuthzName[] = "envoy.service.auth.v3.Authorization";

class EmbeddedApp final : public App {
 public:
  EmbeddedApp(ServerConfig config, std::shared_ptr<prometheus::Registry> registry)
      : config_(std::move(config)), metrics_(std::move(registry)) {}

  absl::Status Init() {
    const Clock* clock = &RealClock::Get();
    // Who may call: roles from client certificates and bearer tokens.
    if (config_.auth().disabled()) {
      log::Warn("caller authentication is DISABLED: every caller has every role");
      resolver_ = std::make_unique<AllowAllCallerResolver>();
    } else {
      auto r = std::make_unique<ConfiguredCallerResolver>(config_.auth());
      // Token for this process's own calls between its services (in-process channel).
      IOTAUTH_ASSIGN_OR_RETURN(std::string raw, crypto::RandomBytes(32));
      internal_token_ = crypto::HexEncode(raw);
      r->AddInternalToken(std::string(kInternalPrincipal), internal_token_,
                          static_cast<uint32_t>(Role::kAdmin));
      PublicCallLimit public_limit;
      public_limit.per_second = config_.auth().public_calls_per_second();
      public_limit.burst = config_.auth().public_calls_burst();
      auth_gate_ = std::make_shared<EarlyAuthGate>(r.get(), EarlyAuthGate::DefaultPublicPrefixes(),
                                                   public_limit, clock);
      resolver_ = std::move(r);
    }

    IOTAUTH_RETURN_IF_ERROR(InitAudit(clock));
    if (auth_gate_ != nullptr) {
      // Calls the gate refuses reach no handler: their tally goes to the audit log.
      audit::RefusedCallReporter::Options ro;
      ro.tally = auth_gate_->refusals();
      ro.sink = sink_;
      ro.clock = clock;
      IOTAUTH_ASSIGN_OR_RETURN(refused_reporter_, audit::RefusedCallReporter::Create(ro));
      refused_reporter_->Start();
    }
    if (HostsService(config_, "registry")) IOTAUTH_RETURN_IF_ERROR(InitRegistry(clock));
    if (HostsService(config_, "identity")) IOTAUTH_RETURN_IF_ERROR(InitIdentity(clock));
    return absl::OkStatus();
  }

  std::vector<HostedService> Services() override {
    std::vector<HostedService> out;
    if (identity_service_) {
      identity::IdentityService* identity = identity_service_.get();
      out.push_back({kIdentityName, identity,
                     [identity](GrpcServerMetrics* m) { identity->AttachMetrics(m); },
                     /*serving_at_start=*/false});
    }
    if (registry_service_) {
      out.push_back({"iotauth.registry.v1.DeviceRegistry", registry_service_.get()});
    }
    if (certificate_service_) {
      out.push_back({"iotauth.identity.v1.CertificateService", certificate_service_.get()});
    }
    if (audit_service_) out.push_back({"iotauth.audit.v1.AuditLog", audit_service_.get()});
    // The identity front-ends answer from the directory: NOT_SERVING (and the whole
    // server too) until the registry mirror has loaded it.
    if (exhook_service_) {
      out.push_back({kExHookName, exhook_service_.get(), nullptr, /*serving_at_start=*/false});
    }
    if (ext_authz_service_) {
      out.push_back({kExtAuthzName, ext_authz_service_.get(), nullptr, /*serving_at_start=*/false});
    }
    return out;
  }

  absl::Status OnServing(ServerRunner& runner) override {
    audit_health_.Attach(&runner);
    if (identity_metrics_) runner.RegisterCollectable(identity_metrics_);
    if (audit_log_size_) runner.RegisterCollectable(audit_log_size_);
    if (RefusingGate() != nullptr) {
      // The exposer keeps a weak reference: the app holds the collectable.
      audit_refusals_ = std::make_shared<AuditRefusals>(RefusingGate());
      runner.RegisterCollectable(audit_refusals_);
    }
    absl::Status st = StartMirror(runner);
    // Made by now if this process calls upstream (the audit sink during Init, the
    // mirror just above).
    if (upstream_tls_) runner.RegisterCollectable(upstream_tls_);
    return st;
  }

  absl::Status StartMirror(ServerRunner& runner) {
    if (!directory_) return absl::OkStatus();
    // The identity service mirrors the registry over its gRPC contract: in-process
    // here, across the network in split mode.
    std::shared_ptr<grpc::Channel> channel;
    std::string token = internal_token_;
    if (registry_service_) {
      channel = runner.server()->InProcessChannel(UpstreamChannelArgs());
    } else {
      std::string upstream_token;
      IOTAUTH_ASSIGN_OR_RETURN(auto creds,
                               UpstreamCredentials(config_, &upstream_token, &upstream_tls_));
      grpc::ChannelArguments args = UpstreamChannelArgs();
      if (!config_.upstream().server_name().empty()) {
        args.SetSslTargetNameOverride(config_.upstream().server_name());
      }
      channel = grpc::CreateCustomChannel(config_.registry_address(), creds, args);
      token = upstream_token;
    }
    registrar_ = std::make_unique<identity::RegistryRegistrar>(channel, token);
    cert_registrar_ = std::make_unique<identity::RegistryCertificateRegistrar>(channel, token);
    registrar_ready_.store(true);
    identity::RegistryMirrorOptions mo;
    mo.channel = channel;
    mo.bearer_token = token;
    mo.target = fanout_target_.get();
    mo.fresh = &directory_ready_;
    mo.max_silence = FromProtoDuration(config_.identity().max_registry_silence());
    mirror_ = std::make_shared<identity::RegistryMirror>(mo);
    mirror_metrics_ = std::make_shared<MirrorMetrics>(mirror_, mirror_target_);
    runner.RegisterCollectable(mirror_metrics_);  // held weakly: kept in mirror_metrics_
    absl::Time start = absl::Now();
    mirror_->Start();
    log::Info("identity: loading the registry mirror");
    // Waits for the first sync, but not through a SIGTERM (a rollout that gives up
    // on a pod still loading must not wait for its grace period to run out).
    while (!mirror_->WaitForInitialSync(absl::Milliseconds(200))) {
      if (TerminationSignalPending()) {
        return absl::CancelledError("stopped by a signal while loading the registry mirror");
      }
      if (absl::Now() - start > absl::Seconds(120)) {
        return absl::UnavailableError(
            "identity: the registry mirror did not sync within 120s (check registry_address "
            "and the upstream credentials)");
      }
    }
    directory_ready_.store(true, std::memory_order_release);
    for (const char* name : {kIdentityName, kExHookName, kExtAuthzName}) runner.SetServing(name);
    log::Info("identity: registry mirror ready",
              {{"took", absl::FormatDuration(absl::Now() - start)}});
    return absl::OkStatus();
  }

  std::shared_ptr<EarlyAuthGate> AuthGate() const override { return auth_gate_; }

  void BeginShutdown() override {
    if (mirror_) mirror_->Stop();
  }

  void Stop() override {
    if (mirror_) mirror_->Stop();
    if (change_pruner_) change_pruner_->Stop();
    refused_reporter_.reset();  // writes the last refusals it counted
    // Flush the audit pipeline after the server drained: every decision made is
    // committed before exit.
    if (local_sink_) {
      local_sink_->Shutdown();
      ReportSpool(local_sink_->Stats().spooled, local_sink_->SpoolStatus());
    }
    if (remote_sink_) {
      remote_sink_->Shutdown(absl::Seconds(5));
      ReportSpool(remote_sink_->Stats().spooled, remote_sink_->SpoolStatus());
    }
  }

 private:
  // What the audit sink could not hand over before exit.
  void ReportSpool(uint64_t spooled, const absl::Status& status) const {
    const std::string path = AuditSpoolPath(config_);
    if (!status.ok()) {
      log::Error(
          "audit events LOST at exit: they could not be committed and the spool could "
          "not be written",
          {{"error", std::string(status.message())}, {"spool", path}});
    } else if (spooled > 0) {
      log::Warn(
          "audit events could not be committed before exit: they were spooled and are "
          "committed on the next start",
          {{"events", absl::StrCat(spooled)}, {"spool", path}});
    }
  }

  static void ReportSpoolNote(const absl::Status& note) {
    if (note.ok()) return;
    if (note.code() == absl::StatusCode::kDataLoss) {
      log::Error("audit: the spool left at the last shutdown could not be used",
                 {{"detail", std::string(note.message())}});
    } else {
      log::Warn(
          "audit: the spool was committed but not removed (harmless: its events are "
          "recognised as duplicates next time); remove it by hand",
          {{"error", std::string(note.message())}});
    }
  }

  // One process per store: a second server on the same files would overwrite the
  // first one's audit events with its own (each keeps the chain's head in memory),
  // and neither's identity cache would see the other's registry writes. The lock is
  // `path`.lock (posix_file::LockPathFor), held for the process's life.
  absl::Status LockStore(const std::string& path, absl::string_view what) {
    auto lock = posix_file::FileLock::Acquire(posix_file::LockPathFor(path), what);
    if (!lock.ok()) return lock.status();
    store_locks_.push_back(*std::move(lock));
    return absl::OkStatus();
  }

  absl::Status InitAudit(const Clock* clock) {
    audit_metrics_ = std::make_unique<AuditMetrics>(*metrics_);
    audit_metrics_->SetWritableHook([this](bool writable) {
      audit_gate_.SetWritable(writable);
      audit_health_.Set(writable);
    });
    const auto& ac = config_.audit();
    auto policy = ac.full_queue_policy() == "drop" ? audit::LocalAuditSink::FullQueuePolicy::kDrop
                                                   : audit::LocalAuditSink::FullQueuePolicy::kBlock;
    if (HostsService(config_, "audit")) {
      if (config_.storage().audit_backend() == "sqlite") {
        audit::SqliteAuditStore::Options so;
        so.path = AuditDbPath(config_);
        so.clock = clock;
        so.yield_every_events = ac.writer_yield_every();
        IOTAUTH_RETURN_IF_ERROR(LockStore(so.path, absl::StrCat("the audit database ", so.path)));
        auto store = audit::SqliteAuditStore::Open(so);
        if (!store.ok()) {
          return {store.status().code(),
                  absl::StrCat("audit store ", so.path, ": ", store.status().message())};
        }
        audit_store_ = std::move(*store);
      } else {
        audit::LogAuditStore::Options lo;
        lo.dir = AuditLogDir(config_);
        if (access(AuditDbPath(config_).c_str(), F_OK) == 0) {
          // Written by an earlier version (SQLite was the default): not converted.
          log::Warn(
              "an SQLite audit log exists but storage.audit_backend is 'log': it is not read "
              "or converted; the segment log starts empty. Stop, then copy it with audit_migrate "
              "(keeps every sequence and hash; services/audit/README.md), or keep appending to "
              "it with storage.audit_backend=sqlite",
              {{"sqlite_log", AuditDbPath(config_)}, {"segment_log", lo.dir}});
        }
        lo.clock = clock;
        if (config_.storage().audit_segment_events() != 0) {
          lo.events_per_segment = static_cast<uint64_t>(config_.storage().audit_segment_events());
        }
        IOTAUTH_RETURN_IF_ERROR(LockStore(lo.dir, absl::StrCat("the audit log ", lo.dir)));
        auto store = audit::LogAuditStore::Open(lo);
        if (!store.ok()) {
          return {store.status().code(),
                  absl::StrCat("audit log ", lo.dir, ": ", store.status().message())};
        }
        audit_store_ = std::move(*store);
      }
      audit_log_size_ = std::make_shared<AuditLogSize>(audit_store_.get());
      audit::LocalAuditSink::Options po;
      po.store = audit_store_.get();
      po.clock = clock;
      po.queue_capacity = static_cast<size_t>(ac.queue_capacity());
      po.max_batch = static_cast<size_t>(ac.batch_size());
      po.full_queue_policy = policy;
      po.block_timeout = FromProtoDuration(ac.block_timeout());
      po.linger = FromProtoDuration(ac.batch_linger());
      po.retention.max_age = FromProtoDuration(ac.retention_max_age());
      po.retention.max_rows = static_cast<uint64_t>(ac.retention_max_events());
      po.retention.max_bytes = static_cast<uint64_t>(ac.retention_max_bytes());
      po.retention_interval = FromProtoDuration(ac.retention_interval());
      po.notifier = &notifier_;
      po.observer = audit_metrics_.get();
      po.spool_path = AuditSpoolPath(config_);
      IOTAUTH_ASSIGN_OR_RETURN(local_sink_, audit::LocalAuditSink::Create(po));
      if (const uint64_t restored = local_sink_->Stats().restored; restored > 0) {
        log::Info("audit: committed the events spooled at the last shutdown",
                  {{"events", absl::StrCat(restored)}, {"spool", po.spool_path}});
      }
      ReportSpoolNote(local_sink_->SpoolNote());
      sink_ = local_sink_.get();
      audit::AuditService::Options svc;
      svc.store = audit_store_.get();
      svc.caller_resolver = resolver_.get();
      svc.notifier = &notifier_;
      svc.clock = clock;
      IOTAUTH_ASSIGN_OR_RETURN(audit_service_, audit::AuditService::Create(svc));
    } else if (!ac.remote_address().empty()) {
      std::string token;
      IOTAUTH_ASSIGN_OR_RETURN(auto creds, UpstreamCredentials(config_, &token, &upstream_tls_));
      grpc::ChannelArguments args = UpstreamChannelArgs();
      if (!config_.upstream().server_name().empty()) {
        args.SetSslTargetNameOverride(config_.upstream().server_name());
      }
      audit::RemoteAuditSink::Options ro;
      ro.channel = grpc::CreateCustomChannel(ac.remote_address(), creds, args);
      ro.clock = clock;
      ro.queue_capacity = static_cast<size_t>(ac.queue_capacity());
      ro.full_queue_policy = policy;
      ro.block_timeout = FromProtoDuration(ac.block_timeout());
      ro.observer = audit_metrics_.get();
      ro.spool_path = AuditSpoolPath(config_);
      if (!token.empty()) {
        ro.configure_context = [token](grpc::ClientContext* ctx) {
          ctx->AddMetadata("authorization", "Bearer " + token);
        };
      }
      IOTAUTH_ASSIGN_OR_RETURN(remote_sink_, audit::RemoteAuditSink::Create(ro));
      sink_ = remote_sink_.get();
      if (const uint64_t restored = remote_sink_->Stats().restored; restored > 0) {
        log::Info("audit: resending the events spooled at the last shutdown",
                  {{"events", absl::StrCat(restored)}, {"spool", ro.spool_path}});
      }
      ReportSpoolNote(remote_sink_->SpoolNote());
    } else {
      // ValidateConfig allows this only with audit.disabled=true.
      log::Warn("auditing is OFF (audit.disabled=true): no decision or change is recorded");
      sink_ = &null_sink_;
    }
    return absl::OkStatus();
  }

  absl::Status InitRegistry(const Clock* clock) {
    // The store's lock first: a second server is refused before it reads, or makes,
    // a master key.
    IOTAUTH_RETURN_IF_ERROR(LockStore(
        RegistryDbPath(config_), absl::StrCat("the registry database ", RegistryDbPath(config_))));
    std::string key_file = config_.storage().master_key_file().empty()
                               ? absl::StrCat(config_.data_dir(), "/master.key")
                               : config_.storage().master_key_file();
    // A key is generated only for a registry that does not exist yet: one made for
    // an existing database (say it ran with IOTAUTH_MASTER_KEY, now unset) would open
    // none of its secrets, and new ones would be sealed under a throw-away key.
    struct stat db_stat {};
    const bool db_exists = ::stat(RegistryDbPath(config_).c_str(), &db_stat) == 0;
    const bool may_create = config_.storage().master_key_file().empty() && !db_exists;
    // A configured master_key_file is the key; the environment variable is only the
    // fallback when none is configured (config.proto), never a silent override.
    auto key = registry::LoadOrCreateMasterKey(
        config_.storage().master_key_file().empty() ? "IOTAUTH_MASTER_KEY" : nullptr, key_file,
        may_create);
    if (!key.ok()) {
      return {key.status().code(),
              absl::StrCat("master key: ", key.status().message(),
                           db_exists && key.status().code() == absl::StatusCode::kNotFound
                               ? absl::StrCat(" (the registry ", RegistryDbPath(config_),
                                              " already exists and its secrets are sealed "
                                              "under its master key: restore that key's file "
                                              "or set IOTAUTH_MASTER_KEY to it)")
                               : std::string(" (set storage.master_key_file or "
                                             "IOTAUTH_MASTER_KEY to a base64 32-byte key)"))};
    }
    if (key->generated) {
      log::Warn(
          "generated a new master key next to the database: DEVELOPMENT ONLY, it protects "
          "nothing against someone who copies both; set storage.master_key_file",
          {{"path", key_file}});
    }
    log::Info("master key loaded", {{"source", key->source}});
    std::vector<std::string> previous;
    for (const auto& f : config_.storage().previous_master_key_files()) {
      auto old = registry::LoadMasterKeyFromFile(f);
      if (!old.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config key 'storage.previous_master_key_files': ", old.status().message()));
      }
      previous.push_back(*old);
    }
    IOTAUTH_ASSIGN_OR_RETURN(std::shared_ptr<const registry::SecretBox> box,
                             registry::SecretBox::Create(key->key, std::move(previous)));
    secret_box_ = box;
    registry::SqliteStore::Options so;
    so.path = RegistryDbPath(config_);
    so.secret_box = box;
    so.clock = clock;
    auto store = registry::SqliteStore::Open(so);
    if (!store.ok()) {
      return {store.status().code(),
              absl::StrCat("registry store ", so.path, ": ", store.status().message())};
    }
    registry_store_ = std::move(*store);
    registry::RegistryService::Options ro;
    ro.store = registry_store_.get();
    ro.clock = clock;
    ro.audit = sink_;
    ro.caller_resolver = resolver_.get();
    ro.secret_box = secret_box_;
    ro.audit_gate = RefusingGate();
    IOTAUTH_ASSIGN_OR_RETURN(registry_service_, registry::RegistryService::Create(ro));
    // The change log stays bounded: pruned hourly (or every tenth of a short retention).
    if (const absl::Duration retention =
            FromProtoDuration(config_.storage().registry_change_retention());
        retention > absl::ZeroDuration()) {
      registry::ChangeLogPruner::Options po;
      po.store = registry_store_.get();
      po.clock = clock;
      po.retention = retention;
      po.interval = std::clamp(retention / 10, absl::Seconds(1), absl::Hours(1));
      IOTAUTH_ASSIGN_OR_RETURN(change_pruner_, registry::ChangeLogPruner::Create(po));
      change_pruner_->Start();
    }
    // CA proof of possession, issuance, revocation and CRLs write registry data, so
    // they run beside the registry store.
    identity::x509::CertificateService::Options co;
    co.store = registry_store_.get();
    co.clock = clock;
    co.audit = sink_;
    co.caller_resolver = resolver_.get();
    co.audit_gate = RefusingGate();
    IOTAUTH_ASSIGN_OR_RETURN(certificate_service_, identity::x509::CertificateService::Create(co));
    return absl::OkStatus();
  }

  absl::Status InitIdentity(const Clock* clock) {
    identity::DirectoryCache::Options dco;
    dco.clock = clock;
    IOTAUTH_ASSIGN_OR_RETURN(directory_, identity::DirectoryCache::Create(dco));
    mirror_target_ = std::make_shared<identity::DirectoryMirrorTarget>(directory_.get());
    ca_directory_ = std::make_unique<identity::x509::CaDirectory>();
    ca_target_ = std::make_unique<identity::CaMirrorTarget>(ca_directory_.get());
    fanout_target_ = std::make_unique<identity::FanoutMirrorTarget>(
        std::vector<identity::MirrorTarget*>{mirror_target_.get(), ca_target_.get()});
    identity::x509::X509CertificateVerifier::Options xo;
    xo.cas = ca_directory_.get();
    xo.directory = directory_.get();
    xo.directory_writer = directory_.get();
    xo.registrar = &lazy_cert_registrar_;
    xo.config.parsed_cache_capacity =
        static_cast<size_t>(config_.identity().x509_parsed_cache_size());
    xo.config.result_cache_capacity =
        static_cast<size_t>(config_.identity().x509_result_cache_size());
    IOTAUTH_ASSIGN_OR_RETURN(x509_verifier_, identity::x509::X509CertificateVerifier::Create(xo));
    const auto& ic = config_.identity();
    identity::Authenticator::Options ao;
    ao.clock = clock;
    ao.directory = directory_.get();
    ao.directory_writer = directory_.get();
    ao.registrar = &lazy_registrar_;
    ao.certificate_verifier = x509_verifier_.get();
    ao.audit_sink = sink_;
    ao.config.sas_clock_skew = FromProtoDuration(ic.clock_skew());
    ao.config.triple_timestamp_window = FromProtoDuration(ic.timestamp_window());
    ao.config.max_cache_ttl = FromProtoDuration(ic.decision_cache_ttl());
    ao.config.replay_cache_capacity = static_cast<size_t>(ic.replay_cache_size());
    ao.config.require_triple_timestamp = ic.require_triple_timestamp();
    ao.config.max_enrollment_groups_tried = static_cast<size_t>(ic.max_enrollment_groups_tried());
    ao.config.device_max_failures = static_cast<uint32_t>(ic.device_max_failures());
    ao.config.source_max_failures = static_cast<uint32_t>(ic.source_max_failures());
    ao.config.lockout_base = FromProtoDuration(ic.lockout_base());
    ao.config.lockout_max = FromProtoDuration(ic.lockout_max());
    ao.config.failure_memory = FromProtoDuration(ic.failure_memory());
    ao.config.limiter_capacity = static_cast<size_t>(ic.limiter_size());
    ao.ready = &directory_ready_;
    ao.audit_gate = RefusingGate();
    IOTAUTH_ASSIGN_OR_RETURN(auto authn, identity::Authenticator::Create(ao));
    identity::Authorizer::Options zo;
    zo.clock = clock;
    zo.directory = directory_.get();
    zo.audit_sink = sink_;
    zo.ready = &directory_ready_;
    zo.audit_gate = RefusingGate();
    IOTAUTH_ASSIGN_OR_RETURN(auto authz, identity::Authorizer::Create(zo));
    std::shared_ptr<identity::Authenticator> shared_authn(std::move(authn));
    std::shared_ptr<identity::Authorizer> shared_authz(std::move(authz));
    identity_metrics_ = std::make_shared<IdentityMetrics>(shared_authn, shared_authz);
    identity::IdentityService::Options so;
    so.authenticator = shared_authn;
    so.authorizer = shared_authz;
    so.caller_resolver = resolver_.get();
    IOTAUTH_ASSIGN_OR_RETURN(identity_service_, identity::IdentityService::Create(so));

    // Broker and gateway contracts over the same decision logic.
    backend_ = std::make_unique<LocalIdentityBackend>(shared_authn, shared_authz);
    gateway::ExHookHandler::Options eo;
    eo.backend = backend_.get();
    eo.clock = clock;
    eo.max_sessions = static_cast<size_t>(ic.exhook_max_sessions());
    IOTAUTH_ASSIGN_OR_RETURN(auto exh, gateway::ExHookHandler::Create(eo));
    gateway::ExHookService::Options es;
    es.handler = std::shared_ptr<gateway::ExHookHandler>(std::move(exh));
    identity_metrics_->set_exhook(es.handler);
    es.caller_resolver = resolver_.get();
    IOTAUTH_ASSIGN_OR_RETURN(exhook_service_, gateway::ExHookService::Create(es));
    gateway::ExtAuthzHandler::Options ao2;
    ao2.backend = backend_.get();
    IOTAUTH_ASSIGN_OR_RETURN(auto eah, gateway::ExtAuthzHandler::Create(ao2));
    gateway::ExtAuthzService::Options as;
    as.handler = std::shared_ptr<gateway::ExtAuthzHandler>(std::move(eah));
    as.caller_resolver = resolver_.get();
    IOTAUTH_ASSIGN_OR_RETURN(ext_authz_service_, gateway::ExtAuthzService::Create(as));
    return absl::OkStatus();
  }

  // The registrar needs the server's in-process channel, which exists only once the
  // server runs; until then first-connect registration fails closed.
  class LazyRegistrar final : public identity::DeviceRegistrar {
   public:
    explicit LazyRegistrar(EmbeddedApp* app) : app_(app) {}
    absl::StatusOr<iotauth::registry::v1::Device> RegisterFromEnrollmentGroup(
        const identity::EnrollmentGroupRecord& group, absl::string_view device_id,
        absl::string_view key) override {
      if (!app_->registrar_ready_.load()) return absl::UnavailableError("registry not ready");
      return app_->registrar_->RegisterFromEnrollmentGroup(group, device_id, key);
    }
    absl::StatusOr<Activation> ActivateDevice(const identity::ProductRecord& product,
                                              absl::string_view device_name) override {
      if (!app_->registrar_ready_.load()) return absl::UnavailableError("registry not ready");
      return app_->registrar_->ActivateDevice(product, device_name);
    }
    absl::Status MarkActivated(const identity::ProductRecord& product,
                               absl::string_view device_id) override {
      if (!app_->registrar_ready_.load()) return absl::UnavailableError("registry not ready");
      return app_->registrar_->MarkActivated(product, device_id);
    }

   private:
    EmbeddedApp* app_;
  };

  // Just-in-time registration of certificate devices, over the registry contract.
  class LazyCertRegistrar final : public identity::x509::CertificateDeviceRegistrar {
   public:
    explicit LazyCertRegistrar(EmbeddedApp* app) : app_(app) {}
    absl::StatusOr<iotauth::registry::v1::Device> RegisterFromCertificate(
        const identity::x509::CaInfo& ca, absl::string_view device_id,
        absl::string_view fingerprint) override {
      if (!app_->registrar_ready_.load()) return absl::UnavailableError("registry not ready");
      return app_->cert_registrar_->RegisterFromCertificate(ca, device_id, fingerprint);
    }

   private:
    EmbeddedApp* app_;
  };

  ServerConfig config_;
  // Released last, after every store is closed.
  std::vector<std::unique_ptr<posix_file::FileLock>> store_locks_;
  std::shared_ptr<prometheus::Registry> metrics_;
  std::unique_ptr<CallerResolver> resolver_;
  std::string internal_token_;
  // The client certificate and CA bundle for calls upstream (split mode), shared by
  // the registry and audit channels; null in process. Declared before the members
  // holding those channels, so that it goes after them: gRPC reads the files it
  // stages until the last channel is gone.
  std::shared_ptr<TlsReloader> upstream_tls_;
  // False until the registry mirror's first sync: Authenticate and Authorize answer
  // UNAVAILABLE meanwhile.
  std::atomic<bool> directory_ready_{false};

  // Audit.
  // What the producers ask before acting, with audit.when_unwritable=refuse.
  const audit::AuditGate* RefusingGate() const {
    return config_.audit().when_unwritable() == "refuse" ? &audit_gate_ : nullptr;
  }
  audit::AuditGate audit_gate_;
  std::shared_ptr<AuditRefusals> audit_refusals_;  // with =refuse; reads audit_gate_
  AuditHealthHold audit_health_{config_.audit().when_unwritable() != "serve"};
  std::unique_ptr<AuditMetrics> audit_metrics_;
  std::shared_ptr<IdentityMetrics> identity_metrics_;  // identity only
  std::unique_ptr<audit::AuditStore> audit_store_;
  // A hosted audit log only; declared after the store, so it goes first.
  std::shared_ptr<AuditLogSize> audit_log_size_;
  audit::CommitNotifier notifier_;
  std::unique_ptr<audit::LocalAuditSink> local_sink_;
  std::unique_ptr<audit::RemoteAuditSink> remote_sink_;
  audit::NullAuditSink null_sink_;
  audit::AuditSink* sink_ = nullptr;
  std::unique_ptr<audit::AuditService> audit_service_;

  // Registry.
  std::shared_ptr<const registry::SecretBox> secret_box_;
  std::unique_ptr<registry::SqliteStore> registry_store_;
  std::unique_ptr<registry::RegistryService> registry_service_;
  std::unique_ptr<registry::ChangeLogPruner> change_pruner_;
  std::unique_ptr<identity::x509::CertificateService> certificate_service_;

  // Identity.
  std::unique_ptr<identity::DirectoryCache> directory_;
  std::shared_ptr<identity::DirectoryMirrorTarget> mirror_target_;  // and MirrorMetrics
  std::unique_ptr<identity::x509::CaDirectory> ca_directory_;
  std::unique_ptr<identity::CaMirrorTarget> ca_target_;
  std::unique_ptr<identity::FanoutMirrorTarget> fanout_target_;
  std::unique_ptr<identity::x509::X509CertificateVerifier> x509_verifier_;
  std::unique_ptr<identity::IdentityService> identity_service_;
  std::unique_ptr<LocalIdentityBackend> backend_;
  std::unique_ptr<gateway::ExHookService> exhook_service_;
  std::unique_ptr<gateway::ExtAuthzService> ext_authz_service_;
  std::shared_ptr<identity::RegistryMirror> mirror_;  // and MirrorMetrics
  std::shared_ptr<MirrorMetrics> mirror_metrics_;
  std::shared_ptr<EarlyAuthGate> auth_gate_;  // over resolver_; null with auth off
  // Over auth_gate_'s tally and sink_; declared after both, so it goes first.
  std::unique_ptr<audit::RefusedCallReporter> refused_reporter_;
  std::unique_ptr<identity::RegistryRegistrar> registrar_;
  std::unique_ptr<identity::RegistryCertificateRegistrar> cert_registrar_;
  std::atomic<bool> registrar_ready_{false};
  LazyRegistrar lazy_registrar_{this};
  LazyCertRegistrar lazy_cert_registrar_{this};
};

}  // namespace

absl::StatusOr<std::unique_ptr<App>> CreateApp(const ServerConfig& config,
                                               std::shared_ptr<prometheus::Registry> registry) {
  auto app = std::make_unique<EmbeddedApp>(config, std::move(registry));
  IOTAUTH_RETURN_IF_ERROR(app->Init());
  return app;
}

}  // namespace iotauth
