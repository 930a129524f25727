#include "services/common/log_limiter.h"

#include <utility>

namespace iotauth {

std::optional<uint64_t> LogLimiter::Admit(absl::string_view key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (windows_.size() >= options_.max_keys && !windows_.contains(key)) key = "";
  auto [it, fresh] = windows_.try_emplace(key);
  Window& w = it->second;
  if (fresh || now - w.start >= options_.window || now < w.start) {
    w.start = now;
    w.written = 0;
  }
  if (w.written >= options_.burst) {
    ++w.suppressed;
    return std::nullopt;
  }
  ++w.written;
  return std::exchange(w.suppressed, 0);
}

}  // namespace iotauth
