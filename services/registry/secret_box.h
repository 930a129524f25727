// SecretBox: authenticated encryption of secrets at rest (device keys, product
// secrets, group keys, policy keys) under a master key, so the database file alone
// reveals no key. AES-256-GCM, random 96-bit nonce, and an AAD naming the row and
// field a ciphertext belongs to, so ciphertexts cannot be moved between rows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth::registry {

// Sealed layout (all binary):
//   byte 0      format version (kSealedFormatV1)
//   bytes 1..4  key id: the first 4 bytes of SHA-256("iotauth-secretbox-key-id" || key)
//   bytes 5..16 96-bit random nonce
//   then        ciphertext (same length as the plaintext) and a 16-byte GCM tag.
// The header (version + key id) is also authenticated as part of the AAD.
class SecretBox {
 public:
  static constexpr size_t kKeySize = 32;
  static constexpr size_t kKeyIdSize = 4;
  static constexpr size_t kNonceSize = 12;
  static constexpr size_t kTagSize = 16;
  static constexpr uint8_t kSealedFormatV1 = 1;
  static constexpr size_t kOverhead = 1 + kKeyIdSize + kNonceSize + kTagSize;

  // `primary_key` (32 raw bytes) seals; it and every `previous_keys` entry open
  // (previous keys exist so a store can be re-wrapped while it serves).
  // INVALID_ARGUMENT on a key of the wrong size or two keys with one key id.
  static absl::StatusOr<std::unique_ptr<SecretBox>> Create(
      std::string primary_key, std::vector<std::string> previous_keys = {});

  ~SecretBox();
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;

  // Encrypts `plaintext`, binding it to `aad` (see SecretAad). INTERNAL on an
  // OpenSSL failure. Thread-safe.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext, absl::string_view aad) const;

  // Decrypts. FAILED_PRECONDITION when sealed under a key this box does not hold,
  // DATA_LOSS when the ciphertext, header or AAD does not authenticate. Messages
  // never contain plaintext. Thread-safe.
  absl::StatusOr<std::string> Open(absl::string_view sealed, absl::string_view aad) const;

  // Lowercase hex key id of the primary key (safe to log).
  std::string primary_key_id() const;
  // Whether `sealed` names the primary key (so re-wrapping can skip it).
  bool SealedWithPrimary(absl::string_view sealed) const;

 private:
  struct Key {
    std::string id;  // kKeyIdSize raw bytes
    std::string material;
  };
  explicit SecretBox(std::vector<Key> keys) : keys_(std::move(keys)) {}
  std::vector<Key> keys_;  // keys_[0] is the primary
};

// Unambiguous AAD naming the owner of a secret, e.g.
// SecretAad("device", tenant, device_id, "primary_key"). Length-prefixed parts.
std::string SecretAad(absl::string_view kind, absl::string_view tenant_id,
                      absl::string_view resource_id, absl::string_view field);

// Raw key id (kKeyIdSize bytes) of a 32-byte key.
std::string MasterKeyId(absl::string_view key);

// Master key text is standard base64 of exactly 32 bytes; surrounding whitespace
// is ignored. INVALID_ARGUMENT otherwise (the message never echoes the text).
absl::StatusOr<std::string> ParseMasterKey(absl::string_view base64_text);
// Reads and parses a key file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> LoadMasterKeyFromFile(const std::string& path);
// Reads and parses an environment variable. NOT_FOUND when unset or empty.
absl::StatusOr<std::string> LoadMasterKeyFromEnv(const char* variable);
// A fresh key from the CSPRNG, as base64 text.
absl::StatusOr<std::string> GenerateMasterKeyText();
// Creates `path` (mode 0600, fails with ALREADY_EXISTS if present) holding a fresh
// key, for the embedded default deployment. Returns the raw key. The caller should
// log a warning that a generated key protects the store.
absl::StatusOr<std::string> CreateMasterKeyFile(const std::string& path);

// Where the master key came from, for the start-up log line.
struct LoadedMasterKey {
  std::string key;  // 32 raw bytes
  // "env:<VAR>", "file:<path>" or "generated:<path>".
  std::string source;
  // True when this call created the key file: the caller must log a clear
  // warning (a generated key next to the database protects nothing against
  // someone who copies both).
  bool generated = false;
};

// The embedded default's key resolution: the environment variable `env_var`
// when set (an invalid value is an error, never a fallback), else the file at
// `file_path` when it exists, else (when `create_if_missing`) a new key file.
absl::StatusOr<LoadedMasterKey> LoadOrCreateMasterKey(const char* env_var,
                                                      const std::string& file_path,
                                                      bool create_if_missing);

}  // namespace iotauth::registry
