#include "services/identity/dps.h"

#include "services/common/crypto.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {

absl::StatusOr<std::string> DeriveDeviceKeyRaw(absl::string_view group_key_raw,
                                               absl::string_view registration_id) {
  MacValue mac;
  absl::Status s = HmacCompute(HmacAlgorithm::kSha256, group_key_raw, registration_id, &mac);
  if (!s.ok()) return s;
  return std::string(mac.view());
}

bool DeriveDeviceKeyRaw(const PrecomputedHmacSha256& group_key, absl::string_view registration_id,
                        MacValue* out) {
  return group_key.Compute({registration_id}, out);
}

absl::StatusOr<std::string> DeriveDeviceKey(absl::string_view group_key_base64,
                                            absl::string_view registration_id) {
  auto key = crypto::Base64Decode(group_key_base64);
  if (!key.ok()) return absl::InvalidArgumentError("group key is not valid base64");
  auto raw = DeriveDeviceKeyRaw(*key, registration_id);
  if (!raw.ok()) return raw.status();
  return crypto::Base64Encode(*raw);
}

}  // namespace iotauth::identity
