#include "services/common/grpc_log.h"

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

// Captures what the hook writes to stderr.
class StderrCapture {
 public:
  StderrCapture() : saved_(dup(STDERR_FILENO)), file_(std::tmpfile()) {
    dup2(fileno(file_), STDERR_FILENO);
  }
  ~StderrCapture() {
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    std::fclose(file_);
  }
  std::string Text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    char buf[4096];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), file_)) > 0) out.append(buf, n);
    return out;
  }

 private:
  int saved_;
  FILE* file_;
};

gpr_log_func_args Args(gpr_log_severity severity, const char* message) {
  gpr_log_func_args a{};
  a.file = "src/core/lib/iomgr/tcp_server_posix.cc";
  a.line = 205;
  a.severity = severity;
  a.message = message;
  return a;
}

TEST(GrpcLogTest, ListenerFailureIsReportedOnceAndLoggedAsJson) {
  std::vector<std::string> reported;
  RouteGrpcLogs([&reported](absl::string_view m) { reported.emplace_back(m); });
  StderrCapture capture;
  gpr_log_func_args other = Args(GPR_LOG_SEVERITY_ERROR, "Handshake failed: \"quoted\"");
  GrpcLogHook(&other);
  EXPECT_TRUE(reported.empty());
  gpr_log_func_args dead = Args(GPR_LOG_SEVERITY_ERROR, "Failed accept4: Too many open files");
  GrpcLogHook(&dead);
  GrpcLogHook(&dead);  // a second listener, or the same again: reported once
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], "Failed accept4: Too many open files");
  const std::string text = capture.Text();
  EXPECT_NE(text.find(R"("level":"error","msg":"grpc","source":"src/core/lib/iomgr/)"
                      R"(tcp_server_posix.cc:205","message":"Handshake failed: \"quoted\""})"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("Failed accept4: Too many open files"), std::string::npos);
}

// Each row a line gRPC 1.51 logged here for a real failed handshake (curl in
// plaintext, a self-signed client certificate, a client that does not trust the
// server's CA, bytes that are not a ClientHello), or a case built from the codes.
TEST(GrpcLogTest, HandshakeFailuresByCause) {
  constexpr absl::string_view kPrefix = "Handshake failed with fatal error SSL_ERROR_SSL: ";
  struct Row {
    std::string message;
    std::optional<HandshakeFailure> cause;
  } rows[] = {
      {absl::StrCat(kPrefix, "error:0A00010B:SSL routines::wrong version number."),
       HandshakeFailure::kProtocol},
      {absl::StrCat(kPrefix, "error:0A000086:SSL routines::certificate verify failed."),
       HandshakeFailure::kRefusedPeerCertificate},
      {absl::StrCat(kPrefix, "error:0A0000C7:SSL routines::peer did not return a certificate."),
       HandshakeFailure::kRefusedPeerCertificate},
      {absl::StrCat(kPrefix, "error:0A000418:SSL routines::tlsv1 alert unknown ca."),
       HandshakeFailure::kPeerRefusedCertificate},
      {absl::StrCat(kPrefix, "error:0A000415:SSL routines::sslv3 alert certificate expired."),
       HandshakeFailure::kPeerRefusedCertificate},
      {absl::StrCat(kPrefix, "error:0A000412:SSL routines::sslv3 alert bad certificate."),
       HandshakeFailure::kPeerRefusedCertificate},
      {absl::StrCat(kPrefix, "error:0A00045C:SSL routines::tlsv13 alert certificate required."),
       HandshakeFailure::kPeerRefusedCertificate},
      // An alert that is not about certificates: protocol_version (70).
      {absl::StrCat(kPrefix, "error:0A00042E:SSL routines::tlsv1 alert protocol version."),
       HandshakeFailure::kProtocol},
      {absl::StrCat(kPrefix, "error:0A0000F4:SSL routines::unexpected message."),
       HandshakeFailure::kProtocol},
      // The same reason number in another library is not the SSL one.
      {absl::StrCat(kPrefix, "error:05000086:asn1 encoding routines::reason(134)."),
       HandshakeFailure::kProtocol},
      {"Handshake failed with fatal error SSL_ERROR_SYSCALL: error:00000000:lib(0)::reason(0).",
       HandshakeFailure::kProtocol},
      {"Handshake failed with fatal error SSL_ERROR_SSL: no code here",
       HandshakeFailure::kProtocol},
      {"Handshake failed with fatal error SSL_ERROR_SSL: error:0A0", HandshakeFailure::kProtocol},
      {"Failed accept4: Too many open files", std::nullopt},
      {"handshake failed with fatal error (lower case: not gRPC's line)", std::nullopt},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(ClassifyHandshakeFailure(row.message), row.cause) << row.message;
  }
  EXPECT_EQ(HandshakeFailureName(HandshakeFailure::kRefusedPeerCertificate),
            "refused_peer_certificate");
  EXPECT_EQ(HandshakeFailureName(HandshakeFailure::kPeerRefusedCertificate),
            "peer_refused_certificate");
  EXPECT_EQ(HandshakeFailureName(HandshakeFailure::kProtocol), "protocol");
}

