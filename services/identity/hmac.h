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

// Like HmacVerify but accepts a truncated tag (its leading bytes), as RFC 2104
// section 5 allows, of at least `min_tag_size` bytes (and at least 10).
bool HmacVerifyTruncated(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                         absl::string_view tag, size_t min_tag_size);

}  // namespace iotauth::identity
