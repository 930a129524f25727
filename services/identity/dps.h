// Azure DPS-style group enrollment: a device's symmetric key is derived from its
// enrollment group's key and its registration id, so the group key never leaves
// the factory and each device holds only its own key.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {

// Raw 32-byte device key: HMAC-SHA256(group key bytes, registration id).
// INTERNAL only if OpenSSL fails.
absl::StatusOr<std::string> DeriveDeviceKeyRaw(absl::string_view group_key_raw,
                                               absl::string_view registration_id);

// The same with the group key scheduled once (as the identity cache holds it), into
// `out`. False when `group_key` has no key.
bool DeriveDeviceKeyRaw(const PrecomputedHmacSha256& group_key, absl::string_view registration_id,
                        MacValue* out);

// base64(HMAC-SHA256(base64-decoded group key, registration id)), the form devices
// and the registry store. INVALID_ARGUMENT when `group_key_base64` is not valid base64.
absl::StatusOr<std::string> DeriveDeviceKey(absl::string_view group_key_base64,
                                            absl::string_view registration_id);

}  // namespace iotauth::identity
