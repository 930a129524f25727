#include "services/common/posix_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace iotauth::posix_file {

bool WriteAll(int fd, absl::string_view data, uint64_t offset) {
  while (!data.empty()) {
    const ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {  // no progress and no error: do not spin
      errno = EIO;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

absl::StatusOr<std::string> ReadToEnd(int fd, absl::string_view path, ErrnoError error,
                                      size_t max_bytes) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return error("read", path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return absl::OutOfRangeError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
  }
}

absl::Status ReplaceFile(const std::string& path, absl::string_view data, bool sync, int dir_fd,
                         ErrnoError error, mode_t mode) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) return error("create", tmp);
  const bool ok = WriteAll(fd, data, 0) && (!sync || fsync(fd) == 0);
  absl::Status st = ok ? absl::OkStatus() : error("write", tmp);
  close(fd);
  if (st.ok() && rename(tmp.c_str(), path.c_str()) != 0) st = error("rename", tmp);
  if (st.ok() && sync && fsync(dir_fd) != 0) st = error("fsync directory of", path);
  if (!st.ok()) unlink(tmp.c_str());
  return st;
}

std::string LockPathFor(absl::string_view store_path) {
  while (store_path.size() > 1 && store_path.back() == '/') store_path.remove_suffix(1);
  return absl::StrCat(store_path, ".lock");
}

absl::StatusOr<std::unique_ptr<FileLock>> FileLock::Acquire(const std::string& path,
                                                            absl::string_view what, bool wait) {
  const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0640);
  if (fd < 0) {
    const int err = errno;
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the lock file ", path, ": ", std::strerror(err)));
  }
  while (flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    std::string holder;
    if (err == EWOULDBLOCK) {
      char buf[32] = {};
      const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
      int64_t pid = 0;
      if (n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(buf, n)), &pid)) {
        holder = absl::StrCat(" (pid ", pid, ")");
      }
    }
    close(fd);
    if (err != EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        what, " is in use by another process", holder, ", which holds ", path,
        ": stop that process, or give this one storage of its own (one process per store)"));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  // The pid only names the holder in refusals; the lock holds without it.
  if (ftruncate(fd, 0) == 0) WriteAll(fd, pid, 0);
  return std::unique_ptr<FileLock>(new FileLock(path, fd));
}

FileLock::~FileLock() { close(fd_); }  // releases the lock; the file stays

}  // namespace iotauth::posix_file
