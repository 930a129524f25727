#include "services/common/refused_calls.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"

namespace iotauth {

namespace {

constexpr size_t kMaxMethodBytes = 128;
constexpr size_t kFingerprintBytes = 8;

bool MethodChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '/' || c == '-';
}

}  // namespace

std::string RefusedCallTally::MethodLabel(absl::string_view path) {
  if (path.empty() || path.size() > kMaxMethodBytes || path.front() != '/') return "(malformed)";
  for (const char c : path) {
    if (!MethodChar(c)) return "(malformed)";
  }
  return std::string(path);
}

std::string RefusedCallTally::Fingerprint(absl::string_view token) {
  return absl::StrCat("sha256:",
                      crypto::HexEncode(crypto::Sha256(token).substr(0, kFingerprintBytes)));
}

absl::string_view RefusedCallTally::PresentedName(Presented presented) {
  switch (presented) {
    case Presented::kNothing:
      return "none";
    case Presented::kMalformedAuthorization:
      return "authorization_header";
    case Presented::kUnknownToken:
      return "bearer_token";
  }
  return "none";
}

void RefusedCallTally::Add(absl::string_view path, Presented presented, absl::string_view token,
                           absl::string_view cert_subject, absl::Time now) {
  std::string method = MethodLabel(path);
  std::string fingerprint = presented == Presented::kUnknownToken ? Fingerprint(token) : "";
  std::string key = absl::StrCat(method, absl::string_view("\0", 1), static_cast<int>(presented),
                                 absl::string_view("\0", 1), fingerprint,
                                 absl::string_view("\0", 1), cert_subject);
  absl::MutexLock lock(&mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    Entry& e = pending_.entries[it->second];
    ++e.count;
    e.last = now;
    return;
  }
  if (pending_.entries.size() >= options_.max_entries) {
    if (pending_.overflow++ == 0) pending_.overflow_first = now;
    pending_.overflow_last = now;
    return;
  }
  index_.emplace(std::move(key), pending_.entries.size());
  Entry e;
  e.method = std::move(method);
  e.presented = presented;
  e.token_fingerprint = std::move(fingerprint);
  e.cert_subject = std::string(cert_subject);
  e.count = 1;
  e.first = now;
  e.last = now;
  pending_.entries.push_back(std::move(e));
}

RefusedCallTally::Drained RefusedCallTally::Drain() {
  absl::MutexLock lock(&mu_);
  Drained out = std::move(pending_);
  pending_ = Drained();
  index_.clear();
  return out;
}

}  // namespace iotauth
