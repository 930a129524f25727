#include "services/common/auth_gate.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "services/common/verified_subject.h"

namespace iotauth {

EarlyAuthGate::EarlyAuthGate(const ConfiguredCallerResolver* resolver,
                             std::vector<std::string> public_prefixes, PublicCallLimit limit,
                             const Clock* clock, CallBacklog::Options backlog)
    : resolver_(resolver),
      public_prefixes_(std::move(public_prefixes)),
      limit_(limit),
      clock_(clock),
      backlog_(backlog, clock),
      tokens_(limit.burst),
      refilled_(clock->Now()) {}

bool EarlyAuthGate::IsPublic(absl::string_view path) const {
  return std::any_of(public_prefixes_.begin(), public_prefixes_.end(),
                     [path](const std::string& prefix) { return absl::StartsWith(path, prefix); });
}

bool EarlyAuthGate::Authenticated(const absl::string_view* authorization,
                                  const std::string& cert_subject) const {
  // The same rule as ConfiguredCallerResolver::Resolve: the token when the call
  // carries one (a wrong one is not downgraded to the certificate), else the
  // certificate.
  const std::string token = authorization != nullptr
                                ? ConfiguredCallerResolver::BearerTokenOf(*authorization)
                                : std::string();
  // Without a token, any verified certificate authenticates (its subject decides
  // the roles, later): no need to parse it here.
  if (token.empty()) return !cert_subject.empty();
  return resolver_->ResolveFrom(token, std::string()).authenticated;
}

bool EarlyAuthGate::Admits(absl::string_view path, const absl::string_view* authorization,
                           const std::string& cert_subject) const {
  return IsPublic(path) || Authenticated(authorization, cert_subject);
}

bool EarlyAuthGate::TakePublicToken() {
  absl::MutexLock lock(&bucket_mu_);
  const absl::Time now = clock_->Now();
  if (now > refilled_) {
    tokens_ = std::min(limit_.burst,
                       tokens_ + absl::ToDoubleSeconds(now - refilled_) * limit_.per_second);
  }
  refilled_ = now;  // a clock that steps back refills nothing
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

void EarlyAuthGate::Tally(absl::string_view path, const absl::string_view* authorization,
                          const std::string& cert_subject) {
  using Presented = RefusedCallTally::Presented;
  const std::string token = authorization != nullptr
                                ? ConfiguredCallerResolver::BearerTokenOf(*authorization)
                                : std::string();
  Presented presented = Presented::kNothing;
  if (!token.empty()) {
    presented = ConfiguredCallerResolver::IsBearer(*authorization)
                    ? Presented::kUnknownToken
                    : Presented::kMalformedAuthorization;
  }
  refusals_.Add(path, presented, presented == Presented::kUnknownToken ? token : "", cert_subject,
                clock_->Now());
}

grpc::Status EarlyAuthGate::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                    OutputMetadata* /*consumed_auth_metadata*/,
                                    OutputMetadata* /*response_metadata*/) {
  absl::string_view path;
  if (auto it = auth_metadata.find(":path"); it != auth_metadata.end()) {
    path = absl::string_view(it->second.data(), it->second.size());
  }
  absl::string_view authorization;
  const absl::string_view* authorization_ptr = nullptr;
  if (auto it = auth_metadata.find("authorization"); it != auth_metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
    authorization_ptr = &authorization;
  }
  const std::string subject(VerifiedSubject(context));
  const bool authenticated = Authenticated(authorization_ptr, subject);
  if (!authenticated && IsPublic(path)) {
    if (TakePublicToken()) return grpc::Status::OK;
    shed_.fetch_add(1, std::memory_order_relaxed);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many health or reflection calls without a credential: slow down, "
                        "or present a client certificate or a bearer token");
  }
  if (authenticated) {
    if (backlog_.Admit(CallBacklog::KeyOf(authorization, subject))) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many of this caller's calls are waiting, or were reset before "
                        "the server started them: slow down");
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  Tally(path, authorization_ptr, subject);
  // The words RequireRole uses, so that a caller sees the same refusal either way.
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "no caller credential: present a client certificate or a bearer token");
}

}  // namespace iotauth
