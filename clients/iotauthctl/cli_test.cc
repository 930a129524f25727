// Whole command lines run in-process against fake services on an in-process
// gRPC server: exit codes, output, secrets handling, import batching.
#include "clients/iotauthctl/cli.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "proto/iotauth/identity/v1/certificates.grpc.pb.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/common/error_info.h"
#include "services/common/grpc_status.h"

namespace iotauth::cli {
namespace {

namespace rv1 = ::iotauth::registry::v1;
namespace iv1 = ::iotauth::identity::v1;

constexpr char kPrimaryKey[] = "cHJpbWFyeS1rZXktMTIzNA==";

class FakeRegistry final : public rv1::DeviceRegistry::Service {
 public:
  grpc::Status GetDevice(grpc::ServerContext* ctx, const rv1::GetDeviceRequest* req,
                         rv1::Device* resp) override {
    {
      std::lock_guard<std::mutex> l(mu);
      auto it = ctx->client_metadata().find("authorization");
      last_authorization = it == ctx->client_metadata().end()
                               ? ""
                               : std::string(it->second.data(), it->second.size());
    }
    if (req->device_id() != "dev-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "device 'x' not found");
    }
    resp->set_tenant_id(req->tenant_id());
    resp->set_device_id("dev-1");
    resp->set_status(rv1::DEVICE_STATUS_ENABLED);
    // A careless server: returns keys even when not asked. The CLI must still hide them.
    resp->mutable_credentials()->mutable_symmetric_key()->set_primary_key(kPrimaryKey);
    return grpc::Status::OK;
  }

  // Two devices with keys; tenant "broken" fails after the first; in tenant
  // "damaged" the second one's keys do not open.
  grpc::Status ExportDevices(grpc::ServerContext* /*context*/, const rv1::ExportDevicesRequest* req,
                             grpc::ServerWriter<rv1::Device>* writer) override {
    for (int i = 0; i < 2; ++i) {
      if (i == 1 && req->tenant_id() == "broken") return {grpc::StatusCode::INTERNAL, "disk gone"};
      rv1::Device d;
      d.set_tenant_id(req->tenant_id());
      d.set_device_id(absl::StrCat("dev-", i));
      if (i == 1 && req->tenant_id() == "damaged") {
        d.set_keys_unreadable(true);
      } else {
        d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(kPrimaryKey);
      }
      writer->Write(d);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListDevices(grpc::ServerContext* /*context*/, const rv1::ListDevicesRequest* req,
                           rv1::ListDevicesResponse* resp) override {
    int page = 0;
    if (!req->page_token().empty() && !absl::SimpleAtoi(req->page_token(), &page)) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "bad page token"};
    }
    for (int i = 0; i < 2; ++i) resp->add_devices()->set_device_id(absl::StrCat("d", page * 2 + i));
    if (page < 2) resp->set_next_page_token(absl::StrCat(page + 1));
    return grpc::Status::OK;
  }

