#include "services/common/process_hardening.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

// In a child, so that this test binary stays as it was: exit code 0 when the child
// ends up without core dumps and not dumpable, a distinct code for each miss.
TEST(ProcessHardeningTest, NoCoreFilesAndNotDumpable) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1) _exit(10);  // the starting point
    if (!KeepSecretsInProcess().ok()) _exit(11);
    struct rlimit core {};
    if (getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 || core.rlim_max != 0) _exit(12);
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) _exit(13);
    // A second call (a library doing the same) is harmless.
    if (!KeepSecretsInProcess().ok()) _exit(14);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ProcessHardeningTest, TheOpenFileLimitGoesUpToTheHardOne) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct rlimit files {};
    if (getrlimit(RLIMIT_NOFILE, &files) != 0) _exit(10);
    if (files.rlim_max < 64) _exit(0);  // nothing to show on such a machine
    const rlim_t hard = files.rlim_max;
    files.rlim_cur = 32;
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) _exit(11);
    absl::StatusOr<uint64_t> raised = RaiseOpenFileLimit();
    if (!raised.ok() || *raised != hard) _exit(12);
    if (getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur != hard) _exit(13);
    // Already at the hard limit: unchanged.
    raised = RaiseOpenFileLimit();
    if (!raised.ok() || *raised != hard) _exit(14);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace iotauth
