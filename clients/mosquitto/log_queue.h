// Log lines from the shared iotauth code the plugin links (the TLS reloader), which
// may log from a thread of its own. Mosquitto's log functions are only safe on the
// broker's thread (a `log_dest topic` line is published as a message), so the
// plugin queues such lines here and writes them at its next broker callback or
// tick.
// Bounded: past `capacity` lines, the newest are counted instead and the count is
// reported with the next drain.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "services/common/log.h"

namespace iotauth::mosquitto {

class LogQueue {
 public:
  explicit LogQueue(size_t capacity) : capacity_(capacity) {}

  void Push(log::Level level, absl::string_view line) {
    absl::MutexLock lock(&mu_);
    if (lines_.size() >= capacity_) {
      ++dropped_;
      return;
    }
    lines_.emplace_back(level, std::string(line));
  }

  // Calls write(level, line) for each queued line, oldest first, outside the lock.
  template <typename Write>
  void Drain(Write write) {
    std::deque<std::pair<log::Level, std::string>> lines;
    size_t dropped = 0;
    {
      absl::MutexLock lock(&mu_);
      if (lines_.empty() && dropped_ == 0) return;
      lines.swap(lines_);
      dropped = dropped_;
      dropped_ = 0;
    }
    for (const auto& [level, line] : lines) write(level, line);
    if (dropped > 0) {
      write(log::Level::kWarn,
            absl::StrCat(dropped, " log lines were not written (the queue was full)"));
    }
  }

 private:
  const size_t capacity_;
  absl::Mutex mu_;
  std::deque<std::pair<log::Level, std::string>> lines_ ABSL_GUARDED_BY(mu_);
  size_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iotauth::mosquitto