  grpc::Status ImportDevices(grpc::ServerContext* /*context*/,
                             grpc::ServerReader<rv1::ImportDevicesRequest>* reader,
                             rv1::ImportDevicesResponse* resp) override {
    rv1::ImportDevicesRequest req;
    int64_t index = 0;
    while (reader->Read(&req)) {
      std::lock_guard<std::mutex> l(mu);
      ++import_messages;
      import_tenant = req.tenant_id();
      import_generate_keys = req.generate_keys();
      for (const auto& d : req.devices()) {
        resp->set_received(resp->received() + 1);
        if (absl::StartsWith(d.device_id(), "bad")) {
          resp->set_rejected(resp->rejected() + 1);
          auto* e = resp->add_errors();
          e->set_index(index);
          e->set_device_id(d.device_id());
          e->set_reason("ALREADY_EXISTS");
          e->set_message("device exists");
        } else {
          resp->set_imported(resp->imported() + 1);
        }
        ++index;
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status CreateCaCertificate(grpc::ServerContext* /*context*/,
                                   const rv1::CreateCaCertificateRequest* req,
                                   rv1::CaCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_create_ca = *req;
    *resp = req->ca();
    resp->set_id("ca-1");
    resp->set_status(rv1::CA_STATUS_UNVERIFIED);
    resp->set_verification_code("code-123");
    return grpc::Status::OK;
  }

  grpc::Status UpdateCaCertificate(grpc::ServerContext* /*context*/,
                                   const rv1::UpdateCaCertificateRequest* req,
                                   rv1::CaCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_update_ca = *req;
    *resp = req->ca();
    return grpc::Status::OK;
  }

  grpc::Status RewrapSecrets(grpc::ServerContext* /*context*/, const rv1::RewrapSecretsRequest* req,
                             grpc::ServerWriter<rv1::RewrapSecretsProgress>* writer) override {
    {
      std::lock_guard<std::mutex> l(mu);
      rewrap_batch_size = req->batch_size();
    }
    rv1::RewrapSecretsProgress p;
    p.set_rows_total(10);
    for (int64_t done : {4, 8, 10}) {
      p.set_rows_done(done);
      writer->Write(p);
    }
    if (rewrap_fail) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "store closed");
    p.set_done(true);
    writer->Write(p);
    return grpc::Status::OK;
  }

  std::mutex mu;
  std::string last_authorization;
  rv1::CreateCaCertificateRequest last_create_ca;
  rv1::UpdateCaCertificateRequest last_update_ca;
  int32_t rewrap_batch_size = -1;
  std::atomic<bool> rewrap_fail{false};
  int import_messages = 0;
  std::string import_tenant;
  bool import_generate_keys = false;
};

class FakeIdentity final : public iv1::IdentityService::Service {
 public:
  grpc::Status Authenticate(grpc::ServerContext* /*context*/, const iv1::AuthenticateRequest* req,
                            iv1::AuthenticateResponse* resp) override {
    if (req->connect().password() == "as-a-reader") {
      return ToGrpcStatus(
          WithErrorReason(absl::PermissionDeniedError("caller 'ci' lacks the gateway role"),
                          "ROLE_REQUIRED", {{"role", "gateway"}}));
    }
    if (req->connect().password() == "while-the-audit-log-is-unwritable") {
      return ToGrpcStatus(
          WithErrorReason(absl::UnavailableError("audit: the audit log cannot record this call"),
                          "AUDIT_UNWRITABLE"));
    }
    if (req->connect().password() == "while-the-directory-loads") {
      return ToGrpcStatus(
          WithErrorReason(absl::UnavailableError("identity: the device directory is still loading"),
                          "DIRECTORY_LOADING"));
    }
    if (req->connect().password() == "good") {
      resp->set_decision(iv1::DECISION_ALLOW);
      resp->mutable_identity()->set_device_id(req->connect().client_id());
    } else {
      resp->set_decision(iv1::DECISION_DENY);
      resp->set_deny_reason(iv1::DENY_REASON_BAD_SIGNATURE);
    }
    return grpc::Status::OK;
  }
};

// Records each request; answers with canned resources.
class FakeCertificates final : public iv1::CertificateService::Service {
 public:
  grpc::Status VerifyCaPossession(grpc::ServerContext* /*context*/,
                                  const iv1::VerifyCaPossessionRequest* req,
                                  rv1::CaCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_verify = *req;
    if (req->verification_certificate() == "wrong") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "POSSESSION_NOT_PROVEN");
    }
    resp->set_id(req->ca_id());
    resp->set_status(rv1::CA_STATUS_VERIFIED);
    return grpc::Status::OK;
  }
  grpc::Status RegenerateVerificationCode(grpc::ServerContext* /*context*/,
                                          const iv1::RegenerateVerificationCodeRequest* req,
                                          rv1::CaCertificate* resp) override {
    resp->set_id(req->ca_id());
    resp->set_tenant_id(req->tenant_id());
    resp->set_verification_code("fresh-code-42");
    return grpc::Status::OK;
  }
  grpc::Status RevokeCertificate(grpc::ServerContext* /*context*/,
                                 const iv1::RevokeCertificateRequest* req,
                                 rv1::CertificateRevocation* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_revoke = *req;
    resp->set_id("rev-1");
    return grpc::Status::OK;
  }
  grpc::Status DeleteRevocation(grpc::ServerContext* /*context*/,
                                const iv1::DeleteRevocationRequest* req,
                                iv1::DeleteRevocationResponse* /*response*/) override {
    std::lock_guard<std::mutex> l(mu);
    last_unrevoke = *req;
    return grpc::Status::OK;
  }
  grpc::Status UploadCrl(grpc::ServerContext* /*context*/, const iv1::UploadCrlRequest* req,
                         rv1::CertificateRevocationList* /*response*/) override {
    std::lock_guard<std::mutex> l(mu);
    last_crl = *req;
    return grpc::Status::OK;
  }
  grpc::Status CreateIssuingCa(grpc::ServerContext* /*context*/,
                               const iv1::CreateIssuingCaRequest* req,
                               rv1::CaCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_issuing = *req;
    resp->set_id("issuing-1");
    resp->set_issuing(true);
    return grpc::Status::OK;
  }
  grpc::Status IssueCertificate(grpc::ServerContext* /*context*/,
                                const iv1::IssueCertificateRequest* req,
                                iv1::IssuedCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_issue = *req;
    Issued(req->device_id(), resp);
    return grpc::Status::OK;
  }
  grpc::Status RenewCertificate(grpc::ServerContext* /*context*/,
                                const iv1::RenewCertificateRequest* req,
                                iv1::IssuedCertificate* resp) override {
    std::lock_guard<std::mutex> l(mu);
    last_renew = *req;
    Issued("dev-1", resp);
    return grpc::Status::OK;
  }

  static void Issued(const std::string& device, iv1::IssuedCertificate* resp) {
    resp->set_certificate_pem("-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n");
    resp->set_issuer_pem("-----BEGIN CERTIFICATE-----\nISSUER\n-----END CERTIFICATE-----\n");
    resp->set_serial_hex("0a1b");
    resp->set_device_id(device);
  }

  std::mutex mu;
  iv1::VerifyCaPossessionRequest last_verify;
  iv1::RevokeCertificateRequest last_revoke;
  iv1::DeleteRevocationRequest last_unrevoke;
  iv1::UploadCrlRequest last_crl;
  iv1::CreateIssuingCaRequest last_issuing;
  iv1::IssueCertificateRequest last_issue;
  iv1::RenewCertificateRequest last_renew;
};

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { grpc::EnableDefaultHealthCheckService(true); }

  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&registry_);
    builder.RegisterService(&identity_);
    builder.RegisterService(&certs_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    app_.channel_override = [this] { return server_->InProcessChannel(grpc::ChannelArguments()); };
    app_.now = [] { return absl::FromUnixSeconds(1700000000); };
  }
  void TearDown() override { server_->Shutdown(); }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    Io io{&out_, &err_,
          [](const std::string&) -> std::optional<std::string> { return std::nullopt; }, false,
          out_is_tty_};
    return RunCli(args, io, &app_);
  }

  bool out_is_tty_ = false;
  FakeRegistry registry_;
  FakeIdentity identity_;
  FakeCertificates certs_;
  std::unique_ptr<grpc::Server> server_;
  App app_;
  std::ostringstream out_, err_;
};

