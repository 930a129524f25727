// Fast HMAC for the authentication hot path. Each thread keeps one reusable
// EVP_MAC_CTX per algorithm; re-keying reuses it, and a message signed with the same
// key as the previous one on that thread skips the key schedule (EVP_MAC_init with a
// NULL key), which is the cheapest way OpenSSL 3 offers (see notes/performance.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "services/common/crypto.h"

namespace iotauth::identity {

using crypto::HmacAlgorithm;

// Digest length in bytes: 32 (SHA-256), 20 (SHA-1), 16 (MD5).
size_t HmacSize(HmacAlgorithm alg);

// A MAC value held inline (no allocation).
class MacValue {
 public:
  static constexpr size_t kMaxSize = 64;
  absl::string_view view() const {
    return absl::string_view(reinterpret_cast<const char*>(bytes_), size_);
  }
  size_t size() const { return size_; }
  uint8_t* data() { return bytes_; }
  void set_size(size_t n) { size_ = n; }

 private:
  uint8_t bytes_[kMaxSize] = {};
  size_t size_ = 0;
};

// HMAC(key, concatenation of `parts`) into `out`. Thread-safe (per-thread state).
// INTERNAL if OpenSSL fails (never for well-formed input).
absl::Status HmacCompute(HmacAlgorithm alg, absl::string_view key,
                         absl::Span<const absl::string_view> parts, MacValue* out);
inline absl::Status HmacCompute(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                                MacValue* out) {
  return HmacCompute(alg, key, absl::MakeConstSpan(&message, 1), out);
}

// True when `tag` equals HMAC(key, message), compared in constant time. A tag of any
// other length than the full digest is rejected.
bool HmacVerify(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                absl::string_view tag);

// HMAC-SHA256 with its key schedule done once (the precomputation RFC 2104 section 4
// describes): the SHA-256 chaining values after the inner and after the outer padded
// key block. A MAC then costs the message's blocks plus one, about a fifth of keying
// an EVP_MAC context per message (measured here: 155 against 820 ns for a 60-byte SAS
// string), which is what a directory of per-device keys would otherwise pay on every
// call. Each state is as secret as the key itself; both are wiped on destruction.
//
// OpenSSL 3 offers no non-deprecated way to resume SHA-256 from a saved state, so
// this uses the low-level SHA256_* functions (deprecated in 3.0, still built and
// tested by Debian's OpenSSL; the same code and SHA-NI path as EVP's SHA-256). The
// Wycheproof HMAC-SHA256 vectors check it against the EVP_MAC path in hmac_test.
class PrecomputedHmacSha256 {
 public:
  PrecomputedHmacSha256() = default;  // no key: Compute fails, Verify is false
  // Any key length (RFC 2104: keys over 64 bytes are hashed first). An empty key is
  // a valid HMAC key here; callers that mean "unset" keep a default instance.
  static PrecomputedHmacSha256 ForKey(absl::string_view key);
  PrecomputedHmacSha256(const PrecomputedHmacSha256& other) = default;
  PrecomputedHmacSha256& operator=(const PrecomputedHmacSha256& other) = default;
  ~PrecomputedHmacSha256();

  bool has_key() const { return has_key_; }
  // HMAC-SHA256(key, concatenation of `parts`). False without a key.
  bool Compute(absl::Span<const absl::string_view> parts, MacValue* out) const;
  // True when `tag` (32 bytes) equals the MAC of `parts`, compared in constant time.
  bool Verify(absl::Span<const absl::string_view> parts, absl::string_view tag) const;

 private:
  uint32_t inner_[8] = {};
  uint32_t outer_[8] = {};
  bool has_key_ = false;
};

// Like HmacVerify but accepts a truncated tag (its leading bytes), as RFC 2104
// section 5 allows, of at least `min_tag_size` bytes (and at least 10).
bool HmacVerifyTruncated(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                         absl::string_view tag, size_t min_tag_size);

}  // namespace iotauth::identity
