#include "clients/device/codec.h"

#include "gtest/gtest.h"

namespace iotauth::device {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  const std::pair<const char*, const char*> kCases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : kCases) {
    EXPECT_EQ(Base64Encode(plain), encoded);
    auto decoded = Base64Decode(encoded);
    ASSERT_TRUE(decoded.ok()) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64Test, IgnoresSurroundingWhitespace) {
  auto decoded = Base64Decode("  cGFzc3dvcmQ=\n");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, "password");
}

TEST(Base64Test, RejectsMalformed) {
  for (const char* bad : {"Zg=", "Zm9", "Z===", "Zm=v", "Zh==", "Zm9w=", "Zm!v", "Zm8=Zm8="}) {
    EXPECT_FALSE(Base64Decode(bad).ok()) << bad;
  }
}

TEST(UrlEncodeTest, EncodesEverythingButUnreserved) {
  EXPECT_EQ(UrlEncode("hub.azure-devices.net/devices/dev_1~x"),
            "hub.azure-devices.net%2Fdevices%2Fdev_1~x");
  EXPECT_EQ(UrlEncode("a+b/c="), "a%2Bb%2Fc%3D");
  EXPECT_EQ(UrlEncode("!*'() %?,:@$&"), "%21%2A%27%28%29%20%25%3F%2C%3A%40%24%26");
  EXPECT_EQ(UrlEncode("\xC3\xA9"), "%C3%A9");
}

TEST(HexTest, Lowercase) { EXPECT_EQ(HexEncode(std::string("\x00\xAB\x7f", 3)), "00ab7f"); }

}  // namespace
}  // namespace iotauth::device
