#include "clients/iotauthctl/connection.h"

#include <map>

#include "gtest/gtest.h"

namespace iotauth::cli {
namespace {

class FakeFiles {
 public:
  void Put(const std::string& path, const std::string& content) { files_[path] = content; }
  FileReader Reader() {
    return [this](const std::string& p) -> absl::StatusOr<std::string> {
      auto it = files_.find(p);
      if (it == files_.end()) return absl::NotFoundError("cannot read '" + p + "'");
      return it->second;
    };
  }
  FileExists Exists() {
    return [this](const std::string& p) { return files_.count(p) > 0; };
  }

 private:
  std::map<std::string, std::string> files_;
};

FakeFiles DevPki(const std::string& dir) {
  FakeFiles f;
  f.Put(dir + "/pki/ca.pem", "CA");
  f.Put(dir + "/pki/admin.pem", "ADMIN-CERT");
  f.Put(dir + "/pki/admin.key", "ADMIN-KEY");
  return f;
}

TEST(ResolveConnectionTest, DefaultsToDevPkiMtls) {
  FakeFiles files = DevPki("./iotauth-data");
  ConnectionFlags flags;
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->address, "localhost:50051");
  EXPECT_FALSE(s->insecure);
  EXPECT_EQ(s->ca_pem, "CA");
  EXPECT_EQ(s->cert_pem, "ADMIN-CERT");
  EXPECT_EQ(s->key_pem, "ADMIN-KEY");
}

TEST(ResolveConnectionTest, DataDirFlag) {
  FakeFiles files = DevPki("/srv/iot");
  ConnectionFlags flags;
  flags.data_dir = "/srv/iot";
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pki_source, "/srv/iot/pki");
}

TEST(ResolveConnectionTest, MissingPkiSaysWhatToDo) {
  FakeFiles files;
  ConnectionFlags flags;
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(s.status().message());
  EXPECT_NE(msg.find("./iotauth-data/pki/ca.pem"), std::string::npos);
  EXPECT_NE(msg.find("start the server first"), std::string::npos);
  EXPECT_NE(msg.find("--insecure"), std::string::npos);
  EXPECT_NE(msg.find("--data_dir"), std::string::npos);
}

TEST(ResolveConnectionTest, Insecure) {
  FakeFiles files;
  ConnectionFlags flags;
  flags.insecure = true;
  flags.token = "T";
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->insecure);
  EXPECT_EQ(s->token, "T");
  flags.ca = "ca.pem";
  EXPECT_EQ(ResolveConnection(flags, files.Reader(), files.Exists()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ResolveConnectionTest, ExplicitFiles) {
  FakeFiles files;
  files.Put("ca.pem", "MYCA");
  files.Put("c.pem", "C");
  files.Put("c.key", "K");
  ConnectionFlags flags;
  flags.ca = "ca.pem";
  flags.cert = "c.pem";
  flags.key = "c.key";
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ca_pem, "MYCA");
  EXPECT_EQ(s->cert_pem, "C");

  flags.key.clear();
  EXPECT_EQ(ResolveConnection(flags, files.Reader(), files.Exists()).status().code(),
            absl::StatusCode::kInvalidArgument);

  flags.cert = "missing.pem";
  flags.key = "c.key";
  EXPECT_EQ(ResolveConnection(flags, files.Reader(), files.Exists()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ResolveConnectionTest, TokenWithoutClientCertificate) {
  FakeFiles files;
  files.Put("./iotauth-data/pki/ca.pem", "CA");  // no admin certificate
  ConnectionFlags flags;
  flags.token = "T";
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ca_pem, "CA");
  EXPECT_EQ(s->cert_pem, "");
  EXPECT_EQ(s->token, "T");
}

TEST(ResolveConnectionTest, CaWithoutClientCertificateNeedsOne) {
  FakeFiles files;
  files.Put("ca.pem", "CA");
  ConnectionFlags flags;
  flags.ca = "ca.pem";
  auto s = ResolveConnection(flags, files.Reader(), files.Exists());
  ASSERT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("--cert"), std::string::npos);
}

TEST(RpcErrorHintTest, NamesTheNextStep) {
  ConnectionSettings tls;
  tls.address = "localhost:50051";
  ConnectionSettings plain = tls;
  plain.insecure = true;
  EXPECT_NE(RpcErrorHint(grpc::StatusCode::UNAVAILABLE, tls).find("pass --insecure"),
            std::string::npos);
  EXPECT_NE(RpcErrorHint(grpc::StatusCode::UNAVAILABLE, plain).find("drop --insecure"),
            std::string::npos);
  EXPECT_NE(RpcErrorHint(grpc::StatusCode::UNAUTHENTICATED, tls).find("--cert"), std::string::npos);
  EXPECT_NE(RpcErrorHint(grpc::StatusCode::FAILED_PRECONDITION, tls).find("--etag"),
            std::string::npos);
  EXPECT_NE(RpcErrorHint(grpc::StatusCode::DEADLINE_EXCEEDED, tls).find("--timeout"),
            std::string::npos);
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::PERMISSION_DENIED), "PERMISSION_DENIED");
}

}  // namespace
}  // namespace iotauth::cli
