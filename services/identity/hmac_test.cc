#include "services/identity/hmac.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth::identity {
namespace {

std::string Unhex(absl::string_view hex) {
  auto s = crypto::HexDecode(hex);
  EXPECT_TRUE(s.ok()) << hex;
  return s.ok() ? *s : std::string();
}

std::string Hex(const MacValue& m) { return crypto::HexEncode(m.view()); }

// RFC 4231 test case 2 (HMAC-SHA256) and RFC 2202 test case 2 (SHA-1, MD5).
TEST(HmacTest, RfcVectors) {
  MacValue mac;
  ASSERT_TRUE(
      HmacCompute(HmacAlgorithm::kSha256, "Jefe", "what do ya want for nothing?", &mac).ok());
  EXPECT_EQ(Hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha1, "Jefe", "what do ya want for nothing?", &mac).ok());
  EXPECT_EQ(Hex(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kMd5, "Jefe", "what do ya want for nothing?", &mac).ok());
  EXPECT_EQ(Hex(mac), "750c783e6ab0b503eaa86e310a5db738");
}

TEST(HmacTest, PartsEqualConcatenationAndKeyReuseIsCorrect) {
  MacValue whole;
  MacValue split;
  MacValue other;
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "k1", "hello world", &whole).ok());
  const absl::string_view parts[] = {"hello", "", " ", "world"};
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "k1", parts, &split).ok());
  EXPECT_EQ(whole.view(), split.view());
  // Alternating keys must not leak the cached key schedule into the next message.
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "k2", "hello world", &other).ok());
  EXPECT_NE(whole.view(), other.view());
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "k1", "hello world", &split).ok());
  EXPECT_EQ(whole.view(), split.view());
  // Same length, different key bytes.
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "k3", "hello world", &split).ok());
  EXPECT_NE(whole.view(), split.view());
  // Empty key is valid HMAC.
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "", "", &split).ok());
  EXPECT_EQ(Hex(split), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST(HmacTest, VerifyRejectsWrongLengthsAndBits) {
  MacValue mac;
  ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, "key", "msg", &mac).ok());
  std::string tag(mac.view());
  EXPECT_TRUE(HmacVerify(HmacAlgorithm::kSha256, "key", "msg", tag));
  EXPECT_FALSE(HmacVerify(HmacAlgorithm::kSha256, "key", "msg", tag.substr(0, 31)));
  EXPECT_FALSE(HmacVerify(HmacAlgorithm::kSha256, "key", "msg", ""));
  tag[31] ^= 1;
  EXPECT_FALSE(HmacVerify(HmacAlgorithm::kSha256, "key", "msg", tag));
  EXPECT_TRUE(HmacVerifyTruncated(HmacAlgorithm::kSha256, "key", "msg", tag.substr(0, 16), 16));
  EXPECT_FALSE(HmacVerifyTruncated(HmacAlgorithm::kSha256, "key", "msg", tag.substr(0, 9), 0));
}

std::string VectorsDir() {
  const char* env = std::getenv("IOTAUTH_VECTORS_DIR");
  return env != nullptr && *env != '\0' ? env : "/work/shared/vectors";
}

// Project Wycheproof HMAC-SHA256 vectors through the wrapper.
TEST(HmacTest, WycheproofHmacSha256) {
  const std::string path = VectorsDir() + "/wycheproof/testvectors_v1/hmac_sha256_test.json";
  std::ifstream in(path);
  if (!in) {
    GTEST_SKIP() << "Wycheproof vectors not found at " << path
                 << " (set IOTAUTH_VECTORS_DIR to the shared vectors folder)";
  }
  std::stringstream buf;
  buf << in.rdbuf();
  google::protobuf::Struct doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(buf.str(), &doc).ok());
  const auto& groups = doc.fields().at("testGroups").list_value();
  int checked = 0;
  for (const auto& g : groups.values()) {
    const auto& gf = g.struct_value().fields();
    const size_t tag_bytes = static_cast<size_t>(gf.at("tagSize").number_value()) / 8;
    for (const auto& t : gf.at("tests").list_value().values()) {
      const auto& f = t.struct_value().fields();
      const int id = static_cast<int>(f.at("tcId").number_value());
      const std::string key = Unhex(f.at("key").string_value());
      const std::string msg = Unhex(f.at("msg").string_value());
      const std::string tag = Unhex(f.at("tag").string_value());
      const std::string& result = f.at("result").string_value();
      ASSERT_EQ(tag.size(), tag_bytes) << "tcId " << id;
      const bool ok = tag_bytes == 32
                          ? HmacVerify(HmacAlgorithm::kSha256, key, msg, tag)
                          : HmacVerifyTruncated(HmacAlgorithm::kSha256, key, msg, tag, tag_bytes);
      if (result == "valid") {
        EXPECT_TRUE(ok) << "tcId " << id;
      } else if (result == "invalid") {
        EXPECT_FALSE(ok) << "tcId " << id;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(doc.fields().at("numberOfTests").number_value()));
}

}  // namespace
}  // namespace iotauth::identity