TEST_F(CliTest, TokenSasPublishedVector) {
  EXPECT_EQ(Run({"token", "sas", "--hub", "h", "--device", "d", "--key", "cGFzc3dvcmQ=", "--expiry",
                 "12345"}),
            kExitOk);
  EXPECT_EQ(out_.str(),
            "SharedAccessSignature sr=h%2Fdevices%2Fd&sig="
            "PEvZoR%2BEG0sLxvwhxXBxAb5QB3gs7EwqYpA3jJ8KxXc%3D&se=12345\n");
}

TEST_F(CliTest, TokenSasTtlUsesClockAndMqttFields) {
  ASSERT_EQ(Run({"token", "sas", "--hub", "hub.example", "--device", "d1", "--key",
                 "cGFzc3dvcmQ=", "--ttl", "1h", "--mqtt", "--json"}),
            kExitOk);
  const std::string out = out_.str();
  EXPECT_NE(out.find("\"client_id\":\"d1\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"username\":\"hub.example/d1/?api-version=2021-04-12\""), std::string::npos);
  EXPECT_NE(out.find("se=1700003600"), std::string::npos);
}

TEST_F(CliTest, TokenTripleAndDpsVectors) {
  ASSERT_EQ(Run({"token", "triple", "--product_key", "a14Xib5kdYd", "--device_name", "light1983432",
                 "--device_secret", "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq", "--client_id", "SN1928339",
                 "--timestamp_ms", "1539421321846", "--sign_method", "hmacsha1"}),
            kExitOk);
  EXPECT_NE(out_.str().find("password:   b2488041f64f425016b467ee1c94959ebd592ad1"),
            std::string::npos)
      << out_.str();
  EXPECT_NE(out_.str().find("SN1928339|securemode=2,signmethod=hmacsha1,timestamp=1539421321846|"),
            std::string::npos);
  constexpr char kGroupKey[] =
      "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
  ASSERT_EQ(Run({"token", "dps-key", "--group_key", kGroupKey, "--registration_id",
                 "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"}),
            kExitOk);
  EXPECT_EQ(out_.str(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=\n");
}

TEST_F(CliTest, UsageErrorsExit2) {
  EXPECT_EQ(Run({"token", "sas", "--device", "d", "--key", "cGFzc3dvcmQ="}), kExitUsage);
  EXPECT_NE(err_.str().find("flag --hub is required"), std::string::npos);
  EXPECT_EQ(Run({"token", "sas", "--hub", "h", "--device", "d", "--key", "!!"}), kExitUsage);
  EXPECT_EQ(Run({"device", "get", "dev-1", "--tenant", "t", "--bogus"}), kExitUsage);
  EXPECT_EQ(Run({"device", "get", "dev-1"}), kExitUsage);  // no --tenant
  EXPECT_EQ(Run({"device", "regenerate-key", "dev-1", "--tenant", "t", "--slot", "third"}),
            kExitUsage);
  EXPECT_EQ(Run({"device", "get", "dev-1", "--tenant", "t", "--timeout", "0s"}), kExitUsage);
  EXPECT_EQ(Run({"nonsense"}), kExitUsage);
  // Credentials no server would accept are refused, not printed.
  EXPECT_EQ(Run({"token", "sas", "--hub", "h", "--device", "d", "--key", "cGFzc3dvcmQ=", "--expiry",
                 "1000000000000000000"}),
            kExitUsage);
  EXPECT_EQ(Run({"token", "sas", "--hub", "h", "--device", "d", "--key", "cGFzc3dvcmQ=", "--ttl",
                 "100000000000000000000s"}),
            kExitUsage);
  EXPECT_EQ(Run({"token", "triple", "--product_key", "p", "--device_name", "d", "--device_secret",
                 "s", "--timestamp_ms=-1"}),
            kExitUsage);
  EXPECT_EQ(Run({"token", "triple", "--product_key", "p", "--device_name", "d", "--device_secret",
                 "s", "--securemode", "4294967298"}),
            kExitUsage);
  EXPECT_EQ(Run({"--help"}), kExitOk);
  EXPECT_NE(out_.str().find("Exit codes"), std::string::npos);
}

TEST_F(CliTest, MissingPkiIsALocalErrorWithAdvice) {
  app_.channel_override = nullptr;
  app_.file_exists = [](const std::string&) { return false; };
  EXPECT_EQ(Run({"device", "get", "dev-1", "--tenant", "t"}), kExitLocalError);
  EXPECT_NE(err_.str().find("start the server first"), std::string::npos);
}

TEST_F(CliTest, SecretsHiddenUnlessAsked) {
  ASSERT_EQ(Run({"device", "get", "dev-1", "--tenant", "t"}), kExitOk);
  EXPECT_EQ(out_.str().find(kPrimaryKey), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("device_id:"), std::string::npos);
  EXPECT_NE(err_.str().find("--show-keys"), std::string::npos);
  ASSERT_EQ(Run({"--json", "device", "get", "dev-1", "--tenant", "t"}), kExitOk);
  EXPECT_EQ(out_.str().find(kPrimaryKey), std::string::npos);
  EXPECT_EQ(out_.str(),
            "{\"tenantId\":\"t\",\"deviceId\":\"dev-1\",\"status\":\"DEVICE_STATUS_ENABLED\","
            "\"credentials\":{\"symmetricKey\":{}}}\n");
  ASSERT_EQ(Run({"device", "get", "dev-1", "--tenant", "t", "--show-keys"}), kExitOk);
  EXPECT_NE(out_.str().find(kPrimaryKey), std::string::npos);
}

TEST_F(CliTest, ExportNamesDevicesWhoseKeysDidNotOpenAndFails) {
  const std::string path = ::testing::TempDir() + "/damaged.jsonl";
  EXPECT_EQ(Run({"device", "export", "--tenant", "damaged", "--show_keys", "--output", path}),
            kExitCheckFailed);
  EXPECT_TRUE(absl::StrContains(err_.str(), "exported 2 devices")) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "1 device(s) exported WITHOUT keys")) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), ": dev-1\n")) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "regenerate-key DEVICE --tenant damaged"))
      << err_.str();
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_TRUE(absl::StrContains(content.str(), "\"keysUnreadable\":true")) << content.str();
}

