// gRPC's own log lines (gpr_log), routed into the project's JSON log, and the one
// gRPC message that means a listener is dead: in gRPC 1.51 a failed accept4()
// (EMFILE, ENFILE, ENOBUFS...) stops that listening socket for good, so the server
// answers its open connections but accepts no new one.
#pragma once

#include <grpc/support/log.h>

#include <functional>

#include "absl/strings/string_view.h"

namespace iotauth {

// Routes gpr_log through log::Write (level error/info/debug, field "source" with
// gRPC's file and line) from now on. `on_listener_failure` runs once, on the gRPC
// thread that logged it, the first time gRPC reports a failed accept; it must be
// quick and must not call into gRPC. Call once, before the server starts.
void RouteGrpcLogs(std::function<void(absl::string_view message)> on_listener_failure);

// The hook itself (exposed for tests).
void GrpcLogHook(gpr_log_func_args* args);

// True for the gRPC message that reports a listener gone for good.
bool IsListenerFailure(absl::string_view grpc_message);

}  // namespace iotauth
