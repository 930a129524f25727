// Tests: an AuditPipelineObserver that records every OnWritable it is told, in
// order. Thread-safe; derive from it to count other calls too.
#pragma once

#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "services/audit/pipeline.h"

namespace iotauth::audit {

class WritableChanges : public AuditPipelineObserver {
 public:
  void OnWritable(bool writable, const absl::Status& cause) override {
    absl::MutexLock l(&mu_);
    changes_.emplace_back(writable, cause);
  }
  // (writable, cause) pairs, oldest first.
  std::vector<std::pair<bool, absl::Status>> Changes() {
    absl::MutexLock l(&mu_);
    return changes_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<bool, absl::Status>> changes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth::audit
