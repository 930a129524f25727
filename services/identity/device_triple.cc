#include "services/identity/device_triple.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"
#include "services/common/hex_digit.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {
namespace {

constexpr int kMaxParams = 16;
constexpr size_t kMaxTimestampDigits = 15;

bool HasControl(absl::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f;
  });
}

bool ParseSignMethod(absl::string_view v, TripleSignMethod* m) {
  if (absl::EqualsIgnoreCase(v, "hmacsha256")) {
    *m = TripleSignMethod::kHmacSha256;
  } else if (absl::EqualsIgnoreCase(v, "hmacsha1")) {
    *m = TripleSignMethod::kHmacSha1;
  } else if (absl::EqualsIgnoreCase(v, "hmacmd5")) {
    *m = TripleSignMethod::kHmacMd5;
  } else if (absl::EqualsIgnoreCase(v, "sha256")) {
    *m = TripleSignMethod::kSha256;
  } else {
    return false;
  }
  return true;
}

HmacAlgorithm ToHmac(TripleSignMethod m) {
  switch (m) {
    case TripleSignMethod::kHmacSha1:
      return HmacAlgorithm::kSha1;
    case TripleSignMethod::kHmacMd5:
      return HmacAlgorithm::kMd5;
    default:
      return HmacAlgorithm::kSha256;
  }
}

}  // namespace

absl::string_view TripleSignMethodName(TripleSignMethod m) {
  switch (m) {
    case TripleSignMethod::kHmacSha256:
      return "hmacsha256";
    case TripleSignMethod::kHmacSha1:
      return "hmacsha1";
    case TripleSignMethod::kHmacMd5:
      return "hmacmd5";
    case TripleSignMethod::kSha256:
      return "sha256";
  }
  return "unknown";
}

bool IsWeakSignMethod(TripleSignMethod m) {
  return m == TripleSignMethod::kHmacSha1 || m == TripleSignMethod::kHmacMd5;
}

size_t TripleSignatureSize(TripleSignMethod m) {
  return m == TripleSignMethod::kSha256 ? 32 : HmacSize(ToHmac(m));
}

absl::StatusOr<TripleClientId> ParseTripleClientId(absl::string_view in) {
  if (in.size() > kMaxTripleClientIdSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("triple client id exceeds ", kMaxTripleClientIdSize, " bytes"));
  }
  const size_t bar = in.find('|');
  if (bar == absl::string_view::npos) {
    return absl::InvalidArgumentError("triple client id lacks '|securemode=...|'");
  }
  TripleClientId out;
  const absl::string_view cid = in.substr(0, bar);
  if (cid.empty()) return absl::InvalidArgumentError("triple client id has an empty clientId");
  if (cid.size() > kMaxTripleClientIdPart) {
    return absl::InvalidArgumentError("triple clientId is too long");
  }
  if (HasControl(cid)) return absl::InvalidArgumentError("triple clientId has a control character");
  absl::string_view params = in.substr(bar + 1);
  if (params.empty() || params.back() != '|') {
    return absl::InvalidArgumentError("triple client id does not end with '|'");
  }
  params.remove_suffix(1);
  if (params.find('|') != absl::string_view::npos) {
    return absl::InvalidArgumentError("triple client id has more than two '|'");
  }
  bool have_mode = false;
  bool have_method = false;
  bool have_ts = false;
  int count = 0;
  while (!params.empty()) {
    if (++count > kMaxParams) {
      return absl::InvalidArgumentError("triple client id has too many parameters");
    }
    const size_t comma = params.find(',');
    const absl::string_view kv = params.substr(0, comma);
    params = comma == absl::string_view::npos ? absl::string_view() : params.substr(comma + 1);
    if (comma != absl::string_view::npos && params.empty()) {
      return absl::InvalidArgumentError("triple client id has a trailing ','");
    }
    const size_t eq = kv.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError("triple client id parameter is not name=value");
    }
    const absl::string_view k = kv.substr(0, eq);
    const absl::string_view v = kv.substr(eq + 1);
    if (HasControl(kv)) {
      return absl::InvalidArgumentError("triple client id has a control character");
    }
    if (k == "securemode") {
      if (have_mode) return absl::InvalidArgumentError("triple client id repeats 'securemode'");
      have_mode = true;
      if (v == "2") {
        out.secure_mode = 2;
      } else if (v == "3") {
        out.secure_mode = 3;
      } else {
        return absl::InvalidArgumentError("triple 'securemode' must be 2 or 3");
      }
    } else if (k == "signmethod") {
      if (have_method) return absl::InvalidArgumentError("triple client id repeats 'signmethod'");
      have_method = true;
      if (!ParseSignMethod(v, &out.sign_method)) {
        return absl::InvalidArgumentError("triple 'signmethod' is not supported");
      }
    } else if (k == "timestamp") {
      if (have_ts) return absl::InvalidArgumentError("triple client id repeats 'timestamp'");
      have_ts = true;
      if (v.empty() || v.size() > kMaxTimestampDigits) {
        return absl::InvalidArgumentError("triple 'timestamp' must be 1 to 15 digits");
      }
      for (char c : v) {
        if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
          return absl::InvalidArgumentError("triple 'timestamp' is not a decimal number");
        }
      }
      if (!absl::SimpleAtoi(v, &out.timestamp_ms)) {
        return absl::InvalidArgumentError("triple 'timestamp' is not a decimal number");
      }
      out.has_timestamp = true;
      out.timestamp_raw.assign(v.data(), v.size());
    }
    // Other parameters (`_v`, `lan`, `gw`, `ext`, ...) are informational.
  }
  if (!have_mode) return absl::InvalidArgumentError("triple client id lacks 'securemode'");
  out.client_id.assign(cid.data(), cid.size());
  return out;
}