TEST_F(CliTest, ExportsShowProgressUnlessTurnedOffOrWritingToATerminal) {
  const std::string path = ::testing::TempDir() + "/progress.jsonl";
  // Not a terminal: a line every 5 s, and the last one at the end.
  ASSERT_EQ(Run({"device", "export", "--tenant", "t", "--output", path}), kExitOk) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "2 rows")) << err_.str();
  ASSERT_EQ(Run({"device", "export", "--tenant", "t", "--output", path, "--no_progress"}), kExitOk);
  EXPECT_FALSE(absl::StrContains(err_.str(), "rows")) << err_.str();
  // Piped stdout: progress on stderr.
  ASSERT_EQ(Run({"device", "export", "--tenant", "t"}), kExitOk);
  EXPECT_TRUE(absl::StrContains(err_.str(), "2 rows")) << err_.str();
  // Lines to a terminal: none (they would mix).
  out_is_tty_ = true;
  ASSERT_EQ(Run({"device", "export", "--tenant", "t"}), kExitOk);
  EXPECT_FALSE(absl::StrContains(err_.str(), "rows")) << err_.str();
  EXPECT_TRUE(absl::StrContains(out_.str(), "\"deviceId\"")) << out_.str();
}

TEST_F(CliTest, ExportWritesAPrivateFileOnlyWhenComplete) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/devices.jsonl";
  ASSERT_EQ(Run({"device", "export", "--tenant", "t", "--show_keys", "--output", path}), kExitOk)
      << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "exported 2 devices")) << err_.str();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u) << "keys exported into a file others can read";
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  const std::string complete = content.str();
  EXPECT_TRUE(absl::StrContains(complete, kPrimaryKey));

  // A failed export leaves the earlier file as it was, and no temporary.
  EXPECT_EQ(Run({"device", "export", "--tenant", "broken", "--show_keys", "--output", path}),
            kExitRpcError);
  EXPECT_FALSE(absl::StrContains(err_.str(), "exported")) << err_.str();
  std::ifstream again(path);
  std::stringstream after;
  after << again.rdbuf();
  EXPECT_EQ(after.str(), complete);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_FALSE(absl::StrContains(entry.path().filename().string(), "devices.jsonl.tmp"))
        << entry.path();
  }
  // An unwritable destination says so, and what to check.
  EXPECT_EQ(Run({"device", "export", "--tenant", "t", "--output", dir + "/no/such/dir/d.jsonl"}),
            kExitLocalError);
  EXPECT_TRUE(absl::StrContains(err_.str(), "directory exists")) << err_.str();
}

TEST_F(CliTest, RpcErrorExit3WithHint) {
  EXPECT_EQ(Run({"device", "get", "nope", "--tenant", "t"}), kExitRpcError);
  EXPECT_NE(err_.str().find("error: DeviceRegistry.GetDevice: NOT_FOUND: device 'x' not found"),
            std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("hint: check the id and --tenant"), std::string::npos);
  // Not implemented by the fake.
  EXPECT_EQ(Run({"tenant", "get", "t"}), kExitRpcError);
  EXPECT_NE(err_.str().find("UNIMPLEMENTED"), std::string::npos);
}

TEST_F(CliTest, BearerTokenSentAsMetadata) {
  ASSERT_EQ(Run({"device", "get", "dev-1", "--tenant", "t", "--token", "s3cret"}), kExitOk);
  std::lock_guard<std::mutex> l(registry_.mu);
  EXPECT_EQ(registry_.last_authorization, "Bearer s3cret");
}

TEST_F(CliTest, ListFollowsPagesWithAll) {
  ASSERT_EQ(Run({"device", "list", "--tenant", "t"}), kExitOk);
  EXPECT_EQ(out_.str(), "DEVICE  PRODUCT  STATUS  TAGS  UPDATED\nd0\nd1\n");
  EXPECT_NE(err_.str().find("--page_token 1"), std::string::npos);
  ASSERT_EQ(Run({"device", "list", "--tenant", "t", "--all", "--json"}), kExitOk);
  EXPECT_EQ(out_.str(),
            "{\"deviceId\":\"d0\"}\n{\"deviceId\":\"d1\"}\n{\"deviceId\":\"d2\"}\n"
            "{\"deviceId\":\"d3\"}\n{\"deviceId\":\"d4\"}\n{\"deviceId\":\"d5\"}\n");
}

