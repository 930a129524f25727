// health: grpc.health.v1.Health/Check through a generic stub and the health
// messages generated from Debian's grpc-proto (//third_party/grpc_health).
#include "absl/strings/str_cat.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/codegen/proto_utils.h"

namespace iotauth::cli {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

int Health(Invocation& inv) {
  int exit = 0;
  auto conn = ConnectOrReport(inv, &exit);
  if (!conn) return exit;
  HealthCheckRequest req;
  req.set_service(inv.flags.Get("service"));
  HealthCheckResponse resp;
  grpc::TemplatedGenericStub<HealthCheckRequest, HealthCheckResponse> stub(conn->channel());
  grpc::ClientContext context;
  conn->PrepareUnary(&context);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", req, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    status = grpc::Status(grpc::StatusCode::INTERNAL, "completion queue failed");
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    inv.err() << "error: grpc.health.v1.Health/Check: NOT_FOUND: the server reports no health "
                 "status for service '"
              << req.service()
              << "'\nhint: leave --service empty for the whole server, or "
                 "use a full service name such as "
                 "iotauth.registry.v1.DeviceRegistry.\n";
    return kExitRpcError;
  }
  if (!status.ok()) {
    return ReportRpcError(inv, status, "grpc.health.v1.Health/Check", conn->settings());
  }
  if (JsonOutput(inv)) {
    inv.out() << ToJson(resp) << "\n";
  } else {
    inv.out() << HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  }
  if (resp.status() == HealthCheckResponse::NOT_SERVING) {
    inv.err() << "hint: a server reports NOT_SERVING while the identity service loads its "
                 "registry mirror, while its audit log cannot be written (metric "
                 "iotauth_audit_writable 0), and while it shuts down; its log says which.\n";
  }
  return resp.status() == HealthCheckResponse::SERVING ? kExitOk : kExitCheckFailed;
}

}  // namespace

void AddHealthCommand(Command& root) {
  root.Sub("health", "grpc.health.v1 Check; exit 5 unless SERVING")
      .Flag({"service", "NAME",
             "Service to check, e.g. iotauth.identity.v1.IdentityService (empty: the server)"})
      .Run(Health);
}

}  // namespace iotauth::cli
