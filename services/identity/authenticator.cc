#include "services/identity/authenticator.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/audit/event_view.h"
#include "services/common/crypto.h"
#include "services/common/enum_name.h"
#include "services/common/error_info.h"
#include "services/identity/composite_key.h"
#include "services/identity/device_triple.h"
#include "services/identity/dps.h"
#include "services/identity/sas_token.h"
#include "services/identity/topic_rules.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

constexpr size_t kMaxPeerAddressBytes = 256;
constexpr size_t kMaxListenerBytes = 128;
constexpr size_t kMaxSignMethodBytes = 32;
constexpr size_t kMaxSignatureBytes = 256;

absl::Status TooLong(absl::string_view field, size_t limit) {
  const std::string limit_text = absl::StrCat(limit);
  return InvalidFieldError(field, absl::StrCat(field, " exceeds ", limit, " bytes"),
                           {{"limit_bytes", limit_text}});
}

absl::Status CheckChain(const google::protobuf::RepeatedPtrField<std::string>& chain,
                        absl::string_view field, const AuthenticatorConfig& c) {
  if (static_cast<size_t>(chain.size()) > c.max_chain_certificates) {
    const std::string limit_text = absl::StrCat(c.max_chain_certificates);
    return InvalidFieldError(
        field, absl::StrCat(field, " has more than ", c.max_chain_certificates, " certificates"),
        {{"limit_certificates", limit_text}});
  }
  for (int i = 0; i < chain.size(); ++i) {
    if (chain[i].size() > c.max_certificate_bytes) {
      return TooLong(absl::StrCat(field, "[", i, "]"), c.max_certificate_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const v1::AuthenticateRequest& r, const AuthenticatorConfig& c) {
  if (r.tenant_id().size() > c.max_id_bytes) return TooLong("tenant_id", c.max_id_bytes);
  if (r.request_id().size() > c.max_id_bytes) return TooLong("request_id", c.max_id_bytes);
  if (r.has_connect()) {
    const v1::ConnectInfo& ci = r.connect();
    if (ci.client_id().size() > c.max_client_id_bytes) {
      return TooLong("connect.client_id", c.max_client_id_bytes);
    }
    if (ci.username().size() > c.max_username_bytes) {
      return TooLong("connect.username", c.max_username_bytes);
    }
    if (ci.password().size() > c.max_password_bytes) {
      return TooLong("connect.password", c.max_password_bytes);
    }
    if (ci.peer_address().size() > kMaxPeerAddressBytes) {
      return TooLong("connect.peer_address", kMaxPeerAddressBytes);
    }
    if (ci.listener().size() > kMaxListenerBytes) {
      return TooLong("connect.listener", kMaxListenerBytes);
    }
    return CheckChain(ci.peer_certificate_chain(), "connect.peer_certificate_chain", c);
  }
  if (r.has_credential()) {
    const v1::Credential& cr = r.credential();
    if (cr.peer_address().size() > kMaxPeerAddressBytes) {
      return TooLong("credential.peer_address", kMaxPeerAddressBytes);
    }
    if (cr.has_sas()) {
      if (cr.sas().token().size() > c.max_password_bytes) {
        return TooLong("credential.sas.token", c.max_password_bytes);
      }
      if (cr.sas().device_id().size() > c.max_id_bytes) {
        return TooLong("credential.sas.device_id", c.max_id_bytes);
      }
    } else if (cr.has_device_triple()) {
      const v1::DeviceTripleCredential& t = cr.device_triple();
      if (t.product_key().size() > c.max_id_bytes) {
        return TooLong("credential.device_triple.product_key", c.max_id_bytes);
      }
      if (t.device_name().size() > c.max_id_bytes) {
        return TooLong("credential.device_triple.device_name", c.max_id_bytes);
      }
      if (t.client_id().size() > c.max_client_id_bytes) {
        return TooLong("credential.device_triple.client_id", c.max_client_id_bytes);
      }
      if (t.sign_method().size() > kMaxSignMethodBytes) {
        return TooLong("credential.device_triple.sign_method", kMaxSignMethodBytes);
      }
      if (t.signature().size() > kMaxSignatureBytes) {
        return TooLong("credential.device_triple.signature", kMaxSignatureBytes);
      }
      if (t.timestamp_ms() < 0) {
        return InvalidFieldError("credential.device_triple.timestamp_ms",
                                 "credential.device_triple.timestamp_ms is negative");
      }
    } else if (cr.has_x509()) {
      return CheckChain(cr.x509().chain(), "credential.x509.chain", c);
    }
  }
  return absl::OkStatus();
}

// `d` as (seconds, nanos), a negative one as zero.
audit::EventView::Time SplitDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  return {s, static_cast<int32_t>(absl::ToInt64Nanoseconds(d))};
}

// `t` as Unix (seconds, nanos), nanos in [0, 1e9).
audit::EventView::Time SplitTime(absl::Time t) {
  const int64_t s = absl::ToUnixSeconds(t);
  return {s, static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s)))};
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const audit::EventView::Time v = SplitDuration(d);
  out->set_seconds(v.seconds);
  out->set_nanos(v.nanos);
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  const audit::EventView::Time v = SplitTime(t);
  out->set_seconds(v.seconds);
  out->set_nanos(v.nanos);
}

