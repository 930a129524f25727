#include "services/registry/validation.h"

#include <openssl/crypto.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"
#include "services/common/ids.h"

namespace iotauth::registry {

std::string ReasonOf(const absl::Status& status) {
  if (status.ok()) return "";
  std::string reason = ErrorReason(status);
  if (!reason.empty()) return reason;
  return absl::AsciiStrToUpper(absl::StatusCodeToString(status.code()));
}

absl::Status InvalidField(absl::string_view field, absl::string_view detail) {
  return InvalidFieldError(field, absl::StrCat(field, ": ", detail));
}

absl::Status ValidateId(absl::string_view field, absl::string_view id) {
  if (id.empty()) return InvalidField(field, "is required");
  if (id.size() > Limits::kMaxIdLength) {
    return InvalidField(field, absl::StrCat("longer than ", Limits::kMaxIdLength, " characters"));
  }
  for (char c : id) {
    if (!IsIdChar(c)) {
      return InvalidField(field, absl::StrCat("may contain only ", kIdCharsText));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateKey(absl::string_view field, absl::string_view base64_key) {
  if (base64_key.empty()) return InvalidField(field, "is required");
  if (base64_key.size() > 4 * ((Limits::kMaxKeyBytes + 2) / 3)) {
    return InvalidField(field, "longer than 64 bytes");
  }
  absl::StatusOr<std::string> raw = crypto::Base64Decode(base64_key);
  if (!raw.ok()) return InvalidField(field, "is not valid base64");
  size_t n = raw->size();
  OPENSSL_cleanse(raw->data(), raw->size());
  if (n < Limits::kMinKeyBytes || n > Limits::kMaxKeyBytes) {
    return InvalidField(field, "must decode to 16 to 64 bytes");
  }
  return absl::OkStatus();
}

absl::Status ValidateThumbprint(absl::string_view field, absl::string_view thumbprint) {
  if (thumbprint.size() != 64) return InvalidField(field, "must be 64 hex digits (SHA-256)");
  for (char c : thumbprint) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return InvalidField(field, "must be 64 hex digits (SHA-256)");
    }
  }
  return absl::OkStatus();
}

std::string NormalizeThumbprint(absl::string_view thumbprint) {
  return absl::AsciiStrToLower(thumbprint);
}

absl::Status ValidateTags(absl::string_view field,
                          const google::protobuf::Map<std::string, std::string>& tags) {
  if (tags.size() > Limits::kMaxTags) {
    return InvalidField(field, absl::StrCat("more than ", Limits::kMaxTags, " tags"));
  }
  for (const auto& [key, value] : tags) {
    if (key.empty() || key.size() > Limits::kMaxTagKeyLength) {
      return InvalidField(
          field, absl::StrCat("tag keys must be 1 to ", Limits::kMaxTagKeyLength, " characters"));
    }
    for (char c : key) {
      if (!IsIdChar(c)) return InvalidField(field, "tag keys follow the id rule");
    }
    if (value.size() > Limits::kMaxTagValueLength) {
      return InvalidField(
          field, absl::StrCat("tag values are at most ", Limits::kMaxTagValueLength, " bytes"));
    }
    for (char c : value) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return InvalidField(field, "tag values may not contain control characters");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRules(absl::string_view field,
                           const google::protobuf::RepeatedPtrField<v1::AccessRule>& rules) {
  if (static_cast<size_t>(rules.size()) > Limits::kMaxRules) {
    return InvalidField(field, absl::StrCat("more than ", Limits::kMaxRules, " rules"));
  }
  for (int i = 0; i < rules.size(); ++i) {
    const v1::AccessRule& r = rules[i];
    std::string f = absl::StrCat(field, "[", i, "]");
    if (r.effect() != v1::RULE_EFFECT_ALLOW && r.effect() != v1::RULE_EFFECT_DENY) {
      return InvalidField(f, "effect must be ALLOW or DENY");
    }
    if (r.action() != v1::RULE_ACTION_PUBLISH && r.action() != v1::RULE_ACTION_SUBSCRIBE &&
        r.action() != v1::RULE_ACTION_ALL) {
      return InvalidField(f, "action must be PUBLISH, SUBSCRIBE or ALL");
    }
    if (r.topic_filter().empty() || r.topic_filter().size() > Limits::kMaxTopicFilterLength) {
      return InvalidField(
          f, absl::StrCat("topic_filter must be 1 to ", Limits::kMaxTopicFilterLength, " bytes"));
    }
    if (r.topic_filter().find('\0') != std::string::npos) {
      return InvalidField(f, "topic_filter may not contain NUL");
    }
    if (!r.exact()) {
      // MQTT filter syntax: a malformed filter means different things to different
      // matchers (one read `#/status` as every topic, another as none).
      const std::vector<absl::string_view> levels = absl::StrSplit(r.topic_filter(), '/');
      for (size_t l = 0; l < levels.size(); ++l) {
        if (levels[l].find('#') != absl::string_view::npos &&
            (levels[l] != "#" || l + 1 != levels.size())) {
          return InvalidField(f,
                              "topic_filter: '#' must be alone in the last level (set exact for "
                              "a literal filter)");
        }
        if (levels[l].find('+') != absl::string_view::npos && levels[l] != "+") {
          return InvalidField(
              f, "topic_filter: '+' must be alone in its level (set exact for a literal filter)");
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDisplayName(absl::string_view field, absl::string_view name) {
  if (name.size() > Limits::kMaxDisplayNameLength) {
    return InvalidField(field,
                        absl::StrCat("longer than ", Limits::kMaxDisplayNameLength, " bytes"));
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidField(field, "may not contain control characters");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePemSize(absl::string_view field, absl::string_view pem) {
  if (pem.empty()) return InvalidField(field, "is required");
  if (pem.size() > Limits::kMaxCertificatePemBytes) {
    return InvalidField(field,
                        absl::StrCat("larger than ", Limits::kMaxCertificatePemBytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ValidateBatchSize(absl::string_view field, size_t n) {
  if (n == 0) return InvalidField(field, "is empty");
  if (n > Limits::kMaxBatchSize) {
    return InvalidField(field, absl::StrCat("more than ", Limits::kMaxBatchSize, " items"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePageSize(absl::string_view field, int32_t page_size, int32_t* effective) {
  if (page_size < 0 || page_size > Limits::kMaxPageSize) {
    return InvalidField(field, absl::StrCat("must be 0 to ", Limits::kMaxPageSize));
  }
  *effective = page_size == 0 ? Limits::kDefaultPageSize : page_size;
  return absl::OkStatus();
}

absl::Status ValidateTenant(const v1::Tenant& tenant) {
  absl::Status s = ValidateId("tenant.id", tenant.id());
  if (!s.ok()) return s;
  s = ValidateDisplayName("tenant.display_name", tenant.display_name());
  if (!s.ok()) return s;
  if (tenant.hub_host().size() > Limits::kMaxHostLength) {
    return InvalidField("tenant.hub_host", "longer than 253 characters");
  }
  for (char c : tenant.hub_host()) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
      return InvalidField("tenant.hub_host", "must be a DNS host name");
    }
  }
  if (static_cast<size_t>(tenant.policies_size()) > Limits::kMaxPolicies) {
    return InvalidField("tenant.policies", "more than 16 policies");
  }
  for (int i = 0; i < tenant.policies_size(); ++i) {
    const v1::SharedAccessPolicy& p = tenant.policies(i);
    std::string base = absl::StrCat("tenant.policies[", i, "]");
    s = ValidateId(base + ".name", p.name());
    if (!s.ok()) return s;
    s = ValidateKey(base + ".primary_key", p.primary_key());
    if (!s.ok()) return s;
    s = ValidateKey(base + ".secondary_key", p.secondary_key());
    if (!s.ok()) return s;
    for (int j = 0; j < i; ++j) {
      if (tenant.policies(j).name() == p.name()) {
        return InvalidField(base + ".name", "duplicate policy name");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateProduct(const v1::Product& product) {
  absl::Status s = ValidateId("product.tenant_id", product.tenant_id());
  if (!s.ok()) return s;
  s = ValidateId("product.product_key", product.product_key());
  if (!s.ok()) return s;
  s = ValidateDisplayName("product.display_name", product.display_name());
  if (!s.ok()) return s;
  if (!product.product_secret().empty()) {
    s = ValidateKey("product.product_secret", product.product_secret());
    if (!s.ok()) return s;
  }
  if (static_cast<size_t>(product.allowed_credential_types_size()) > Limits::kMaxCredentialTypes) {
    return InvalidField("product.allowed_credential_types", "too many entries");
  }
  for (int t : product.allowed_credential_types()) {
    if (t == v1::CREDENTIAL_TYPE_UNSPECIFIED || !v1::CredentialType_IsValid(t)) {
      return InvalidField("product.allowed_credential_types", "unknown credential type");
    }
  }
  return ValidateRules("product.default_rules", product.default_rules());
}

absl::Status ValidateDevice(const v1::Device& device) {
  absl::Status s = ValidateId("device.tenant_id", device.tenant_id());
  if (!s.ok()) return s;
  s = ValidateId("device.device_id", device.device_id());
  if (!s.ok()) return s;
  s = ValidateId("device.product_key", device.product_key());
  if (!s.ok()) return s;
  if (device.status() != v1::DEVICE_STATUS_UNSPECIFIED &&
      !v1::DeviceStatus_IsValid(device.status())) {
    return InvalidField("device.status", "unknown status");
  }
  s = ValidateTags("device.tags", device.tags());
  if (!s.ok()) return s;
  s = ValidateRules("device.rules", device.rules());
  if (!s.ok()) return s;
  if (!device.enrollment_group_id().empty()) {
    s = ValidateId("device.enrollment_group_id", device.enrollment_group_id());
    if (!s.ok()) return s;
  }
  const v1::DeviceCredentials& c = device.credentials();
  const v1::SymmetricKey& k = c.symmetric_key();
  if (!k.primary_key().empty() || !k.secondary_key().empty()) {
    s = ValidateKey("device.credentials.symmetric_key.primary_key", k.primary_key());
    if (!s.ok()) return s;
    s = ValidateKey("device.credentials.symmetric_key.secondary_key", k.secondary_key());
    if (!s.ok()) return s;
  }
  if (!c.primary_thumbprint().empty()) {
    s = ValidateThumbprint("device.credentials.primary_thumbprint", c.primary_thumbprint());
    if (!s.ok()) return s;
  }
  if (!c.secondary_thumbprint().empty()) {
    s = ValidateThumbprint("device.credentials.secondary_thumbprint", c.secondary_thumbprint());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateEnrollmentGroup(const v1::EnrollmentGroup& group) {
  absl::Status s = ValidateId("group.tenant_id", group.tenant_id());
  if (!s.ok()) return s;
  s = ValidateId("group.id", group.id());
  if (!s.ok()) return s;
  s = ValidateId("group.product_key", group.product_key());
  if (!s.ok()) return s;
  if (!group.group_key().empty()) {
    s = ValidateKey("group.group_key", group.group_key());
    if (!s.ok()) return s;
  }
  return ValidateRules("group.initial_rules", group.initial_rules());
}

absl::Status ValidateCaCertificate(const v1::CaCertificate& ca) {
  absl::Status s = ValidateId("ca.tenant_id", ca.tenant_id());
  if (!s.ok()) return s;
  s = ValidatePemSize("ca.certificate_pem", ca.certificate_pem());
  if (!s.ok()) return s;
  if (ca.status() != v1::CA_STATUS_UNSPECIFIED && !v1::CaStatus_IsValid(ca.status())) {
    return InvalidField("ca.status", "unknown status");
  }
  if (ca.jit_registration() || !ca.jit_product_key().empty()) {
    s = ValidateId("ca.jit_product_key", ca.jit_product_key());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace iotauth::registry
