// Device-triple HMAC connects (Alibaba IoT style) and the EnOS variant: parsers for the
// MQTT client id, username and password, and the signature computation.
//   client id: {clientId}|securemode=2,signmethod=hmacsha256,timestamp=<ms>|
//   username:  {deviceName}&{productKey}
//   password:  hex HMAC(device secret, sorted name+value pairs)
// EnOS: signmethod=sha256, password = hex SHA-256(sorted pairs of clientId, deviceKey,
// productKey, timestamp, followed by the secret).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {

inline constexpr size_t kMaxTripleClientIdSize = 1024;
inline constexpr size_t kMaxTripleClientIdPart = 128;
inline constexpr size_t kMaxTripleUsernameSize = 512;
// Marker that makes a client id a device-triple connect.
inline constexpr absl::string_view kTripleMarker = "|securemode=";

enum class TripleSignMethod {
  kHmacSha256,  // default
  kHmacSha1,    // weak: only when the product allows weak methods
  kHmacMd5,     // weak: only when the product allows weak methods
  kSha256,      // EnOS variant
};
// `hmacsha256`, `hmacsha1`, `hmacmd5`, `sha256`.
absl::string_view TripleSignMethodName(TripleSignMethod m);
bool IsWeakSignMethod(TripleSignMethod m);
// Raw signature size in bytes for `m`.
size_t TripleSignatureSize(TripleSignMethod m);

struct TripleClientId {
  std::string client_id;  // the part before the first `|`
  int secure_mode = 0;    // 2 or 3
  TripleSignMethod sign_method = TripleSignMethod::kHmacSha256;
  bool has_timestamp = false;
  int64_t timestamp_ms = 0;
  std::string timestamp_raw;  // digits as sent: signed as-is
};

// INVALID_ARGUMENT naming the problem on: size over kMaxTripleClientIdSize, a missing
// or empty `{clientId}` (over kMaxTripleClientIdPart, or holding a control character),
// a missing trailing `|`, parameters that are not `k=v` separated by `,`, a duplicate
// parameter, more than 16 parameters, a missing or unsupported securemode (2 or 3), an
// unknown signmethod (values are case-insensitive), or a timestamp that is not 1 to 15
// decimal digits. Unknown parameters (`_v`, `lan`, ...) are ignored.
absl::StatusOr<TripleClientId> ParseTripleClientId(absl::string_view in);

struct TripleUsername {
  std::string device_name;
  std::string product_key;
};
// `{deviceName}&{productKey}`, exactly one `&`, both non-empty, no control characters,
// at most kMaxTripleUsernameSize bytes; INVALID_ARGUMENT otherwise.
absl::StatusOr<TripleUsername> ParseTripleUsername(absl::string_view username);

// Decodes a hex password (lowercase; uppercase is tolerated) of exactly the length
// `method` produces; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> ParseTriplePassword(absl::string_view password,
                                                TripleSignMethod method);

// What is signed. `timestamp` is empty when the device sent none.
struct TripleSignInput {
  absl::string_view client_id;
  absl::string_view device_name;  // `deviceKey` in EnOS terms
  absl::string_view product_key;
  absl::string_view timestamp;
};

// The raw signature for `input` under `secret` (device secret text, or product secret
// for EnOS dynamic activation). INTERNAL only if OpenSSL fails.
absl::StatusOr<std::string> ComputeTripleSignature(TripleSignMethod method,
                                                   absl::string_view secret,
                                                   const TripleSignInput& input);
// Constant-time check of `signature` (raw bytes) against ComputeTripleSignature.
bool VerifyTripleSignature(TripleSignMethod method, absl::string_view secret,
                           const TripleSignInput& input, absl::string_view signature);
// The same, with the secret's HMAC-SHA256 schedule done: `sha256_key` (the directory's,
// PrecomputedHmacSha256::ForKey(secret)) serves hmacsha256; the other methods use
// `secret`.
bool VerifyTripleSignature(TripleSignMethod method, absl::string_view secret,
                           const PrecomputedHmacSha256& sha256_key, const TripleSignInput& input,
                           absl::string_view signature);

// MQTT CONNECT fields for a device (for tests, the CLI and device libraries).
struct TripleConnect {
  std::string client_id;
  std::string username;
  std::string password;  // SECRET-derived: lowercase hex signature
};
// `timestamp_ms` < 0 means "send no timestamp". `secure_mode` is 2 or 3.
absl::StatusOr<TripleConnect> MakeTripleConnect(absl::string_view product_key,
                                                absl::string_view device_name,
                                                absl::string_view secret,
                                                absl::string_view client_id,
                                                TripleSignMethod method, int64_t timestamp_ms,
                                                int secure_mode = 2);

}  // namespace iotauth::identity
