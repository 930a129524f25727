// The Mosquitto plugin's logic, free of the broker API so it is testable without a
// broker: on CONNECT it asks iotauth's Authenticate (through the AuthClient seam, with
// a bounded timeout, failing closed), caches allow decisions for the TTL iotauth
// returns (bounded by the credential's expiry, least recently used evicted), and
// remembers each connected client's resolved access rules so that every publish,
// subscribe and delivery is decided locally, without a network call.
//
// A disconnect does not forget the rules at once: Mosquitto 2.0 checks a client's
// Last Will (MOSQ_ACL_WRITE) after it has reported the disconnect, later still for a
// delayed will, and checks deliveries queued for an offline persistent session
// (MOSQ_ACL_READ) against the same client handle. The rules are therefore kept,
// marked offline, for `offline_grant_ttl` after the disconnect (never beyond the
// credential's expiry), at most `max_offline_sessions` of them, oldest evicted first.
//
// Device-triple connects are never served from the cache: the same signed
// (device, timestamp) seen again must reach iotauth's replay check.
//
// Not thread-safe by design beyond a mutex: Mosquitto calls plugins from its single
// event loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/mosquitto/plugin_config.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/common/clock.h"

namespace iotauth::mosquitto {

// The call to iotauth (gRPC in production, a fake in tests).
class AuthClient {
 public:
  virtual ~AuthClient() = default;
  // Must return within `timeout` (DEADLINE_EXCEEDED otherwise).
  virtual absl::StatusOr<iotauth::identity::v1::AuthenticateResponse> Authenticate(
      const iotauth::identity::v1::AuthenticateRequest& request, absl::Duration timeout) = 0;
};

// What the broker knows at CONNECT.
struct ConnectAttempt {
  // Opaque per-connection handle (the broker's client pointer).
  uintptr_t client = 0;
  std::string client_id;
  std::string username;
  std::string password;  // SECRET
  // PEM of the TLS peer certificate, empty without one.
  std::string certificate_pem;
  std::string peer_address;
  std::string listener;
};

enum class Access { kRead, kWrite, kSubscribe, kUnsubscribe };

// Longest topic or filter an ACL check accepts (the server's Authorize limit).
inline constexpr size_t kMaxAclTopicBytes = 4096;

struct Decision {
  bool allow = false;
  // Short stable reason for the broker log (never a secret).
  std::string reason;
};

class PluginCore {
 public:
  struct Options {
    PluginConfig config;
    // Required; owned.
    std::unique_ptr<AuthClient> client;
    // Defaults to the real clock.
    const Clock* clock = nullptr;
  };
  static absl::StatusOr<std::unique_ptr<PluginCore>> Create(Options options);

  // Decides a CONNECT; on allow the client's rules are remembered. Whatever was
  // remembered for the same handle before (online or offline) is dropped first: a
  // reconnect or a reused handle starts fresh.
  Decision OnBasicAuth(const ConnectAttempt& attempt);
  // Decides a publish (kWrite, topic name), subscribe (kSubscribe, filter) or
  // delivery (kRead, topic name) from the remembered rules; unsubscribes pass.
  // Unknown clients, expired credentials and offline clients past
  // `offline_grant_ttl` are denied.
  // `client_id` and `username` are what the broker reports for the handle now: a
  // session answers only a client with the id and username it authenticated with, so
  // that a handle the broker freed and reused for a client that never reached
  // OnBasicAuth (an anonymous or certificate-as-username login) cannot inherit an
  // offline session's rules.
  Decision OnAclCheck(uintptr_t client, absl::string_view client_id, absl::string_view username,
                      Access access, absl::string_view topic);
  // Marks the client offline: its rules keep answering for `offline_grant_ttl`
  // (forgotten at once when that is zero).
  void OnDisconnect(uintptr_t client);

  struct Stats {
    uint64_t rpcs = 0;
    uint64_t cache_hits = 0;
    uint64_t rpc_failures = 0;
    size_t cached = 0;
    // Connected clients' sessions.
    size_t online_sessions = 0;
    // Disconnected clients' sessions still kept (expired ones not yet reaped count).
    size_t offline_sessions = 0;
  };
  Stats stats() const;

 private:
  struct Grant {
    iotauth::identity::v1::Identity identity;
    std::vector<iotauth::registry::v1::AccessRule> rules;
    iotauth::registry::v1::RuleEffect default_effect = iotauth::registry::v1::RULE_EFFECT_DENY;
    absl::Time credential_expires_at = absl::InfiniteFuture();
  };
  struct CacheEntry {
    std::string key;
    Grant grant;
    absl::Time cache_until;
  };
  struct Session {
    std::string client_id;
    std::string username;
    Grant grant;
    // When the broker reported the disconnect; InfiniteFuture while connected.
    absl::Time offline_since = absl::InfiniteFuture();
    // This session's entry in `offline_` while offline.
    std::list<uintptr_t>::iterator offline_pos;
    bool offline() const { return offline_since != absl::InfiniteFuture(); }
  };
  using SessionMap = absl::flat_hash_map<uintptr_t, Session>;

  explicit PluginCore(Options options);
  static std::string CacheKey(const ConnectAttempt& a);
  const Grant* CacheLookup(const std::string& key, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CachePut(std::string key, const Grant& grant, absl::Time until)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether an offline session may no longer answer ACL checks.
  bool OfflineExpired(const Session& s, absl::Time now) const;
  // Replaces whatever is remembered for `client` with `session` (online).
  void PutSession(uintptr_t client, Session session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseSession(SessionMap::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops a few expired offline sessions from the oldest end: amortised O(1) per
  // call, since each disconnect adds at most one.
  void ReapOffline(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  PluginConfig config_;
  std::unique_ptr<AuthClient> client_;
  const Clock* clock_;

  mutable absl::Mutex mu_;
  std::list<CacheEntry> lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::list<CacheEntry>::iterator> cache_ ABSL_GUARDED_BY(mu_);
  SessionMap sessions_ ABSL_GUARDED_BY(mu_);
  // Handles of the offline sessions, in disconnect order (oldest first): eviction
  // and reaping take from the front without scanning `sessions_`.
  std::list<uintptr_t> offline_ ABSL_GUARDED_BY(mu_);
  absl::Time fail_fast_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Unreachable probes in a row (reset by any answer from iotauth).
  int consecutive_unreachable_ ABSL_GUARDED_BY(mu_) = 0;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth::mosquitto
