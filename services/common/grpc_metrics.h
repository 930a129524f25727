// Conventional gRPC server metrics (the names go-grpc-prometheus made standard):
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method} (histogram)
// recorded by a server interceptor. Series for known methods are created up front
// so the hot path does no label hashing and takes no lock.
#pragma once

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace iotauth {

class GrpcServerMetrics {
 public:
  explicit GrpcServerMetrics(prometheus::Registry& registry);

  // Pre-creates series for every method of these fully-qualified services found
  // in the generated descriptor pool, plus grpc.health.v1.Health.
  void RegisterServices(const std::vector<std::string>& services);

  // Per-method series. Pointers stay valid for the registry's lifetime.
  struct Method {
    prometheus::Counter* started = nullptr;
    prometheus::Histogram* handling = nullptr;
    std::array<std::atomic<prometheus::Counter*>, 17> handled{};
    std::string type, service, name;
  };

  Method* Lookup(absl::string_view full_method, const char* type);
  void RecordHandled(Method* m, int code, double seconds);

  // Interceptor factory to hand to grpc::ServerBuilder.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  Method* Create(absl::string_view full_method, absl::string_view type);

  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_;
  // Written under mu_ before serving starts (RegisterServices) and for unknown
  // methods afterwards; read lock-free through the frozen map when possible.
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_ ABSL_GUARDED_BY(mu_);
};

// gRPC status code name as Prometheus label ("OK", "INVALID_ARGUMENT", ...).
absl::string_view GrpcCodeName(int code);

}  // namespace iotauth
