#include "services/common/process_hardening.h"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace iotauth {

absl::Status KeepSecretsInProcess() {
  const struct rlimit none = {0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot turn core dumps off (setrlimit): ", std::strerror(errno)));
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot mark the process not dumpable (prctl): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RaiseOpenFileLimit() {
  struct rlimit files {};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot read the open-file limit (getrlimit): ", std::strerror(errno)));
  }
  if (files.rlim_cur != files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
      return absl::InternalError(
          absl::StrCat("cannot raise the open-file limit (setrlimit): ", std::strerror(errno)));
    }
  }
  return static_cast<uint64_t>(files.rlim_cur);
}

}  // namespace iotauth
