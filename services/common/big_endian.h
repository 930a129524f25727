// Big-endian (network order) fixed-width integers in byte strings: the audit
// log's canonical encoding and segment files, and the secret box's AAD, use them.
#pragma once

#include <cstdint>
#include <string>

namespace iotauth::big_endian {

inline void StoreU32(uint32_t v, char* p) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

inline void StoreU64(uint64_t v, char* p) {
  StoreU32(static_cast<uint32_t>(v >> 32), p);
  StoreU32(static_cast<uint32_t>(v), p + 4);
}

inline void AppendU32(uint32_t v, std::string* out) {
  char b[4];
  StoreU32(v, b);
  out->append(b, sizeof(b));
}

inline void AppendU64(uint64_t v, std::string* out) {
  char b[8];
  StoreU64(v, b);
  out->append(b, sizeof(b));
}

// `p` must have 4 (8) readable bytes; callers check lengths first.
inline uint32_t LoadU32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(p[3]));
}

inline uint64_t LoadU64(const char* p) {
  return (static_cast<uint64_t>(LoadU32(p)) << 32) | LoadU32(p + 4);
}

}  // namespace iotauth::big_endian
