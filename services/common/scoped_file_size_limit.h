// Test-only: stands in for a volume that fills. Caps the size any file of this
// process may reach (RLIMIT_FSIZE): a write crossing the cap is cut short, and the
// next one fails with EFBIG (SIGXFSZ, which would kill the process, is ignored
// meanwhile). The old limit and handler come back when the object is destroyed,
// also when an assertion ends the test early.
#pragma once

#include <sys/resource.h>

#include <csignal>
#include <cstdint>

namespace iotauth::testing {

class ScopedFileSizeLimit {
 public:
  explicit ScopedFileSizeLimit(uint64_t bytes) {
    if (getrlimit(RLIMIT_FSIZE, &old_limit_) != 0) return;
    struct rlimit limit = old_limit_;
    limit.rlim_cur = bytes;
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    ok_ = setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~ScopedFileSizeLimit() {
    if (old_handler_ == SIG_ERR) return;
    setrlimit(RLIMIT_FSIZE, &old_limit_);
    std::signal(SIGXFSZ, old_handler_);
  }
  ScopedFileSizeLimit(const ScopedFileSizeLimit&) = delete;
  ScopedFileSizeLimit& operator=(const ScopedFileSizeLimit&) = delete;

  // The cap is in force.
  bool ok() const { return ok_; }

 private:
  struct rlimit old_limit_ {};
  void (*old_handler_)(int) = SIG_ERR;
  bool ok_ = false;
};

}  // namespace iotauth::testing
