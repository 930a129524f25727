// SessionTable: who each connected EMQX client is. ExHook's client.authorize hook
// names the client only by its client id, so the identity established at
// client.authenticate is remembered here, per (EMQX node, client id), until the client
// disconnects, its credential expires, or the table needs the room (least recently
// used first). A client that is not in the table is not authorized (fail closed).
//
// Each session also records the connection it was established on (the peer's
// address and port). Two connections can carry one client id for a moment (a
// device reconnects before EMQX notices its old socket is dead; EMQX then takes the
// old session over): only the connection that authenticated is authorized, and
// only its own disconnect (or failed re-authentication) ends the session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/iotauth/identity/v1/identity.pb.h"

namespace iotauth::gateway {

struct Session {
  iotauth::identity::v1::Identity identity;
  std::string username;
  std::string cert_cn;
  // The connection that authenticated ("peerhost:peerport"; see ConnectionOf).
  std::string connection;
  // When the credential stops being valid (InfiniteFuture when it does not expire).
  absl::Time expires_at = absl::InfiniteFuture();
};

class SessionTable {
 public:
  // `capacity` > 0.
  explicit SessionTable(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // Inserts or replaces the session of (node, client_id); evicts the least recently
  // used session when full. Thread-safe.
  void Put(absl::string_view node, absl::string_view client_id, Session session);
  // The live session of (node, client_id), or nullopt (absent or expired at `now`;
  // an expired session is removed). Thread-safe.
  std::optional<Session> Get(absl::string_view node, absl::string_view client_id, absl::Time now);
  // Forgets (node, client_id). Thread-safe.
  void Remove(absl::string_view node, absl::string_view client_id);
  // Forgets (node, client_id) only if its session was established on `connection`;
  // returns whether it did. Thread-safe.
  bool RemoveIfConnection(absl::string_view node, absl::string_view client_id,
                          absl::string_view connection);
  // Sessions evicted to make room since construction (a full table drops live
  // clients: size it for the cluster). Thread-safe.
  uint64_t evicted() const;
  size_t size() const;

 private:
  struct Entry {
    std::string key;
    Session session;
  };
  static std::string Key(absl::string_view node, absl::string_view client_id);

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);
  uint64_t evicted_ ABSL_GUARDED_BY(mu_) = 0;  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth::gateway
