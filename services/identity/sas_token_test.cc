#include "services/identity/sas_token.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth::identity {
namespace {

using iotauth::identity::v1::DENY_REASON_BAD_SIGNATURE;
using iotauth::identity::v1::DENY_REASON_EXPIRED;

constexpr char kVectorToken[] =
    "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345";
const std::string kVectorKey = "password";  // base64 cGFzc3dvcmQ=

// Published vector (Azure IoT Node SDK unit test).
TEST(SasTokenTest, PublishedVectorGeneratesExactToken) {
  auto token = MakeSasToken("uri", "cGFzc3dvcmQ=", absl::FromUnixSeconds(12345));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, kVectorToken);
}

TEST(SasTokenTest, PublishedVectorParsesAndVerifies) {
  auto t = ParseSasToken(kVectorToken);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->resource_raw, "uri");
  EXPECT_EQ(t->resource, "uri");
  EXPECT_EQ(t->expiry_unix, 12345);
  EXPECT_EQ(crypto::Base64Encode(t->signature()), "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk=");
  EXPECT_FALSE(t->has_key_name);
  auto v = VerifySas(*t, {kVectorKey, ""}, absl::FromUnixSeconds(12000), absl::ZeroDuration());
  EXPECT_TRUE(v.verdict.ok());
  EXPECT_EQ(v.slot, KeySlot::kPrimary);
}

TEST(SasTokenTest, FieldsInAnyOrderAndCaseInsensitiveNames) {
  auto t = ParseSasToken(
      "SharedAccessSignature SE=12345&Sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3d&sR=uri");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(
      VerifySas(*t, {kVectorKey, ""}, absl::FromUnixSeconds(1), absl::ZeroDuration()).verdict.ok());
}

TEST(SasTokenTest, SignedStringIsRawSr) {
  // The encoded sr is what is signed: a token whose sr differs only in percent-encoding
  // case does not verify with the other's signature.
  auto token = MakeSasToken("hub.example/devices/d1", "cGFzc3dvcmQ=", absl::FromUnixSeconds(99));
  ASSERT_TRUE(token.ok());
  EXPECT_NE(token->find("sr=hub.example%2Fdevices%2Fd1&"), std::string::npos) << *token;
  auto t = ParseSasToken(*token);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->resource, "hub.example/devices/d1");
  EXPECT_TRUE(
      VerifySas(*t, {kVectorKey, ""}, absl::FromUnixSeconds(1), absl::ZeroDuration()).verdict.ok());
  std::string lower = *token;
  lower.replace(lower.find("%2F"), 3, "%2f");
  auto t2 = ParseSasToken(lower);
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(t2->resource, t->resource);
  EXPECT_EQ(VerifySas(*t2, {kVectorKey, ""}, absl::FromUnixSeconds(1), absl::ZeroDuration())
                .verdict.reason,
            DENY_REASON_BAD_SIGNATURE);
}

TEST(SasTokenTest, PolicyName) {
  auto token = MakeSasToken("hub/devices/d", "cGFzc3dvcmQ=", absl::FromUnixSeconds(99), "svc");
  ASSERT_TRUE(token.ok());
  auto t = ParseSasToken(*token);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->has_key_name);
  EXPECT_EQ(t->key_name, "svc");
}

// SDKs that always append "&skn=" + key name (the Azure IoT C SDK) send an empty one
// for device-scoped tokens: the same token as without it.
TEST(SasTokenTest, EmptyPolicyNameIsDeviceScoped) {
  // The token views its input: the strings outlive it.
  const std::string with_empty_skn = std::string(kVectorToken) + "&skn=";
  auto t = ParseSasToken(with_empty_skn);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->has_key_name);
  EXPECT_TRUE(
      VerifySas(*t, {kVectorKey, ""}, absl::FromUnixSeconds(1), absl::ZeroDuration()).verdict.ok());
  const std::string vector(kVectorToken);
  const size_t sig = vector.find("sig=");
  const std::string skn_first = "SharedAccessSignature skn=&sr=uri&se=12345&" +
                                vector.substr(sig, vector.find('&', sig) - sig);
  auto first = ParseSasToken(skn_first);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->has_key_name);
}

TEST(SasTokenTest, LastRepresentableExpiry) {
  auto t = ParseSasToken(
      "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&"
      "se=253402300799");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->expiry_unix, 253402300799);
}

