// Credentials a device or gateway presents to an iotauth-protected broker, in the
// exact formats devices in the field already use: Azure IoT Hub SAS tokens and
// their MQTT CONNECT fields, Alibaba-style device-triple HMAC connects (and the
// EnOS variant), and Azure DPS-style keys derived from an enrollment group key.
//
// Pure functions: time is a parameter, nothing is logged, and error messages never
// contain a key, secret or signature. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace iotauth::device {

// MQTT API version Azure IoT Hub documents for the username.
inline constexpr absl::string_view kAzureMqttApiVersion = "2021-04-12";
// The largest SAS `se` (18 digits) and triple timestamp (15 digits) servers accept;
// credentials past them are refused here rather than made unusable.
inline constexpr int64_t kMaxSasExpiry = 999999999999999999;
inline constexpr int64_t kMaxTripleTimestampMs = 999999999999999;

// The three MQTT CONNECT fields. `password` is SECRET (a token or a signature).
struct MqttConnectFields {
  std::string client_id;
  std::string username;
  std::string password;
};

// --- Azure IoT Hub SAS ---------------------------------------------------------

// base64(HMAC-SHA256(base64-decode(key_b64), string_to_sign)). INVALID_ARGUMENT
// when the key is not base64 or is empty.
absl::StatusOr<std::string> SasSignature(absl::string_view key_b64,
                                         absl::string_view string_to_sign);

// A token for an arbitrary resource URI (not yet URL-encoded):
// `SharedAccessSignature sr=<enc uri>&sig=<enc sig>&se=<expiry>[&skn=<policy>]`,
// signed over `<enc uri>\n<expiry>`. `expiry_unix_seconds` must be positive.
absl::StatusOr<std::string> MakeSasTokenForResource(absl::string_view resource_uri,
                                                    absl::string_view key_b64,
                                                    int64_t expiry_unix_seconds,
                                                    absl::string_view policy_name = "");

// Resource URI of a device (`{hub}/devices/{device}`) or module
// (`{hub}/devices/{device}/modules/{module}`), not URL-encoded.
std::string SasResourceUri(absl::string_view hub_host, absl::string_view device_id,
                           absl::string_view module_id = "");

// A device- or module-scoped SAS token for `{hub_host}/devices/{device_id}[/modules/{module_id}]`
// that expires at `expiry` (whole seconds, rounded down). A non-empty `policy_name`
// adds `skn` (the key is then the policy's key). INVALID_ARGUMENT on an empty hub or
// device id, a bad key or an expiry before 1970.
absl::StatusOr<std::string> MakeSasToken(absl::string_view hub_host, absl::string_view device_id,
                                         absl::string_view module_id, absl::string_view key_b64,
                                         absl::Time expiry, absl::string_view policy_name = "");
// Device-scoped convenience overload (no module, no policy).
absl::StatusOr<std::string> MakeSasToken(absl::string_view hub_host, absl::string_view device_id,
                                         absl::string_view key_b64, absl::Time expiry);

// MQTT CONNECT fields for a SAS-authenticated device (or module):
// client id `{device}` (`{device}/{module}`), username
// `{hub}/{device}[/{module}]/?api-version=2021-04-12`, password = the token.
MqttConnectFields SasMqttConnectFields(absl::string_view hub_host, absl::string_view device_id,
                                       absl::string_view module_id, std::string token);

// --- Device triple (Alibaba IoT style) ----------------------------------------

enum class TripleSignMethod { kHmacSha256, kHmacSha1, kHmacMd5 };

// `hmacsha256`, `hmacsha1`, `hmacmd5`.
absl::string_view TripleSignMethodName(TripleSignMethod method);
// Parses a sign method name (case-insensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<TripleSignMethod> ParseTripleSignMethod(absl::string_view name);

struct TripleParams {
  std::string product_key;
  std::string device_name;
  // SECRET.
  std::string device_secret;
  // Client id chosen by the device (often its serial number); empty means the
  // device name.
  std::string client_id;
  // Milliseconds since the epoch; absent means no timestamp is signed or sent.
  std::optional<int64_t> timestamp_ms;
  TripleSignMethod sign_method = TripleSignMethod::kHmacSha256;
  // 2 (TLS) or 3 (plain TCP).
  int securemode = 2;
};

// The signed content: name+value pairs of clientId, deviceName, productKey and (if
// present) timestamp, sorted by name and concatenated.
std::string TripleSignContent(const TripleParams& params);

// Lowercase hex HMAC of TripleSignContent with the device secret.
// INVALID_ARGUMENT on a missing field or a field containing `|` or `&`
// (they would break the CONNECT fields).
absl::StatusOr<std::string> TripleSignature(const TripleParams& params);

// client id `{clientId}|securemode=2,signmethod=hmacsha256[,timestamp=<ms>]|`,
// username `{deviceName}&{productKey}`, password = TripleSignature.
absl::StatusOr<MqttConnectFields> TripleMqttConnectFields(const TripleParams& params);

// --- Device triple, EnOS variant ------------------------------------------------

struct EnosParams {
  std::string product_key;
  std::string device_key;
  // SECRET. The device secret, or the product secret for dynamic activation.
  std::string secret;
  // Empty means the device key.
  std::string client_id;
  std::optional<int64_t> timestamp_ms;
  // Dynamic activation with the product secret (securemode=3) instead of the
  // device secret (securemode=2).
  bool dynamic_activation = false;
};

// Lowercase hex SHA-256 of the sorted name+value pairs of clientId, deviceKey,
// productKey and (if present) timestamp, followed by the secret.
absl::StatusOr<std::string> EnosSignature(const EnosParams& params);

// client id `{clientId}|securemode=2|3,signmethod=sha256[,timestamp=<ms>]|`,
// username `{deviceKey}&{productKey}`, password = EnosSignature.
absl::StatusOr<MqttConnectFields> EnosMqttConnectFields(const EnosParams& params);

// --- Group enrollment (Azure DPS style) ----------------------------------------

// base64(HMAC-SHA256(base64-decode(group_key_b64), registration_id)): the device
// key of `registration_id` in a symmetric-key enrollment group. INVALID_ARGUMENT on
// a bad group key or an empty registration id.
absl::StatusOr<std::string> DeriveDeviceKey(absl::string_view group_key_b64,
                                            absl::string_view registration_id);

}  // namespace iotauth::device
