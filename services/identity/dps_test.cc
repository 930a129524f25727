#include "services/identity/dps.h"

#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth::identity {
namespace {

// Published vector (Azure DPS documentation, symmetric key group enrollment).
TEST(DpsTest, PublishedVector) {
  auto key = DeriveDeviceKey(
      "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
      "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
}

// The scheduled form the identity cache uses gives the same key.
TEST(DpsTest, PublishedVectorWithTheGroupKeyScheduledOnce) {
  auto raw = crypto::Base64Decode(
      "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==");
  ASSERT_TRUE(raw.ok());
  const PrecomputedHmacSha256 group_key = PrecomputedHmacSha256::ForKey(*raw);
  MacValue derived;
  ASSERT_TRUE(DeriveDeviceKeyRaw(group_key, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", &derived));
  EXPECT_EQ(crypto::Base64Encode(derived.view()), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
  // Each registration id gets its own key from the same schedule.
  MacValue other;
  ASSERT_TRUE(DeriveDeviceKeyRaw(group_key, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f7", &other));
  EXPECT_NE(other.view(), derived.view());
  auto again = DeriveDeviceKeyRaw(*raw, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f7");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, other.view());
}

TEST(DpsTest, NoScheduledKeyDerivesNothing) {
  MacValue derived;
  EXPECT_FALSE(DeriveDeviceKeyRaw(PrecomputedHmacSha256(), "reg", &derived));
}

TEST(DpsTest, BadGroupKey) {
  auto key = DeriveDeviceKey("not-base64", "reg");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iotauth::identity
