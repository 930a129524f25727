#include "services/common/crypto.h"

#include "gtest/gtest.h"

namespace iotauth::crypto {
namespace {

TEST(Base64Test, RoundTripsEveryLength) {
  for (size_t n = 0; n < 40; ++n) {
    std::string data = *RandomBytes(n);
    auto decoded = Base64Decode(Base64Encode(data));
    ASSERT_TRUE(decoded.ok()) << n;
    EXPECT_EQ(*decoded, data);
  }
}

TEST(Base64Test, RejectsMalformed) {
  for (const char* bad :
       {"abc", "ab=c", "a===", "cGFzc3dvcmQ", "cGFz c3dv", "cGFzc3dvcmR=", "====", "ab!d"}) {
    EXPECT_FALSE(Base64Decode(bad).ok()) << bad;
  }
  EXPECT_EQ(*Base64Decode("cGFzc3dvcmQ="), "password");
}

TEST(HexTest, RoundTripsAndRejects) {
  EXPECT_EQ(HexEncode("\x01\xab"), "01ab");
  EXPECT_EQ(*HexDecode("01AB"), "\x01\xab");
  EXPECT_FALSE(HexDecode("0").ok());
  EXPECT_FALSE(HexDecode("0g").ok());
}

TEST(ConstantTimeEqualsTest, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(HmacTest, AzureSdkVector) {
  // Azure IoT Node SDK: key "password", message "uri\n12345".
  auto mac = Hmac(HmacAlgorithm::kSha256, "password", "uri\n12345");
  ASSERT_TRUE(mac.ok());
  EXPECT_EQ(Base64Encode(*mac), "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk=");
}

TEST(Sha256Test, KnownDigest) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, TwoPartsHashLikeTheirConcatenation) {
  // FIPS 180-2 two-block message, split across the parts at every position.
  const std::string msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    unsigned char out[kSha256Bytes];
    ASSERT_TRUE(
        Sha256Into(absl::string_view(msg).substr(0, cut), absl::string_view(msg).substr(cut), out));
    EXPECT_EQ(HexEncode(absl::string_view(reinterpret_cast<const char*>(out), sizeof(out))),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        << "split at " << cut;
  }
}

}  // namespace
}  // namespace iotauth::crypto
