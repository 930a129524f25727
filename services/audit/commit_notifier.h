// In-process "new events committed" signal: the pipeline publishes the head
// sequence after each commit, and Watch streams wait on it instead of polling the
// store.
#pragma once

#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth::audit {

// Thread-safe.
class CommitNotifier {
 public:
  // Raises the published head to `head_sequence` (never lowers it) and wakes waiters.
  void Publish(uint64_t head_sequence) {
    absl::MutexLock lock(&mu_);
    if (head_sequence > head_) head_ = head_sequence;
  }

  uint64_t head() const {
    absl::MutexLock lock(&mu_);
    return head_;
  }

  // Blocks until the head exceeds `after_sequence` or `timeout` passes; returns the
  // head either way.
  uint64_t WaitAbove(uint64_t after_sequence, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto above = [this, after_sequence]()
                     ABSL_SHARED_LOCKS_REQUIRED(mu_) { return head_ > after_sequence; };
    mu_.AwaitWithTimeout(absl::Condition(&above), timeout);
    return head_;
  }

 private:
  mutable absl::Mutex mu_;
  uint64_t head_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iotauth::audit
