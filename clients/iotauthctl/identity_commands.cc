// authenticate and authorize: ask the IdentityService what it would decide for a
// device, the way a broker does. A DENY is exit code 4, not an error.
#include "absl/strings/str_cat.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"

namespace iotauth::cli {
namespace {

namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

// Builds the request from the flags. Exactly one credential source:
// --sas_token, the triple flags (--signature), or CONNECT fields
// (--client_id/--username/--password[_file]/--cert_chain).
absl::StatusOr<iv1::AuthenticateRequest> BuildAuthenticateRequest(const Invocation& inv) {
  iv1::AuthenticateRequest req;
  req.set_tenant_id(inv.flags.Get("tenant"));
  req.set_request_id(inv.flags.Get("request_id"));
  const bool sas = inv.flags.Has("sas_token") || inv.flags.Has("sas_token_file");
  const bool triple =
      inv.flags.Has("signature") || inv.flags.Has("product_key") || inv.flags.Has("device_name");
  const bool connect = inv.flags.Has("username") || inv.flags.Has("password") ||
                       inv.flags.Has("password_file") || inv.flags.Has("cert_chain");
  if (static_cast<int>(sas) + static_cast<int>(triple) + static_cast<int>(connect) != 1) {
    return absl::InvalidArgumentError(
        "give exactly one credential: --sas_token, the triple flags (--product_key "
        "--device_name --signature ...), or CONNECT fields (--client_id --username --password "
        "and/or --cert_chain)");
  }
  if (sas) {
    auto token = SecretFromFlags(inv, "sas_token", "sas_token_file");
    if (!token.ok()) return token.status();
    auto* c = req.mutable_credential()->mutable_sas();
    c->set_token(*token);
    c->set_device_id(inv.flags.Get("device"));
    return req;
  }
  if (triple) {
    auto* c = req.mutable_credential()->mutable_device_triple();
    c->set_product_key(inv.flags.Get("product_key"));
    c->set_device_name(inv.flags.Get("device_name"));
    c->set_client_id(inv.flags.Get("client_id"));
    auto ts = inv.flags.GetInt("timestamp_ms");
    if (!ts.ok()) return ts.status();
    c->set_timestamp_ms(*ts);
    c->set_sign_method(inv.flags.Get("sign_method"));
    auto sig = SecretFromFlags(inv, "signature", "signature_file");
    if (!sig.ok()) return sig.status();
    c->set_signature(*sig);
    if (c->product_key().empty() || c->device_name().empty()) {
      return absl::InvalidArgumentError("a triple needs --product_key and --device_name");
    }
    return req;
  }
  auto* c = req.mutable_connect();
  c->set_client_id(inv.flags.Get("client_id"));
  c->set_username(inv.flags.Get("username"));
  auto password = SecretFromFlags(inv, "password", "password_file", true);
  if (!password.ok()) return password.status();
  c->set_password(*password);
  for (const std::string& path : inv.flags.GetAll("cert_chain")) {
    auto pem = AppOf(inv).read_file(path);
    if (!pem.ok()) return pem.status();
    c->add_peer_certificate_chain(*pem);
  }
  c->set_peer_address(inv.flags.Get("peer_address"));
  c->set_listener(inv.flags.Get("listener"));
  if (inv.flags.Has("protocol")) {
    auto p = ParseEnumName(iv1::Protocol_descriptor(), inv.flags.Get("protocol"));
    if (!p.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--protocol: ", p.status().message()));
    }
    c->set_protocol(static_cast<iv1::Protocol>(*p));
  }
  return req;
}

int ExitForDecision(const Invocation& inv, iv1::Decision decision) {
  if (decision == iv1::DECISION_ALLOW) return kExitOk;
  if (decision == iv1::DECISION_DENY) return kExitDenied;
  inv.err() << "error: the server returned no decision\n";
  return kExitRpcError;
}

int Authenticate(Invocation& inv) {
  auto req = BuildAuthenticateRequest(inv);
  if (!req.ok()) return StatusToExit(inv, req.status());
  int exit = 0;
  auto conn = ConnectOrReport(inv, &exit);
  if (!conn) return exit;
  auto stub = iv1::IdentityService::NewStub(conn->channel());
  iv1::AuthenticateResponse resp;
  if (int rc = CallUnary(inv, *conn, "IdentityService.Authenticate", [&](grpc::ClientContext* c) {
        return stub->Authenticate(c, *req, &resp);
      })) {
    return rc;
  }
  PrintResource(inv, &resp, inv.flags.IsSet("show_keys"));
  return ExitForDecision(inv, resp.decision());
}

int Authorize(Invocation& inv) {
  iv1::AuthorizeRequest req;
  std::string device;
  std::string action;
  std::string topic;
  int exit = 0;
  if (!RequireFlag(inv, "device", &device, &exit)) return exit;
  if (!RequireFlag(inv, "action", &action, &exit)) return exit;
  if (!RequireFlag(inv, "topic", &topic, &exit)) return exit;
  auto a = ParseEnumName(rv1::RuleAction_descriptor(), action);
  if (!a.ok()) return inv.UsageError(absl::StrCat("--action: ", a.status().message()));
  auto* id = req.mutable_identity();
  id->set_tenant_id(inv.flags.Get("tenant"));
  id->set_product_key(inv.flags.Get("product"));
  id->set_device_id(device);
  id->set_module_id(inv.flags.Get("module"));
  req.set_action(static_cast<rv1::RuleAction>(*a));
  req.set_topic(topic);
  req.set_client_id(inv.flags.Get("client_id"));
  req.set_username(inv.flags.Get("username"));
  req.set_cert_cn(inv.flags.Get("cert_cn"));
  req.set_request_id(inv.flags.Get("request_id"));
  auto conn = ConnectOrReport(inv, &exit);
  if (!conn) return exit;
  auto stub = iv1::IdentityService::NewStub(conn->channel());
  iv1::AuthorizeResponse resp;
  if (int rc = CallUnary(inv, *conn, "IdentityService.Authorize",
                         [&](grpc::ClientContext* c) { return stub->Authorize(c, req, &resp); })) {
    return rc;
  }
  PrintResource(inv, &resp, false);
  return ExitForDecision(inv, resp.decision());
}

}  // namespace

void AddIdentityCommands(Command& root) {
  root.Sub("authenticate", "Ask IdentityService.Authenticate for a decision (exit 4 on deny)")
      .Description(
          "Credential sources (give one):\n"
          "  CONNECT fields:  --client_id --username --password|--password_file [--cert_chain "
          "PEM]\n"
          "  SAS token:       --sas_token|--sas_token_file [--device]\n"
          "  device triple:   --product_key --device_name --client_id --timestamp_ms\n"
          "                   --sign_method --signature|--signature_file\n"
          "Secrets given here are sent, never printed.")
      .Flag({"tenant", "ID", "Tenant hint (default: resolved from the credential)", "",
             "IOTAUTH_TENANT"})
      .Flag({"client_id", "ID", "MQTT client id (or the triple's clientId)"})
      .Flag({"username", "NAME", "MQTT username"})
      .Flag({"password", "TEXT", "MQTT password"})
      .Flag({"password_file", "FILE", "Read the MQTT password from a file"})
      .Flag({"cert_chain", "FILE", "PEM client certificate chain, leaf first", "", "", true})
      .Flag({"peer_address", "IP:PORT", "Device address (audit, rate limits)"})
      .Flag({"listener", "NAME", "Listener name (e.g. mqtts)"})
      .Flag({"protocol", "NAME",
             absl::StrCat("Transport: ", EnumChoices(iv1::Protocol_descriptor()))})
      .Flag({"sas_token", "TOKEN", "SharedAccessSignature sr=...&sig=...&se=..."})
      .Flag({"sas_token_file", "FILE", "Read the SAS token from a file"})
      .Flag({"device", "ID", "Device the SAS token is presented for (default: from sr)"})
      .Flag({"product_key", "KEY", "Triple product key"})
      .Flag({"device_name", "NAME", "Triple device name"})
      .Flag({"timestamp_ms", "MS", "Triple timestamp (0: none)"})
      .Flag({"sign_method", "METHOD", "hmacsha256, hmacsha1, hmacmd5 or sha256 (EnOS)"})
      .Flag({"signature", "HEX", "Triple signature"})
      .Flag({"signature_file", "FILE", "Read the triple signature from a file"})
      .Flag({"request_id", "ID", "Correlation id echoed in the response and the audit log"})
      .Flag({"show_keys", "", "Print a device secret issued by dynamic activation"})
      .Run(Authenticate);
  root.Sub("authorize",
           "Ask IdentityService.Authorize about one publish/subscribe (exit 4 on deny)")
      .Flag({"tenant", "ID", "Tenant of the device", "", "IOTAUTH_TENANT"})
      .Flag({"product", "KEY", "Product of the device"})
      .Flag({"device", "ID", "Device id"})
      .Flag({"module", "ID", "Module id"})
      .Flag({"action", "publish|subscribe", "What the device does"})
      .Flag({"topic", "TOPIC", "Topic name (publish) or filter (subscribe)"})
      .Flag({"client_id", "ID", "MQTT client id (for ${client_id})"})
      .Flag({"username", "NAME", "MQTT username (for ${username})"})
      .Flag({"cert_cn", "CN", "Certificate CN (for ${cert_cn})"})
      .Flag({"request_id", "ID", "Correlation id"})
      .Run(Authorize);
}

}  // namespace iotauth::cli
