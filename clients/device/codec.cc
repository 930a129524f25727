#include "clients/device/codec.h"

#include <cstdint>

#include "absl/strings/ascii.h"

namespace iotauth::device {
namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kHexUpper[] = "0123456789ABCDEF";
constexpr char kHexLower[] = "0123456789abcdef";

int B64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool IsUnreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

}  // namespace

std::string Base64Encode(absl::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(data[i]) << 16) | (static_cast<uint8_t>(data[i + 1]) << 8) |
                 static_cast<uint8_t>(data[i + 2]);
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back(kB64[v & 63]);
  }
  size_t rest = data.size() - i;
  if (rest == 1) {
    uint32_t v = static_cast<uint8_t>(data[i]) << 16;
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.append("==");
  } else if (rest == 2) {
    uint32_t v = (static_cast<uint8_t>(data[i]) << 16) | (static_cast<uint8_t>(data[i + 1]) << 8);
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

absl::StatusOr<std::string> Base64Decode(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text.size() % 4 != 0) {
    return absl::InvalidArgumentError("base64: length is not a multiple of 4");
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    if (last && text[i + 3] == '=') pad = text[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (int j = 0; j < 4; ++j) {
      int d = 0;
      if (j >= 4 - pad) {
        d = 0;
      } else {
        d = B64Value(text[i + j]);
        if (d < 0) return absl::InvalidArgumentError("base64: invalid character or padding");
      }
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    if (pad == 2 && (v & 0xFFFF) != 0) {
      return absl::InvalidArgumentError("base64: non-canonical trailing bits");
    }
    if (pad == 1 && (v & 0xFF) != 0) {
      return absl::InvalidArgumentError("base64: non-canonical trailing bits");
    }
    out.push_back(static_cast<char>((v >> 16) & 0xFF));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xFF));
  }
  return out;
}

std::string UrlEncode(absl::string_view text) {
  std::string out;
  out.reserve(text.size() * 3 / 2);
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHexUpper[c >> 4]);
      out.push_back(kHexUpper[c & 15]);
    }
  }
  return out;
}

std::string HexEncode(absl::string_view data) {
  std::string out;
  out.reserve(data.size() * 2);
  for (char ch : data) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(kHexLower[c >> 4]);
    out.push_back(kHexLower[c & 15]);
  }
  return out;
}

}  // namespace iotauth::device