// Azure MQTT username: `{host}/{device}[/{module}]/?api-version=...` (the query is optional).
// The ids are matched as the token names them, then the rest must be nothing, `/`, or
// a query (`?...` or `/?...`): ids may hold `?` themselves, so the query cannot be
// found by searching for the first `?`.
bool UsernameNames(absl::string_view username, const SasAudience& aud) {
  const size_t slash = username.find('/');
  if (slash == absl::string_view::npos) return false;
  if (!absl::EqualsIgnoreCase(username.substr(0, slash), aud.host)) return false;
  absl::string_view rest = username.substr(slash + 1);
  if (!absl::ConsumePrefix(&rest, aud.device_id)) return false;
  if (!aud.module_id.empty() &&
      !(absl::ConsumePrefix(&rest, "/") && absl::ConsumePrefix(&rest, aud.module_id))) {
    return false;
  }
  absl::ConsumePrefix(&rest, "/");
  return rest.empty() || rest.front() == '?';
}

bool ParseSignMethodName(absl::string_view name, TripleSignMethod* m) {
  if (name.empty() || absl::EqualsIgnoreCase(name, "hmacsha256")) {
    *m = TripleSignMethod::kHmacSha256;
  } else if (absl::EqualsIgnoreCase(name, "hmacsha1")) {
    *m = TripleSignMethod::kHmacSha1;
  } else if (absl::EqualsIgnoreCase(name, "hmacmd5")) {
    *m = TripleSignMethod::kHmacMd5;
  } else if (absl::EqualsIgnoreCase(name, "sha256")) {
    *m = TripleSignMethod::kSha256;
  } else {
    return false;
  }
  return true;
}

// Everything a triple verification needs, from ConnectInfo or an explicit credential.
struct TripleInput {
  std::string client_id;  // the `{clientId}` part
  std::string device_name;
  std::string product_key;
  TripleSignMethod method = TripleSignMethod::kHmacSha256;
  int secure_mode = 2;
  bool has_timestamp = false;
  int64_t timestamp_ms = 0;
  std::string timestamp_raw;
  std::string signature;  // raw bytes
};

}  // namespace

// One Authenticate call: accumulates the answer in the response.
class Authenticator::Attempt {
 public:
  Attempt(Authenticator* auth, const v1::AuthenticateRequest& request, const CallContext& context,
          v1::AuthenticateResponse* response)
      : auth_(auth),
        opt_(auth->options_),
        cfg_(auth->options_.config),
        request_(request),
        context_(context),
        resp_(response),
        start_(auth->clock_->Now()),
        now_(start_) {}

  void Run() {
    if (request_.request_id().empty()) {
      resp_->set_request_id(
          absl::StrCat(auth_->request_id_prefix_, "-", auth_->request_counter_.fetch_add(1) + 1));
    } else {
      resp_->set_request_id(request_.request_id());
    }
    if (!PeerAddress().empty()) source_key_ = SourceKey(PeerAddress());
    if (auth_->source_limiter_ != nullptr && !source_key_.empty() &&
        auth_->source_limiter_->IsLocked(source_key_, now_)) {
      Deny(v1::DENY_REASON_RATE_LIMITED, "too many failed attempts from this address");
    } else if (request_.has_connect()) {
      RunConnect(request_.connect());
    } else if (request_.has_credential()) {
      RunCredential(request_.credential());
    } else {
      Deny(v1::DENY_REASON_NO_CREDENTIAL, "request carries neither connect nor credential");
    }
    CountAttempt();
    auth_->decisions_.Record(resp_->decision(), resp_->deny_reason(), resp_->credential_type());
    Audit();
  }

 private:
  // ---- dispatch ----
  void RunConnect(const v1::ConnectInfo& ci) {
    client_id_ = ci.client_id();
    username_ = ci.username();
    const std::string& pw = ci.password();
    if (absl::StartsWith(pw, kSasPrefix)) {
      RunSas(pw, /*mqtt=*/true, ci.client_id(), ci.username());
    } else if (absl::StrContains(ci.client_id(), kTripleMarker)) {
      RunTripleConnect(ci);
    } else if (ci.peer_certificate_chain_size() > 0) {
      RunX509(ci.peer_certificate_chain());
    } else if (!pw.empty()) {
      Deny(v1::DENY_REASON_MALFORMED, "password is neither a SAS token nor a triple signature");
    } else {
      Deny(v1::DENY_REASON_NO_CREDENTIAL, "no password and no client certificate");
    }
  }

  void RunCredential(const v1::Credential& cr) {
    if (cr.has_sas()) {
      RunSas(cr.sas().token(), /*mqtt=*/false, cr.sas().device_id(), "");
    } else if (cr.has_device_triple()) {
      RunTripleCredential(cr.device_triple());
    } else if (cr.has_x509()) {
      RunX509(cr.x509().chain());
    } else {
      Deny(v1::DENY_REASON_NO_CREDENTIAL, "credential is empty");
    }
  }

