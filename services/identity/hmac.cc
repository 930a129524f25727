#include "services/identity/hmac.h"

// PrecomputedHmacSha256 resumes SHA-256 from saved chaining values, which only the
// (deprecated) low-level SHA256_* API allows; see the class comment.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

#include <cstring>
#include <string>

namespace iotauth::identity {
namespace {

const char* DigestName(HmacAlgorithm alg) {
  switch (alg) {
    case HmacAlgorithm::kSha256:
      return "SHA256";
    case HmacAlgorithm::kSha1:
      return "SHA1";
    case HmacAlgorithm::kMd5:
      return "MD5";
  }
  return "SHA256";
}

// One thread's reusable context for one algorithm. Remembers the last key so that
// consecutive messages under one key skip the HMAC key schedule.
class ThreadMac {
 public:
  explicit ThreadMac(HmacAlgorithm alg) {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) return;
    ctx_ = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context holds its own reference
    if (ctx_ == nullptr) return;
    char digest[16];
    std::strncpy(digest, DigestName(alg), sizeof(digest) - 1);
    digest[sizeof(digest) - 1] = '\0';
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(ctx_, params) != 1) {
      EVP_MAC_CTX_free(ctx_);
      ctx_ = nullptr;
    }
  }
  ~ThreadMac() {
    if (ctx_ != nullptr) EVP_MAC_CTX_free(ctx_);
    OPENSSL_cleanse(last_key_.data(), last_key_.size());
  }
  ThreadMac(const ThreadMac&) = delete;
  ThreadMac& operator=(const ThreadMac&) = delete;

  bool Compute(absl::string_view key, absl::Span<const absl::string_view> parts, MacValue* out) {
    if (ctx_ == nullptr) return false;
    // A NULL key re-initialises with the key already scheduled in the context.
    const bool same_key =
        have_key_ && key.size() == last_key_.size() &&
        (key.empty() || CRYPTO_memcmp(key.data(), last_key_.data(), key.size()) == 0);
    int ok;
    if (same_key) {
      ok = EVP_MAC_init(ctx_, nullptr, 0, nullptr);
    } else {
      // OpenSSL rejects a NULL pointer for an empty key; any valid pointer works.
      static const unsigned char kEmpty[1] = {0};
      const auto* k = key.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(key.data());
      ok = EVP_MAC_init(ctx_, k, key.size(), nullptr);
      have_key_ = ok == 1;
      if (have_key_) {
        OPENSSL_cleanse(last_key_.data(), last_key_.size());
        last_key_.assign(key.data(), key.size());
      }
    }
    if (ok != 1) {
      have_key_ = false;
      return false;
    }
    for (absl::string_view p : parts) {
      if (p.empty()) continue;
      if (EVP_MAC_update(ctx_, reinterpret_cast<const unsigned char*>(p.data()), p.size()) != 1) {
        have_key_ = false;
        return false;
      }
    }
    size_t len = 0;
    if (EVP_MAC_final(ctx_, out->data(), &len, MacValue::kMaxSize) != 1) {
      have_key_ = false;
      return false;
    }
    out->set_size(len);
    return true;
  }

 private:
  EVP_MAC_CTX* ctx_ = nullptr;
  bool have_key_ = false;
  std::string last_key_;
};

ThreadMac& ForThread(HmacAlgorithm alg) {
  thread_local ThreadMac sha256(HmacAlgorithm::kSha256);
  thread_local ThreadMac sha1(HmacAlgorithm::kSha1);
  thread_local ThreadMac md5(HmacAlgorithm::kMd5);
  switch (alg) {
    case HmacAlgorithm::kSha1:
      return sha1;
    case HmacAlgorithm::kMd5:
      return md5;
    case HmacAlgorithm::kSha256:
      break;
  }
  return sha256;
}

}  // namespace

size_t HmacSize(HmacAlgorithm alg) {
  switch (alg) {
    case HmacAlgorithm::kSha256:
      return 32;
    case HmacAlgorithm::kSha1:
      return 20;
    case HmacAlgorithm::kMd5:
      return 16;
  }
  return 32;
}

