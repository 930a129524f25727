// token sas|triple|dps-key: device credentials computed locally with the device
// library (no server involved). These commands exist to print a credential, so
// their output is the secret the user asked for.
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "clients/device/device_auth.h"
#include "clients/iotauthctl/command_util.h"
#include "clients/iotauthctl/commands.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"

namespace iotauth::cli {
namespace {

int Sas(Invocation& inv) {
  std::string hub;
  std::string device_id;
  int exit = 0;
  if (!RequireFlag(inv, "hub", &hub, &exit)) return exit;
  if (!RequireFlag(inv, "device", &device_id, &exit)) return exit;
  auto key = SecretFromFlags(inv, "key", "key_file");
  if (!key.ok()) return StatusToExit(inv, key.status());
  absl::Time expiry;
  if (inv.flags.Has("expiry")) {
    int64_t se = 0;
    if (!absl::SimpleAtoi(inv.flags.Get("expiry"), &se) || se <= 0) {
      return inv.UsageError("--expiry must be a positive number of seconds since the epoch");
    }
    expiry = absl::FromUnixSeconds(se);
  } else {
    auto ttl = inv.flags.GetDuration("ttl");
    if (!ttl.ok()) return inv.UsageError(ttl.status().message());
    if (*ttl <= absl::ZeroDuration()) return inv.UsageError("--ttl must be positive");
    expiry = AppOf(inv).now() + *ttl;
  }
  const std::string module = inv.flags.Get("module");
  auto token = device::MakeSasToken(hub, device_id, module, *key, expiry, inv.flags.Get("policy"));
  if (!token.ok()) return inv.UsageError(token.status().message());
  if (inv.flags.IsSet("mqtt")) {
    auto f = device::SasMqttConnectFields(hub, device_id, module, *token);
    PrintFields(inv,
                {{"client_id", f.client_id},
                 {"username", f.username},
                 {"password", f.password},
                 {"expires", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", expiry, absl::UTCTimeZone())}});
    return kExitOk;
  }
  if (JsonOutput(inv)) {
    PrintFields(inv, {{"sas", *token}});
  } else {
    inv.out() << *token << "\n";
  }
  return kExitOk;
}

int Triple(Invocation& inv) {
  std::string product_key;
  std::string device_name;
  int exit = 0;
  if (!RequireFlag(inv, "product_key", &product_key, &exit)) return exit;
  if (!RequireFlag(inv, "device_name", &device_name, &exit)) return exit;
  auto secret = SecretFromFlags(inv, "device_secret", "device_secret_file");
  if (!secret.ok()) return StatusToExit(inv, secret.status());
  std::optional<int64_t> timestamp;
  if (!inv.flags.IsSet("no_timestamp")) {
    if (inv.flags.Has("timestamp_ms")) {
      auto ts = inv.flags.GetInt("timestamp_ms");
      if (!ts.ok()) return inv.UsageError(ts.status().message());
      timestamp = *ts;
    } else {
      timestamp = absl::ToUnixMillis(AppOf(inv).now());
    }
  } else if (inv.flags.Has("timestamp_ms")) {
    return inv.UsageError("give --timestamp_ms or --no_timestamp, not both");
  }
  absl::StatusOr<device::MqttConnectFields> fields;
  if (inv.flags.IsSet("enos")) {
    device::EnosParams p;
    p.product_key = product_key;
    p.device_key = device_name;
    p.secret = *secret;
    p.client_id = inv.flags.Get("client_id");
    p.timestamp_ms = timestamp;
    p.dynamic_activation = inv.flags.IsSet("dynamic_activation");
    fields = device::EnosMqttConnectFields(p);
  } else {
    device::TripleParams p;
    p.product_key = product_key;
    p.device_name = device_name;
    p.device_secret = *secret;
    p.client_id = inv.flags.Get("client_id");
    p.timestamp_ms = timestamp;
    auto method = device::ParseTripleSignMethod(inv.flags.Get("sign_method"));
    if (!method.ok()) return inv.UsageError(method.status().message());
    p.sign_method = *method;
    auto securemode = inv.flags.GetInt("securemode");
    if (!securemode.ok()) return inv.UsageError(securemode.status().message());
    if (*securemode != 2 && *securemode != 3) return inv.UsageError("--securemode must be 2 or 3");
    p.securemode = static_cast<int>(*securemode);
    fields = device::TripleMqttConnectFields(p);
  }
  if (!fields.ok()) return inv.UsageError(fields.status().message());
  PrintFields(inv, {{"client_id", fields->client_id},
                    {"username", fields->username},
                    {"password", fields->password}});
  return kExitOk;
}

int DpsKey(Invocation& inv) {
  std::string registration_id;
  int exit = 0;
  if (!RequireFlag(inv, "registration_id", &registration_id, &exit)) return exit;
  auto group_key = SecretFromFlags(inv, "group_key", "group_key_file");
  if (!group_key.ok()) return StatusToExit(inv, group_key.status());
  auto key = device::DeriveDeviceKey(*group_key, registration_id);
  if (!key.ok()) return inv.UsageError(key.status().message());
  if (JsonOutput(inv)) {
    PrintFields(inv, {{"registration_id", registration_id}, {"device_key", *key}});
  } else {
    inv.out() << *key << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddTokenCommands(Command& root) {
  Command& token = root.Sub("token", "Compute device credentials locally (no server needed)");
  token.Sub("sas", "An Azure IoT Hub SAS token (like 'az iot hub generate-sas-token')")
      .Flag({"hub", "HOST", "Hub host name (the tenant's hub_host)", "", "IOTAUTH_HUB"})
      .Flag({"device", "ID", "Device id"})
      .Flag({"module", "ID", "Module id (module-scoped token)"})
      .Flag({"key", "BASE64", "Device (or policy) key"})
      .Flag({"key_file", "FILE", "Read the key from a file"})
      .Flag({"policy", "NAME", "Shared access policy name (adds skn; sign with its key)"})
      .Flag({"ttl", "DURATION", "Validity from now (3600, 90m, 1h, 7d)", "1h"})
      .Flag({"expiry", "UNIX_SECONDS", "Absolute expiry (instead of --ttl)"})
      .Flag({"mqtt", "", "Print the MQTT CONNECT fields instead of the bare token"})
      .Run(Sas);
  token.Sub("triple", "Device-triple MQTT CONNECT fields (Alibaba style, or EnOS with --enos)")
      .Flag({"product_key", "KEY", "Product key"})
      .Flag({"device_name", "NAME", "Device name (EnOS: device key)"})
      .Flag({"device_secret", "SECRET", "Device secret (EnOS dynamic activation: product secret)"})
      .Flag({"device_secret_file", "FILE", "Read the secret from a file"})
      .Flag({"client_id", "ID", "Client id (default: the device name)"})
      .Flag({"timestamp_ms", "MS", "Timestamp to sign (default: now)"})
      .Flag({"no_timestamp", "", "Sign and send no timestamp"})
      .Flag({"sign_method", "METHOD", "hmacsha256, hmacsha1 or hmacmd5", "hmacsha256"})
      .Flag({"securemode", "2|3", "2 (TLS) or 3 (plain TCP)", "2"})
      .Flag({"enos", "", "EnOS variant: SHA-256 of the sorted pairs followed by the secret"})
      .Flag({"dynamic_activation", "", "EnOS dynamic activation (securemode=3, product secret)"})
      .Run(Triple);
  token.Sub("dps-key", "A device key derived from an enrollment group key (Azure DPS style)")
      .Flag({"group_key", "BASE64", "Enrollment group key"})
      .Flag({"group_key_file", "FILE", "Read the group key from a file"})
      .Flag({"registration_id", "ID", "Registration (device) id"})
      .Run(DpsKey);
}

}  // namespace iotauth::cli