  // ---- SAS ----
  void RunSas(absl::string_view token_text, bool mqtt, absl::string_view claimed_device,
              absl::string_view username) {
    resp_->set_credential_type(reg::CREDENTIAL_TYPE_SAS);
    auto token = ParseSasToken(token_text);
    if (!token.ok()) return Deny(v1::DENY_REASON_MALFORMED, token.status().message());
    // Reported as when this service stops accepting the token: `se` plus the allowed
    // clock skew. A token accepted inside the skew would otherwise come with an
    // expiry already past, and a broker that disconnects at it would drop the device
    // straight after letting it in.
    expires_at_ = token->expiry() + cfg_.sas_clock_skew;
    auto aud = ParseSasAudience(token->resource);
    if (!aud.ok()) return Deny(v1::DENY_REASON_WRONG_AUDIENCE, aud.status().message());

    std::shared_ptr<const TenantRecord> tenant;
    if (!request_.tenant_id().empty()) {
      tenant = opt_.directory->FindTenant(request_.tenant_id());
      if (tenant == nullptr) return Deny(v1::DENY_REASON_UNKNOWN_TENANT, "unknown tenant");
      if (!absl::EqualsIgnoreCase(tenant->hub_host, aud->host)) {
        return Deny(v1::DENY_REASON_WRONG_AUDIENCE, "token audience names another hub");
      }
    } else {
      tenant = opt_.directory->FindTenantByHubHost(aud->host);
      if (tenant == nullptr) {
        return Deny(v1::DENY_REASON_UNKNOWN_TENANT, "token audience names no known hub");
      }
    }
    auto* id = resp_->mutable_identity();
    id->set_tenant_id(tenant->id);
    id->set_device_id(aud->device_id.data(), aud->device_id.size());
    id->set_module_id(aud->module_id.data(), aud->module_id.size());

    // The token must name the device that is connecting.
    if (mqtt) {
      const bool matches =
          aud->module_id.empty()
              ? claimed_device == aud->device_id
              : claimed_device == absl::StrCat(aud->device_id, "/", aud->module_id);
      if (!matches) {
        return Deny(v1::DENY_REASON_IDENTITY_MISMATCH, "client id differs from the token's device");
      }
      if (!username.empty() && !UsernameNames(username, *aud)) {
        return Deny(v1::DENY_REASON_IDENTITY_MISMATCH,
                    "username differs from the token's audience");
      }
    } else if (!claimed_device.empty() && claimed_device != aud->device_id) {
      return Deny(v1::DENY_REASON_IDENTITY_MISMATCH, "device_id differs from the token's device");
    }

    auto device = opt_.directory->FindDevice(tenant->id, aud->device_id);
    if (token->has_key_name) {
      const TenantRecord::Policy* policy = tenant->FindPolicy(token->key_name);
      if (policy == nullptr) {
        return Deny(v1::DENY_REASON_UNKNOWN_POLICY, "unknown shared access policy");
      }
      if (device == nullptr) return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
      std::shared_ptr<const ProductRecord> product;
      if (!ProductAllows(*device, reg::CREDENTIAL_TYPE_SAS, &product)) return;
      if (DeviceLocked()) return;
      auto v = VerifySas(*token, SasMacKeys{&policy->primary_key, &policy->secondary_key}, now_,
                         cfg_.sas_clock_skew);
      if (!v.verdict.ok()) return Deny(v.verdict);
      resp_->set_credential_fingerprint(
          absl::StrCat("sas:policy:", policy->name, ":", KeySlotName(v.slot)));
      if (!DeviceUsable(*device)) return;
      return AllowDevice(*device, *product);
    }
    if (device == nullptr) return TryEnrollment(*token, *tenant, *aud);
    std::shared_ptr<const ProductRecord> product;
    if (!ProductAllows(*device, reg::CREDENTIAL_TYPE_SAS, &product)) return;
    if (DeviceLocked()) return;
    auto v = VerifySas(*token, SasMacKeys{&device->primary_key, &device->secondary_key}, now_,
                       cfg_.sas_clock_skew);
    if (!v.verdict.ok()) return Deny(v.verdict);
    resp_->set_credential_fingerprint(absl::StrCat("sas:", KeySlotName(v.slot)));
    if (!DeviceUsable(*device)) return;
    AllowDevice(*device, *product);
  }