size_t Count(absl::string_view text, absl::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != absl::string_view::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

TEST(GrpcLogTest, AFloodOfFailedHandshakesIsCountedInFullAndLoggedTenTimesAMinute) {
  const auto before = HandshakeFailuresSoFar();
  StderrCapture capture;
  gpr_log_func_args failed =
      Args(GPR_LOG_SEVERITY_ERROR,
           "Handshake failed with fatal error SSL_ERROR_SSL: error:0A000418:SSL routines::tlsv1 "
           "alert unknown ca.");
  failed.file = "./src/core/tsi/ssl_transport_security.cc";
  failed.line = 1501;
  for (int i = 0; i < 50; ++i) GrpcLogHook(&failed);
  // Another source line has its own budget.
  gpr_log_func_args other = Args(GPR_LOG_SEVERITY_ERROR, "something else");
  other.line = 9001;
  GrpcLogHook(&other);
  const auto after = HandshakeFailuresSoFar();
  EXPECT_EQ(after[static_cast<int>(HandshakeFailure::kPeerRefusedCertificate)] -
                before[static_cast<int>(HandshakeFailure::kPeerRefusedCertificate)],
            50u);
  EXPECT_EQ(after[static_cast<int>(HandshakeFailure::kProtocol)],
            before[static_cast<int>(HandshakeFailure::kProtocol)]);
  const std::string text = capture.Text();
  EXPECT_EQ(Count(text, "tlsv1 alert unknown ca"), 10u) << text;
  EXPECT_EQ(Count(text, R"("level":"warn","msg":"grpc","source":"./src/core/tsi/)"
                        R"(ssl_transport_security.cc:1501")"),
            10u)
      << text;
  EXPECT_EQ(Count(text, R"("cause":"peer_refused_certificate")"), 10u) << text;
  EXPECT_EQ(Count(text, "something else"), 1u) << text;
  EXPECT_EQ(Count(text, "suppressed"), 0u) << text;  // said by the next line written
}

TEST(GrpcLogTest, InfoLinesAreNotCapped) {
  // GRPC_TRACE output is info and debug: a developer tracing wants every line.
  StderrCapture capture;
  gpr_log_func_args trace = Args(GPR_LOG_SEVERITY_INFO, "trace line");
  trace.line = 9002;
  for (int i = 0; i < 30; ++i) GrpcLogHook(&trace);
  EXPECT_EQ(Count(capture.Text(), "trace line"), 30u);
}

TEST(GrpcLogTest, WhatCountsAsADeadListener) {
  EXPECT_TRUE(IsListenerFailure("Failed accept4: Too many open files"));
  EXPECT_TRUE(IsListenerFailure("Failed accept4: Cannot allocate memory"));
  EXPECT_FALSE(IsListenerFailure("Failed to create socket"));
  EXPECT_FALSE(IsListenerFailure("accept4: ok"));
}

}  // namespace
}  // namespace iotauth
