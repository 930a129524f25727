// UTF-8 helpers for strings that go into protobuf `string` fields (which must be
// valid UTF-8, or the peer fails to parse the whole message).
#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"

namespace iotauth {

// The longest prefix of `s` of at most `max_bytes` bytes that does not end inside
// a multi-byte character: a valid UTF-8 `s` gives a valid UTF-8 prefix.
inline absl::string_view TruncateUtf8(absl::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  // Back off over continuation bytes (10xxxxxx) to the start of the character
  // that does not fit.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0U) == 0x80U) --n;
  return s.substr(0, n);
}

}  // namespace iotauth
