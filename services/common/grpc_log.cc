#include "services/common/grpc_log.h"

#include <atomic>
#include <string>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace iotauth {
namespace {

// Set once by RouteGrpcLogs, before gRPC logs from other threads.
std::function<void(absl::string_view)>* listener_failure_callback = nullptr;
std::atomic<bool> listener_failure_reported{false};

}  // namespace

bool IsListenerFailure(absl::string_view grpc_message) {
  return absl::StartsWith(grpc_message, "Failed accept");  // accept4, or accept
}

void GrpcLogHook(gpr_log_func_args* args) {
  log::Level level = log::Level::kDebug;
  switch (args->severity) {
    case GPR_LOG_SEVERITY_ERROR:
      level = log::Level::kError;
      break;
    case GPR_LOG_SEVERITY_INFO:
      level = log::Level::kInfo;
      break;
    case GPR_LOG_SEVERITY_DEBUG:
      level = log::Level::kDebug;
      break;
  }
  const absl::string_view message = args->message != nullptr ? args->message : "";
  // One per handshake still pending when the server shuts down: not news.
  if (absl::StrContains(message, "cancel_check_peer")) level = log::Level::kDebug;
  if (log::Enabled(level)) {
    log::Write(level, "grpc",
               {{"source", absl::StrCat(args->file != nullptr ? args->file : "?", ":", args->line)},
                {"message", std::string(message)}});
  }
  if (IsListenerFailure(message) && listener_failure_callback != nullptr &&
      !listener_failure_reported.exchange(true)) {
    (*listener_failure_callback)(message);
  }
}

void RouteGrpcLogs(std::function<void(absl::string_view message)> on_listener_failure) {
  static absl::once_flag once;
  absl::call_once(once, [&on_listener_failure] {
    listener_failure_callback =
        new std::function<void(absl::string_view)>(std::move(on_listener_failure));
    gpr_set_log_function(GrpcLogHook);
  });
}

}  // namespace iotauth
