#include "services/registry/secret_box.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/common/big_endian.h"
#include "services/common/crypto.h"
#include "services/common/openssl_ptr.h"
#include "services/common/posix_file.h"

namespace iotauth::registry {
namespace {

constexpr size_t kHeaderSize = 1 + SecretBox::kKeyIdSize;

void AppendLengthPrefixed(std::string* out, absl::string_view part) {
  big_endian::AppendU32(static_cast<uint32_t>(part.size()), out);
  out->append(part.data(), part.size());
}

}  // namespace

std::string MasterKeyId(absl::string_view key) {
  std::string digest = crypto::Sha256(absl::StrCat("iotauth-secretbox-key-id", key));
  return digest.substr(0, SecretBox::kKeyIdSize);
}

std::string SecretAad(absl::string_view kind, absl::string_view tenant_id,
                      absl::string_view resource_id, absl::string_view field) {
  std::string aad = "iotauth.registry.secret.v1";
  AppendLengthPrefixed(&aad, kind);
  AppendLengthPrefixed(&aad, tenant_id);
  AppendLengthPrefixed(&aad, resource_id);
  AppendLengthPrefixed(&aad, field);
  return aad;
}

absl::StatusOr<std::unique_ptr<SecretBox>> SecretBox::Create(
    std::string primary_key, std::vector<std::string> previous_keys) {
  std::vector<Key> keys;
  previous_keys.insert(previous_keys.begin(), std::move(primary_key));
  for (std::string& k : previous_keys) {
    if (k.size() != kKeySize) {
      OPENSSL_cleanse(k.data(), k.size());
      return absl::InvalidArgumentError("master key must be exactly 32 bytes");
    }
    std::string id = MasterKeyId(k);
    for (const Key& existing : keys) {
      if (existing.id == id) {
        return absl::InvalidArgumentError("two master keys share one key id");
      }
    }
    keys.push_back(Key{std::move(id), std::move(k)});
  }
  return std::unique_ptr<SecretBox>(new SecretBox(std::move(keys)));
}

SecretBox::~SecretBox() {
  for (Key& k : keys_) OPENSSL_cleanse(k.material.data(), k.material.size());
}

std::string SecretBox::primary_key_id() const { return crypto::HexEncode(keys_[0].id); }

bool SecretBox::SealedWithPrimary(absl::string_view sealed) const {
  return sealed.size() >= kHeaderSize && sealed[0] == static_cast<char>(kSealedFormatV1) &&
         sealed.substr(1, kKeyIdSize) == keys_[0].id;
}

absl::StatusOr<std::string> SecretBox::Seal(absl::string_view plaintext,
                                            absl::string_view aad) const {
  const Key& key = keys_[0];
  std::string out;
  out.reserve(kOverhead + plaintext.size());
  out.push_back(static_cast<char>(kSealedFormatV1));
  out.append(key.id);
  absl::StatusOr<std::string> nonce = crypto::RandomBytes(kNonceSize);
  if (!nonce.ok()) return nonce.status();
  out.append(*nonce);
  size_t ct_offset = out.size();
  out.resize(ct_offset + plaintext.size() + kTagSize);
  auto* ct = reinterpret_cast<unsigned char*>(out.data() + ct_offset);

  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key.material.data()),
                         reinterpret_cast<const unsigned char*>(nonce->data())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(out.data()), kHeaderSize) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), ct, &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), ct + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize, ct + plaintext.size()) != 1) {
    return absl::InternalError("AES-256-GCM seal failed");
  }
  return out;
}