TEST_F(CliTest, AuthenticateExitCodes) {
  ASSERT_EQ(Run({"authenticate", "--client_id", "d1", "--username", "u", "--password", "good"}),
            kExitOk);
  EXPECT_NE(out_.str().find("decision:"), std::string::npos);
  EXPECT_NE(out_.str().find("allow"), std::string::npos);
  ASSERT_EQ(
      Run({"authenticate", "--client_id", "d1", "--username", "u", "--password", "wrong-password"}),
      kExitDenied);
  EXPECT_NE(out_.str().find("bad_signature"), std::string::npos);
  EXPECT_EQ(out_.str().find("wrong-password"), std::string::npos);
  EXPECT_EQ(err_.str().find("wrong-password"), std::string::npos);
  // Two credential sources at once.
  EXPECT_EQ(Run({"authenticate", "--sas_token", "x", "--password", "p"}), kExitUsage);
}

TEST_F(CliTest, AnErrorsStableReasonIsShownWithItsOwnHint) {
  // UNAVAILABLE from a server that is up (it refuses what its audit log cannot
  // record): the reason is shown, and the hint is not "is the server running?".
  ASSERT_EQ(Run({"authenticate", "--client_id", "d1", "--username", "u", "--password",
                 "while-the-audit-log-is-unwritable"}),
            kExitRpcError);
  EXPECT_TRUE(absl::StrContains(err_.str(), "UNAVAILABLE: audit: the audit log cannot record"))
      << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "\nreason: AUDIT_UNWRITABLE\n")) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "iotauth_audit_writable")) << err_.str();
  EXPECT_FALSE(absl::StrContains(err_.str(), "is the server running")) << err_.str();
  // Nor while the server is still loading its directory.
  ASSERT_EQ(Run({"authenticate", "--client_id", "d1", "--username", "u", "--password",
                 "while-the-directory-loads"}),
            kExitRpcError);
  EXPECT_TRUE(absl::StrContains(err_.str(),
                                "\nreason: DIRECTORY_LOADING\nhint: the server is "
                                "running and still loading"))
      << err_.str();
  EXPECT_FALSE(absl::StrContains(err_.str(), "is the server running")) << err_.str();
  // A missing role: the hint names it.
  ASSERT_EQ(
      Run({"authenticate", "--client_id", "d1", "--username", "u", "--password", "as-a-reader"}),
      kExitRpcError);
  EXPECT_TRUE(absl::StrContains(err_.str(),
                                "reason: ROLE_REQUIRED\nhint: this call needs the "
                                "gateway role"))
      << err_.str();
  // An error without a reason has no reason line.
  EXPECT_EQ(Run({"device", "get", "nope", "--tenant", "t"}), kExitRpcError);
  EXPECT_FALSE(absl::StrContains(err_.str(), "reason:")) << err_.str();
}

TEST_F(CliTest, HealthServing) {
  ASSERT_EQ(Run({"health"}), kExitOk);
  EXPECT_EQ(out_.str(), "SERVING\n");
}

std::string WriteFile(const std::string& name, const std::string& content) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(dir ? dir : "/tmp", "/", name);
  std::ofstream(path) << content;
  return path;
}

TEST_F(CliTest, ImportBatchesAndReportsRejectedRowsByLine) {
  std::string csv;
  csv = "device_id,product_key\n";
  for (int i = 0; i < 2500; ++i) {
    if (i == 5) csv += "bad-1,p\n";
    csv += absl::StrCat("dev-", i, ",p\n");
  }
  csv += "only-one-field\n";
  const std::string path = WriteFile("devices.csv", csv);
  EXPECT_EQ(Run({"device", "import", "--tenant", "t9", "--file", path, "--no_progress"}),
            kExitCheckFailed);
  const std::string out = out_.str();
  EXPECT_NE(out.find("imported 2500 of 2502 devices"), std::string::npos) << out;
  EXPECT_NE(out.find("2 rejected (1 unreadable rows, 1 refused by the server)"), std::string::npos)
      << out;
  EXPECT_NE(out.find("  line 7 (#5) bad-1: ALREADY_EXISTS: device exists"), std::string::npos)
      << out;
  EXPECT_NE(out.find("  line 2503: PARSE_ERROR: expected 2 fields, found 1"), std::string::npos)
      << out;
  std::lock_guard<std::mutex> l(registry_.mu);
  EXPECT_EQ(registry_.import_messages, 3);  // 1000 + 1000 + 501
  EXPECT_EQ(registry_.import_tenant, "t9");
  EXPECT_TRUE(registry_.import_generate_keys);
}

TEST_F(CliTest, ImportDryRunNeedsNoServer) {
  app_.channel_override = nullptr;
  const std::string path = WriteFile("dry.jsonl", "{\"deviceId\":\"a\"}\n{\"deviceId\":\"b\"}\n");
  EXPECT_EQ(
      Run({"device", "import", "--tenant", "t", "--file", path, "--dry_run", "--no_progress"}),
      kExitOk);
  EXPECT_NE(out_.str().find("parsed 2 of 2 devices"), std::string::npos) << out_.str();
}

TEST_F(CliTest, AdminRewrapSecretsReportsProgressAndSummary) {
  ASSERT_EQ(Run({"admin", "rewrap-secrets", "--batch_size", "50", "--no_progress"}), kExitOk)
      << err_.str();
  EXPECT_NE(out_.str().find("re-wrapped secrets under the current master key: 10 of 10 rows"),
            std::string::npos)
      << out_.str();
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    EXPECT_EQ(registry_.rewrap_batch_size, 50);
  }
  ASSERT_EQ(Run({"--json", "admin", "rewrap-secrets"}), kExitOk);
  EXPECT_EQ(out_.str(), "{\"rowsDone\":\"10\",\"rowsTotal\":\"10\",\"done\":true}\n");
  EXPECT_NE(err_.str().find("10 rows"), std::string::npos) << err_.str();  // the progress line
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    EXPECT_EQ(registry_.rewrap_batch_size, 1000);  // the default
  }
  EXPECT_EQ(Run({"admin", "rewrap-secrets", "--batch_size", "0"}), kExitUsage);
  EXPECT_EQ(Run({"admin", "rewrap-secrets", "--batch_size", "many"}), kExitUsage);
  registry_.rewrap_fail = true;
  EXPECT_EQ(Run({"admin", "rewrap-secrets", "--no_progress"}), kExitRpcError);
  EXPECT_NE(err_.str().find("rewrap stopped after 10 of 10 rows"), std::string::npos) << err_.str();
  EXPECT_NE(err_.str().find("UNAVAILABLE"), std::string::npos);
}