  // An unknown device whose token verifies with a key derived from one of the tenant's
  // enrollment groups is registered into that group.
  void TryEnrollment(const SasToken& token, const TenantRecord& tenant, const SasAudience& aud) {
    auto groups = opt_.directory->FindEnrollmentGroups(tenant.id, aud.device_id);
    if (groups->empty() || !aud.module_id.empty()) {
      return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
    }
    // Group-derived keys are guessed at like any device key: the same lockout.
    if (DeviceLocked()) return;
    if (token.expiry() + cfg_.sas_clock_skew < now_) {
      return Deny(v1::DENY_REASON_EXPIRED, "SAS token expired");
    }
    size_t tried = 0;
    bool truncated = false;
    for (const auto& group : *groups) {
      if (++tried > cfg_.max_enrollment_groups_tried) {
        truncated = true;
        break;
      }
      if (!group->enabled || !group->group_key.has_key()) continue;
      MacValue derived;
      if (!DeriveDeviceKeyRaw(group->group_key, aud.device_id, &derived)) continue;
      const PrecomputedHmacSha256 device_key = PrecomputedHmacSha256::ForKey(derived.view());
      auto v = VerifySas(token, SasMacKeys{&device_key, nullptr}, now_, cfg_.sas_clock_skew);
      if (!v.verdict.ok()) continue;
      // Verified: this device belongs to `group`.
      auto product = opt_.directory->FindProduct(group->product_key);
      if (product == nullptr || product->tenant_id != tenant.id) {
        return Deny(v1::DENY_REASON_INTERNAL, "enrollment group's product is not known");
      }
      resp_->mutable_identity()->set_product_key(product->product_key);
      if (!product->Allows(reg::CREDENTIAL_TYPE_SAS)) {
        return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                    "product does not allow SAS tokens");
      }
      resp_->set_credential_fingerprint(absl::StrCat("sas:enrollment:", group->id));
      if (opt_.registrar == nullptr) {
        return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                    "enrollment-group registration is not enabled");
      }
      auto device = opt_.registrar->RegisterFromEnrollmentGroup(
          *group, aud.device_id, crypto::Base64Encode(derived.view()));
      if (!device.ok() && device.status().code() == absl::StatusCode::kPermissionDenied) {
        // Registered before, and given another key since: the derived key is wrong.
        enrollment_failed_ = true;
        return Deny(v1::DENY_REASON_BAD_SIGNATURE, "signature does not match the device's keys");
      }
      if (!device.ok()) {
        return Deny(v1::DENY_REASON_INTERNAL,
                    absl::StrCat("registration failed: ",
                                 absl::StatusCodeToString(device.status().code())));
      }
      if (device->status() != reg::DEVICE_STATUS_ENABLED) {
        return Deny(device->status() == reg::DEVICE_STATUS_PENDING_APPROVAL
                        ? v1::DENY_REASON_PENDING_APPROVAL
                        : v1::DENY_REASON_DEVICE_DISABLED,
                    "registered device is not enabled");
      }
      if (opt_.directory_writer != nullptr) {
        reg::Device stored = *device;
        if (!stored.credentials().has_symmetric_key()) {
          stored.mutable_credentials()->mutable_symmetric_key()->set_primary_key(
              crypto::Base64Encode(derived.view()));
        }
        // Never over a newer version the change stream already applied.
        opt_.directory_writer->UpsertRegisteredDevice(stored).IgnoreError();
      }
      resp_->set_device_registered(true);
      registered_ = true;
      return Allow(device->rules(), *product);
    }
    // Still "unknown device" to the caller (no hint that a group matched the id), but
    // counted against the device id like a bad signature.
    enrollment_failed_ = true;
    if (truncated) {
      // The operator's to fix: a device of a group past the limit can never register.
      return Deny(v1::DENY_REASON_UNKNOWN_DEVICE,
                  absl::StrCat("unknown device (only the first ", cfg_.max_enrollment_groups_tried,
                               " of the tenant's ", groups->size(),
                               " enrollment groups were tried; raise "
                               "identity.max_enrollment_groups_tried)"));
    }
    Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
  }

  // ---- device triple ----
  void RunTripleConnect(const v1::ConnectInfo& ci) {
    resp_->set_credential_type(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
    auto cid = ParseTripleClientId(ci.client_id());
    if (!cid.ok()) return Deny(v1::DENY_REASON_MALFORMED, cid.status().message());
    if (cid->sign_method == TripleSignMethod::kSha256) {
      resp_->set_credential_type(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS);
    }
    auto user = ParseTripleUsername(ci.username());
    if (!user.ok()) return Deny(v1::DENY_REASON_MALFORMED, user.status().message());
    auto sig = ParseTriplePassword(ci.password(), cid->sign_method);
    if (!sig.ok()) return Deny(v1::DENY_REASON_MALFORMED, sig.status().message());
    TripleInput in;
    in.client_id = std::move(cid->client_id);
    in.device_name = std::move(user->device_name);
    in.product_key = std::move(user->product_key);
    in.method = cid->sign_method;
    in.secure_mode = cid->secure_mode;
    in.has_timestamp = cid->has_timestamp;
    in.timestamp_ms = cid->timestamp_ms;
    in.timestamp_raw = std::move(cid->timestamp_raw);
    in.signature = *std::move(sig);
    RunTriple(in);
  }

  void RunTripleCredential(const v1::DeviceTripleCredential& c) {
    resp_->set_credential_type(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
    TripleInput in;
    if (!ParseSignMethodName(c.sign_method(), &in.method)) {
      return Deny(v1::DENY_REASON_MALFORMED, "sign_method is not supported");
    }
    if (in.method == TripleSignMethod::kSha256) {
      resp_->set_credential_type(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS);
    }
    if (c.product_key().empty() || c.device_name().empty() || c.client_id().empty()) {
      return Deny(v1::DENY_REASON_MALFORMED, "product_key, device_name and client_id are required");
    }
    auto sig = ParseTriplePassword(c.signature(), in.method);
    if (!sig.ok()) return Deny(v1::DENY_REASON_MALFORMED, sig.status().message());
    in.client_id = c.client_id();
    in.device_name = c.device_name();
    in.product_key = c.product_key();
    if (c.timestamp_ms() > 0) {
      in.has_timestamp = true;
      in.timestamp_ms = c.timestamp_ms();
      in.timestamp_raw = absl::StrCat(c.timestamp_ms());
    }
    in.signature = *std::move(sig);
    RunTriple(in);
  }

  void RunTriple(const TripleInput& in) {
    const bool enos = in.method == TripleSignMethod::kSha256;
    const reg::CredentialType type =
        enos ? reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS : reg::CREDENTIAL_TYPE_DEVICE_TRIPLE;
    auto* id = resp_->mutable_identity();
    id->set_product_key(in.product_key);
    id->set_device_id(in.device_name);

    auto product = opt_.directory->FindProduct(in.product_key);
    if (product == nullptr ||
        (!request_.tenant_id().empty() && product->tenant_id != request_.tenant_id())) {
      return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown product key");
    }
    id->set_tenant_id(product->tenant_id);
    if (opt_.directory->FindTenant(product->tenant_id) == nullptr) {
      return Deny(v1::DENY_REASON_UNKNOWN_TENANT, "product's tenant is not known");
    }
    if (!product->Allows(type)) {
      return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                  absl::StrCat("product does not allow ", reg::CredentialType_Name(type)));
    }
    if (IsWeakSignMethod(in.method) && !product->allow_weak_sign_methods) {
      return Deny(v1::DENY_REASON_WEAK_ALGORITHM,
                  absl::StrCat("sign method ", TripleSignMethodName(in.method),
                               " is not enabled for the product"));
    }
    if (!in.has_timestamp) {
      if (enos) return Deny(v1::DENY_REASON_MALFORMED, "EnOS sign requires a timestamp");
      if (cfg_.require_triple_timestamp) {
        return Deny(v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW, "timestamp is required");
      }
    } else {
      const absl::Time ts = absl::FromUnixMillis(in.timestamp_ms);
      if (ts < now_ - cfg_.triple_timestamp_window || ts > now_ + cfg_.triple_timestamp_window) {
        return Deny(v1::DENY_REASON_TIMESTAMP_OUT_OF_WINDOW, "timestamp is outside the window");
      }
    }
    const TripleSignInput sign_input{
        in.client_id, in.device_name, in.product_key,
        in.has_timestamp ? absl::string_view(in.timestamp_raw) : absl::string_view()};
    auto device = opt_.directory->FindDevice(product->tenant_id, in.device_name);

    if (DeviceLocked()) return;
    // EnOS dynamic activation: securemode=3 signs with the product secret.
    if (enos && in.secure_mode == 3) {
      if (!product->dynamic_activation || product->product_secret.empty()) {
        return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                    "product does not allow dynamic activation");
      }
      if (!VerifyTripleSignature(in.method, product->product_secret, sign_input, in.signature)) {
        return Deny(v1::DENY_REASON_BAD_SIGNATURE, "signature does not verify");
      }
      resp_->set_credential_fingerprint("enos:product-secret");
      // Every refusal the directory already shows comes before the replay check, so
      // that refused activations take no room in the replay cache.
      if (opt_.registrar == nullptr) {
        return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                    "dynamic activation is not enabled");
      }
      if (device != nullptr) {
        if (device->product_key != product->product_key) {
          return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "device belongs to another product");
        }
        if (device->status == reg::DEVICE_STATUS_DISABLED) {
          return Deny(v1::DENY_REASON_DEVICE_DISABLED, "device is disabled");
        }
        if (device->activated) {
          return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED, "device is already activated");
        }
      }
      if (!CheckReplay(*product, in)) return;
      auto act = opt_.registrar->ActivateDevice(*product, in.device_name);
      if (!act.ok()) {
        switch (act.status().code()) {
          case absl::StatusCode::kNotFound:
            return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
          case absl::StatusCode::kFailedPrecondition:
            return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED, "device is already activated");
          case absl::StatusCode::kPermissionDenied:
            return Deny(v1::DENY_REASON_DEVICE_DISABLED, "device is disabled");
          default:
            return Deny(
                v1::DENY_REASON_INTERNAL,
                absl::StrCat("activation failed: ", absl::StatusCodeToString(act.status().code())));
        }
      }
      if (act->device.status() != reg::DEVICE_STATUS_ENABLED) {
        return Deny(v1::DENY_REASON_DEVICE_DISABLED, "activated device is not enabled");
      }
      if (opt_.directory_writer != nullptr) {
        reg::Device stored = act->device;
        stored.mutable_credentials()->mutable_symmetric_key()->set_primary_key(act->device_secret);
        opt_.directory_writer->UpsertRegisteredDevice(stored).IgnoreError();
      }
      resp_->set_device_registered(true);
      resp_->set_issued_device_secret(act->device_secret);
      registered_ = true;
      return Allow(act->device.rules(), *product);
    }

    if (device == nullptr) return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
    if (device->product_key != product->product_key) {
      return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "device belongs to another product");
    }
    // The primary secret, then the secondary (rotation without downtime).
    const bool primary = !device->triple_secret.empty() &&
                         VerifyTripleSignature(in.method, device->triple_secret, device->triple_key,
                                               sign_input, in.signature);
    const bool secondary =
        !primary && !device->triple_secret_secondary.empty() &&
        VerifyTripleSignature(in.method, device->triple_secret_secondary,
                              device->triple_key_secondary, sign_input, in.signature);
    if (!primary && !secondary) {
      return Deny(v1::DENY_REASON_BAD_SIGNATURE, "signature does not verify");
    }
    resp_->set_credential_fingerprint(
        absl::StrCat(enos ? "enos:" : "triple:", TripleSignMethodName(in.method),
                     secondary ? ":secondary" : ""));
    // A disabled device (perhaps disabled because its secret leaked) takes no room
    // in the replay cache.
    if (!DeviceUsable(*device)) return;
    if (!CheckReplay(*product, in)) return;
    AllowDevice(*device, *product);
  }

  bool CheckReplay(const ProductRecord& product, const TripleInput& in) {
    if (!in.has_timestamp) return true;
    const ReplayKey key = ReplayCache::Key(product.tenant_id, product.product_key, in.device_name,
                                           in.timestamp_raw, in.signature);
    switch (auth_->replay_.CheckAndInsert(
        key, now_, absl::FromUnixMillis(in.timestamp_ms) + cfg_.triple_timestamp_window)) {
      case ReplayCheck::kNew:
        return true;
      case ReplayCheck::kReplay:
        Deny(v1::DENY_REASON_REPLAYED, "this timestamp and signature were already used");
        return false;
      case ReplayCheck::kFull:
        // Fail closed: without room to remember this connect, a replay of it could
        // not be refused.
        Deny(v1::DENY_REASON_RATE_LIMITED,
             "too many recent timestamped connects to check for replays; try again later "
             "(operators: raise identity.replay_cache_size)");
        return false;
      case ReplayCheck::kDeviceFull:
        // One device holding a valid secret must not fill the cache for everyone.
        Deny(v1::DENY_REASON_RATE_LIMITED,
             "too many timestamped connects from this device inside the window; try again "
             "later");
        return false;
    }
    return false;
  }

  // ---- X.509 (seam) ----
  void RunX509(const google::protobuf::RepeatedPtrField<std::string>& chain) {
    resp_->set_credential_type(reg::CREDENTIAL_TYPE_X509_CA);
    if (opt_.certificate_verifier == nullptr) {
      return Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                  "X.509 client certificates are not supported by this server");
    }
    absl::InlinedVector<absl::string_view, 4> certs(chain.begin(), chain.end());
    auto r = opt_.certificate_verifier->Verify(certs, request_.tenant_id(), now_);
    if (r.credential_type != reg::CREDENTIAL_TYPE_UNSPECIFIED) {
      resp_->set_credential_type(r.credential_type);
    }
    resp_->set_credential_fingerprint(r.fingerprint);
    expires_at_ = r.not_after;
    cert_cn_ = std::move(r.cert_cn);
    if (!r.verdict.ok()) {
      // The tenant whose CAs judged the chain (a revoked or expired certificate of a
      // tenant CA): the decision is audited, and queryable, under it. Empty when no
      // tenant trusts the issuer. Never another tenant than the caller asked for.
      if (request_.tenant_id().empty() || r.tenant_id == request_.tenant_id()) {
        resp_->mutable_identity()->set_tenant_id(r.tenant_id);
      }
      return Deny(r.verdict);
    }
    if (!request_.tenant_id().empty() && r.tenant_id != request_.tenant_id()) {
      return Deny(v1::DENY_REASON_UNTRUSTED_ISSUER, "certificate belongs to another tenant");
    }
    resp_->mutable_identity()->set_tenant_id(r.tenant_id);
    resp_->mutable_identity()->set_device_id(r.device_id);
    // Nothing binds an MQTT username to a certificate: `${username}` resolves only to
    // the device's own id (otherwise to nothing, and its allow rules are dropped),
    // so that a device cannot pick another's name for its rules.
    if (username_ != r.device_id) username_ = absl::string_view();
    // As for SAS tokens (and Azure IoT's rule), an MQTT client id must name the
    // certificate's device: one device may not connect under another's id.
    if (!client_id_.empty() && client_id_ != r.device_id) {
      return Deny(v1::DENY_REASON_IDENTITY_MISMATCH,
                  "client id differs from the certificate's device");
    }
    auto device = opt_.directory->FindDevice(r.tenant_id, r.device_id);
    if (device == nullptr) return Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
    std::shared_ptr<const ProductRecord> product;
    if (!ProductAllows(*device, resp_->credential_type(), &product)) return;
    if (!DeviceUsable(*device)) return;
    AllowDevice(*device, *product);
  }

  // The device's address as the broker or gateway reported it (empty if not).
  const std::string& PeerAddress() const {
    return request_.has_connect() ? request_.connect().peer_address()
                                  : request_.credential().peer_address();
  }

  // ---- brute-force protection ----
  // The source limiter's key for a peer address (`ip:port`, `[v6]:port`, or an
  // address without a port): an IPv4 address as it is; an IPv6 address by its /64,
  // since one subscriber or host usually holds a whole /64 and keying by the full
  // address would hand an attacker 2^64 fresh keys; an IPv4-mapped IPv6 address as
  // its IPv4 address; anything unparseable (a name, a unix socket) as it is.
  static std::string SourceKey(absl::string_view peer) {
    absl::string_view host = peer;
    if (!host.empty() && host[0] == '[') {
      const size_t close = host.find(']');
      if (close == absl::string_view::npos) return std::string(peer);
      host = host.substr(1, close - 1);
    } else {
      const size_t colon = host.find(':');
      if (colon == absl::string_view::npos) return std::string(host);
      if (host.find(':', colon + 1) == absl::string_view::npos) {
        return std::string(host.substr(0, colon));  // IPv4 with a port
      }
    }
    host = host.substr(0, host.find('%'));  // an IPv6 zone id
    char text[INET6_ADDRSTRLEN];
    in6_addr addr{};
    if (host.size() >= sizeof(text)) return std::string(peer);
    std::memcpy(text, host.data(), host.size());
    text[host.size()] = '\0';
    if (inet_pton(AF_INET6, text, &addr) != 1) return std::string(peer);
    if (IN6_IS_ADDR_V4MAPPED(&addr)) {
      char v4[INET_ADDRSTRLEN];
      if (inet_ntop(AF_INET, &addr.s6_addr[12], v4, sizeof(v4)) == nullptr) {
        return std::string(peer);
      }
      return v4;
    }
    std::memset(&addr.s6_addr[8], 0, 8);
    if (inet_ntop(AF_INET6, &addr, text, sizeof(text)) == nullptr) return std::string(peer);
    return absl::StrCat("[", text, "]/64");
  }

  CompositeKey DeviceKey() const {
    const v1::Identity& id = resp_->identity();
    return CompositeKey(id.tenant_id(), id.device_id());
  }

  // Call once the device is resolved and before verifying its credential.
  bool DeviceLocked() {
    if (auth_->device_limiter_ == nullptr) return false;
    if (!auth_->device_limiter_->IsLocked(DeviceKey().view(), now_)) return false;
    Deny(v1::DENY_REASON_RATE_LIMITED, "too many failed attempts for this device");
    return true;
  }

  void CountAttempt() {
    const v1::DenyReason r = resp_->deny_reason();
    if (resp_->decision() == v1::DECISION_ALLOW) {
      if (auth_->device_limiter_ != nullptr) {
        auth_->device_limiter_->RecordSuccess(DeviceKey().view());
      }
      return;
    }
    if (r == v1::DENY_REASON_RATE_LIMITED || r == v1::DENY_REASON_INTERNAL) return;
    const bool credential_failure =
        r == v1::DENY_REASON_BAD_SIGNATURE || r == v1::DENY_REASON_REPLAYED ||
        r == v1::DENY_REASON_MALFORMED || r == v1::DENY_REASON_UNKNOWN_DEVICE ||
        r == v1::DENY_REASON_UNKNOWN_TENANT || r == v1::DENY_REASON_UNKNOWN_POLICY ||
        r == v1::DENY_REASON_WRONG_AUDIENCE || r == v1::DENY_REASON_IDENTITY_MISMATCH;
    if (credential_failure && auth_->source_limiter_ != nullptr && !source_key_.empty()) {
      auth_->source_limiter_->RecordFailure(source_key_, now_);
    }
    if ((r == v1::DENY_REASON_BAD_SIGNATURE || r == v1::DENY_REASON_REPLAYED ||
         enrollment_failed_) &&
        auth_->device_limiter_ != nullptr && !resp_->identity().device_id().empty()) {
      auth_->device_limiter_->RecordFailure(DeviceKey().view(), now_);
    }
  }

  // ---- shared checks ----
  bool ProductAllows(const DeviceRecord& device, reg::CredentialType type,
                     std::shared_ptr<const ProductRecord>* product) {
    resp_->mutable_identity()->set_product_key(device.product_key);
    *product = opt_.directory->FindProduct(device.product_key);
    if (*product == nullptr || (*product)->tenant_id != device.tenant_id) {
      Deny(v1::DENY_REASON_INTERNAL, "device's product is not known");
      return false;
    }
    if (!(*product)->Allows(type)) {
      Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
           absl::StrCat("product does not allow ", reg::CredentialType_Name(type)));
      return false;
    }
    return true;
  }

  bool DeviceUsable(const DeviceRecord& device) {
    switch (device.status) {
      case reg::DEVICE_STATUS_ENABLED:
        return true;
      case reg::DEVICE_STATUS_PENDING_APPROVAL:
        Deny(v1::DENY_REASON_PENDING_APPROVAL, "device is waiting for approval");
        return false;
      default:
        Deny(v1::DENY_REASON_DEVICE_DISABLED, "device is disabled");
        return false;
    }
  }

  void Deny(const Verdict& v) { Deny(v.reason, v.detail); }
  void Deny(v1::DenyReason reason, absl::string_view detail) {
    resp_->set_decision(v1::DECISION_DENY);
    resp_->set_deny_reason(reason);
    resp_->set_deny_detail(std::string(detail));
    resp_->clear_access_rules();
    resp_->clear_cache_ttl();
    resp_->clear_issued_device_secret();
  }

  // An existing device proved its own credential.
  void AllowDevice(const DeviceRecord& device, const ProductRecord& product) {
    NoteActivated(device, product);
    Allow(device.rules, product);
  }

  // EnOS: in a product that allows dynamic activation, a device's first successful
  // connect (any credential) activates it, as EnOS does: from then on the product
  // secret, which every device of the product holds, can no longer activate it, re-key
  // it and take its identity over. The connect is allowed whether or not the mark is
  // stored (the device proved its credential, and an activation needs the same
  // registry); a failure is named in the audit record and the next connect retries.
  void NoteActivated(const DeviceRecord& device, const ProductRecord& product) {
    if (!product.dynamic_activation || device.activated || opt_.registrar == nullptr) return;
    const absl::Status s = opt_.registrar->MarkActivated(product, device.device_id);
    if (!s.ok()) mark_failure_ = absl::StatusCodeToString(s.code());
  }

  template <typename Rules>
  void Allow(const Rules& device_rules, const ProductRecord& product) {
    resp_->set_decision(v1::DECISION_ALLOW);
    resp_->set_deny_reason(v1::DENY_REASON_UNSPECIFIED);
    resp_->set_default_effect(cfg_.default_effect);
    const v1::Identity& id = resp_->identity();
    const Placeholders vars{id.tenant_id(), id.product_key(), id.device_id(),
                            client_id_,     username_,        cert_cn_};
    auto* out = resp_->mutable_access_rules();
    out->Reserve(static_cast<int>(device_rules.size() + product.default_rules.size()));
    for (const auto& r : device_rules) ResolveRule(r, vars, out);
    for (const auto& r : product.default_rules) ResolveRule(r, vars, out);
    absl::Duration ttl = cfg_.max_cache_ttl;
    if (expires_at_ != absl::InfiniteFuture()) {
      SetTimestamp(expires_at_, resp_->mutable_credential_expires_at());
      ttl = std::min(ttl, expires_at_ - now_);
    }
    SetDuration(ttl, resp_->mutable_cache_ttl());
  }

  void Audit() {
    if (!auth_->audit_->enabled()) return;
    namespace av1 = ::iotauth::audit::v1;
    // A view of the decision: its strings stay where they are (the response, the
    // request, the call context) and the sink encodes them without an AuditEvent
    // message being filled, copied or cleared.
    audit::EventView e;
    const absl::Time end = auth_->clock_->Now();
    e.has_time = true;
    e.time = SplitTime(end);
    e.type = av1::EVENT_TYPE_AUTHENTICATION;
    const v1::Identity& id = resp_->identity();
    e.tenant_id = id.tenant_id();
    e.product_key = id.product_key();
    e.device_id = id.device_id();
    const bool allow = resp_->decision() == v1::DECISION_ALLOW;
    e.outcome = allow ? av1::OUTCOME_ALLOW : av1::OUTCOME_DENY;
    audit::EventView::Attribute attributes[4];
    size_t n = 0;
    if (!allow) {
      e.reason = EnumName(resp_->deny_reason());
      attributes[n++] = {"detail", resp_->deny_detail()};
    }
    if (resp_->credential_type() != reg::CREDENTIAL_TYPE_UNSPECIFIED) {
      e.credential_type = EnumName(resp_->credential_type());
    }
    e.credential_fingerprint = resp_->credential_fingerprint();
    e.caller = context_.caller;
    e.peer_address = PeerAddress();
    e.request_id = resp_->request_id();
    e.has_duration = true;
    e.duration = SplitDuration(end - start_);
    if (!id.module_id().empty()) attributes[n++] = {"module_id", id.module_id()};
    if (registered_) attributes[n++] = {"device_registered", "true"};
    if (!mark_failure_.empty()) attributes[n++] = {"activation_mark_failed", mark_failure_};
    e.attributes = absl::MakeConstSpan(attributes, n);
    auth_->audit_->RecordView(e);
  }

  Authenticator* auth_;
  const Options& opt_;
  const AuthenticatorConfig& cfg_;
  const v1::AuthenticateRequest& request_;
  const CallContext& context_;
  v1::AuthenticateResponse* resp_;
  const absl::Time start_;
  const absl::Time now_;
  absl::Time expires_at_ = absl::InfiniteFuture();
  absl::string_view client_id_;
  absl::string_view username_;
  std::string source_key_;
  std::string cert_cn_;
  bool registered_ = false;
  std::string mark_failure_;        // NoteActivated's status code, when it failed
  bool enrollment_failed_ = false;  // a token tried against enrollment groups failed
};

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(Options options) {
  if (options.directory == nullptr) {
    return absl::InvalidArgumentError("Authenticator needs a directory");
  }
  const AuthenticatorConfig& c = options.config;
  if (c.sas_clock_skew < absl::ZeroDuration() || c.sas_clock_skew > absl::Hours(1)) {
    return absl::InvalidArgumentError("sas_clock_skew must be within 0..1h");
  }
  if (c.triple_timestamp_window <= absl::ZeroDuration() ||
      c.triple_timestamp_window > absl::Hours(24)) {
    return absl::InvalidArgumentError("triple_timestamp_window must be within (0, 24h]");
  }
  if (c.max_cache_ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_cache_ttl must not be negative");
  }
  if (c.default_effect == reg::RULE_EFFECT_UNSPECIFIED) {
    return absl::InvalidArgumentError("default_effect must be ALLOW or DENY");
  }
  if (c.replay_cache_capacity == 0) {
    return absl::InvalidArgumentError("replay_cache_capacity must be positive");
  }
  if (c.device_max_failures > 0 || c.source_max_failures > 0) {
    if (c.lockout_base <= absl::ZeroDuration() || c.lockout_max < c.lockout_base ||
        c.failure_memory <= absl::ZeroDuration() || c.limiter_capacity == 0) {
      return absl::InvalidArgumentError(
          "lockout_base, lockout_max, failure_memory and limiter_capacity must be positive "
          "(lockout_max >= lockout_base)");
    }
  }
  auto prefix = crypto::RandomBytes(6);
  if (!prefix.ok()) return prefix.status();
  return std::unique_ptr<Authenticator>(new Authenticator(options, crypto::HexEncode(*prefix)));
}

