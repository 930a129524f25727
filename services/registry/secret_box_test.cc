#include "services/registry/secret_box.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "services/common/crypto.h"

namespace iotauth::registry {
namespace {

std::string Key(char fill) { return std::string(SecretBox::kKeySize, fill); }

std::unique_ptr<SecretBox> Box(char fill) {
  auto box = SecretBox::Create(Key(fill));
  EXPECT_TRUE(box.ok()) << box.status();
  return *std::move(box);
}

TEST(SecretBoxTest, RoundTrip) {
  auto box = Box('a');
  std::string aad = SecretAad("device", "t1", "d1", "primary_key");
  auto sealed = box->Seal("s3cr3t-device-key", aad);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->size(), SecretBox::kOverhead + 17);
  EXPECT_EQ(sealed->find("s3cr3t"), std::string::npos);
  EXPECT_TRUE(box->SealedWithPrimary(*sealed));
  auto opened = box->Open(*sealed, aad);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "s3cr3t-device-key");
}

TEST(SecretBoxTest, NoncesDiffer) {
  auto box = Box('a');
  auto a = box->Seal("same", "aad");
  auto b = box->Seal("same", "aad");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
}

TEST(SecretBoxTest, EmptyPlaintextRoundTrips) {
  auto box = Box('a');
  auto sealed = box->Seal("", "aad");
  ASSERT_TRUE(sealed.ok());
  auto opened = box->Open(*sealed, "aad");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "");
}

TEST(SecretBoxTest, TamperedCiphertextTagOrHeaderFails) {
  auto box = Box('a');
  auto sealed = box->Seal("payload-bytes", "aad");
  ASSERT_TRUE(sealed.ok());
  for (size_t i = 0; i < sealed->size(); ++i) {
    std::string t = *sealed;
    t[i] ^= 0x01;
    auto opened = box->Open(t, "aad");
    EXPECT_FALSE(opened.ok()) << "flipping byte " << i << " went unnoticed";
  }
  EXPECT_EQ(box->Open(sealed->substr(0, sealed->size() - 1), "aad").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(box->Open("", "aad").status().code(), absl::StatusCode::kDataLoss);
}

TEST(SecretBoxTest, WrongAadFails) {
  auto box = Box('a');
  auto sealed = box->Seal("k", SecretAad("device", "t1", "d1", "primary_key"));
  ASSERT_TRUE(sealed.ok());
  // Another row, another field, another tenant: all rejected.
  EXPECT_EQ(box->Open(*sealed, SecretAad("device", "t1", "d2", "primary_key")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(box->Open(*sealed, SecretAad("device", "t1", "d1", "secondary_key")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(box->Open(*sealed, SecretAad("device", "t2", "d1", "primary_key")).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SecretBoxTest, AadIsUnambiguous) {
  EXPECT_NE(SecretAad("device", "t1", "d1x", "f"), SecretAad("device", "t1d", "1x", "f"));
}

TEST(SecretBoxTest, WrongKeyFails) {
  auto a = Box('a');
  auto b = Box('b');
  auto sealed = a->Seal("k", "aad");
  ASSERT_TRUE(sealed.ok());
  auto opened = b->Open(*sealed, "aad");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  // The message names the key id, never the plaintext.
  EXPECT_EQ(std::string(opened.status().message()).find("k\""), std::string::npos);
}

TEST(SecretBoxTest, PreviousKeysOpenPrimarySeals) {
  auto old_box = Box('a');
  auto sealed_old = old_box->Seal("old", "aad");
  ASSERT_TRUE(sealed_old.ok());
  auto rotated = SecretBox::Create(Key('b'), {Key('a')});
  ASSERT_TRUE(rotated.ok());
  EXPECT_FALSE((*rotated)->SealedWithPrimary(*sealed_old));
  auto opened = (*rotated)->Open(*sealed_old, "aad");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "old");
  auto sealed_new = (*rotated)->Seal("new", "aad");
  ASSERT_TRUE(sealed_new.ok());
  EXPECT_TRUE((*rotated)->SealedWithPrimary(*sealed_new));
  EXPECT_FALSE(old_box->Open(*sealed_new, "aad").ok());
  EXPECT_NE((*rotated)->primary_key_id(), old_box->primary_key_id());
}

TEST(SecretBoxTest, RejectsBadKeys) {
  EXPECT_EQ(SecretBox::Create(std::string(31, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SecretBox::Create(Key('a'), {Key('a')}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MasterKeyTest, ParseAcceptsBase64Of32BytesOnly) {
  std::string text = crypto::Base64Encode(Key('z'));
  auto key = ParseMasterKey("  " + text + "\n");
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, Key('z'));
  EXPECT_FALSE(ParseMasterKey(crypto::Base64Encode(std::string(16, 'z'))).ok());
  EXPECT_FALSE(ParseMasterKey("not base64!").ok());
  auto bad = ParseMasterKey("not base64!");
  EXPECT_EQ(std::string(bad.status().message()).find("not base64"), std::string::npos);
}

TEST(MasterKeyTest, GeneratedKeyFileLoads) {
  std::string path = std::string(::testing::TempDir()) + "/master.key";
  ::unlink(path.c_str());
  auto created = CreateMasterKeyFile(path);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(CreateMasterKeyFile(path).status().code(), absl::StatusCode::kAlreadyExists);
  auto loaded = LoadMasterKeyFromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, *created);
  EXPECT_EQ(LoadMasterKeyFromFile(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(MasterKeyTest, LoadsFromEnvironment) {
  auto text = GenerateMasterKeyText();
  ASSERT_TRUE(text.ok());
  ::setenv("IOTAUTH_TEST_MASTER_KEY", text->c_str(), 1);
  auto key = LoadMasterKeyFromEnv("IOTAUTH_TEST_MASTER_KEY");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(crypto::Base64Encode(*key), *text);
  ::unsetenv("IOTAUTH_TEST_MASTER_KEY");
  EXPECT_EQ(LoadMasterKeyFromEnv("IOTAUTH_TEST_MASTER_KEY").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(MasterKeyTest, LoadOrCreatePrefersEnvThenFileThenGenerates) {
  std::string path = std::string(::testing::TempDir()) + "/resolved.key";
  ::unlink(path.c_str());
  ::unsetenv("IOTAUTH_TEST_MK");
  EXPECT_EQ(LoadOrCreateMasterKey("IOTAUTH_TEST_MK", path, false).status().code(),
            absl::StatusCode::kNotFound);
  auto generated = LoadOrCreateMasterKey("IOTAUTH_TEST_MK", path, true);
  ASSERT_TRUE(generated.ok()) << generated.status();
  EXPECT_TRUE(generated->generated);
  EXPECT_EQ(generated->source, "generated:" + path);
  auto from_file = LoadOrCreateMasterKey("IOTAUTH_TEST_MK", path, true);
  ASSERT_TRUE(from_file.ok());
  EXPECT_FALSE(from_file->generated);
  EXPECT_EQ(from_file->key, generated->key);
  ::setenv("IOTAUTH_TEST_MK", crypto::Base64Encode(Key('e')).c_str(), 1);
  auto from_env = LoadOrCreateMasterKey("IOTAUTH_TEST_MK", path, true);
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(from_env->key, Key('e'));
  EXPECT_EQ(from_env->source, "env:IOTAUTH_TEST_MK");
  ::setenv("IOTAUTH_TEST_MK", "garbage", 1);
  EXPECT_EQ(LoadOrCreateMasterKey("IOTAUTH_TEST_MK", path, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  ::unsetenv("IOTAUTH_TEST_MK");
}

}  // namespace
}  // namespace iotauth::registry
