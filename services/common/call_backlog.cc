#include "services/common/call_backlog.h"

#include <algorithm>
#include <memory>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "services/common/verified_subject.h"

namespace iotauth {
namespace {

// The token of an `authorization` header: after a "Bearer " in any letter case (as
// ConfiguredCallerResolver::IsBearer reads it), else the whole header.
absl::string_view TokenOf(absl::string_view authorization) {
  if (absl::StartsWithIgnoreCase(authorization, "bearer ")) authorization.remove_prefix(7);
  return authorization;
}

}  // namespace

CallBacklog::CallBacklog(Options options, const Clock* clock) : options_(options), clock_(clock) {}

uint64_t CallBacklog::KeyOf(absl::string_view authorization, absl::string_view cert_subject) {
  // Keyed by what identifies the caller, not by the header's spelling: the scheme's
  // letter case ("Bearer", "bEaRer") and an empty bearer token (which falls back to
  // the certificate) would otherwise give one credential many keys, each with its
  // own limit.
  const absl::string_view token = TokenOf(authorization);
  const uint64_t key = token.empty() ? absl::HashOf('c', cert_subject) : absl::HashOf('t', token);
  return key == kOverflowKey || key == 0 ? 2 : key;
}

double CallBacklog::Settle(Debt& d, absl::Time now) const {
  if (now > d.at) {
    d.calls =
        std::max(0.0, d.calls - absl::ToDoubleSeconds(now - d.at) * options_.forgiven_per_second);
  }
  d.at = now;  // a clock set back forgives nothing
  return d.calls;
}

uint64_t CallBacklog::KeyOfCall(const grpc::ServerContextBase& context) {
  const auto& md = context.client_metadata();
  absl::string_view authorization;
  if (auto it = md.find("authorization"); it != md.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  // An empty header or bearer token keys by the certificate, as the gate's KeyOf does.
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  const absl::string_view subject = VerifiedSubject(auth.get());
  if (TokenOf(authorization).empty() && subject.empty()) return 0;
  return KeyOf(authorization, subject);
}

bool CallBacklog::Admit(uint64_t caller) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  if (debts_.size() >= options_.max_callers && !debts_.contains(caller)) caller = kOverflowKey;
  auto [it, fresh] = debts_.try_emplace(caller, Debt{0, now});
  if (Settle(it->second, now) + 1 > options_.max_waiting) {
    ++refused_;
    return false;
  }
  it->second.calls += 1;
  return true;
}

void CallBacklog::Started(uint64_t caller) {
  if (caller == 0) return;
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto it = debts_.find(caller);
  // Admit may have put it on the shared entry, but only while the map was full.
  if (it == debts_.end() && debts_.size() >= options_.max_callers) it = debts_.find(kOverflowKey);
  if (it == debts_.end()) return;
  if (Settle(it->second, now) <= 1) {
    debts_.erase(it);  // nothing owed: the map holds only callers with calls waiting
    return;
  }
  it->second.calls -= 1;
}

uint64_t CallBacklog::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

size_t CallBacklog::callers() const {
  absl::MutexLock lock(&mu_);
  return debts_.size();
}

}  // namespace iotauth