Authenticator::Authenticator(Options options, std::string request_id_prefix)
    : options_(options),
      clock_(options_.clock != nullptr ? options_.clock : &RealClock::Get()),
      audit_(options_.audit_sink),
      replay_(options_.config.replay_cache_capacity),
      request_id_prefix_(std::move(request_id_prefix)) {
  const AuthenticatorConfig& c = options_.config;
  auto limiter = [&c](uint32_t max_failures) {
    AttemptLimiter::Options o;
    o.max_failures = max_failures;
    o.base_lockout = c.lockout_base;
    o.max_lockout = c.lockout_max;
    o.failure_memory = c.failure_memory;
    o.capacity = c.limiter_capacity;
    return std::make_unique<AttemptLimiter>(o);
  };
  if (c.device_max_failures > 0) device_limiter_ = limiter(c.device_max_failures);
  if (c.source_max_failures > 0) source_limiter_ = limiter(c.source_max_failures);
  if (audit_ == nullptr) {
    static auto* null_sink = new audit::NullAuditSink();
    audit_ = null_sink;
  }
}

Authenticator::~Authenticator() = default;

namespace {
Authenticator::LimiterStats StatsOf(const AttemptLimiter* limiter) {
  if (limiter == nullptr) return {};
  return {true, limiter->size(), limiter->evictions()};
}
}  // namespace

