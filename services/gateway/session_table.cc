#include "services/gateway/session_table.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace iotauth::gateway {

std::string SessionTable::Key(absl::string_view node, absl::string_view client_id) {
  // The node's length first: any byte may occur in either part (protobuf strings
  // carry NUL), so no separator alone would keep two pairs apart.
  return absl::StrCat(node.size(), ":", node, client_id);
}

void SessionTable::Put(absl::string_view node, absl::string_view client_id, Session session) {
  std::string key = Key(node, client_id);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->session = std::move(session);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  while (lru_.size() >= capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
    ++evicted_;
  }
  lru_.push_front(Entry{key, std::move(session)});
  index_.emplace(std::move(key), lru_.begin());
}

std::optional<Session> SessionTable::Get(absl::string_view node, absl::string_view client_id,
                                         absl::Time now) {
  const std::string key = Key(node, client_id);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  if (it->second->session.expires_at <= now) {
    lru_.erase(it->second);
    index_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->session;
}

void SessionTable::Remove(absl::string_view node, absl::string_view client_id) {
  const std::string key = Key(node, client_id);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

bool SessionTable::RemoveIfConnection(absl::string_view node, absl::string_view client_id,
                                      absl::string_view connection) {
  const std::string key = Key(node, client_id);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end() || it->second->session.connection != connection) return false;
  lru_.erase(it->second);
  index_.erase(it);
  return true;
}

uint64_t SessionTable::evicted() const {
  absl::MutexLock lock(&mu_);
  return evicted_;
}

size_t SessionTable::size() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

}  // namespace iotauth::gateway
