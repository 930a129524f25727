#include "services/identity/dps.h"

#include "gtest/gtest.h"

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

TEST(DpsTest, BadGroupKey) {
  auto key = DeriveDeviceKey("not-base64", "reg");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace iotauth::identity
