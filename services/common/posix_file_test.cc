#include "services/common/posix_file.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/scoped_file_size_limit.h"

namespace iotauth::posix_file {
namespace {

std::string TempPath(absl::string_view name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name, ".", getpid());
}

// A write cut short (here by RLIMIT_FSIZE, as by a full volume) is continued, and
// the call that then fails gives its own errno.
TEST(WriteAllTest, AShortWriteIsContinuedAndTheFailureHasItsOwnErrno) {
  const std::string path = TempPath("short");
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WriteAll(fd, std::string(1000, 'a'), 0));
  bool ok = true;
  int err = 0;
  {
    const testing::ScopedFileSizeLimit limit(3000);
    ASSERT_TRUE(limit.ok());
    errno = ETIMEDOUT;
    ok = WriteAll(fd, std::string(5000, 'b'), 1000);
    err = errno;
  }
  EXPECT_FALSE(ok);
  EXPECT_EQ(err, EFBIG);
  EXPECT_EQ(lseek(fd, 0, SEEK_END), 3000) << "the part that fit was written";
  close(fd);
  unlink(path.c_str());
}

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::InternalError(absl::StrCat(what, " ", path));
}

// Something endless is refused at the cap instead of read until memory runs out.
TEST(ReadToEndTest, MoreThanTheCapIsOutOfRange) {
  const int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  absl::StatusOr<std::string> endless = ReadToEnd(fd, "/dev/zero", Errno, 1 << 20);
  close(fd);
  EXPECT_EQ(endless.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(endless.status().message(), "/dev/zero is larger than 1048576 bytes");
}

TEST(FileLockTest, OneLockPathPerStoreHoweverItIsSpelled) {
  EXPECT_EQ(LockPathFor("/x/audit"), "/x/audit.lock");
  EXPECT_EQ(LockPathFor("/x/audit/"), "/x/audit.lock");
  EXPECT_EQ(LockPathFor("/x/audit//"), "/x/audit.lock");
  EXPECT_EQ(LockPathFor("registry.db"), "registry.db.lock");
}

TEST(FileLockTest, OneHolderAtATimeAndTheRefusalNamesIt) {
  const std::string path = TempPath("lock");
  auto first = FileLock::Acquire(path, "the test store");
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = FileLock::Acquire(path, "the test store");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(absl::StrCat("the test store is in use by another "
                                                        "process (pid ",
                                                        getpid(), ")")),
            absl::string_view::npos)
      << second.status();
  EXPECT_NE(second.status().message().find(path), absl::string_view::npos) << second.status();
  first->reset();
  auto third = FileLock::Acquire(path, "the test store");
  EXPECT_TRUE(third.ok()) << third.status();
  third->reset();
  unlink(path.c_str());
}

// Held by another process until it dies, kill -9 included.
TEST(FileLockTest, AnotherProcessHoldsItUntilItIsKilled) {
  const std::string path = TempPath("lock-child");
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    auto lock = FileLock::Acquire(path, "x");
    const char c = lock.ok() ? '1' : '0';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  ASSERT_EQ(c, '1');
  auto refused = FileLock::Acquire(path, "the test store");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(absl::StrCat("(pid ", child, ")")),
            absl::string_view::npos)
      << refused.status();
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  auto after = FileLock::Acquire(path, "the test store");
  EXPECT_TRUE(after.ok()) << after.status();
  after->reset();
  unlink(path.c_str());
}

}  // namespace
}  // namespace iotauth::posix_file
