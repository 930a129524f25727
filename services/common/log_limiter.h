// A per-key cap on repeated log lines: at most `burst` lines per key in each
// `window`, the rest counted and reported on the next line that is written. Used
// where a peer can make a line at will (a failed TLS handshake is one gRPC line per
// attempt), so that a port scanner cannot flood the log and push out what matters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth {

class LogLimiter {
 public:
  struct Options {
    size_t burst = 10;                         // lines written per key per window
    absl::Duration window = absl::Minutes(1);  // windows start at a key's first line
    size_t max_keys = 1024;  // beyond it, new keys share one (callers pass few keys)
  };

  explicit LogLimiter(Options options) : options_(options) {}

  // Whether a line for `key` at `now` is written. nullopt: it is not (it is
  // counted). Otherwise the number of lines for `key` not written since the last
  // one that was (0 when none), for the caller to write beside the line.
  std::optional<uint64_t> Admit(absl::string_view key, absl::Time now);

 private:
  struct Window {
    absl::Time start;
    size_t written = 0;
    uint64_t suppressed = 0;
  };

  const Options options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Window> windows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth
