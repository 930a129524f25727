#include "clients/mosquitto/plugin_core.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clients/mosquitto/topic_match.h"
#include "services/common/crypto.h"
#include "services/common/error_info.h"

namespace iotauth::mosquitto {

namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;

namespace {

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

void AppendField(std::string* out, absl::string_view v) {
  absl::StrAppend(out, v.size(), ":", v, ";");
}

// Longest fail-fast window after consecutive unreachable probes (unless
// failure_backoff itself is longer).
constexpr absl::Duration kMaxFailFast = absl::Seconds(30);

// Expired offline sessions dropped per call at most, so that one call never pays for
// a burst of disconnects; more than one per call keeps the backlog shrinking.
constexpr int kReapBatch = 8;

}  // namespace

absl::StatusOr<std::unique_ptr<PluginCore>> PluginCore::Create(Options options) {
  if (options.client == nullptr) return absl::InvalidArgumentError("PluginCore needs a client");
  return std::unique_ptr<PluginCore>(new PluginCore(std::move(options)));
}

PluginCore::PluginCore(Options options)
    : config_(std::move(options.config)),
      client_(std::move(options.client)),
      clock_(options.clock != nullptr ? options.clock : &RealClock::Get()) {}

std::string PluginCore::CacheKey(const ConnectAttempt& a) {
  // A digest, so the cache never holds a password; length-prefixed fields keep
  // ("ab","c") and ("a","bc") apart.
  std::string material;
  AppendField(&material, a.client_id);
  AppendField(&material, a.username);
  AppendField(&material, a.password);
  AppendField(&material, a.certificate_pem);
  return crypto::Sha256(material);
}

const PluginCore::Grant* PluginCore::CacheLookup(const std::string& key, absl::Time now) {
  auto it = cache_.find(key);
  if (it == cache_.end()) return nullptr;
  if (it->second->cache_until <= now) {
    lru_.erase(it->second);
    cache_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->grant;
}

void PluginCore::CachePut(std::string key, const Grant& grant, absl::Time until) {
  if (config_.cache_size == 0) return;
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    lru_.erase(it->second);
    cache_.erase(it);
  }
  while (lru_.size() >= config_.cache_size) {
    cache_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(CacheEntry{key, grant, until});
  cache_.emplace(std::move(key), lru_.begin());
}

bool PluginCore::OfflineExpired(const Session& s, absl::Time now) const {
  return now >= s.grant.credential_expires_at || now - s.offline_since >= config_.offline_grant_ttl;
}

void PluginCore::PutSession(uintptr_t client, Session session) {
  auto it = sessions_.find(client);
  if (it != sessions_.end()) EraseSession(it);
  sessions_.emplace(client, std::move(session));
}

void PluginCore::EraseSession(SessionMap::iterator it) {
  if (it->second.offline()) offline_.erase(it->second.offline_pos);
  sessions_.erase(it);
}

void PluginCore::ReapOffline(absl::Time now) {
  for (int i = 0; i < kReapBatch && !offline_.empty(); ++i) {
    auto it = sessions_.find(offline_.front());
    // Disconnect order is grace-expiry order; an entry whose credential expired
    // first waits for its turn (OnAclCheck denies it meanwhile).
    if (!OfflineExpired(it->second, now)) return;
    EraseSession(it);
  }
}

Decision PluginCore::OnBasicAuth(const ConnectAttempt& a) {
  const absl::Time now = clock_->Now();
  const std::string key = CacheKey(a);
  {
    absl::MutexLock lock(&mu_);
    ReapOffline(now);
    // A new CONNECT on this handle never inherits what an earlier one was granted.
    auto it = sessions_.find(a.client);
    if (it != sessions_.end()) EraseSession(it);
    if (const Grant* g = CacheLookup(key, now)) {
      ++stats_.cache_hits;
      PutSession(a.client, Session{a.client_id, a.username, *g});
      return {true, "allow (cached)"};
    }
    if (now < fail_fast_until_) return {false, "iotauth unreachable (failing fast)"};
    ++stats_.rpcs;
  }

  iv1::AuthenticateRequest req;
  req.set_tenant_id(config_.tenant_id);
  iv1::ConnectInfo* c = req.mutable_connect();
  c->set_client_id(a.client_id);
  c->set_username(a.username);
  c->set_password(a.password);
  if (!a.certificate_pem.empty()) c->add_peer_certificate_chain(a.certificate_pem);
  c->set_peer_address(a.peer_address);
  c->set_listener(a.listener);
  c->set_protocol(iv1::PROTOCOL_MQTT);
  // The broker's event loop waits on this call: it is bounded by the timeout.
  absl::StatusOr<iv1::AuthenticateResponse> resp = client_->Authenticate(req, config_.timeout);

  absl::MutexLock lock(&mu_);
  if (!resp.ok()) {
    ++stats_.rpc_failures;
    // An error with iotauth's reason came from iotauth itself (say, AUDIT_UNWRITABLE
    // while its audit log cannot record): it is reachable, so no fail-fast window;
    // the next CONNECT asks again and is let in as soon as iotauth admits it.
    if (std::string reason = ErrorReason(resp.status()); !reason.empty()) {
      consecutive_unreachable_ = 0;
      return {false, absl::StrCat("iotauth refused: ", reason)};
    }
    const absl::StatusCode code = resp.status().code();
    if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) {
      // Each probe that finds iotauth still unreachable may have held the broker's
      // event loop for the whole timeout: the fail-fast window doubles with every
      // consecutive failure (up to kMaxFailFast), so a long outage freezes the
      // broker for a shrinking share of the time instead of one timeout per window.
      const int doublings = std::min(consecutive_unreachable_, 5);
      ++consecutive_unreachable_;
      fail_fast_until_ =
          clock_->Now() + std::min(config_.failure_backoff * (int64_t{1} << doublings),
                                   std::max(kMaxFailFast, config_.failure_backoff));
    }
    // The message says why (gRPC's transport error, or the TLS files' check), escaped
    // like every other text in the broker's log.
    return {false, absl::StrCat("iotauth error: ", absl::StatusCodeToString(code), ": ",
                                absl::Utf8SafeCHexEscape(resp.status().message()))};
  }
  consecutive_unreachable_ = 0;
  if (resp->decision() != iv1::DECISION_ALLOW) {
    return {false, iv1::DenyReason_Name(resp->deny_reason())};
  }
  Grant g;
  g.identity = resp->identity();
  g.rules.assign(resp->access_rules().begin(), resp->access_rules().end());
  g.default_effect = resp->default_effect();
  if (resp->has_credential_expires_at()) {
    g.credential_expires_at = ToTime(resp->credential_expires_at());
  }
  const bool replay_protected = resp->credential_type() == rv1::CREDENTIAL_TYPE_DEVICE_TRIPLE ||
                                resp->credential_type() == rv1::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS;
  const absl::Duration ttl =
      std::min(resp->has_cache_ttl() ? ToDuration(resp->cache_ttl()) : absl::ZeroDuration(),
               config_.cache_max_ttl);
  if (!replay_protected && ttl > absl::ZeroDuration()) {
    CachePut(key, g, std::min(now + ttl, g.credential_expires_at));
  }
  PutSession(a.client, Session{a.client_id, a.username, std::move(g)});
  return {true, "allow"};
}

Decision PluginCore::OnAclCheck(uintptr_t client, absl::string_view client_id,
                                absl::string_view username, Access access,
                                absl::string_view topic) {
  if (access == Access::kUnsubscribe) return {true, "unsubscribe"};
  // The server's limit: matching costs rules x levels on the broker's own thread,
  // for every publish and every delivery.
  if (topic.size() > kMaxAclTopicBytes) return {false, "topic too long"};
  // A shared subscription (`$share/{group}/{filter}`) subscribes to its filter; the
  // broker asks with the prefix. Deliveries are checked against the real topic.
  if (access == Access::kSubscribe && absl::StartsWith(topic, "$share/")) {
    const size_t slash = topic.find('/', 7);
    if (slash == absl::string_view::npos || slash == 7 || slash + 1 >= topic.size()) {
      return {false, "malformed shared subscription"};
    }
    topic.remove_prefix(slash + 1);
  }
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(client);
  if (it == sessions_.end() || it->second.client_id != client_id ||
      it->second.username != username) {
    return {false, "client not authenticated by iotauth"};
  }
  const Session& s = it->second;
  const bool offline = s.offline();
  if (now >= s.grant.credential_expires_at) {
    // An offline session can never allow anything again: drop it now rather than
    // wait for the reaper. An online one goes at its disconnect.
    if (offline) EraseSession(it);
    return {false, "credential expired"};
  }
  if (offline && now - s.offline_since >= config_.offline_grant_ttl) {
    EraseSession(it);
    return {false, "client disconnected too long ago"};
  }
  const Grant& g = s.grant;
  const rv1::RuleAction action =
      access == Access::kWrite ? rv1::RULE_ACTION_PUBLISH : rv1::RULE_ACTION_SUBSCRIBE;
  const bool allow = Decide(g.rules, g.default_effect, action, topic,
                            /*delivery=*/access == Access::kRead);
  return {allow, allow ? "rule allows" : "rule denies"};
}

void PluginCore::OnDisconnect(uintptr_t client) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  ReapOffline(now);
  auto it = sessions_.find(client);
  // Already offline: a repeated event keeps the first disconnect time.
  if (it == sessions_.end() || it->second.offline()) return;
  if (config_.offline_grant_ttl <= absl::ZeroDuration() || config_.max_offline_sessions == 0) {
    sessions_.erase(it);
    return;
  }
  while (offline_.size() >= config_.max_offline_sessions) {
    EraseSession(sessions_.find(offline_.front()));
  }
  // Looked up again: the evictions above erased from the map.
  Session& s = sessions_.find(client)->second;
  s.offline_since = now;
  s.offline_pos = offline_.insert(offline_.end(), client);
}

PluginCore::Stats PluginCore::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s = stats_;
  s.cached = lru_.size();
  s.offline_sessions = offline_.size();
  s.online_sessions = sessions_.size() - offline_.size();
  return s;
}

}  // namespace iotauth::mosquitto
