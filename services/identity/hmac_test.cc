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

TEST(HmacTest, PrecomputedKeyMatchesEvpMac) {
  // RFC 4231 test case 2, then keys of every length around the block size (longer
  // keys are hashed first) and messages split into parts.
  MacValue mac;
  const absl::string_view rfc[] = {"what do ya want ", "for nothing?"};
  ASSERT_TRUE(PrecomputedHmacSha256::ForKey("Jefe").Compute(rfc, &mac));
  EXPECT_EQ(Hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  for (size_t key_len : {0, 1, 31, 32, 63, 64, 65, 131}) {
    std::string key(key_len, '\0');
    for (size_t i = 0; i < key_len; ++i) key[i] = static_cast<char>(i * 7 + 1);
    const PrecomputedHmacSha256 pre = PrecomputedHmacSha256::ForKey(key);
    for (size_t msg_len : {0, 1, 55, 56, 64, 119, 200}) {
      const std::string msg(msg_len, 'm');
      MacValue want;
      ASSERT_TRUE(HmacCompute(HmacAlgorithm::kSha256, key, msg, &want).ok());
      const absl::string_view parts[] = {absl::string_view(msg).substr(0, msg_len / 3),
                                         absl::string_view(msg).substr(msg_len / 3)};
      ASSERT_TRUE(pre.Compute(parts, &mac));
      EXPECT_EQ(Hex(mac), Hex(want)) << "key " << key_len << " msg " << msg_len;
      EXPECT_TRUE(pre.Verify(parts, want.view()));
      std::string wrong(want.view());
      wrong[0] ^= 1;
      EXPECT_FALSE(pre.Verify(parts, wrong));
      EXPECT_FALSE(pre.Verify(parts, want.view().substr(0, 31)));
    }
  }
  // No key: never computes, never verifies; a copy keeps the key.
  const PrecomputedHmacSha256 none;
  EXPECT_FALSE(none.has_key());
  EXPECT_FALSE(none.Compute(rfc, &mac));
  EXPECT_EQ(mac.size(), 0u);
  const PrecomputedHmacSha256 copy = PrecomputedHmacSha256::ForKey("Jefe");
  PrecomputedHmacSha256 assigned;
  assigned = copy;
  ASSERT_TRUE(assigned.Compute(rfc, &mac));
  EXPECT_EQ(Hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
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
      // The directory's precomputed keys take full-size tags only.
      const absl::string_view parts[] = {msg};
      const bool pre_ok = tag_bytes == 32 && PrecomputedHmacSha256::ForKey(key).Verify(parts, tag);
      if (result == "valid") {
        EXPECT_TRUE(ok) << "tcId " << id;
        EXPECT_EQ(pre_ok, tag_bytes == 32) << "tcId " << id;
      } else if (result == "invalid") {
        EXPECT_FALSE(ok) << "tcId " << id;
        EXPECT_FALSE(pre_ok) << "tcId " << id;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(doc.fields().at("numberOfTests").number_value()));
}

}  // namespace
}  // namespace iotauth::identity
