#include "services/common/grpc_log.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <atomic>
#include <string>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/log.h"
#include "services/common/log_limiter.h"

namespace iotauth {
namespace {

// Set once by RouteGrpcLogs, before gRPC logs from other threads.
std::function<void(absl::string_view)>* listener_failure_callback = nullptr;
std::atomic<bool> listener_failure_reported{false};
std::atomic<uint64_t> handshake_failures[kHandshakeFailureKinds] = {};

// gRPC's error-level lines, capped per source line (see RouteGrpcLogs).
LogLimiter& ErrorLineLimiter() {
  static auto* limiter = new LogLimiter({.burst = 10, .window = absl::Minutes(1)});
  return *limiter;
}

// log::Write takes its fields as a list: one call per set of optional fields.
void WriteLine(log::Level level, std::string source, absl::string_view message,
               absl::string_view cause, uint64_t suppressed) {
  log::Field s{"source", std::move(source)};
  log::Field m{"message", std::string(message)};
  if (cause.empty() && suppressed == 0) {
    log::Write(level, "grpc", {std::move(s), std::move(m)});
  } else if (cause.empty()) {
    log::Write(level, "grpc",
               {std::move(s), std::move(m), {"suppressed", absl::StrCat(suppressed)}});
  } else if (suppressed == 0) {
    log::Write(level, "grpc", {std::move(s), std::move(m), {"cause", std::string(cause)}});
  } else {
    log::Write(level, "grpc",
               {std::move(s),
                std::move(m),
                {"cause", std::string(cause)},
                {"suppressed", absl::StrCat(suppressed)}});
  }
}

}  // namespace

bool IsListenerFailure(absl::string_view grpc_message) {
  return absl::StartsWith(grpc_message, "Failed accept");  // accept4, or accept
}

absl::string_view HandshakeFailureName(HandshakeFailure cause) {
  switch (cause) {
    case HandshakeFailure::kRefusedPeerCertificate:
      return "refused_peer_certificate";
    case HandshakeFailure::kPeerRefusedCertificate:
      return "peer_refused_certificate";
    case HandshakeFailure::kProtocol:
      break;
  }
  return "protocol";
}

std::optional<HandshakeFailure> ClassifyHandshakeFailure(absl::string_view grpc_message) {
  if (!absl::StartsWith(grpc_message, "Handshake failed with fatal error")) return std::nullopt;
  // "...: error:0A000418:SSL routines::tlsv1 alert unknown ca." (ERR_error_string_n)
  const size_t at = grpc_message.find("error:");
  uint32_t code = 0;
  if (at == absl::string_view::npos ||
      !absl::SimpleHexAtoi(grpc_message.substr(at + 6, 8), &code)) {
    return HandshakeFailure::kProtocol;
  }
  if (ERR_SYSTEM_ERROR(code) || ERR_GET_LIB(code) != ERR_LIB_SSL) {
    return HandshakeFailure::kProtocol;
  }
  const int reason = ERR_GET_REASON(code);
  switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_BAD_SIGNATURE:  // a certificate its sender could not sign for
      return HandshakeFailure::kRefusedPeerCertificate;
    default:
      break;
  }
  // A fatal alert received from the peer is reported as its code plus this offset.
  switch (reason - SSL_AD_REASON_OFFSET) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_BAD_CERTIFICATE_STATUS_RESPONSE:
    case SSL_AD_CERTIFICATE_REQUIRED:
      return HandshakeFailure::kPeerRefusedCertificate;
    default:
      return HandshakeFailure::kProtocol;
  }
}

std::array<uint64_t, kHandshakeFailureKinds> HandshakeFailuresSoFar() {
  std::array<uint64_t, kHandshakeFailureKinds> out{};
  for (int i = 0; i < kHandshakeFailureKinds; ++i) {
    out[i] = handshake_failures[i].load(std::memory_order_relaxed);
  }
  return out;
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
  const std::optional<HandshakeFailure> handshake = ClassifyHandshakeFailure(message);
  if (handshake.has_value()) {
    handshake_failures[static_cast<int>(*handshake)].fetch_add(1, std::memory_order_relaxed);
    level = log::Level::kWarn;  // the peer's doing; counted in the metrics
  }
  const bool limited = args->severity == GPR_LOG_SEVERITY_ERROR;
  if (log::Enabled(level)) {
    std::string source = absl::StrCat(args->file != nullptr ? args->file : "?", ":", args->line);
    std::optional<uint64_t> suppressed = 0;
    if (limited) suppressed = ErrorLineLimiter().Admit(source, absl::Now());
    if (suppressed.has_value()) {
      WriteLine(level, std::move(source), message,
                handshake.has_value() ? HandshakeFailureName(*handshake) : "", *suppressed);
    }
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
