// Text encodings used by device credentials: base64 (keys, signatures), URL
// encoding (SAS `sr` and `sig`) and lowercase hex (triple signatures).
// Self-contained so device code does not pull in the service libraries.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth::device {

// Standard base64 with padding.
std::string Base64Encode(absl::string_view data);

// Standard base64 with padding; surrounding ASCII whitespace is ignored (keys are
// often pasted or read from files with a trailing newline). INVALID_ARGUMENT on a
// bad character, bad length, misplaced padding or non-canonical trailing bits.
// The error message never echoes the input (it may be a key).
absl::StatusOr<std::string> Base64Decode(absl::string_view text);

// Percent-encodes every byte outside RFC 3986's unreserved set (A-Z a-z 0-9 - _ . ~)
// with uppercase hex. This is what Azure's Python SDK (`quote(s, safe="")`) and
// Node SDK (`encodeUriComponentStrict`) produce for `sr` and `sig`, so tokens are
// byte-identical to theirs for every id Azure allows.
std::string UrlEncode(absl::string_view text);

// Lowercase hex.
std::string HexEncode(absl::string_view data);

}  // namespace iotauth::device