TEST_F(CliTest, CaUploadVerifyAndStatus) {
  const std::string pem = WriteFile("ca.pem", "-----BEGIN CERTIFICATE-----\nX\n");
  ASSERT_EQ(Run({"ca", "upload", "--tenant", "t1", "--file", pem, "--jit_registration",
                 "--jit_product", "p1", "--device_id_pattern", "urn:dev:{tenant}:{device}"}),
            kExitOk)
      << err_.str();
  EXPECT_NE(out_.str().find("code-123"), std::string::npos) << out_.str();
  EXPECT_NE(err_.str().find("ca verify --tenant t1 ca-1"), std::string::npos) << err_.str();
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    const rv1::CaCertificate& ca = registry_.last_create_ca.ca();
    EXPECT_EQ(ca.tenant_id(), "t1");
    EXPECT_EQ(ca.certificate_pem(), "-----BEGIN CERTIFICATE-----\nX\n");
    EXPECT_TRUE(ca.jit_registration());
    EXPECT_EQ(ca.jit_product_key(), "p1");
    EXPECT_FALSE(ca.jit_auto_enable());
    EXPECT_EQ(ca.device_id_pattern(), "urn:dev:{tenant}:{device}");
  }
  EXPECT_EQ(Run({"ca", "upload", "--tenant", "t1"}), kExitUsage);  // no --file
  EXPECT_EQ(Run({"ca", "upload", "--tenant", "t1", "--file", "/nonexistent/ca.pem"}),
            kExitLocalError);
  EXPECT_EQ(Run({"ca", "upload", "--tenant", "t1", "--file", pem, "--jit_registration"}),
            kExitUsage);  // JIT without a product
  // The older spelling still works.
  ASSERT_EQ(Run({"ca", "create", "--tenant", "t2", "--cert_file", pem}), kExitOk);
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    EXPECT_EQ(registry_.last_create_ca.ca().tenant_id(), "t2");
  }

  ASSERT_EQ(Run({"ca", "verification-code", "--tenant", "t1", "ca-1"}), kExitOk);
  EXPECT_EQ(out_.str(), "fresh-code-42\n");
  ASSERT_EQ(Run({"--json", "ca", "verification-code", "--tenant", "t1", "ca-1"}), kExitOk);
  EXPECT_NE(out_.str().find("\"verificationCode\":\"fresh-code-42\""), std::string::npos);
  EXPECT_EQ(Run({"ca", "verification-code", "--tenant", "t1"}), kExitUsage);  // no CA_ID

  const std::string proof = WriteFile("proof.pem", "proof-bytes");
  ASSERT_EQ(Run({"ca", "verify", "--tenant", "t1", "ca-1", "--file", proof}), kExitOk);
  EXPECT_NE(out_.str().find("verified"), std::string::npos) << out_.str();
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_verify.tenant_id(), "t1");
    EXPECT_EQ(certs_.last_verify.ca_id(), "ca-1");
    EXPECT_EQ(certs_.last_verify.verification_certificate(), "proof-bytes");
  }
  const std::string wrong = WriteFile("wrong.pem", "wrong");
  EXPECT_EQ(Run({"ca", "verify", "--tenant", "t1", "ca-1", "--file", wrong}), kExitRpcError);
  EXPECT_NE(err_.str().find("POSSESSION_NOT_PROVEN"), std::string::npos) << err_.str();

  ASSERT_EQ(Run({"ca", "disable", "--tenant", "t1", "ca-1", "--etag", "e7"}), kExitOk);
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    EXPECT_EQ(registry_.last_update_ca.ca().id(), "ca-1");
    EXPECT_EQ(registry_.last_update_ca.ca().status(), rv1::CA_STATUS_DISABLED);
    ASSERT_EQ(registry_.last_update_ca.update_mask().paths_size(), 1);
    EXPECT_EQ(registry_.last_update_ca.update_mask().paths(0), "status");
    EXPECT_EQ(registry_.last_update_ca.etag(), "e7");
  }
  ASSERT_EQ(Run({"ca", "enable", "--tenant", "t1", "ca-1"}), kExitOk);
  {
    std::lock_guard<std::mutex> l(registry_.mu);
    EXPECT_EQ(registry_.last_update_ca.ca().status(), rv1::CA_STATUS_VERIFIED);
  }
}

