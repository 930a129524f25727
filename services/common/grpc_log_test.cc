#include "services/common/grpc_log.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

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

TEST(GrpcLogTest, WhatCountsAsADeadListener) {
  EXPECT_TRUE(IsListenerFailure("Failed accept4: Too many open files"));
  EXPECT_TRUE(IsListenerFailure("Failed accept4: Cannot allocate memory"));
  EXPECT_FALSE(IsListenerFailure("Failed to create socket"));
  EXPECT_FALSE(IsListenerFailure("accept4: ok"));
}

}  // namespace
}  // namespace iotauth
