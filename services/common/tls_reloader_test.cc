#include "services/common/tls_reloader.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_builder.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/common/dev_pki.h"
#include "services/common/test_server_pki.h"

namespace iotauth {
namespace {

using Pki = test_pki::ServerPki;
const Pki& A() { return test_pki::PkiA(); }
const Pki& B() { return test_pki::PkiB(); }

std::string TmpDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

void Write(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> s = ReadTextFile(path);
  return s.ok() ? *s : "";
}

int64_t MtimeOf(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) : -1;
}

double Value(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::string& result = "") {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : m.label) labels[l.name] = l.value;
      EXPECT_EQ(labels["use"], "server");
      if (!result.empty() && labels["result"] != result) continue;
      return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  ADD_FAILURE() << "no " << name;
  return -1;
}

class TlsReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    src_ = TmpDir("tls-reloader-src-" + name);
    root_ = TmpDir("tls-reloader-staging-" + name);
    std::filesystem::remove_all(src_);
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(src_);
    Put(A().cert, A().key, A().ca);
    paths_ = {src_ + "/cert.pem", src_ + "/key.pem", src_ + "/ca.pem"};
  }

  void Put(const std::string& cert, const std::string& key, const std::string& ca) {
    Write(src_ + "/cert.pem", cert);
    Write(src_ + "/key.pem", key);
    Write(src_ + "/ca.pem", ca);
  }

  std::shared_ptr<TlsReloader> Start(bool thread = false) {
    TlsReloader::Options o;
    o.staging_root = root_;
    o.clock = &clock_;
    o.poll_thread = thread;
    o.poll_interval = absl::Milliseconds(50);
    absl::StatusOr<std::shared_ptr<TlsReloader>> r = TlsReloader::Start(paths_, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : nullptr;
  }

  static std::string Staged(const TlsReloader& r, const std::string& file) {
    return Read(r.snapshot().staged_dir + "/" + file);
  }

  FakeClock clock_{absl::Now()};
  std::string src_, root_;
  TlsSourcePaths paths_;
};

