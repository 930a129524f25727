#include "services/identity/sas_token.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/crypto.h"
#include "services/common/ids.h"
#include "services/common/percent_encoding.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {
namespace {

using iotauth::identity::v1::DENY_REASON_BAD_SIGNATURE;
using iotauth::identity::v1::DENY_REASON_EXPIRED;

bool IsUnreserved(unsigned char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

constexpr size_t kSignatureSize = 32;

// Branch-free base64 digit lookup (-1 for anything else): signatures are random, so
// a range-compare decoder mispredicts on most characters.
struct Base64Table {
  int8_t v[256]{};
  constexpr Base64Table() {
    for (signed char& i : v) i = -1;
    for (int i = 0; i < 26; ++i) {
      v['A' + i] = static_cast<int8_t>(i);
      v['a' + i] = static_cast<int8_t>(26 + i);
    }
    for (int i = 0; i < 10; ++i) v['0' + i] = static_cast<int8_t>(52 + i);
    v[static_cast<int>('+')] = 62;
    v[static_cast<int>('/')] = 63;
  }
};
constexpr Base64Table kBase64Table;

int Base64Value(char c) { return kBase64Table.v[static_cast<unsigned char>(c)]; }

// The hot path's signature decoder: percent-decoding and strict base64 (padding
// required, canonical trailing bits, exactly 32 bytes) without allocating.
bool DecodeSignature(absl::string_view encoded, std::array<char, kSignatureSize>* out) {
  // base64 of 32 bytes is 44 characters ending in one '='.
  char b64[44];
  size_t n = 0;
  for (size_t i = 0; i < encoded.size(); ++i) {
    char c = encoded[i];
    if (c == '%') {
      const int v = PercentEscapeValue(encoded, i);
      if (v < 0) return false;
      c = static_cast<char>(v);
      i += 2;
    }
    if (n == sizeof(b64)) return false;
    b64[n++] = c;
  }
  if (n != sizeof(b64) || b64[43] != '=') return false;
  size_t o = 0;
  for (size_t i = 0; i < 40; i += 4) {
    const int a = Base64Value(b64[i]);
    const int b = Base64Value(b64[i + 1]);
    const int c = Base64Value(b64[i + 2]);
    const int d = Base64Value(b64[i + 3]);
    if ((a | b | c | d) < 0) return false;
    const uint32_t w = (a << 18) | (b << 12) | (c << 6) | d;
    (*out)[o++] = static_cast<char>(w >> 16);
    (*out)[o++] = static_cast<char>((w >> 8) & 0xff);
    (*out)[o++] = static_cast<char>(w & 0xff);
  }
  const int a = Base64Value(b64[40]);
  const int b = Base64Value(b64[41]);
  const int c = Base64Value(b64[42]);
  if ((a | b | c) < 0 || (c & 3) != 0) return false;  // canonical: unused bits are zero
  const uint32_t w = (a << 18) | (b << 12) | (c << 6);
  (*out)[o++] = static_cast<char>(w >> 16);
  (*out)[o++] = static_cast<char>((w >> 8) & 0xff);
  return o == kSignatureSize;
}
// 18 digits keep `se` well inside int64 and absl::Time.
constexpr size_t kMaxExpiryDigits = 18;
// 9999-12-31T23:59:59Z, the last second a protobuf Timestamp can hold.
constexpr int64_t kMaxExpiryUnix = 253402300799;

}  // namespace

std::string UrlEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() + 16);
  for (unsigned char c : s) {
    if (IsUnreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<std::string> UrlDecode(absl::string_view s) {
  absl::StatusOr<std::string> out = PercentDecode(s);
  if (!out.ok()) return out;
  for (char c : *out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("control character in URL-encoded value");
    }
  }
  return out;
}

absl::StatusOr<SasToken> ParseSasToken(absl::string_view token) {
  if (token.size() > kMaxSasTokenSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("SAS token exceeds ", kMaxSasTokenSize, " bytes"));
  }
  if (!absl::StartsWith(token, kSasPrefix)) {
    return absl::InvalidArgumentError("SAS token does not start with 'SharedAccessSignature '");
  }
  absl::string_view rest = token.substr(kSasPrefix.size());
  absl::string_view sr;
  absl::string_view sig;
  absl::string_view se;
  absl::string_view skn;
  bool have_sr = false;
  bool have_sig = false;
  bool have_se = false;
  bool have_skn = false;
  int fields = 0;
  while (true) {
    const size_t amp = rest.find('&');
    const absl::string_view field = rest.substr(0, amp);
    if (++fields > 4) return absl::InvalidArgumentError("SAS token has too many fields");
    const size_t eq = field.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError("SAS token field is not name=value");
    }
    const absl::string_view name = field.substr(0, eq);
    const absl::string_view value = field.substr(eq + 1);
    absl::string_view* slot = nullptr;
    bool* seen = nullptr;
    if (absl::EqualsIgnoreCase(name, "sr")) {
      slot = &sr;
      seen = &have_sr;
    } else if (absl::EqualsIgnoreCase(name, "sig")) {
      slot = &sig;
      seen = &have_sig;
    } else if (absl::EqualsIgnoreCase(name, "se")) {
      slot = &se;
      seen = &have_se;
    } else if (absl::EqualsIgnoreCase(name, "skn")) {
      slot = &skn;
      seen = &have_skn;
    } else {
      return absl::InvalidArgumentError("SAS token has an unknown field");
    }
    if (*seen) {
      return absl::InvalidArgumentError(
          absl::StrCat("SAS token repeats field '", absl::AsciiStrToLower(name), "'"));
    }
    // An empty `skn` is no policy: SDKs that always append "&skn=" + key name send
    // it for device-scoped tokens (the Azure IoT C SDK does). It still counts once.
    if (value.empty() && slot != &skn) {
      return absl::InvalidArgumentError(
          absl::StrCat("SAS token field '", absl::AsciiStrToLower(name), "' is empty"));
    }
    *seen = true;
    *slot = value;
    if (amp == absl::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  if (!have_sr) return absl::InvalidArgumentError("SAS token lacks 'sr'");
  if (!have_sig) return absl::InvalidArgumentError("SAS token lacks 'sig'");
  if (!have_se) return absl::InvalidArgumentError("SAS token lacks 'se'");

  SasToken out;
  out.resource_raw = sr;
  auto resource = UrlDecode(sr);
  if (!resource.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SAS token 'sr': ", resource.status().message()));
  }
  out.resource = *std::move(resource);

  if (!DecodeSignature(sig, &out.signature_bytes)) {
    return absl::InvalidArgumentError(
        "SAS token 'sig' is not a URL-encoded, canonical base64 32-byte HMAC-SHA256");
  }

  if (se.size() > kMaxExpiryDigits) {
    return absl::InvalidArgumentError("SAS token 'se' is too large");
  }
  for (char c : se) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("SAS token 'se' is not a decimal number");
    }
  }
  if (!absl::SimpleAtoi(se, &out.expiry_unix)) {
    return absl::InvalidArgumentError("SAS token 'se' is not a decimal number");
  }
  // Past 9999-12-31T23:59:59Z no timestamp can carry the expiry (the answer's
  // credential_expires_at, the audit record): refused rather than clamped.
  if (out.expiry_unix > kMaxExpiryUnix) {
    return absl::InvalidArgumentError("SAS token 'se' is past the year 9999");
  }
  out.expiry_raw = se;

  if (have_skn && !skn.empty()) {
    auto name = UrlDecode(skn);
    if (!name.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("SAS token 'skn': ", name.status().message()));
    }
    out.has_key_name = true;
    out.key_name = *std::move(name);
  }
  return out;
}

