#include "services/identity/x509/csr.h"

#include <openssl/x509.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/escaping.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/common/openssl_ptr.h"

namespace iotauth::identity::x509 {
namespace {

std::string VectorsDir() {
  const char* env = std::getenv("IOTAUTH_VECTORS_DIR");
  return env != nullptr && *env != '\0' ? env : "/work/shared/vectors";
}

constexpr char kMissing[] =
    "Wycheproof vectors not found under $IOTAUTH_VECTORS_DIR/wycheproof (set "
    "IOTAUTH_VECTORS_DIR to the shared vectors folder)";

struct Counts {
  bool missing = false;  // the vectors folder is absent: the test skips
  int valid = 0;
  int invalid = 0;
  int acceptable = 0;
};

// Every test of one Project Wycheproof signature file through
// VerifyPossessionSignature: "valid" must verify, "invalid" must not ("acceptable"
// may go either way). Each group's key is its `publicKeyDer` (SubjectPublicKeyInfo).
Counts RunFile(const std::string& name) {
  Counts counts;
  const std::string path = VectorsDir() + "/wycheproof/testvectors_v1/" + name;
  std::ifstream in(path);
  if (!in) {
    counts.missing = true;
    return counts;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  google::protobuf::Struct doc;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(buf.str(), &doc).ok()) << path;
  int checked = 0;
  for (const auto& g : doc.fields().at("testGroups").list_value().values()) {
    const auto& gf = g.struct_value().fields();
    const std::string der = absl::HexStringToBytes(gf.at("publicKeyDer").string_value());
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    EvpPkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
    EXPECT_NE(key, nullptr) << name;
    if (key == nullptr) continue;
    for (const auto& t : gf.at("tests").list_value().values()) {
      const auto& f = t.struct_value().fields();
      const int id = static_cast<int>(f.at("tcId").number_value());
      const std::string msg = absl::HexStringToBytes(f.at("msg").string_value());
      const std::string sig = absl::HexStringToBytes(f.at("sig").string_value());
      const std::string& result = f.at("result").string_value();
      const bool ok = VerifyPossessionSignature(key.get(), sig, msg);
      if (result == "valid") {
        EXPECT_TRUE(ok) << name << " tcId " << id << ": " << f.at("comment").string_value();
        ++counts.valid;
      } else if (result == "invalid") {
        EXPECT_FALSE(ok) << name << " tcId " << id << ": " << f.at("comment").string_value();
        ++counts.invalid;
      } else {
        ++counts.acceptable;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(doc.fields().at("numberOfTests").number_value())) << name;
  return counts;
}

// The renewal proof is a device's signature, checked with the key of its current
// certificate: malleable, truncated, re-encoded or otherwise wrong signatures must
// all fail, for each key type a device certificate may carry with SHA-256. The
// floors guard against a file that silently lost its tests.
TEST(VerifyPossessionSignatureTest, Wycheproof) {
  struct File {
    const char* name;
    int min_valid;
    int min_invalid;
  };
  const File files[] = {
      {"ecdsa_secp256r1_sha256_test.json", 100, 300},   // DER signatures
      {"rsa_signature_2048_sha256_test.json", 5, 200},  // PKCS#1 v1.5
      {"rsa_signature_3072_sha256_test.json", 5, 200},
      {"ed25519_test.json", 80, 60},
  };
  for (const File& f : files) {
    const Counts c = RunFile(f.name);
    if (c.missing) GTEST_SKIP() << kMissing;
    EXPECT_GE(c.valid, f.min_valid) << f.name;
    EXPECT_GE(c.invalid, f.min_invalid) << f.name;
  }
}

TEST(VerifyPossessionSignatureTest, NoKeyNeverVerifies) {
  EXPECT_FALSE(VerifyPossessionSignature(nullptr, "sig", "msg"));
}

}  // namespace
}  // namespace iotauth::identity::x509