absl::StatusOr<std::string> SecretBox::Open(absl::string_view sealed, absl::string_view aad) const {
  if (sealed.size() < kOverhead || sealed[0] != static_cast<char>(kSealedFormatV1)) {
    return absl::DataLossError("sealed secret is malformed");
  }
  absl::string_view key_id = sealed.substr(1, kKeyIdSize);
  const Key* key = nullptr;
  for (const Key& k : keys_) {
    if (k.id == key_id) key = &k;
  }
  if (key == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("secret sealed under unknown master key id ", crypto::HexEncode(key_id)));
  }
  absl::string_view nonce = sealed.substr(kHeaderSize, kNonceSize);
  size_t ct_size = sealed.size() - kOverhead;
  const auto* ct = reinterpret_cast<const unsigned char*>(sealed.data() + kHeaderSize + kNonceSize);
  std::string tag(sealed.substr(sealed.size() - kTagSize));
  std::string out(ct_size, '\0');
  auto* pt = reinterpret_cast<unsigned char*>(out.data());

  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key->material.data()),
                         reinterpret_cast<const unsigned char*>(nonce.data())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(sealed.data()), kHeaderSize) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), pt, &len, ct, static_cast<int>(ct_size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), pt + len, &len) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return absl::DataLossError("sealed secret failed authentication");
  }
  return out;
}

absl::StatusOr<std::string> ParseMasterKey(absl::string_view base64_text) {
  absl::string_view text = absl::StripAsciiWhitespace(base64_text);
  absl::StatusOr<std::string> key = crypto::Base64Decode(text);
  if (!key.ok() || key->size() != SecretBox::kKeySize) {
    if (key.ok()) OPENSSL_cleanse(key->data(), key->size());
    return absl::InvalidArgumentError("master key must be base64 of exactly 32 bytes");
  }
  return key;
}

absl::StatusOr<std::string> LoadMasterKeyFromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open master key file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  absl::StatusOr<std::string> key = ParseMasterKey(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!key.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("master key file ", path, ": ", key.status().message()));
  }
  return key;
}

absl::StatusOr<std::string> LoadMasterKeyFromEnv(const char* variable) {
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') {
    return absl::NotFoundError(absl::StrCat("environment variable ", variable, " is not set"));
  }
  absl::StatusOr<std::string> key = ParseMasterKey(value);
  if (!key.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", variable, ": ", key.status().message()));
  }
  return key;
}

absl::StatusOr<std::string> GenerateMasterKeyText() {
  absl::StatusOr<std::string> key = crypto::RandomBytes(SecretBox::kKeySize);
  if (!key.ok()) return key.status();
  std::string text = crypto::Base64Encode(*key);
  OPENSSL_cleanse(key->data(), key->size());
  return text;
}

absl::StatusOr<std::string> CreateMasterKeyFile(const std::string& path) {
  absl::StatusOr<std::string> key = crypto::RandomBytes(SecretBox::kKeySize);
  if (!key.ok()) return key.status();
  std::string text = crypto::Base64Encode(*key) + "\n";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST) return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(err)));
  }
  if (!posix_file::WriteAll(fd, text, 0)) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(err)));
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  OPENSSL_cleanse(text.data(), text.size());
  if (!synced) return absl::InternalError(absl::StrCat("cannot fsync ", path));
  return key;
}

absl::StatusOr<LoadedMasterKey> LoadOrCreateMasterKey(const char* env_var,
                                                      const std::string& file_path,
                                                      bool create_if_missing) {
  LoadedMasterKey out;
  if (env_var != nullptr && *env_var != '\0') {
    absl::StatusOr<std::string> key = LoadMasterKeyFromEnv(env_var);
    if (key.ok()) {
      out.key = *std::move(key);
      out.source = absl::StrCat("env:", env_var);
      return out;
    }
    if (key.status().code() != absl::StatusCode::kNotFound) return key.status();
  }
  if (file_path.empty()) return absl::NotFoundError("no master key configured");
  absl::StatusOr<std::string> key = LoadMasterKeyFromFile(file_path);
  if (key.ok()) {
    out.key = *std::move(key);
    out.source = absl::StrCat("file:", file_path);
    return out;
  }
  if (key.status().code() != absl::StatusCode::kNotFound || !create_if_missing) {
    return key.status();
  }
  absl::StatusOr<std::string> created = CreateMasterKeyFile(file_path);
  if (!created.ok()) return created.status();
  out.key = *std::move(created);
  out.source = absl::StrCat("generated:", file_path);
  out.generated = true;
  return out;
}

}  // namespace iotauth::registry
