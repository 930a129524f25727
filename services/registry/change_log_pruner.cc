#include "services/registry/change_log_pruner.h"

#include <string>

#include "services/common/log.h"
#include "services/common/thread_name.h"

namespace iotauth::registry {

absl::StatusOr<std::unique_ptr<ChangeLogPruner>> ChangeLogPruner::Create(Options options) {
  if (options.store == nullptr) return absl::InvalidArgumentError("change log pruner: no store");
  if (options.retention <= absl::ZeroDuration() || options.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("change log pruner: retention and interval must be > 0");
  }
  if (options.clock == nullptr) options.clock = &RealClock::Get();
  return std::unique_ptr<ChangeLogPruner>(new ChangeLogPruner(options));
}

ChangeLogPruner::~ChangeLogPruner() { Stop(); }

absl::StatusOr<int64_t> ChangeLogPruner::RunOnce() {
  absl::StatusOr<int64_t> pruned =
      options_.store->PruneChanges(options_.clock->Now() - options_.retention);
  absl::MutexLock lock(&mu_);
  ++passes_;
  return pruned;
}

void ChangeLogPruner::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void ChangeLogPruner::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t ChangeLogPruner::passes() const {
  absl::MutexLock lock(&mu_);
  return passes_;
}

void ChangeLogPruner::Loop() {
  SetCurrentThreadName("changelog-prune");
  for (;;) {
    absl::StatusOr<int64_t> pruned = RunOnce();
    if (!pruned.ok()) {
      log::Warn("registry change log pruning failed (retried at the next pass)",
                {{"error", std::string(pruned.status().message())}});
    } else if (*pruned > 0) {
      log::Info("registry change log pruned",
                {{"events", std::to_string(*pruned)},
                 {"older_than", absl::FormatDuration(options_.retention)}});
    }
    absl::MutexLock lock(&mu_);
    auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), options_.interval)) return;
  }
}

}  // namespace iotauth::registry
