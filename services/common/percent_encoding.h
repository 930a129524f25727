// Percent-decoding (RFC 3986 %XX escapes), shared by the SAS token parser and the
// Envoy ext_authz adapter (which receives the client certificate URL-encoded).
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/hex_digit.h"

namespace iotauth {

// The byte of the escape starting at in[i] (a '%'), or -1 when fewer than two hex
// digits follow.
inline int PercentEscapeValue(absl::string_view in, size_t i) {
  if (i + 2 >= in.size()) return -1;
  const int hi = HexDigitValue(in[i + 1]);
  const int lo = HexDigitValue(in[i + 2]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Replaces each %XX by its byte; every other byte is kept ('+' stays '+').
// INVALID_ARGUMENT "bad percent escape at offset N" for a '%' without two hex digits.
inline absl::StatusOr<std::string> PercentDecode(absl::string_view in) {
  // Written through a pointer into a buffer sized for the worst case (no escapes),
  // then cut to size: push_back's capacity check per byte cost more than the decode
  // on the SAS hot path (callgrind, tools/bench/callgrind_bench.sh).
  std::string out(in.size(), '\0');
  char* o = out.data();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      const int v = PercentEscapeValue(in, i);
      if (v < 0)
        return absl::InvalidArgumentError(absl::StrCat("bad percent escape at offset ", i));
      c = static_cast<char>(v);
      i += 2;
    }
    *o++ = c;
  }
  out.resize(static_cast<size_t>(o - out.data()));
  return out;
}

}  // namespace iotauth