TEST(SasTokenTest, PrimaryThenSecondary) {
  auto t = ParseSasToken(kVectorToken);
  ASSERT_TRUE(t.ok());
  const absl::Time now = absl::FromUnixSeconds(1);
  auto v = VerifySas(*t, {"other-key", kVectorKey}, now, absl::ZeroDuration());
  EXPECT_TRUE(v.verdict.ok());
  EXPECT_EQ(v.slot, KeySlot::kSecondary);
  v = VerifySas(*t, {"other-key", "another"}, now, absl::ZeroDuration());
  EXPECT_EQ(v.verdict.reason, DENY_REASON_BAD_SIGNATURE);
  EXPECT_EQ(v.slot, KeySlot::kNone);
  v = VerifySas(*t, {"", ""}, now, absl::ZeroDuration());
  EXPECT_EQ(v.verdict.reason, DENY_REASON_BAD_SIGNATURE);
}

TEST(SasTokenTest, ExpiryAndSkew) {
  auto t = ParseSasToken(kVectorToken);
  ASSERT_TRUE(t.ok());
  const SasKeyPair keys{kVectorKey, ""};
  EXPECT_TRUE(VerifySas(*t, keys, absl::FromUnixSeconds(12345), absl::ZeroDuration()).verdict.ok());
  EXPECT_EQ(VerifySas(*t, keys, absl::FromUnixSeconds(12346), absl::ZeroDuration()).verdict.reason,
            DENY_REASON_EXPIRED);
  EXPECT_TRUE(
      VerifySas(*t, keys, absl::FromUnixSeconds(12345 + 300), absl::Minutes(5)).verdict.ok());
  EXPECT_EQ(
      VerifySas(*t, keys, absl::FromUnixSeconds(12345 + 301), absl::Minutes(5)).verdict.reason,
      DENY_REASON_EXPIRED);
}

TEST(SasTokenTest, TamperedFieldsDoNotVerify) {
  const SasKeyPair keys{kVectorKey, ""};
  for (const char* token : {
           "SharedAccessSignature "
           "sr=urj&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345",
           "SharedAccessSignature "
           "sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12346",
           "SharedAccessSignature "
           "sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhg%3D&se=12345",
       }) {
    auto t = ParseSasToken(token);
    ASSERT_TRUE(t.ok()) << token;
    EXPECT_EQ(VerifySas(*t, keys, absl::FromUnixSeconds(1), absl::ZeroDuration()).verdict.reason,
              DENY_REASON_BAD_SIGNATURE)
        << token;
  }
}

struct MalformedCase {
  const char* name;
  std::string token;
  const char* message_part;
};

TEST(SasTokenTest, MalformedTokensAreRejectedWithReason) {
  const std::string sig = "sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D";
  const MalformedCase cases[] = {
      {"no prefix", "sr=uri&" + sig + "&se=1", "does not start"},
      {"lowercase prefix", "sharedaccesssignature sr=uri&" + sig + "&se=1", "does not start"},
      {"missing sr", "SharedAccessSignature " + sig + "&se=1", "lacks 'sr'"},
      {"missing sig", "SharedAccessSignature sr=uri&se=1", "lacks 'sig'"},
      {"missing se", "SharedAccessSignature sr=uri&" + sig, "lacks 'se'"},
      {"duplicate sr", "SharedAccessSignature sr=uri&SR=uri&" + sig + "&se=1",
       "repeats field 'sr'"},
      {"unknown field", "SharedAccessSignature sr=uri&" + sig + "&se=1&x=y", "unknown field"},
      {"empty value", "SharedAccessSignature sr=&" + sig + "&se=1", "'sr' is empty"},
      {"no equals", "SharedAccessSignature sr&" + sig + "&se=1", "name=value"},
      {"trailing amp", "SharedAccessSignature sr=uri&" + sig + "&se=1&", "name=value"},
      {"bad percent", "SharedAccessSignature sr=u%2&" + sig + "&se=1", "percent"},
      {"bad percent hex", "SharedAccessSignature sr=u%zzri&" + sig + "&se=1", "percent"},
      {"encoded NUL", "SharedAccessSignature sr=u%00ri&" + sig + "&se=1", "control"},
      {"sig not base64", "SharedAccessSignature sr=uri&sig=***&se=1", "base64"},
      {"sig bad char",
       "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCD*k%3D&se=1",
       "base64"},
      {"sig non-canonical bits",
       "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhl%3D&se=1",
       "base64"},
      {"sig bad percent",
       "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3&se=1",
       "base64"},
      {"sig unpadded",
       "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk&se=1",
       "base64"},
      {"sig wrong size", "SharedAccessSignature sr=uri&sig=cGFzc3dvcmQ%3D&se=1", "32-byte"},
      {"se negative", "SharedAccessSignature sr=uri&" + sig + "&se=-1", "decimal"},
      {"se hex", "SharedAccessSignature sr=uri&" + sig + "&se=0x10", "decimal"},
      {"se huge", "SharedAccessSignature sr=uri&" + sig + "&se=9999999999999999999", "too large"},
      {"se past 9999", "SharedAccessSignature sr=uri&" + sig + "&se=253402300800", "year 9999"},
      {"se 18 digits", "SharedAccessSignature sr=uri&" + sig + "&se=999999999999999999",
       "year 9999"},
      {"empty skn twice",
       "SharedAccessSignature sr=uri&" + sig + "&skn=&SKN=", "repeats field 'skn'"},
      {"too many fields", "SharedAccessSignature sr=uri&" + sig + "&se=1&skn=a&skn=b",
       "too many fields"},
      {"oversized", "SharedAccessSignature sr=" + std::string(5000, 'a') + "&" + sig + "&se=1",
       "exceeds"},
  };
  for (const auto& c : cases) {
    auto t = ParseSasToken(c.token);
    ASSERT_FALSE(t.ok()) << c.name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(t.status().message().find(c.message_part), absl::string_view::npos)
        << c.name << ": " << t.status().message();
    // Never echo the signature.
    EXPECT_EQ(t.status().message().find("kcWx"), absl::string_view::npos) << c.name;
  }
}