absl::StatusOr<TripleUsername> ParseTripleUsername(absl::string_view username) {
  if (username.size() > kMaxTripleUsernameSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("triple username exceeds ", kMaxTripleUsernameSize, " bytes"));
  }
  const size_t amp = username.find('&');
  if (amp == absl::string_view::npos || username.find('&', amp + 1) != absl::string_view::npos) {
    return absl::InvalidArgumentError("triple username is not '{deviceName}&{productKey}'");
  }
  TripleUsername out;
  const absl::string_view dn = username.substr(0, amp);
  const absl::string_view pk = username.substr(amp + 1);
  if (dn.empty()) return absl::InvalidArgumentError("triple username has an empty deviceName");
  if (pk.empty()) return absl::InvalidArgumentError("triple username has an empty productKey");
  if (HasControl(username)) {
    return absl::InvalidArgumentError("triple username has a control character");
  }
  out.device_name.assign(dn.data(), dn.size());
  out.product_key.assign(pk.data(), pk.size());
  return out;
}

absl::StatusOr<std::string> ParseTriplePassword(absl::string_view password,
                                                TripleSignMethod method) {
  const size_t n = TripleSignatureSize(method);
  if (password.size() != 2 * n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "triple password must be ", 2 * n, " hex digits for ", TripleSignMethodName(method)));
  }
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    const int hi = HexDigitValue(password[2 * i]);
    const int lo = HexDigitValue(password[2 * i + 1]);
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("triple password is not hex");
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

namespace {

// The signed content: names and values, names sorted (clientId < deviceKey|deviceName
// < productKey < timestamp); the timestamp pair is empty when not sent.
using SignedParts = absl::string_view[8];
void FillSignedParts(TripleSignMethod method, const TripleSignInput& in, SignedParts* parts) {
  const bool ts = !in.timestamp.empty();
  (*parts)[0] = "clientId";
  (*parts)[1] = in.client_id;
  (*parts)[2] = method == TripleSignMethod::kSha256 ? "deviceKey" : "deviceName";
  (*parts)[3] = in.device_name;
  (*parts)[4] = "productKey";
  (*parts)[5] = in.product_key;
  (*parts)[6] = ts ? "timestamp" : "";
  (*parts)[7] = in.timestamp;
}

}  // namespace

absl::StatusOr<std::string> ComputeTripleSignature(TripleSignMethod method,
                                                   absl::string_view secret,
                                                   const TripleSignInput& in) {
  const bool enos = method == TripleSignMethod::kSha256;
  SignedParts parts;
  FillSignedParts(method, in, &parts);
  if (enos) {
    std::string content;
    content.reserve(128 + secret.size());
    for (absl::string_view p : parts) content.append(p.data(), p.size());
    content.append(secret.data(), secret.size());
    std::string digest = crypto::Sha256(content);
    OPENSSL_cleanse(content.data(), content.size());  // it holds the secret
    return digest;
  }
  MacValue mac;
  absl::Status s = HmacCompute(ToHmac(method), secret, parts, &mac);
  if (!s.ok()) return s;
  return std::string(mac.view());
}

bool VerifyTripleSignature(TripleSignMethod method, absl::string_view secret,
                           const TripleSignInput& input, absl::string_view signature) {
  auto expected = ComputeTripleSignature(method, secret, input);
  return expected.ok() && crypto::ConstantTimeEquals(*expected, signature);
}

bool VerifyTripleSignature(TripleSignMethod method, absl::string_view secret,
                           const PrecomputedHmacSha256& sha256_key, const TripleSignInput& input,
                           absl::string_view signature) {
  if (method != TripleSignMethod::kHmacSha256 || !sha256_key.has_key()) {
    return VerifyTripleSignature(method, secret, input, signature);
  }
  SignedParts parts;
  FillSignedParts(method, input, &parts);
  return sha256_key.Verify(parts, signature);
}

absl::StatusOr<TripleConnect> MakeTripleConnect(
    absl::string_view product_key, absl::string_view device_name, absl::string_view secret,
    absl::string_view client_id, TripleSignMethod method, int64_t timestamp_ms, int secure_mode) {
  if (secure_mode != 2 && secure_mode != 3) {
    return absl::InvalidArgumentError("securemode must be 2 or 3");
  }
  const std::string ts = timestamp_ms >= 0 ? absl::StrCat(timestamp_ms) : std::string();
  TripleSignInput input{client_id, device_name, product_key, ts};
  auto sig = ComputeTripleSignature(method, secret, input);
  if (!sig.ok()) return sig.status();
  TripleConnect out;
  out.client_id = absl::StrCat(client_id, "|securemode=", secure_mode,
                               ",signmethod=", TripleSignMethodName(method));
  if (!ts.empty()) absl::StrAppend(&out.client_id, ",timestamp=", ts);
  out.client_id.push_back('|');
  out.username = absl::StrCat(device_name, "&", product_key);
  out.password = crypto::HexEncode(*sig);
  return out;
}

}  // namespace iotauth::identity
