#include "clients/device/device_auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "clients/device/codec.h"

namespace iotauth::device {
namespace {

absl::StatusOr<std::string> RawHmac(const EVP_MD* md, absl::string_view key,
                                    absl::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  // HMAC() with a zero-length key would still work, but an empty key is always a
  // configuration mistake for a device credential.
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (HMAC(md, key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out,
           &out_len) == nullptr) {
    return absl::InternalError("HMAC computation failed");
  }
  return std::string(reinterpret_cast<const char*>(out), out_len);
}

absl::StatusOr<std::string> DecodeKey(absl::string_view key_b64, absl::string_view what) {
  auto key = Base64Decode(key_b64);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid base64"));
  }
  if (key->empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  return key;
}

absl::Status CheckConnectField(absl::string_view name, absl::string_view value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(name, " is empty"));
  if (value.find_first_of("|&") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must not contain '|' or '&'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> SasSignature(absl::string_view key_b64,
                                         absl::string_view string_to_sign) {
  auto key = DecodeKey(key_b64, "SAS key");
  if (!key.ok()) return key.status();
  auto mac = RawHmac(EVP_sha256(), *key, string_to_sign);
  if (!mac.ok()) return mac.status();
  return Base64Encode(*mac);
}

absl::StatusOr<std::string> MakeSasTokenForResource(absl::string_view resource_uri,
                                                    absl::string_view key_b64,
                                                    int64_t expiry_unix_seconds,
                                                    absl::string_view policy_name) {
  if (resource_uri.empty()) return absl::InvalidArgumentError("resource URI is empty");
  if (expiry_unix_seconds <= 0) return absl::InvalidArgumentError("expiry must be positive");
  // Servers read `se` as at most 18 digits (iotauth refuses more): a token past that
  // (or an infinite expiry) could never be used.
  if (expiry_unix_seconds > kMaxSasExpiry) {
    return absl::InvalidArgumentError(
        "expiry is too far in the future (at most 999999999999999999 seconds since the epoch)");
  }
  const std::string sr = UrlEncode(resource_uri);
  const std::string se = absl::StrCat(expiry_unix_seconds);
  auto sig = SasSignature(key_b64, absl::StrCat(sr, "\n", se));
  if (!sig.ok()) return sig.status();
  std::string token =
      absl::StrCat("SharedAccessSignature sr=", sr, "&sig=", UrlEncode(*sig), "&se=", se);
  if (!policy_name.empty()) absl::StrAppend(&token, "&skn=", UrlEncode(policy_name));
  return token;
}

std::string SasResourceUri(absl::string_view hub_host, absl::string_view device_id,
                           absl::string_view module_id) {
  std::string uri = absl::StrCat(hub_host, "/devices/", device_id);
  if (!module_id.empty()) absl::StrAppend(&uri, "/modules/", module_id);
  return uri;
}

absl::StatusOr<std::string> MakeSasToken(absl::string_view hub_host, absl::string_view device_id,
                                         absl::string_view module_id, absl::string_view key_b64,
                                         absl::Time expiry, absl::string_view policy_name) {
  if (hub_host.empty()) return absl::InvalidArgumentError("hub host is empty");
  if (device_id.empty()) return absl::InvalidArgumentError("device id is empty");
  return MakeSasTokenForResource(SasResourceUri(hub_host, device_id, module_id), key_b64,
                                 absl::ToUnixSeconds(expiry), policy_name);
}

absl::StatusOr<std::string> MakeSasToken(absl::string_view hub_host, absl::string_view device_id,
                                         absl::string_view key_b64, absl::Time expiry) {
  return MakeSasToken(hub_host, device_id, "", key_b64, expiry, "");
}

MqttConnectFields SasMqttConnectFields(absl::string_view hub_host, absl::string_view device_id,
                                       absl::string_view module_id, std::string token) {
  MqttConnectFields f;
  f.client_id =
      module_id.empty() ? std::string(device_id) : absl::StrCat(device_id, "/", module_id);
  f.username = absl::StrCat(hub_host, "/", f.client_id, "/?api-version=", kAzureMqttApiVersion);
  f.password = std::move(token);
  return f;
}

absl::string_view TripleSignMethodName(TripleSignMethod method) {
  switch (method) {
    case TripleSignMethod::kHmacSha256:
      return "hmacsha256";
    case TripleSignMethod::kHmacSha1:
      return "hmacsha1";
    case TripleSignMethod::kHmacMd5:
      return "hmacmd5";
  }
  return "hmacsha256";
}

absl::StatusOr<TripleSignMethod> ParseTripleSignMethod(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "hmacsha256") return TripleSignMethod::kHmacSha256;
  if (lower == "hmacsha1") return TripleSignMethod::kHmacSha1;
  if (lower == "hmacmd5") return TripleSignMethod::kHmacMd5;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown sign method '", name, "' (want hmacsha256, hmacsha1 or hmacmd5)"));
}

namespace {
// A triple timestamp is 1 to 15 decimal digits (milliseconds since the epoch).
absl::Status CheckTimestamp(const std::optional<int64_t>& timestamp_ms) {
  if (timestamp_ms.has_value() && (*timestamp_ms < 0 || *timestamp_ms > kMaxTripleTimestampMs)) {
    return absl::InvalidArgumentError(
        "timestamp must be 0 to 999999999999999 milliseconds since the epoch");
  }
  return absl::OkStatus();
}
}  // namespace

std::string TripleSignContent(const TripleParams& p) {
  const absl::string_view client_id = p.client_id.empty() ? p.device_name : p.client_id;
  // Names in byte order: clientId < deviceName < productKey < timestamp.
  std::string content =
      absl::StrCat("clientId", client_id, "deviceName", p.device_name, "productKey", p.product_key);
  if (p.timestamp_ms.has_value()) absl::StrAppend(&content, "timestamp", *p.timestamp_ms);
  return content;
}

absl::StatusOr<std::string> TripleSignature(const TripleParams& p) {
  for (const auto& [name, value] :
       {std::pair<absl::string_view, absl::string_view>{"product key", p.product_key},
        {"device name", p.device_name},
        {"client id", p.client_id.empty() ? p.device_name : p.client_id}}) {
    absl::Status s = CheckConnectField(name, value);
    if (!s.ok()) return s;
  }
  if (p.device_secret.empty()) return absl::InvalidArgumentError("device secret is empty");
  if (absl::Status s = CheckTimestamp(p.timestamp_ms); !s.ok()) return s;
  const EVP_MD* md = EVP_sha256();
  if (p.sign_method == TripleSignMethod::kHmacSha1) md = EVP_sha1();
  if (p.sign_method == TripleSignMethod::kHmacMd5) md = EVP_md5();
  auto mac = RawHmac(md, p.device_secret, TripleSignContent(p));
  if (!mac.ok()) return mac.status();
  return HexEncode(*mac);
}

absl::StatusOr<MqttConnectFields> TripleMqttConnectFields(const TripleParams& p) {
  if (p.securemode != 2 && p.securemode != 3) {
    return absl::InvalidArgumentError("securemode must be 2 or 3");
  }
  auto sig = TripleSignature(p);
  if (!sig.ok()) return sig.status();
  MqttConnectFields f;
  const absl::string_view client_id = p.client_id.empty() ? p.device_name : p.client_id;
  f.client_id = absl::StrCat(client_id, "|securemode=", p.securemode,
                             ",signmethod=", TripleSignMethodName(p.sign_method));
  if (p.timestamp_ms.has_value()) absl::StrAppend(&f.client_id, ",timestamp=", *p.timestamp_ms);
  f.client_id.push_back('|');
  f.username = absl::StrCat(p.device_name, "&", p.product_key);
  f.password = *std::move(sig);
  return f;
}

absl::StatusOr<std::string> EnosSignature(const EnosParams& p) {
  const absl::string_view client_id = p.client_id.empty() ? p.device_key : p.client_id;
  for (const auto& [name, value] :
       {std::pair<absl::string_view, absl::string_view>{"product key", p.product_key},
        {"device key", p.device_key},
        {"client id", client_id}}) {
    absl::Status s = CheckConnectField(name, value);
    if (!s.ok()) return s;
  }
  if (p.secret.empty()) return absl::InvalidArgumentError("secret is empty");
  if (absl::Status s = CheckTimestamp(p.timestamp_ms); !s.ok()) return s;
  // Names in byte order: clientId < deviceKey < productKey < timestamp.
  std::string content =
      absl::StrCat("clientId", client_id, "deviceKey", p.device_key, "productKey", p.product_key);
  if (p.timestamp_ms.has_value()) absl::StrAppend(&content, "timestamp", *p.timestamp_ms);
  content.append(p.secret);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(content.data()), content.size(), digest);
  // The content holds the secret: do not leave it in freed memory.
  OPENSSL_cleanse(content.data(), content.size());
  return HexEncode(absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

absl::StatusOr<MqttConnectFields> EnosMqttConnectFields(const EnosParams& p) {
  auto sig = EnosSignature(p);
  if (!sig.ok()) return sig.status();
  MqttConnectFields f;
  const absl::string_view client_id = p.client_id.empty() ? p.device_key : p.client_id;
  f.client_id =
      absl::StrCat(client_id, "|securemode=", p.dynamic_activation ? 3 : 2, ",signmethod=sha256");
  if (p.timestamp_ms.has_value()) absl::StrAppend(&f.client_id, ",timestamp=", *p.timestamp_ms);
  f.client_id.push_back('|');
  f.username = absl::StrCat(p.device_key, "&", p.product_key);
  f.password = *std::move(sig);
  return f;
}

absl::StatusOr<std::string> DeriveDeviceKey(absl::string_view group_key_b64,
                                            absl::string_view registration_id) {
  if (registration_id.empty()) return absl::InvalidArgumentError("registration id is empty");
  auto key = DecodeKey(group_key_b64, "group key");
  if (!key.ok()) return key.status();
  auto mac = RawHmac(EVP_sha256(), *key, registration_id);
  if (!mac.ok()) return mac.status();
  return Base64Encode(*mac);
}

}  // namespace iotauth::device
