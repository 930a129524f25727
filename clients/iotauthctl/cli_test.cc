// Whole command lines run in-process against fake services on an in-process
// gRPC server: exit codes, output, secrets handling, import batching.
#include "clients/iotauthctl/cli.h"

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"

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

  grpc::Status ListDevices(grpc::ServerContext*, const rv1::ListDevicesRequest* req,
                           rv1::ListDevicesResponse* resp) override {
    const int page = req->page_token().empty() ? 0 : std::atoi(req->page_token().c_str());
    for (int i = 0; i < 2; ++i) resp->add_devices()->set_device_id(absl::StrCat("d", page * 2 + i));
    if (page < 2) resp->set_next_page_token(absl::StrCat(page + 1));
    return grpc::Status::OK;
  }

  grpc::Status ImportDevices(grpc::ServerContext*,
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

  std::mutex mu;
  std::string last_authorization;
  int import_messages = 0;
  std::string import_tenant;
  bool import_generate_keys = false;
};

class FakeIdentity final : public iv1::IdentityService::Service {
 public:
  grpc::Status Authenticate(grpc::ServerContext*, const iv1::AuthenticateRequest* req,
                            iv1::AuthenticateResponse* resp) override {
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

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { grpc::EnableDefaultHealthCheckService(true); }

  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&registry_);
    builder.RegisterService(&identity_);
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
          [](const std::string&) -> std::optional<std::string> { return std::nullopt; }, false};
    return RunCli(args, io, &app_);
  }

  FakeRegistry registry_;
  FakeIdentity identity_;
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
  ASSERT_EQ(Run({"token", "dps-key", "--group_key",
                 "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/"
                 "lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
                 "--registration_id", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"}),
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

}  // namespace
}  // namespace iotauth::cli