TEST_F(TlsReloaderTest, StartStagesTheFilesAndAWrongPairDoesNotStart) {
  std::shared_ptr<TlsReloader> r = Start();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(Staged(*r, "cert.pem"), A().cert);
  EXPECT_EQ(Staged(*r, "key.pem"), A().key);
  EXPECT_EQ(Staged(*r, "ca.pem"), A().ca);
  EXPECT_TRUE(r->has_ca());
  struct stat st {};
  ASSERT_EQ(stat((r->snapshot().staged_dir + "/key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  Put(A().cert, B().key, A().ca);
  TlsReloader::Options o;
  o.staging_root = root_;
  o.poll_thread = false;
  absl::StatusOr<std::shared_ptr<TlsReloader>> bad = TlsReloader::Start(paths_, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(bad.status().message().find("does not belong"), absl::string_view::npos);
  EXPECT_NE(bad.status().message().find(paths_.key_file), absl::string_view::npos);
}

TEST_F(TlsReloaderTest, AReplacedPairIsServedOnceItReadsTheSameTwice) {
  std::shared_ptr<TlsReloader> r = Start();
  const std::string key_path = r->snapshot().staged_dir + "/key.pem";
  const int64_t first_mtime = MtimeOf(key_path);
  Put(B().cert, B().key, B().ca);
  r->Poll();  // a writer may be half-way: wait for a second look
  EXPECT_EQ(r->snapshot().applied, 0u);
  EXPECT_EQ(Staged(*r, "cert.pem"), A().cert);
  r->Poll();
  TlsReloader::Snapshot s = r->snapshot();
  EXPECT_EQ(s.applied, 1u);
  EXPECT_FALSE(s.files_rejected);
  EXPECT_EQ(Staged(*r, "cert.pem"), B().cert);
  EXPECT_EQ(Staged(*r, "key.pem"), B().key);
  EXPECT_EQ(Staged(*r, "ca.pem"), B().ca);
  // gRPC tells a swap it read across by the modification time, in seconds.
  EXPECT_GT(MtimeOf(key_path), first_mtime);
  r->Poll();
  EXPECT_EQ(r->snapshot().applied, 1u);  // unchanged files: nothing to do
}

TEST_F(TlsReloaderTest, AMismatchedPairIsRefusedOnceAndThePreviousStays) {
  std::shared_ptr<TlsReloader> r = Start();
  const std::string serial = r->snapshot().served.serial_hex;
  Put(B().cert, A().key, A().ca);  // a renewal job that wrote only the certificate
  r->Poll();
  r->Poll();
  TlsReloader::Snapshot s = r->snapshot();
  EXPECT_EQ(s.applied, 0u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_TRUE(s.files_rejected);
  EXPECT_NE(s.last_rejection.find("does not belong"), std::string::npos);
  EXPECT_EQ(s.served.serial_hex, serial);
  EXPECT_EQ(Staged(*r, "cert.pem"), A().cert);
  EXPECT_EQ(Value(r->Collect(), "iotauth_tls_files_rejected"), 1);
  r->Poll();
  EXPECT_EQ(r->snapshot().rejected, 1u);  // counted once, not once per look

  Put(B().cert, B().key, A().ca);  // the key follows
  r->Poll();
  r->Poll();
  s = r->snapshot();
  EXPECT_EQ(s.applied, 1u);
  EXPECT_FALSE(s.files_rejected);
  EXPECT_EQ(Staged(*r, "cert.pem"), B().cert);
  const auto families = r->Collect();
  EXPECT_EQ(Value(families, "iotauth_tls_files_rejected"), 0);
  EXPECT_EQ(Value(families, "iotauth_tls_reloads_total", "applied"), 1);
  EXPECT_EQ(Value(families, "iotauth_tls_reloads_total", "rejected"), 1);
  EXPECT_EQ(Value(families, "iotauth_tls_certificate_expiry_timestamp_seconds"),
            static_cast<double>(absl::ToUnixSeconds(s.served.not_after)));
}

TEST_F(TlsReloaderTest, PuttingTheServedFilesBackClearsARefusalAtOnce) {
  std::shared_ptr<TlsReloader> r = Start();
  Put("", A().key, A().ca);
  r->Poll();
  r->Poll();
  EXPECT_TRUE(r->snapshot().files_rejected);
  Put(A().cert, A().key, A().ca);
  r->Poll();
  EXPECT_FALSE(r->snapshot().files_rejected);
  EXPECT_EQ(r->snapshot().applied, 0u);
}

TEST_F(TlsReloaderTest, AnExpiredOrMissingReplacementIsRefused) {
  std::shared_ptr<TlsReloader> r = Start();
  clock_.Set(r->snapshot().served.not_after + absl::Hours(24 * 3650));
  Put(B().cert, B().key, B().ca);
  r->Poll();
  r->Poll();
  EXPECT_EQ(r->snapshot().applied, 0u);
  EXPECT_NE(r->snapshot().last_rejection.find("the new certificate expired at"), std::string::npos);

  std::filesystem::remove(paths_.key_file);
  r->Poll();
  r->Poll();
  EXPECT_EQ(r->snapshot().rejected, 2u);
  EXPECT_NE(r->snapshot().last_rejection.find("cannot read the private key file"),
            std::string::npos);
  EXPECT_EQ(Staged(*r, "cert.pem"), A().cert);
}

TEST_F(TlsReloaderTest, StagingIsPrivateCleanedUpAndRepaired) {
  // A directory left by a process that is gone (its lock is free) goes at start; a
  // live reloader's stays.
  std::filesystem::create_directories(root_ + "/server-gone/gen-1");
  Write(root_ + "/server-gone/gen-1/key.pem", "stale");
  std::shared_ptr<TlsReloader> first = Start();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/server-gone"));
  std::shared_ptr<TlsReloader> second = Start();
  const std::string first_dir = first->snapshot().staged_dir;
  EXPECT_TRUE(std::filesystem::exists(first_dir));
  EXPECT_NE(first_dir, second->snapshot().staged_dir);

  // A cleaner removed the staged files: the next look puts them back.
  std::filesystem::remove_all(std::filesystem::path(first_dir).parent_path() / "gen-1");
  first->Poll();
  EXPECT_EQ(Staged(*first, "cert.pem"), A().cert);

  const std::string parent = std::filesystem::path(first_dir).parent_path().string();
  first.reset();
  EXPECT_FALSE(std::filesystem::exists(parent));
}

// Whoever can write to the staging root could swap what gRPC reads: a root that is a
// symbolic link, or another user's directory, is refused, and nothing is staged.
TEST_F(TlsReloaderTest, AStagingRootThatIsNotPrivatelyOursIsRefused) {
  TlsReloader::Options o;
  o.clock = &clock_;
  o.poll_thread = false;
  const std::string elsewhere = TmpDir("tls-reloader-elsewhere");
  std::filesystem::remove_all(elsewhere);
  std::filesystem::create_directories(elsewhere);
  std::filesystem::create_directory_symlink(elsewhere, root_);
  o.staging_root = root_;
  absl::Status s = TlsReloader::Start(paths_, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("symbolic link"), std::string::npos) << s;
  EXPECT_TRUE(std::filesystem::is_empty(elsewhere));

  std::filesystem::remove(root_);
  std::filesystem::create_directories(root_);
  if (geteuid() != 0) GTEST_SKIP() << "changing a directory's owner needs root";
  ASSERT_EQ(chown(root_.c_str(), 65534, 65534), 0);
  s = TlsReloader::Start(paths_, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("belongs to uid 65534"), std::string::npos) << s;
  EXPECT_TRUE(std::filesystem::is_empty(root_));
}

TEST_F(TlsReloaderTest, WithoutACaFileOnlyTheIdentityIsStaged) {
  paths_.ca_file.clear();
  std::shared_ptr<TlsReloader> r = Start();
  EXPECT_FALSE(r->has_ca());
  EXPECT_FALSE(std::filesystem::exists(r->snapshot().staged_dir + "/ca.pem"));
}

// The whole path through a real gRPC server: new connections get the replaced
// certificate without a restart; an open connection carries on.
std::shared_ptr<grpc::Channel> ChannelTrusting(const std::string& ca, int port) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ca;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("localhost:", port), grpc::SslCredentials(o), args);
}

bool Connects(const std::string& ca, int port, absl::Duration within) {
  return ChannelTrusting(ca, port)->WaitForConnected(absl::ToChronoTime(absl::Now() + within));
}

TEST_F(TlsReloaderTest, ANewHandshakeGetsTheReplacedCertificate) {
  std::shared_ptr<TlsReloader> r = Start(/*thread=*/true);
  grpc::experimental::TlsServerCredentialsOptions opts(r->provider());
  opts.watch_identity_key_cert_pairs();
  opts.watch_root_certs();
  opts.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::ServerBuilder builder;
  grpc::CallbackGenericService generic;  // a server needs one service to start
  builder.RegisterCallbackGenericService(&generic);
  int port = 0;
  builder.AddListeningPort("localhost:0", grpc::experimental::TlsServerCredentials(opts), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  std::shared_ptr<grpc::Channel> open = ChannelTrusting(A().ca, port);
  ASSERT_TRUE(open->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10))));
  EXPECT_FALSE(Connects(B().ca, port, absl::Milliseconds(500)));

  Put(B().cert, B().key, B().ca);
  // Our poll (50 ms here) and gRPC's own refresh (1 s): a few seconds at most.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  bool switched = false;
  while (!switched && absl::Now() < deadline) {
    switched = Connects(B().ca, port, absl::Milliseconds(300));
  }
  EXPECT_TRUE(switched);
  EXPECT_EQ(r->snapshot().applied, 1u);
  EXPECT_FALSE(Connects(A().ca, port, absl::Milliseconds(500)));
  EXPECT_EQ(open->GetState(false), GRPC_CHANNEL_READY);
  server->Shutdown();
}

}  // namespace
}  // namespace iotauth
