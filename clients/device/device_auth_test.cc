#include "clients/device/device_auth.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace iotauth::device {
namespace {

// Azure IoT Node SDK unit-test vector.
TEST(SasTest, PublishedSignatureVector) {
  auto sig = SasSignature("cGFzc3dvcmQ=", "uri\n12345");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(*sig, "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk=");
}

TEST(SasTest, PublishedTokenVector) {
  auto token = MakeSasTokenForResource("uri", "cGFzc3dvcmQ=", 12345);
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token,
            "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D"
            "&se=12345");
}

// Expected values computed independently with Python's hmac and
// urllib.parse.quote(safe=""), which is what Azure's Python SDK does.
TEST(SasTest, DeviceToken) {
  auto token = MakeSasToken("myhub.azure-devices.net", "dev-1",
                            "cGFzc3dvcmQ=", absl::FromUnixSeconds(1700000000));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1"
            "&sig=VADOGKb5x9PkBHflO9MrNPoSa98D2siAgpMqy0WF23g%3D&se=1700000000");
}

TEST(SasTest, ModuleTokenWithPolicy) {
  auto token = MakeSasToken(
      "myhub.azure-devices.net", "dev-1", "m1",
      "cGFzc3dvcmQ=", absl::FromUnixSeconds(1700000000) + absl::Milliseconds(999), "device gw");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1%2Fmodules%2Fm1"
            "&sig=6K5mlj3wkFw%2BpRXKE587JpzEkTrUtXFYzjHaJ%2BYnOlc%3D&se=1700000000"
            "&skn=device%20gw");
}