absl::StatusOr<SasAudience> ParseSasAudience(absl::string_view resource) {
  // host/devices/{device}[/modules/{module}]
  const size_t slash = resource.find('/');
  if (slash == absl::string_view::npos || slash == 0) {
    return absl::InvalidArgumentError("SAS audience is not '{host}/devices/{device id}'");
  }
  SasAudience out;
  out.host = resource.substr(0, slash);
  absl::string_view rest = resource.substr(slash + 1);
  if (!absl::ConsumePrefix(&rest, "devices/")) {
    return absl::InvalidArgumentError("SAS audience is not '{host}/devices/{device id}'");
  }
  const size_t next = rest.find('/');
  out.device_id = rest.substr(0, next);
  if (out.device_id.empty()) {
    return absl::InvalidArgumentError("SAS audience has an empty device id");
  }
  // No registered device can have another id; and the id goes into the response
  // and the audit event, whose strings must be UTF-8 (the token is raw bytes).
  if (!IsValidId(out.device_id)) {
    return absl::InvalidArgumentError(absl::StrCat("SAS audience device id is not 1-", kMaxIdLength,
                                                   " characters of ", kIdCharsText));
  }
  if (next != absl::string_view::npos) {
    absl::string_view tail = rest.substr(next + 1);
    if (!absl::ConsumePrefix(&tail, "modules/") || tail.empty() ||
        tail.find('/') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          "SAS audience is not '{host}/devices/{device id}[/modules/{module id}]'");
    }
    out.module_id = tail;
    if (!IsValidId(out.module_id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SAS audience module id is not 1-", kMaxIdLength, " characters of ", kIdCharsText));
    }
  }
  return out;
}