TEST(SasTokenTest, Audience) {
  auto a = ParseSasAudience("MyHub.Azure-Devices.net/devices/dev-1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "MyHub.Azure-Devices.net");  // as it appears
  EXPECT_EQ(a->device_id, "dev-1");
  EXPECT_EQ(a->module_id, "");
  a = ParseSasAudience("hub/devices/dev-1/modules/m1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->module_id, "m1");
  for (const char* bad :
       {"hub", "hub/", "/devices/d", "hub/devices/", "hub/device/d", "hub/devices/d/",
        "hub/devices/d/modules/", "hub/devices/d/x/m", "hub/devices/d/modules/m/x"}) {
    EXPECT_FALSE(ParseSasAudience(bad).ok()) << bad;
  }
}

TEST(SasTokenTest, AudienceIdsFollowTheDeviceIdRule) {
  // Every character a registered id may have.
  auto a = ParseSasAudience("hub/devices/Az09-.%_*?!(),:=@$'/modules/m-1.x");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->device_id, "Az09-.%_*?!(),:=@$'");
  // The resource is URL-decoded token bytes: control characters, spaces, non-ASCII
  // and bytes that are not UTF-8 are refused (they would reach the response and the
  // audit event, whose strings must be UTF-8), and so is an id over 128 characters.
  for (const std::string& bad :
       {std::string("hub/devices/sn-0\xF1"
                    "07"),
        std::string("hub/devices/caf\xC3\xA9"), std::string("hub/devices/a b"),
        std::string("hub/devices/a\tb"), std::string("hub/devices/a#b"),
        std::string("hub/devices/d/modules/m\x80"),
        std::string("hub/devices/") + std::string(129, 'd')}) {
    auto r = ParseSasAudience(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(r.status().message(), " id is not 1-128 characters of "))
        << r.status();
  }
  EXPECT_TRUE(ParseSasAudience("hub/devices/" + std::string(128, 'd')).ok());
}

TEST(SasTokenTest, UrlCoding) {
  EXPECT_EQ(UrlEncode("a b/c+d=e~"), "a%20b%2Fc%2Bd%3De~");
  auto d = UrlDecode("a%20b%2fc+d");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "a b/c+d");  // `+` is literal
  EXPECT_FALSE(UrlDecode("%").ok());
  EXPECT_FALSE(UrlDecode("%4").ok());
  EXPECT_FALSE(UrlDecode("%1f").ok());
  EXPECT_FALSE(UrlDecode(absl::string_view("a\nb")).ok());
}

TEST(SasTokenTest, MakeRejectsBadKey) {
  EXPECT_FALSE(MakeSasToken("uri", "not base64!", absl::FromUnixSeconds(1)).ok());
}

}  // namespace
}  // namespace iotauth::identity