TEST_F(CliTest, CaCreateIssuingGeneratesOrImports) {
  ASSERT_EQ(Run({"ca", "create-issuing", "--tenant", "t1", "--key_algorithm", "ec-p384",
                 "--validity", "365d", "--common_name", "Fleet CA"}),
            kExitOk)
      << err_.str();
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    ASSERT_TRUE(certs_.last_issuing.has_generate());
    EXPECT_EQ(certs_.last_issuing.generate().key_algorithm(), iv1::KEY_ALGORITHM_EC_P384);
    EXPECT_EQ(certs_.last_issuing.generate().validity().seconds(), 365 * 86400);
    EXPECT_EQ(certs_.last_issuing.generate().common_name(), "Fleet CA");
  }
  ASSERT_EQ(Run({"ca", "create-issuing", "--tenant", "t1"}), kExitOk);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    ASSERT_TRUE(certs_.last_issuing.has_generate());
    EXPECT_FALSE(certs_.last_issuing.generate().has_validity());
  }
  const std::string cert = WriteFile("issuing.pem", "CERT");
  const std::string key = WriteFile("issuing.key", "KEY");
  ASSERT_EQ(
      Run({"ca", "create-issuing", "--tenant", "t1", "--import_cert", cert, "--import_key", key}),
      kExitOk);
  EXPECT_EQ(out_.str().find("KEY"), std::string::npos);  // the key is never echoed
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    ASSERT_TRUE(certs_.last_issuing.has_import());
    EXPECT_EQ(certs_.last_issuing.import().certificate_pem(), "CERT");
    EXPECT_EQ(certs_.last_issuing.import().private_key_pem(), "KEY");
  }
  EXPECT_EQ(Run({"ca", "create-issuing", "--tenant", "t1", "--import_cert", cert}), kExitUsage);
  EXPECT_EQ(Run({"ca", "create-issuing", "--tenant", "t1", "--import_cert", cert, "--import_key",
                 key, "--key_algorithm", "rsa-2048"}),
            kExitUsage);
  EXPECT_EQ(Run({"ca", "create-issuing", "--tenant", "t1", "--key_algorithm", "dsa"}), kExitUsage);
  EXPECT_EQ(Run({"ca", "create-issuing", "--tenant", "t1", "--validity", "-5d"}), kExitUsage);
}

TEST_F(CliTest, CertIssueWritesTheChain) {
  const std::string csr = WriteFile("dev.csr", "CSR-BYTES");
  ASSERT_EQ(Run({"cert", "issue", "--tenant", "t1", "--device", "dev-1", "--csr", csr, "--validity",
                 "30d"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(),
            "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n"
            "-----BEGIN CERTIFICATE-----\nISSUER\n-----END CERTIFICATE-----\n");
  EXPECT_NE(err_.str().find("0a1b"), std::string::npos) << err_.str();
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_issue.tenant_id(), "t1");
    EXPECT_EQ(certs_.last_issue.device_id(), "dev-1");
    EXPECT_EQ(certs_.last_issue.csr(), "CSR-BYTES");
    EXPECT_EQ(certs_.last_issue.validity().seconds(), 30 * 86400);
  }
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string out_path = absl::StrCat(dir ? dir : "/tmp", "/dev-chain.pem");
  ASSERT_EQ(Run({"cert", "issue", "--tenant", "t1", "--device", "dev-1", "--csr", csr, "--out",
                 out_path}),
            kExitOk);
  EXPECT_NE(out_.str().find("wrote " + out_path), std::string::npos) << out_.str();
  std::ifstream written(out_path);
  std::stringstream content;
  content << written.rdbuf();
  EXPECT_NE(content.str().find("ISSUER"), std::string::npos);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_FALSE(certs_.last_issue.has_validity());
  }
  ASSERT_EQ(Run({"--json", "cert", "issue", "--tenant", "t1", "--device", "dev-1", "--csr", csr}),
            kExitOk);
  EXPECT_NE(out_.str().find("\"serialHex\":\"0a1b\""), std::string::npos) << out_.str();

  EXPECT_EQ(Run({"cert", "issue", "--tenant", "t1", "--device", "dev-1"}), kExitUsage);
  EXPECT_EQ(Run({"cert", "issue", "--tenant", "t1", "--csr", csr}), kExitUsage);
  EXPECT_EQ(
      Run({"cert", "issue", "--tenant", "t1", "--device", "d", "--csr", csr, "--validity", "soon"}),
      kExitUsage);
  EXPECT_EQ(Run({"cert", "issue", "--tenant", "t1", "--device", "d", "--csr", "/nonexistent"}),
            kExitLocalError);
  EXPECT_EQ(Run({"cert", "issue", "--tenant", "t1", "--device", "d", "--csr", csr, "--out",
                 "/nonexistent/dir/x.pem"}),
            kExitLocalError);
}

// A P-256 key and a CSR for `cn`, both PEM.
void MakeKeyAndCsr(const std::string& cn, std::string* key_pem, std::string* csr_pem,
                   std::string* csr_der, EVP_PKEY** key_out) {
  EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  ASSERT_NE(kctx, nullptr);
  ASSERT_EQ(EVP_PKEY_keygen_init(kctx), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1), 1);
  EVP_PKEY* key = nullptr;
  ASSERT_EQ(EVP_PKEY_keygen(kctx, &key), 1);
  EVP_PKEY_CTX_free(kctx);
  X509_REQ* req = X509_REQ_new();
  X509_NAME* name = X509_REQ_get_subject_name(req);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req, key);
  ASSERT_GT(X509_REQ_sign(req, key, EVP_sha256()), 0);
  auto to_string = [](BIO* bio) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int)
    std::string s(data, static_cast<size_t>(len));
    BIO_free(bio);
    return s;
  };
  BIO* kb = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr);
  *key_pem = to_string(kb);
  BIO* rb = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(rb, req);
  *csr_pem = to_string(rb);
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(req, &der);
  ASSERT_GT(len, 0);
  csr_der->assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  X509_REQ_free(req);
  *key_out = key;
}

