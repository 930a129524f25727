// Small POSIX file helpers shared by the on-disk stores (the audit segment log and
// the audit shutdown spool): retried writes, reading to the end, the
// temporary-file-then-rename replacement with its fsyncs, and the lock that keeps a
// store to one process.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iotauth::posix_file {

// How the caller words a failed call: `what` failed on `path`, errno says why
// (read before anything else runs).
using ErrnoError = absl::Status (*)(absl::string_view what, absl::string_view path);

// pwrite()s all of `data` at `offset`, retrying on EINTR and short writes. False
// with errno set otherwise (a short write on a full disk is followed by the call
// that fails with ENOSPC; a call that writes nothing without an error is EIO).
bool WriteAll(int fd, absl::string_view data, uint64_t offset);

// Everything from `fd`'s position to its end. `path` names it in errors. More than
// `max_bytes` is OUT_OF_RANGE (a path pointing at something endless, /dev/zero,
// must not eat the memory).
absl::StatusOr<std::string> ReadToEnd(int fd, absl::string_view path, ErrnoError error,
                                      size_t max_bytes = SIZE_MAX);

// Writes `data` to `path` through `path`.tmp (created with `mode`, before the umask)
// and a rename; with `sync`, the file and then `dir_fd` (the directory holding
// `path`) are fsynced before it returns. The temporary file is removed on failure.
absl::Status ReplaceFile(const std::string& path, absl::string_view data, bool sync, int dir_fd,
                         ErrnoError error, mode_t mode = 0640);

// The lock file guarding the store at `store_path` (a file or a directory):
// `store_path` without trailing slashes, then ".lock", so that "/x/audit" and
// "/x/audit/" name the same lock.
std::string LockPathFor(absl::string_view store_path);

// An exclusive advisory lock (flock) on `path`, created when missing, held until
// the object is destroyed or the process ends (kill -9 included). The holder writes
// its pid into the file, so that a refused process can name it.
class FileLock {
 public:
  // FAILED_PRECONDITION when another process (or another FileLock in this one)
  // holds it, naming the holder's pid when the file gives one; the error of open()
  // otherwise. `what` names the guarded thing in the message ("audit log ...").
  // With `wait`, waits for the holder to let go instead of refusing.
  static absl::StatusOr<std::unique_ptr<FileLock>> Acquire(const std::string& path,
                                                           absl::string_view what,
                                                           bool wait = false);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  FileLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

}  // namespace iotauth::posix_file
