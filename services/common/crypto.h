// Small, audited wrappers over OpenSSL for the primitives every service needs:
// CSPRNG bytes, strict base64, constant-time comparison, SHA-256 and HMAC.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth::crypto {

// `n` bytes from OpenSSL's CSPRNG. Fails closed (INTERNAL) if the RNG fails.
absl::StatusOr<std::string> RandomBytes(size_t n);

// Standard base64 with padding.
std::string Base64Encode(absl::string_view data);
// Strict standard base64 (padding required, no whitespace, canonical trailing bits).
// INVALID_ARGUMENT on any deviation.
absl::StatusOr<std::string> Base64Decode(absl::string_view text);

// Lowercase hex.
std::string HexEncode(absl::string_view data);
// Lowercase hex of `data` into out[0, 2 * data.size()) (no allocation).
void HexEncodeInto(absl::string_view data, char* out);
// Accepts upper- or lowercase; INVALID_ARGUMENT on odd length or a non-hex digit.
absl::StatusOr<std::string> HexDecode(absl::string_view text);

// Constant-time equality (CRYPTO_memcmp); lengths are compared first, which leaks
// only the length.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

inline constexpr size_t kSha256Bytes = 32;

// SHA-256 of `a` followed by `b`, written to `out` (kSha256Bytes). False only if
// OpenSSL fails. For callers that hash a prefix and a body without joining them.
bool Sha256Into(absl::string_view a, absl::string_view b, unsigned char* out);
// Raw 32-byte SHA-256 digest.
std::string Sha256(absl::string_view data);
// Lowercase hex SHA-256.
std::string Sha256Hex(absl::string_view data);

enum class HmacAlgorithm { kSha256, kSha1, kMd5 };

// Raw HMAC. One-shot; hot paths that sign many messages with one key may keep
// their own reusable context.
absl::StatusOr<std::string> Hmac(HmacAlgorithm alg, absl::string_view key,
                                 absl::string_view message);

}  // namespace iotauth::crypto