absl::string_view KeySlotName(KeySlot slot) {
  switch (slot) {
    case KeySlot::kPrimary:
      return "primary";
    case KeySlot::kSecondary:
      return "secondary";
    case KeySlot::kNone:
      break;
  }
  return "none";
}

SasVerification VerifySas(const SasToken& token, const SasMacKeys& keys, absl::Time now,
                          absl::Duration skew) {
  SasVerification out;
  if (token.expiry() + skew < now) {
    out.verdict = Verdict::Deny(DENY_REASON_EXPIRED, "SAS token expired");
    return out;
  }
  const absl::string_view parts[] = {token.resource_raw, "\n", token.expiry_raw};
  if (keys.primary != nullptr && keys.primary->Verify(parts, token.signature())) {
    out.slot = KeySlot::kPrimary;
    return out;
  }
  if (keys.secondary != nullptr && keys.secondary->Verify(parts, token.signature())) {
    out.slot = KeySlot::kSecondary;
    return out;
  }
  out.verdict = Verdict::Deny(DENY_REASON_BAD_SIGNATURE, "SAS signature does not verify");
  return out;
}

SasVerification VerifySas(const SasToken& token, const SasKeyPair& keys, absl::Time now,
                          absl::Duration skew) {
  PrecomputedHmacSha256 primary;
  PrecomputedHmacSha256 secondary;
  if (!keys.primary.empty()) primary = PrecomputedHmacSha256::ForKey(keys.primary);
  if (!keys.secondary.empty()) secondary = PrecomputedHmacSha256::ForKey(keys.secondary);
  return VerifySas(token, SasMacKeys{&primary, &secondary}, now, skew);
}

absl::StatusOr<std::string> MakeSasToken(absl::string_view resource_uri,
                                         absl::string_view key_base64, absl::Time expiry,
                                         absl::string_view policy_name) {
  auto key = crypto::Base64Decode(key_base64);
  if (!key.ok()) return absl::InvalidArgumentError("SAS key is not valid base64");
  const std::string sr = UrlEncode(resource_uri);
  const std::string se = absl::StrCat(absl::ToUnixSeconds(expiry));
  const absl::string_view parts[] = {sr, "\n", se};
  MacValue mac;
  absl::Status s = HmacCompute(HmacAlgorithm::kSha256, *key, parts, &mac);
  if (!s.ok()) return s;
  std::string token = absl::StrCat(
      kSasPrefix, "sr=", sr, "&sig=", UrlEncode(crypto::Base64Encode(mac.view())), "&se=", se);
  if (!policy_name.empty()) absl::StrAppend(&token, "&skn=", UrlEncode(policy_name));
  return token;
}

}  // namespace iotauth::identity
