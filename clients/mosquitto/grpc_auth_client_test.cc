#include "clients/mosquitto/grpc_auth_client.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/dev_pki.h"
#include "services/common/log.h"
#include "services/common/test_server_pki.h"

namespace iotauth::mosquitto {
namespace {

namespace iv1 = ::iotauth::identity::v1;
using test_pki::PkiA;
using test_pki::PkiB;

std::string TmpPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

std::string WriteFile(const std::string& name, const std::string& content) {
  std::string path = TmpPath(name);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  return path;
}

std::string ReadFile(const std::string& path) {
  absl::StatusOr<std::string> s = ReadTextFile(path);
  return s.ok() ? *s : "";
}

// Mutual TLS to a port nothing listens on, with pki A's files.
PluginConfig Config() {
  PluginConfig c;
  c.address = "127.0.0.1:1";
  c.ca_file = WriteFile("ca.pem", PkiA().ca);
  c.cert_file = WriteFile("cert.pem", PkiA().cert);
  c.key_file = WriteFile("key.pem", PkiA().key);
  c.tls_staging_dir = TmpPath("staging");
  return c;
}

absl::Status Call(GrpcAuthClient& client) {
  return client.Authenticate(iv1::AuthenticateRequest(), absl::Seconds(5)).status();
}

// Waits (polling, bounded) until the client's reloader has refused the files.
bool WaitForRefusal(GrpcAuthClient& client) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    std::optional<TlsReloader::Snapshot> snap = client.tls_snapshot();
    if (snap.has_value() && snap->files_rejected) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

// Log lines, captured through log::SetSink while a test runs.
absl::Mutex log_mu;
std::vector<std::string>* log_lines = nullptr;

class CapturedLog {
 public:
  CapturedLog() {
    absl::MutexLock lock(&log_mu);
    log_lines = &lines_;
    log::SetSink([](log::Level, absl::string_view line) {
      absl::MutexLock lock(&log_mu);
      if (log_lines != nullptr) log_lines->emplace_back(line);
    });
  }
  ~CapturedLog() {
    log::SetSink(nullptr);
    absl::MutexLock lock(&log_mu);
    log_lines = nullptr;
  }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  std::string All() {
    absl::MutexLock lock(&log_mu);
    return absl::StrJoin(lines_, "\n");
  }
  bool Has(absl::string_view needle) {
    absl::MutexLock lock(&log_mu);
    return std::any_of(lines_.begin(), lines_.end(),
                       [&](const std::string& l) { return absl::StrContains(l, needle); });
  }

 private:
  std::vector<std::string> lines_;
};

TEST(GrpcAuthClientTest, AMismatchedPairIsRefusedAtLoad) {
  ASSERT_FALSE(PkiA().key.empty());
  ASSERT_TRUE(GrpcAuthClient::Create(Config()).ok());
  PluginConfig c = Config();
  c.key_file = WriteFile("other-key.pem", PkiB().key);
  const absl::Status s = GrpcAuthClient::Create(c).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "plugin_opt_key_file")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "does not belong to the certificate")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), PkiB().key.substr(40, 30))) << "never the key";

  c = Config();
  c.ca_file = WriteFile("not-a-ca.pem", "not PEM");
  EXPECT_EQ(GrpcAuthClient::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GrpcAuthClientTest, AnUnreachableServerWithGoodFilesIsOnlyUnavailable) {
  auto client = GrpcAuthClient::Create(Config());
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Status s = Call(**client);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "TLS files")) << s;
  EXPECT_EQ((*client)->tls_watch(), GrpcAuthClient::TlsWatch::kStaged);
}

// A renewal that wrote another pair's key is refused by the client's reloader; while
// iotauth cannot be reached, each error names it.
TEST(GrpcAuthClientTest, ARefusedRenewalIsNamedWhenIotauthIsUnreachable) {
  CapturedLog log;
  const PluginConfig c = Config();
  auto client = GrpcAuthClient::Create(c, absl::Milliseconds(20));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(Call(**client).code(), absl::StatusCode::kUnavailable);  // makes the channel
  WriteFile("key.pem", PkiB().key);
  ASSERT_TRUE(WaitForRefusal(**client));
  EXPECT_TRUE(log.Has("tls: the changed files cannot be used")) << "in the broker's log";
  for (int i = 0; i < 2; ++i) {
    const absl::Status s = Call(**client);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "the TLS files fail their check now")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "does not belong to the certificate")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "the last good files are still presented")) << s;
    EXPECT_FALSE(absl::StrContains(s.message(), PkiB().key.substr(40, 30))) << "never the key";
  }
}