TEST(SasTest, RejectsBadInput) {
  const absl::Time t = absl::FromUnixSeconds(1700000000);
  EXPECT_EQ(MakeSasToken("", "d", "cGFzc3dvcmQ=", t).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeSasToken("h", "", "cGFzc3dvcmQ=", t).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_key = MakeSasToken("h", "d", "not base64!", t);
  EXPECT_EQ(bad_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_key.status().message().find("not base64!"), std::string::npos);
  EXPECT_FALSE(MakeSasToken("h", "d", "", t).ok());
  EXPECT_FALSE(MakeSasToken("h", "d", "cGFzc3dvcmQ=", absl::UnixEpoch()).ok());
  // An `se` no server reads (over 18 digits), or an infinite expiry.
  EXPECT_FALSE(MakeSasToken("h", "d", "cGFzc3dvcmQ=", absl::InfiniteFuture()).ok());
  EXPECT_FALSE(
      MakeSasToken("h", "d", "cGFzc3dvcmQ=", absl::FromUnixSeconds(kMaxSasExpiry + 1)).ok());
  EXPECT_TRUE(MakeSasToken("h", "d", "cGFzc3dvcmQ=", absl::FromUnixSeconds(kMaxSasExpiry)).ok());
}

TEST(SasTest, MqttConnectFields) {
  auto f = SasMqttConnectFields("hub.example", "dev-1", "", "TOKEN");
  EXPECT_EQ(f.client_id, "dev-1");
  EXPECT_EQ(f.username, "hub.example/dev-1/?api-version=2021-04-12");
  EXPECT_EQ(f.password, "TOKEN");
  auto m = SasMqttConnectFields("hub.example", "dev-1", "m1", "TOKEN");
  EXPECT_EQ(m.client_id, "dev-1/m1");
  EXPECT_EQ(m.username, "hub.example/dev-1/m1/?api-version=2021-04-12");
}

TripleParams PublishedTriple() {
  TripleParams p;
  p.product_key = "a14Xib5kdYd";
  p.device_name = "light1983432";
  p.device_secret = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq";
  p.client_id = "SN1928339";
  p.timestamp_ms = 1539421321846;
  return p;
}

// Alibaba IoT documentation vector.
TEST(TripleTest, PublishedHmacSha1Vector) {
  TripleParams p = PublishedTriple();
  p.sign_method = TripleSignMethod::kHmacSha1;
  EXPECT_EQ(TripleSignContent(p),
            "clientIdSN1928339deviceNamelight1983432productKeya14Xib5kdYdtimestamp1539421321846");
  auto sig = TripleSignature(p);
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(*sig, "b2488041f64f425016b467ee1c94959ebd592ad1");
}

TEST(TripleTest, OtherSignMethods) {
  TripleParams p = PublishedTriple();
  EXPECT_EQ(*TripleSignature(p),
            "e6ad631b665206c0bf2efbe1b48ac4d84ff2a61fe89bac30065e17975a482c40");
  p.sign_method = TripleSignMethod::kHmacMd5;
  EXPECT_EQ(*TripleSignature(p), "56e22c4a903e6035658c6694db63d57a");
}

TEST(TripleTest, ConnectFields) {
  TripleParams p = PublishedTriple();
  p.sign_method = TripleSignMethod::kHmacSha1;
  auto f = TripleMqttConnectFields(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->client_id, "SN1928339|securemode=2,signmethod=hmacsha1,timestamp=1539421321846|");
  EXPECT_EQ(f->username, "light1983432&a14Xib5kdYd");
  EXPECT_EQ(f->password, "b2488041f64f425016b467ee1c94959ebd592ad1");
}

TEST(TripleTest, NoTimestampAndDefaultClientId) {
  TripleParams p = PublishedTriple();
  p.client_id.clear();
  p.timestamp_ms.reset();
  p.securemode = 3;
  auto f = TripleMqttConnectFields(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->client_id, "light1983432|securemode=3,signmethod=hmacsha256|");
  EXPECT_EQ(f->password, "daef1458c55615e7a6420747d53b58fb1ad162b2ea8a9fee47e70185d0959fe0");
}

TEST(TripleTest, RejectsBadInput) {
  struct Case {
    const char* name;
    void (*mutate)(TripleParams&);
  };
  const Case kCases[] = {
      {"empty product key", [](TripleParams& p) { p.product_key.clear(); }},
      {"empty device name", [](TripleParams& p) { p.device_name.clear(); }},
      {"empty secret", [](TripleParams& p) { p.device_secret.clear(); }},
      {"pipe in client id", [](TripleParams& p) { p.client_id = "a|b"; }},
      {"ampersand in device name", [](TripleParams& p) { p.device_name = "a&b"; }},
      {"bad securemode", [](TripleParams& p) { p.securemode = 1; }},
      {"negative timestamp", [](TripleParams& p) { p.timestamp_ms = -1; }},
      {"16-digit timestamp", [](TripleParams& p) { p.timestamp_ms = kMaxTripleTimestampMs + 1; }},
  };
  for (const Case& c : kCases) {
    TripleParams p = PublishedTriple();
    c.mutate(p);
    auto f = TripleMqttConnectFields(p);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
  }
}

TEST(TripleTest, ParseSignMethod) {
  EXPECT_EQ(*ParseTripleSignMethod("HmacSHA1"), TripleSignMethod::kHmacSha1);
  EXPECT_EQ(*ParseTripleSignMethod("hmacmd5"), TripleSignMethod::kHmacMd5);
  EXPECT_EQ(*ParseTripleSignMethod("hmacsha256"), TripleSignMethod::kHmacSha256);
  EXPECT_FALSE(ParseTripleSignMethod("sha256").ok());
}

TEST(EnosTest, SignatureAndFields) {
  EnosParams p;
  p.product_key = "a14Xib5kdYd";
  p.device_key = "light1983432";
  p.secret = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq";
  p.client_id = "SN1928339";
  p.timestamp_ms = 1539421321846;
  auto f = EnosMqttConnectFields(p);
  ASSERT_TRUE(f.ok()) << f.status();
  // hex(SHA-256("clientIdSN1928339deviceKeylight1983432productKeya14Xib5kdYd"
  //             "timestamp1539421321846" + secret)), computed with Python's hashlib.
  EXPECT_EQ(f->password, "ee5e39a985023f1c4d9051b928738296d7826609d2e47a79c6969557d29f38d6");
  EXPECT_EQ(f->client_id, "SN1928339|securemode=2,signmethod=sha256,timestamp=1539421321846|");
  EXPECT_EQ(f->username, "light1983432&a14Xib5kdYd");
  p.dynamic_activation = true;
  EXPECT_EQ(EnosMqttConnectFields(p)->client_id,
            "SN1928339|securemode=3,signmethod=sha256,timestamp=1539421321846|");
  p.secret.clear();
  EXPECT_FALSE(EnosSignature(p).ok());
}

// Azure DPS documentation vector.
TEST(DpsTest, PublishedDerivedKeyVector) {
  auto key = DeriveDeviceKey(
      "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
      "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
}

TEST(DpsTest, RejectsBadInput) {
  EXPECT_FALSE(DeriveDeviceKey("cGFzc3dvcmQ=", "").ok());
  EXPECT_FALSE(DeriveDeviceKey("%%%%", "r").ok());
  EXPECT_FALSE(DeriveDeviceKey("", "r").ok());
}

}  // namespace
}  // namespace iotauth::device