TEST_F(CliTest, CertRenewSignsTheCsrWithTheCurrentKey) {
  std::string key_pem;
  std::string csr_pem;
  std::string csr_der;
  EVP_PKEY* key = nullptr;
  MakeKeyAndCsr("dev-1", &key_pem, &csr_pem, &csr_der, &key);
  ASSERT_NE(key, nullptr);
  const std::string key_file = WriteFile("current.key", key_pem);
  const std::string csr_file = WriteFile("renew.csr", csr_pem);
  const std::string chain =
      WriteFile("current.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                "junk between\n-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n");
  ASSERT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", csr_file,
                 "--key_file", key_file, "--validity", "12h"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str().find("PRIVATE KEY"), std::string::npos);
  iv1::RenewCertificateRequest got;
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    got = certs_.last_renew;
  }
  EXPECT_EQ(got.tenant_id(), "t1");
  ASSERT_EQ(got.current_chain_size(), 2);
  EXPECT_EQ(got.current_chain(0), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(got.current_chain(1), "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(got.csr(), csr_pem);
  EXPECT_EQ(got.validity().seconds(), 12 * 3600);
  // The signature verifies over the CSR's DER with the current public key.
  EVP_MD_CTX* vctx = EVP_MD_CTX_new();
  ASSERT_EQ(EVP_DigestVerifyInit(vctx, nullptr, EVP_sha256(), nullptr, key), 1);
  EXPECT_EQ(EVP_DigestVerify(
                vctx, reinterpret_cast<const unsigned char*>(got.current_key_signature().data()),
                got.current_key_signature().size(),
                reinterpret_cast<const unsigned char*>(csr_der.data()), csr_der.size()),
            1);
  EVP_MD_CTX_free(vctx);
  EVP_PKEY_free(key);

  const std::string sig = WriteFile("renew.sig", "SIG");
  ASSERT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", csr_file,
                 "--signature_file", sig}),
            kExitOk);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_renew.current_key_signature(), "SIG");
    EXPECT_FALSE(certs_.last_renew.has_validity());
  }
  // Exactly one proof source.
  EXPECT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", csr_file}),
            kExitUsage);
  EXPECT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", csr_file,
                 "--signature_file", sig, "--key_file", key_file}),
            kExitUsage);
  EXPECT_EQ(Run({"cert", "renew", "--tenant", "t1", "--csr", csr_file, "--signature_file", sig}),
            kExitUsage);  // no --chain
  // A key file that is not a key, and a CSR that is not a CSR, are local errors.
  EXPECT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", csr_file,
                 "--key_file", sig}),
            kExitLocalError);
  EXPECT_EQ(Run({"cert", "renew", "--tenant", "t1", "--chain", chain, "--csr", sig, "--key_file",
                 key_file}),
            kExitLocalError);
}

TEST_F(CliTest, CertRevokeTakesExactlyOneTarget) {
  const std::string cert = WriteFile("leaf.pem", "LEAF");
  ASSERT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--cert_file", cert, "--reason",
                 "keyCompromise", "--device", "dev-1"}),
            kExitOk)
      << err_.str();
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_revoke.certificate(), "LEAF");
    EXPECT_EQ(certs_.last_revoke.reason(), "keyCompromise");
    EXPECT_EQ(certs_.last_revoke.device_id(), "dev-1");
  }
  const std::string fp(64, 'A');
  ASSERT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--fingerprint", fp}), kExitOk);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_revoke.fingerprint(), std::string(64, 'a'));
  }
  ASSERT_EQ(
      Run({"cert", "revoke", "--tenant", "t1", "--fingerprint", "AB:" + std::string(62, '0')}),
      kExitOk);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_revoke.fingerprint(), "ab" + std::string(62, '0'));
  }
  ASSERT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--issuer_ca", "ca-1", "--serial", "0x0A1B"}),
            kExitOk);
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_revoke.issuer_serial().ca_id(), "ca-1");
    EXPECT_EQ(certs_.last_revoke.issuer_serial().serial_hex(), "0x0A1B");
  }
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1"}), kExitUsage);
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--cert_file", cert, "--fingerprint", fp}),
            kExitUsage);
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--fingerprint", "abc"}), kExitUsage);
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--issuer_ca", "ca-1"}), kExitUsage);
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--serial", "0a"}), kExitUsage);
  EXPECT_EQ(Run({"cert", "revoke", "--tenant", "t1", "--issuer_ca", "ca-1", "--serial", "xyz"}),
            kExitUsage);

  ASSERT_EQ(Run({"cert", "unrevoke", "--tenant", "t1", "rev-1"}), kExitOk);
  EXPECT_EQ(out_.str(), "deleted revocation 'rev-1'\n");
  std::lock_guard<std::mutex> l(certs_.mu);
  EXPECT_EQ(certs_.last_unrevoke.revocation_id(), "rev-1");
}

TEST_F(CliTest, CrlUpload) {
  const std::string crl = WriteFile("ca.crl", "CRL-BYTES");
  ASSERT_EQ(Run({"crl", "upload", "--tenant", "t1", "--issuer_ca", "ca-1", "--file", crl}), kExitOk)
      << err_.str();
  {
    std::lock_guard<std::mutex> l(certs_.mu);
    EXPECT_EQ(certs_.last_crl.tenant_id(), "t1");
    EXPECT_EQ(certs_.last_crl.ca_id(), "ca-1");
    EXPECT_EQ(certs_.last_crl.crl(), "CRL-BYTES");
  }
  EXPECT_EQ(Run({"crl", "upload", "--tenant", "t1", "--file", crl}), kExitUsage);
  EXPECT_EQ(Run({"crl", "upload", "--tenant", "t1", "--issuer_ca", "ca-1"}), kExitUsage);
}

}  // namespace
}  // namespace iotauth::cli
