// Keeps the registry's change log bounded: every `interval`, deletes the change
// events older than `retention`. The log is what WatchChanges replays to a mirror
// that reconnects; a mirror further behind than `retention` gets CURSOR_EXPIRED and
// resyncs from a full snapshot (which keeps serving its old records meanwhile).
#pragma once

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/clock.h"
#include "services/registry/store.h"

namespace iotauth::registry {

class ChangeLogPruner {
 public:
  struct Options {
    RegistryStore* store = nullptr;                  // required; outlives the pruner
    const Clock* clock = nullptr;                    // default: the real clock
    absl::Duration retention = absl::Hours(24 * 7);  // > 0
    absl::Duration interval = absl::Hours(1);        // > 0, between passes
  };

  // INVALID_ARGUMENT without a store or with a non-positive duration.
  static absl::StatusOr<std::unique_ptr<ChangeLogPruner>> Create(Options options);
  ~ChangeLogPruner();  // Stop()

  // One pass: deletes the changes older than now - retention; returns how many.
  absl::StatusOr<int64_t> RunOnce();

  // A thread runs a pass now, then every `interval` (failures are logged and
  // retried at the next pass). Stop() ends it promptly. Both idempotent.
  void Start();
  void Stop();

  int64_t passes() const;  // completed passes (for tests and logs)

 private:
  explicit ChangeLogPruner(Options options) : options_(options) {}
  void Loop();

  const Options options_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t passes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace iotauth::registry
