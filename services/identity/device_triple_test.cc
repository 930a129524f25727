#include "services/identity/device_triple.h"

#include <string>

#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth::identity {
namespace {

constexpr char kProductKey[] = "a14Xib5kdYd";
constexpr char kDeviceName[] = "light1983432";
constexpr char kSecret[] = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq";
constexpr char kClientId[] = "SN1928339";
constexpr char kTimestamp[] = "1539421321846";

// Published vector (Alibaba IoT documentation).
TEST(DeviceTripleTest, PublishedHmacSha1Vector) {
  auto sig = ComputeTripleSignature(TripleSignMethod::kHmacSha1, kSecret,
                                    {kClientId, kDeviceName, kProductKey, kTimestamp});
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(crypto::HexEncode(*sig), "b2488041f64f425016b467ee1c94959ebd592ad1");
}

// Cross-checked with Python's hmac/hashlib over the same sorted-pairs string.
TEST(DeviceTripleTest, HmacSha256AndEnosReferenceValues) {
  auto sig = ComputeTripleSignature(TripleSignMethod::kHmacSha256, kSecret,
                                    {kClientId, kDeviceName, kProductKey, kTimestamp});
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(crypto::HexEncode(*sig),
            "e6ad631b665206c0bf2efbe1b48ac4d84ff2a61fe89bac30065e17975a482c40");
  auto enos = ComputeTripleSignature(TripleSignMethod::kSha256, kSecret,
                                     {kClientId, kDeviceName, kProductKey, kTimestamp});
  ASSERT_TRUE(enos.ok());
  EXPECT_EQ(crypto::HexEncode(*enos),
            "ee5e39a985023f1c4d9051b928738296d7826609d2e47a79c6969557d29f38d6");
}

TEST(DeviceTripleTest, MakeConnectRoundTrips) {
  auto c = MakeTripleConnect(kProductKey, kDeviceName, kSecret, kClientId,
                             TripleSignMethod::kHmacSha1, 1539421321846);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->client_id, "SN1928339|securemode=2,signmethod=hmacsha1,timestamp=1539421321846|");
  EXPECT_EQ(c->username, "light1983432&a14Xib5kdYd");
  EXPECT_EQ(c->password, "b2488041f64f425016b467ee1c94959ebd592ad1");

  auto id = ParseTripleClientId(c->client_id);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->client_id, kClientId);
  EXPECT_EQ(id->secure_mode, 2);
  EXPECT_EQ(id->sign_method, TripleSignMethod::kHmacSha1);
  EXPECT_TRUE(id->has_timestamp);
  EXPECT_EQ(id->timestamp_ms, 1539421321846);
  auto user = ParseTripleUsername(c->username);
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(user->device_name, kDeviceName);
  EXPECT_EQ(user->product_key, kProductKey);
  auto pw = ParseTriplePassword(c->password, id->sign_method);
  ASSERT_TRUE(pw.ok());
  EXPECT_TRUE(VerifyTripleSignature(
      id->sign_method, kSecret,
      {id->client_id, user->device_name, user->product_key, id->timestamp_raw}, *pw));
  EXPECT_FALSE(VerifyTripleSignature(
      id->sign_method, "wrong",
      {id->client_id, user->device_name, user->product_key, id->timestamp_raw}, *pw));
  // Uppercase hex is tolerated.
  std::string upper = c->password;
  for (char& ch : upper) ch = static_cast<char>(toupper(ch));
  EXPECT_TRUE(ParseTriplePassword(upper, id->sign_method).ok());
}

TEST(DeviceTripleTest, NoTimestampAndDefaults) {
  auto id = ParseTripleClientId("c1|securemode=3,_v=sdk-c-4.0,lan=C|");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->secure_mode, 3);
  EXPECT_EQ(id->sign_method, TripleSignMethod::kHmacSha256);
  EXPECT_FALSE(id->has_timestamp);
  auto c = MakeTripleConnect("pk", "dn", "s", "c1", TripleSignMethod::kHmacSha256, -1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->client_id, "c1|securemode=2,signmethod=hmacsha256|");
  auto again = ParseTripleClientId("c1|securemode=2,signmethod=HmacSHA256|");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sign_method, TripleSignMethod::kHmacSha256);
}

TEST(DeviceTripleTest, MalformedClientIds) {
  const std::pair<std::string, const char*> cases[] = {
      {"SN1", "lacks '|securemode"},
      {"|securemode=2|", "empty clientId"},
      {"c|securemode=2", "does not end"},
      {"c|securemode=2||", "more than two"},
      {"c|signmethod=hmacsha256|", "lacks 'securemode'"},
      {"c|securemode=1|", "must be 2 or 3"},
      {"c|securemode=2,securemode=2|", "repeats 'securemode'"},
      {"c|securemode=2,signmethod=hmacsha512|", "not supported"},
      {"c|securemode=2,signmethod=a,signmethod=b|", "not supported"},
      {"c|securemode=2,signmethod=hmacsha1,signmethod=hmacsha1|", "repeats 'signmethod'"},
      {"c|securemode=2,timestamp=|", "1 to 15"},
      {"c|securemode=2,timestamp=12a|", "decimal"},
      {"c|securemode=2,timestamp=1234567890123456|", "1 to 15"},
      {"c|securemode=2,timestamp=1,timestamp=1|", "repeats 'timestamp'"},
      {"c|securemode=2,|", "trailing ','"},
      {"c|securemode=2,novalue|", "name=value"},
      {"c|securemode=2,=x|", "name=value"},
      {std::string(200, 'c') + "|securemode=2|", "too long"},
      {std::string(2000, 'c') + "|securemode=2|", "exceeds"},
      {"c\n|securemode=2|", "control"},
      {"c|securemode=2,a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1,l=1,m=1,n=1,o=1,p=1|",
       "too many"},
  };
  for (const auto& [input, part] : cases) {
    auto id = ParseTripleClientId(input);
    ASSERT_FALSE(id.ok()) << input;
    EXPECT_NE(id.status().message().find(part), absl::string_view::npos)
        << input << ": " << id.status().message();
  }
}

TEST(DeviceTripleTest, MalformedUsernamesAndPasswords) {
  for (const char* bad : {"dn", "&pk", "dn&", "a&b&c", "dn\t&pk"}) {
    EXPECT_FALSE(ParseTripleUsername(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseTripleUsername(std::string(600, 'a') + "&pk").ok());
  EXPECT_FALSE(ParseTriplePassword("abcd", TripleSignMethod::kHmacSha256).ok());
  EXPECT_FALSE(ParseTriplePassword(std::string(64, 'g'), TripleSignMethod::kHmacSha256).ok());
  EXPECT_FALSE(ParseTriplePassword(std::string(64, 'a'), TripleSignMethod::kHmacSha1).ok());
  EXPECT_TRUE(ParseTriplePassword(std::string(32, 'a'), TripleSignMethod::kHmacMd5).ok());
}

}  // namespace
}  // namespace iotauth::identity
