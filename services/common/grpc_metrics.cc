#include "services/common/grpc_metrics.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace iotauth {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

const char* TypeName(ServerRpcInfo::Type t) {
  switch (t) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unary";
}

const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return *b;
}

class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcServerMetrics* metrics, GrpcServerMetrics::Method* method, uint64_t caller)
      : metrics_(metrics),
        method_(method),
        caller_(caller),
        start_(std::chrono::steady_clock::now()) {
    method_->started->Increment();
  }
  // The call has ended: its caller's place in the backlog is free.
  ~MetricsInterceptor() override {
    if (caller_ != 0) metrics_->call_backlog()->Started(caller_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      int code = static_cast<int>(methods->GetSendStatus().error_code());
      double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->RecordHandled(method_, code, secs);
    }
    methods->Proceed();
  }

 private:
  GrpcServerMetrics* metrics_;
  GrpcServerMetrics::Method* method_;
  uint64_t caller_;  // 0: no backlog to settle
  std::chrono::steady_clock::time_point start_;
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    const char* method = info->method();
    if (method == nullptr) return nullptr;
    if (metrics_->IsMeteredInHandler(method)) return nullptr;  // its handler records them
    uint64_t caller = 0;
    if (metrics_->call_backlog() != nullptr && info->server_context() != nullptr) {
      caller = CallBacklog::KeyOfCall(*info->server_context());
    }
    return new MetricsInterceptor(metrics_, metrics_->Lookup(method, TypeName(info->type())),
                                  caller);
  }

 private:
  GrpcServerMetrics* metrics_;
};

}  // namespace

absl::string_view GrpcCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code < 0 || code > 16) return "UNKNOWN";
  return kNames[code];
}

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started_(prometheus::BuildCounter()
                   .Name("grpc_server_started_total")
                   .Help("Total number of RPCs started on the server.")
                   .Register(registry)),
      handled_(prometheus::BuildCounter()
                   .Name("grpc_server_handled_total")
                   .Help("Total number of RPCs completed on the server, regardless of success "
                         "or failure.")
                   .Register(registry)),
      handling_(prometheus::BuildHistogram()
                    .Name("grpc_server_handling_seconds")
                    .Help("Histogram of response latency (seconds) of gRPC that had been "
                          "application-level handled by the server.")
                    .Register(registry)) {}

void GrpcServerMetrics::RegisterServices(const std::vector<std::string>& services) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const auto& name : services) {
    const auto* svc = pool->FindServiceByName(name);
    if (svc == nullptr) continue;
    for (int i = 0; i < svc->method_count(); ++i) {
      const auto* m = svc->method(i);
      const char* type = m->client_streaming()
                             ? (m->server_streaming() ? "bidi_stream" : "client_stream")
                             : (m->server_streaming() ? "server_stream" : "unary");
      Create(absl::StrCat("/", name, "/", m->name()), type, /*known=*/true);
    }
  }
  Create("/grpc.health.v1.Health/Check", "unary", /*known=*/true);
  Create("/grpc.health.v1.Health/Watch", "server_stream", /*known=*/true);
  absl::MutexLock lock(&mu_);
  sealed_ = true;
}

GrpcServerMetrics::Method* GrpcServerMetrics::Lookup(absl::string_view full_method,
                                                     const char* type) {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = methods_.find(full_method);
    if (it != methods_.end()) return it->second.get();
  }
  return Create(full_method, type, /*known=*/false);
}

GrpcServerMetrics::Method* GrpcServerMetrics::Create(absl::string_view full_method,
                                                     absl::string_view type, bool known) {
  absl::MutexLock lock(&mu_);
  // Keys of unknown methods start with a space, which no gRPC path does ("/...").
  std::string unknown_key;
  if (sealed_ && !known) {
    unknown_key = absl::StrCat(" ", type);
    full_method = unknown_key;
  }
  auto& slot = methods_[full_method];
  if (slot) return slot.get();
  auto m = std::make_unique<Method>();
  if (!unknown_key.empty()) {
    m->service = kUnknown;
    m->name = kUnknown;
  } else {
    absl::string_view path = full_method;
    if (!path.empty() && path[0] == '/') path.remove_prefix(1);
    size_t slash = path.find('/');
    m->service = std::string(slash == absl::string_view::npos ? path : path.substr(0, slash));
    m->name = slash == absl::string_view::npos ? "" : std::string(path.substr(slash + 1));
  }
  m->type = std::string(type);
  m->started = &started_.Add(
      {{"grpc_type", m->type}, {"grpc_service", m->service}, {"grpc_method", m->name}});
  m->handling = &handling_.Add(
      {{"grpc_type", m->type}, {"grpc_service", m->service}, {"grpc_method", m->name}}, Buckets());
  // OK is created up front so dashboards see a zero series.
  m->handled[0] = &handled_.Add({{"grpc_type", m->type},
                                 {"grpc_service", m->service},
                                 {"grpc_method", m->name},
                                 {"grpc_code", "OK"}});
  slot = std::move(m);
  return slot.get();
}

GrpcServerMetrics::Method* GrpcServerMetrics::MeterInHandler(absl::string_view full_method,
                                                             const char* type) {
  metered_in_handler_.insert(std::string(full_method));
  return Create(full_method, type, /*known=*/true);
}

void GrpcServerMetrics::RecordHandled(Method* m, int code, double seconds) {
  if (code < 0 || code > 16) code = 2;
  prometheus::Counter* c = m->handled[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    absl::MutexLock lock(&mu_);
    c = m->handled[code].load(std::memory_order_relaxed);
    if (c == nullptr) {
      c = &handled_.Add({{"grpc_type", m->type},
                         {"grpc_service", m->service},
                         {"grpc_method", m->name},
                         {"grpc_code", std::string(GrpcCodeName(code))}});
      m->handled[code].store(c, std::memory_order_release);
    }
  }
  c->Increment();
  m->handling->Observe(seconds);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcServerMetrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

}  // namespace iotauth
