// Azure IoT Hub shared access signature (SAS) tokens: strict parser, verifier and
// generator. Format (fields in any order, names case-insensitive):
//   SharedAccessSignature sr=<url-encoded URI>&sig=<url-encoded base64>&se=<unix s>[&skn=<policy>]
// The signed string is the `sr` value exactly as it appears in the token, "\n", `se`.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/identity/hmac.h"
#include "services/identity/verdict.h"

namespace iotauth::identity {

inline constexpr absl::string_view kSasPrefix = "SharedAccessSignature ";
// Tokens longer than this are malformed (Azure tokens are a few hundred bytes).
inline constexpr size_t kMaxSasTokenSize = 4096;

// A parsed token. Everything except `resource_raw` and `expiry_raw` is decoded; those
// two are views into the text given to ParseSasToken, which must outlive the token.
struct SasToken {
  absl::string_view resource_raw;          // `sr` as it appears (still URL-encoded): signed as-is
  std::string resource;                    // `sr` URL-decoded
  std::array<char, 32> signature_bytes{};  // raw HMAC-SHA256 (base64- and URL-decoded)
  absl::string_view expiry_raw;            // `se` digits as they appear: signed as-is
  int64_t expiry_unix = 0;                 // `se`
  bool has_key_name = false;
  std::string key_name;  // `skn` URL-decoded (policy-scoped tokens)

  absl::Time expiry() const { return absl::FromUnixSeconds(expiry_unix); }
  absl::string_view signature() const {
    return absl::string_view(signature_bytes.data(), signature_bytes.size());
  }
};

// Parses `token`. INVALID_ARGUMENT naming the problem (never echoing the signature) on:
// a missing prefix, size over kMaxSasTokenSize, an unknown, duplicate, empty or
// missing field, bad percent-encoding (`%` not followed by two hex digits, an encoded
// NUL or control character), non-canonical base64 or a signature that is not 32
// bytes, a non-decimal or out-of-range `se`. `+` is a literal plus, not a space.
absl::StatusOr<SasToken> ParseSasToken(absl::string_view token);

// The audience a device-scoped token names: `{host}/devices/{device}[/modules/{module}]`.
// Views into the `resource` given to ParseSasAudience, which must outlive them.
struct SasAudience {
  absl::string_view host;  // as it appears: host names compare case-insensitively
  absl::string_view device_id;
  absl::string_view module_id;  // empty when not module-scoped
};
// INVALID_ARGUMENT when `resource` (URL-decoded `sr`) has any other shape.
absl::StatusOr<SasAudience> ParseSasAudience(absl::string_view resource);

// Which key of a pair verified the signature.
enum class KeySlot { kNone, kPrimary, kSecondary };
absl::string_view KeySlotName(KeySlot slot);  // "primary", "secondary", "none"

// Decoded (raw) keys; an empty key is skipped.
struct SasKeyPair {
  absl::string_view primary;
  absl::string_view secondary;
};

// Keys with their HMAC schedule done (the directory's); a null or keyless one is
// skipped.
struct SasMacKeys {
  const PrecomputedHmacSha256* primary = nullptr;
  const PrecomputedHmacSha256* secondary = nullptr;
};

struct SasVerification {
  Verdict verdict;
  KeySlot slot = KeySlot::kNone;
};

// Checks expiry (`se` + skew must not be before `now`: DENY_REASON_EXPIRED) and then
// the signature with the primary, then the secondary key (DENY_REASON_BAD_SIGNATURE).
// Does not check the audience. Thread-safe.
SasVerification VerifySas(const SasToken& token, const SasMacKeys& keys, absl::Time now,
                          absl::Duration skew);
// The same with raw keys (schedules them on each call).
SasVerification VerifySas(const SasToken& token, const SasKeyPair& keys, absl::Time now,
                          absl::Duration skew);

// RFC 3986 percent-encoding of everything but unreserved characters, like
// JavaScript's encodeURIComponent (which the Azure SDKs use) minus `!*'()`.
std::string UrlEncode(absl::string_view s);
// Strict percent-decoding (see ParseSasToken).
absl::StatusOr<std::string> UrlDecode(absl::string_view s);

// Builds a token for `resource_uri` (not yet encoded, for example
// `myhub.azure-devices.net/devices/dev1`) signed with `key_base64` (the base64 key as
// stored in the registry), expiring at `expiry`; `policy_name` adds `skn`.
// INVALID_ARGUMENT when the key is not valid base64.
absl::StatusOr<std::string> MakeSasToken(absl::string_view resource_uri,
                                         absl::string_view key_base64, absl::Time expiry,
                                         absl::string_view policy_name = "");

}  // namespace iotauth::identity