Authenticator::LimiterStats Authenticator::device_limiter_stats() const {
  return StatsOf(device_limiter_.get());
}

Authenticator::LimiterStats Authenticator::source_limiter_stats() const {
  return StatsOf(source_limiter_.get());
}

absl::Status Authenticator::Authenticate(const v1::AuthenticateRequest& request,
                                         const CallContext& context,
                                         v1::AuthenticateResponse* response) {
  if (options_.ready != nullptr && !options_.ready->load(std::memory_order_acquire)) {
    return DirectoryLoadingError();
  }
  if (absl::Status admitted = audit::AdmitAudited(options_.audit_gate); !admitted.ok()) {
    return admitted;
  }
  absl::Status valid = Validate(request, options_.config);
  if (!valid.ok()) return valid;
  Attempt(this, request, context, response).Run();
  return absl::OkStatus();
}

absl::Status Authenticator::ValidateRequest(const v1::AuthenticateRequest& request) const {
  return Validate(request, options_.config);
}

absl::StatusOr<v1::AuthenticateResponse> Authenticator::Authenticate(
    const v1::AuthenticateRequest& request, const CallContext& context) {
  v1::AuthenticateResponse response;
  absl::Status s = Authenticate(request, context, &response);
  if (!s.ok()) return s;
  return response;
}

}  // namespace iotauth::identity