absl::Status HmacCompute(HmacAlgorithm alg, absl::string_view key,
                         absl::Span<const absl::string_view> parts, MacValue* out) {
  if (!ForThread(alg).Compute(key, parts, out)) {
    out->set_size(0);
    return absl::InternalError("HMAC computation failed in OpenSSL");
  }
  return absl::OkStatus();
}

namespace {

constexpr size_t kSha256Block = 64;
constexpr unsigned int kOneBlockBits = kSha256Block * 8;
static_assert(sizeof(SHA256_CTX{}.h) == 32, "SHA-256 chaining value is 8 words");

// The chaining value after one block: `key` (at most one block) XOR `pad`.
void PadState(const unsigned char* key, size_t n, unsigned char pad, uint32_t* state) {
  unsigned char block[kSha256Block];
  std::memset(block, pad, sizeof(block));
  for (size_t i = 0; i < n; ++i) block[i] ^= key[i];
  SHA256_CTX c;
  SHA256_Init(&c);
  SHA256_Update(&c, block, sizeof(block));
  std::memcpy(state, c.h, sizeof(c.h));
  OPENSSL_cleanse(block, sizeof(block));
  OPENSSL_cleanse(&c, sizeof(c));
}

// A context that continues from `state` after one block.
void Resume(const uint32_t* state, SHA256_CTX* c) {
  SHA256_Init(c);
  std::memcpy(c->h, state, sizeof(c->h));
  c->Nl = kOneBlockBits;
}

}  // namespace

PrecomputedHmacSha256 PrecomputedHmacSha256::ForKey(absl::string_view key) {
  PrecomputedHmacSha256 out;
  unsigned char hashed[SHA256_DIGEST_LENGTH];
  const auto* k = reinterpret_cast<const unsigned char*>(key.data());
  size_t n = key.size();
  if (n > kSha256Block) {
    SHA256(k, n, hashed);
    k = hashed;
    n = sizeof(hashed);
  }
  PadState(k, n, 0x36, out.inner_);
  PadState(k, n, 0x5c, out.outer_);
  OPENSSL_cleanse(hashed, sizeof(hashed));
  out.has_key_ = true;
  return out;
}

PrecomputedHmacSha256::~PrecomputedHmacSha256() {
  OPENSSL_cleanse(inner_, sizeof(inner_));
  OPENSSL_cleanse(outer_, sizeof(outer_));
}

bool PrecomputedHmacSha256::Compute(absl::Span<const absl::string_view> parts,
                                    MacValue* out) const {
  if (!has_key_) {
    out->set_size(0);
    return false;
  }
  SHA256_CTX c;
  Resume(inner_, &c);
  for (absl::string_view p : parts) SHA256_Update(&c, p.data(), p.size());
  unsigned char inner_hash[SHA256_DIGEST_LENGTH];
  SHA256_Final(inner_hash, &c);
  Resume(outer_, &c);
  SHA256_Update(&c, inner_hash, sizeof(inner_hash));
  SHA256_Final(out->data(), &c);
  out->set_size(SHA256_DIGEST_LENGTH);
  OPENSSL_cleanse(&c, sizeof(c));
  return true;
}

bool PrecomputedHmacSha256::Verify(absl::Span<const absl::string_view> parts,
                                   absl::string_view tag) const {
  if (tag.size() != SHA256_DIGEST_LENGTH) return false;
  MacValue mac;
  if (!Compute(parts, &mac)) return false;
  return CRYPTO_memcmp(mac.data(), tag.data(), tag.size()) == 0;
}

bool HmacVerify(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                absl::string_view tag) {
  if (tag.size() != HmacSize(alg)) return false;
  MacValue mac;
  if (!HmacCompute(alg, key, message, &mac).ok()) return false;
  return CRYPTO_memcmp(mac.data(), tag.data(), tag.size()) == 0;
}

bool HmacVerifyTruncated(HmacAlgorithm alg, absl::string_view key, absl::string_view message,
                         absl::string_view tag, size_t min_tag_size) {
  const size_t floor = min_tag_size < 10 ? 10 : min_tag_size;
  if (tag.size() < floor || tag.size() > HmacSize(alg)) return false;
  MacValue mac;
  if (!HmacCompute(alg, key, message, &mac).ok()) return false;
  return CRYPTO_memcmp(mac.data(), tag.data(), tag.size()) == 0;
}

}  // namespace iotauth::identity
