#include "services/common/posix_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

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

absl::StatusOr<std::string> ReadToEnd(int fd, absl::string_view path, ErrnoError error) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return error("read", path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

absl::Status ReplaceFile(const std::string& path, absl::string_view data, bool sync, int dir_fd,
                         ErrnoError error) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0640);
  if (fd < 0) return error("create", tmp);
  const bool ok = WriteAll(fd, data, 0) && (!sync || fsync(fd) == 0);
  absl::Status st = ok ? absl::OkStatus() : error("write", tmp);
  close(fd);
  if (st.ok() && rename(tmp.c_str(), path.c_str()) != 0) st = error("rename", tmp);
  if (st.ok() && sync && fsync(dir_fd) != 0) st = error("fsync directory of", path);
  if (!st.ok()) unlink(tmp.c_str());
  return st;
}

}  // namespace iotauth::posix_file
