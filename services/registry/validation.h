// Input rules of the device registry. Every rejection is INVALID_ARGUMENT whose
// message starts with the offending field ("device.device_id: ...") and carries a
// stable reason (e.g. INVALID_DEVICE_ID) readable with ReasonOf. Messages never
// echo a key or any other secret.
//
// Id rule (Azure IoT Hub's): 1 to 128 characters, each one of
//   A-Z a-z 0-9 - . % _ * ? ! ( ) , : = @ $ '
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/map.h"
#include "google/protobuf/repeated_field.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/common/ids.h"

namespace iotauth::registry {

// Size bounds. Changing one is a contract change: document it in the README.
struct Limits {
  static constexpr size_t kMaxIdLength = ::iotauth::kMaxIdLength;
  static constexpr size_t kMaxDisplayNameLength = 256;
  static constexpr size_t kMaxHostLength = 253;
  static constexpr size_t kMinKeyBytes = 16;
  static constexpr size_t kMaxKeyBytes = 64;
  static constexpr size_t kMaxTags = 64;
  static constexpr size_t kMaxTagKeyLength = 128;
  static constexpr size_t kMaxTagValueLength = 512;
  static constexpr size_t kMaxRules = 100;
  static constexpr size_t kMaxTopicFilterLength = 512;
  static constexpr size_t kMaxPolicies = 16;
  static constexpr size_t kMaxCredentialTypes = 8;
  static constexpr size_t kMaxCertificatePemBytes = 16 * 1024;
  // Devices in one ImportDevicesRequest message / one store batch.
  static constexpr size_t kMaxBatchSize = 10000;
  static constexpr int32_t kDefaultPageSize = 100;
  static constexpr int32_t kMaxPageSize = 1000;
};

// INVALID_ARGUMENT "<field>: <detail>" with reason INVALID_<LAST FIELD SEGMENT>.
absl::Status InvalidField(absl::string_view field, absl::string_view detail);
// The stable reason of `status`: its payload if any, else its code name
// (e.g. ALREADY_EXISTS). Empty for OK.
std::string ReasonOf(const absl::Status& status);

// Non-empty id under the Azure rule above.
absl::Status ValidateId(absl::string_view field, absl::string_view id);
// Base64 (strict) of 16..64 bytes.
absl::Status ValidateKey(absl::string_view field, absl::string_view base64_key);
// Exactly 64 hex digits (either case; store lowercase, see NormalizeThumbprint).
absl::Status ValidateThumbprint(absl::string_view field, absl::string_view thumbprint);
std::string NormalizeThumbprint(absl::string_view thumbprint);
// At most kMaxTags tags, keys 1..kMaxTagKeyLength chars under the id rule, values
// at most kMaxTagValueLength printable chars (no control characters).
absl::Status ValidateTags(absl::string_view field,
                          const google::protobuf::Map<std::string, std::string>& tags);
// At most kMaxRules rules, each with an effect, an action and a non-empty topic
// filter of at most kMaxTopicFilterLength bytes without NUL.
absl::Status ValidateRules(absl::string_view field,
                           const google::protobuf::RepeatedPtrField<v1::AccessRule>& rules);
absl::Status ValidateDisplayName(absl::string_view field, absl::string_view name);
absl::Status ValidatePemSize(absl::string_view field, absl::string_view pem);
// 1..kMaxBatchSize items.
absl::Status ValidateBatchSize(absl::string_view field, size_t n);
// 0 (default) or 1..kMaxPageSize; returns the effective page size.
absl::Status ValidatePageSize(absl::string_view field, int32_t page_size, int32_t* effective);

// Whole-resource checks for create and (after merging a field mask) update.
// Output-only fields (times, etag) are ignored.
absl::Status ValidateTenant(const v1::Tenant& tenant);
absl::Status ValidateProduct(const v1::Product& product);
absl::Status ValidateDevice(const v1::Device& device);
absl::Status ValidateEnrollmentGroup(const v1::EnrollmentGroup& group);
// Checks ids, sizes and the JIT fields; PEM parsing is the service's.
absl::Status ValidateCaCertificate(const v1::CaCertificate& ca);

}  // namespace iotauth::registry
