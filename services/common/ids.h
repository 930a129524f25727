// The identifier rule shared by the registry (which refuses to store anything else)
// and the identity parsers (which refuse to carry anything else into a response or
// an audit event): Azure IoT Hub's device id rule, case-sensitive ASCII letters and
// digits plus - . % _ * ? ! ( ) , : = @ $ ' , 1 to kMaxIdLength characters.
#pragma once

#include <cstddef>

#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"

namespace iotauth {

inline constexpr size_t kMaxIdLength = 128;
inline constexpr absl::string_view kIdCharsText = "A-Z a-z 0-9 and - . % _ * ? ! ( ) , : = @ $ '";

inline bool IsIdChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '-':
    case '.':
    case '%':
    case '_':
    case '*':
    case '?':
    case '!':
    case '(':
    case ')':
    case ',':
    case ':':
    case '=':
    case '@':
    case '$':
    case '\'':
      return true;
    default:
      return false;
  }
}

// Non-empty, at most kMaxIdLength, every character IsIdChar.
inline bool IsValidId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  for (char c : id) {
    if (!IsIdChar(c)) return false;
  }
  return true;
}

}  // namespace iotauth
