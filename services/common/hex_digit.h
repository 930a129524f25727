// The value of one hexadecimal digit, shared by the hex, percent-encoding and
// device-triple password decoders.
#pragma once

namespace iotauth {

// 0-15 for a hex digit (either case), -1 otherwise.
inline int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace iotauth