// The channel is made at the first call, after the broker forked: files broken
// since load are a renewal like any other, refused, and the set read at load stays.
TEST(GrpcAuthClientTest, FilesBrokenBetweenLoadAndTheFirstCallAreRefused) {
  auto client = GrpcAuthClient::Create(Config(), absl::Milliseconds(20));
  ASSERT_TRUE(client.ok()) << client.status();
  WriteFile("cert.pem", "-----BEGIN CERTIFICATE-----\ncut short");
  EXPECT_EQ(Call(**client).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->tls_watch(), GrpcAuthClient::TlsWatch::kStaged);
  ASSERT_TRUE(WaitForRefusal(**client));
  EXPECT_EQ((*client)->tls_snapshot()->applied, 0u);
  EXPECT_EQ(ReadFile((*client)->tls_snapshot()->staged_dir + "/cert.pem"), PkiA().cert);
}

// Without a private staging directory the files are watched directly: the log says
// what is lost, and a broken renewal is still named (read again at most every 10 s).
TEST(GrpcAuthClientTest, AStagingDirectoryThatIsNotPrivateFallsBackToTheFiles) {
  CapturedLog log;
  PluginConfig c = Config();
  const std::string target = TmpPath("somebody-elses");
  std::filesystem::create_directories(target);
  c.tls_staging_dir = TmpPath("staging-link");
  std::filesystem::remove(c.tls_staging_dir);
  std::filesystem::create_directory_symlink(target, c.tls_staging_dir);
  auto client = GrpcAuthClient::Create(c);
  ASSERT_TRUE(client.ok()) << client.status();
  WriteFile("key.pem", PkiB().key);
  const absl::Status s = Call(**client);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "does not belong to the certificate")) << s;
  EXPECT_EQ((*client)->tls_watch(), GrpcAuthClient::TlsWatch::kDirect);
  EXPECT_FALSE((*client)->tls_snapshot().has_value());
  EXPECT_TRUE(log.Has("set plugin_opt_tls_staging_dir")) << "what to do";
  EXPECT_TRUE(log.Has("symbolic link")) << log.All();
  EXPECT_TRUE(std::filesystem::is_empty(target));
  const absl::Status again = Call(**client);
  EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(absl::StrContains(again.message(), "TLS files")) << "read < 10 s ago";
}

// What the staging is for: iotauth restarts after a renewal that wrote an expired
// pair. gRPC's own file watcher would present the expired certificate and every
// connection would be refused; through the reloader the last good pair is presented.
class AllowAll final : public iv1::IdentityService::Service {
  grpc::Status Authenticate(grpc::ServerContext* /*context*/,
                            const iv1::AuthenticateRequest* /*request*/,
                            iv1::AuthenticateResponse* response) override {
    response->set_decision(iv1::DECISION_ALLOW);
    return grpc::Status::OK;
  }
};

std::unique_ptr<grpc::Server> StartServer(const DevPkiPaths& pki, AllowAll* service, int* port) {
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = ReadFile(pki.ca_cert);
  o.pem_key_cert_pairs.push_back({ReadFile(pki.server_key), ReadFile(pki.server_cert)});
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", *port), grpc::SslServerCredentials(o), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

TEST(GrpcAuthClientTest, ARefusedRenewalKeepsTheLastGoodPairForNewConnections) {
  const std::string dir = TmpPath("live-pki");
  const std::string old_dir = TmpPath("expired-pki");
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(old_dir);
  ASSERT_TRUE(EnsureDevPki(dir, absl::Now()).ok());
  // Issued 1,000 days ago: its client certificates (825 days) have expired.
  ASSERT_TRUE(EnsureDevPki(old_dir, absl::Now() - absl::Hours(24 * 1000)).ok());
  const DevPkiPaths live = DevPkiLayout(dir);
  const DevPkiPaths expired = DevPkiLayout(old_dir);

  AllowAll service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartServer(live, &service, &port);
  ASSERT_NE(server, nullptr);
  PluginConfig c = Config();
  c.address = absl::StrCat("127.0.0.1:", port);
  c.tls_server_name = "localhost";
  c.ca_file = WriteFile("live-ca.pem", ReadFile(live.ca_cert));
  c.cert_file = WriteFile("gateway.pem", ReadFile(live.gateway_cert));
  c.key_file = WriteFile("gateway.key", ReadFile(live.gateway_key));
  auto client = GrpcAuthClient::Create(c, absl::Milliseconds(20));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(Call(**client).ok()) << Call(**client);

  WriteFile("gateway.pem", ReadFile(expired.gateway_cert));
  WriteFile("gateway.key", ReadFile(expired.gateway_key));
  ASSERT_TRUE(WaitForRefusal(**client));
  EXPECT_TRUE(absl::StrContains((*client)->tls_snapshot()->last_rejection, "expired"))
      << (*client)->tls_snapshot()->last_rejection;

  // A new connection: iotauth restarts on the same port.
  server->Shutdown();
  server.reset();
  server = StartServer(live, &service, &port);
  ASSERT_NE(server, nullptr);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::Status s = Call(**client);
  while (!s.ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    s = Call(**client);
  }
  EXPECT_TRUE(s.ok()) << s;
  server->Shutdown();
}

}  // namespace
}  // namespace iotauth::mosquitto
