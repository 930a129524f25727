// gRPC's own log lines (gpr_log), routed into the project's JSON log, and the one
// gRPC message that means a listener is dead: in gRPC 1.51 a failed accept4()
// (EMFILE, ENFILE, ENOBUFS...) stops that listening socket for good, so the server
// answers its open connections but accepts no new one.
#pragma once

#include <grpc/support/log.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>

#include "absl/strings/string_view.h"

namespace iotauth {

// Routes gpr_log through log::Write (level error/info/debug, field "source" with
// gRPC's file and line) from now on. A failed handshake is logged at warn with its
// "cause" (a peer makes it, not a fault here), and counted. gRPC's error-level
// lines, handshake failures included, are capped per source line at 10 a minute
// (a port scanner makes one per attempt); the next line written then carries
// "suppressed", the number held back. `on_listener_failure` runs once, on the gRPC
// thread that logged it, the first time gRPC reports a failed accept; it must be
// quick and must not call into gRPC. Call once, before the server starts.
void RouteGrpcLogs(std::function<void(absl::string_view message)> on_listener_failure);

// The hook itself (exposed for tests).
void GrpcLogHook(gpr_log_func_args* args);

// True for the gRPC message that reports a listener gone for good.
bool IsListenerFailure(absl::string_view grpc_message);

// Why a TLS handshake failed, from gRPC's "Handshake failed with fatal error ..."
// line (one per failed handshake, server or client side). "Peer" is the other end:
// a client for a listener, the upstream server for a split-mode process's channels.
enum class HandshakeFailure {
  kRefusedPeerCertificate,  // we refused the peer's certificate, or its absence
  kPeerRefusedCertificate,  // the peer sent an alert refusing ours (unknown CA, expired...)
  kProtocol,                // anything else: not TLS, no common version or cipher, cut short
};
inline constexpr int kHandshakeFailureKinds = 3;

// The cause's metric label: refused_peer_certificate, peer_refused_certificate,
// protocol.
absl::string_view HandshakeFailureName(HandshakeFailure cause);

// nullopt when `grpc_message` is not a failed handshake; otherwise its cause, read
// from the OpenSSL error code the line carries.
std::optional<HandshakeFailure> ClassifyHandshakeFailure(absl::string_view grpc_message);

// Failed handshakes seen by GrpcLogHook since the process started, by cause.
std::array<uint64_t, kHandshakeFailureKinds> HandshakeFailuresSoFar();

}  // namespace iotauth
