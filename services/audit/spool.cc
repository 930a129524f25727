#include "services/audit/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "services/audit/audit_store.h"
#include "services/audit/canonical.h"
#include "services/audit/event_util.h"
#include "services/common/big_endian.h"
#include "services/common/crypto.h"

namespace iotauth::audit {

namespace {

constexpr absl::string_view kMagic = "IOTSPOL1";
constexpr size_t kHashBytes = 32;

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::Status(
      errno == ENOSPC ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kUnavailable,
      absl::StrCat("audit spool: ", what, " ", path, ": ", std::strerror(errno)));
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status SyncDir(const std::string& path) {
  const std::string dir = DirOf(path);
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open directory", dir);
  const bool ok = fsync(fd) == 0;
  absl::Status st = ok ? absl::OkStatus() : Errno("fsync directory", dir);
  close(fd);
  return st;
}

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

absl::Status Damaged(absl::string_view why) {
  return absl::DataLossError(absl::StrCat("audit spool damaged: ", why));
}

}  // namespace

std::string SerializeSpool(const SpooledEvents& events) {
  std::string out(kMagic);
  big_endian::AppendU32(static_cast<uint32_t>(events.size()), &out);
  for (const std::string& e : events) {
    big_endian::AppendU32(static_cast<uint32_t>(e.size()), &out);
    out.append(e);
  }
  out.append(crypto::Sha256(out));
  return out;
}

absl::StatusOr<SpooledEvents> ParseSpool(absl::string_view bytes) {
  if (bytes.size() < kMagic.size() + 4 + kHashBytes || bytes.substr(0, kMagic.size()) != kMagic) {
    return Damaged("not a spool file, or cut short");
  }
  const absl::string_view body = bytes.substr(0, bytes.size() - kHashBytes);
  if (crypto::Sha256(body) != bytes.substr(body.size())) return Damaged("checksum mismatch");
  size_t at = kMagic.size();
  const uint32_t n = big_endian::LoadU32(body.data() + at);
  at += 4;
  SpooledEvents events;
  for (uint32_t i = 0; i < n; ++i) {
    if (body.size() - at < 4) return Damaged(absl::StrCat("event ", i, " cut short"));
    const uint32_t len = big_endian::LoadU32(body.data() + at);
    at += 4;
    if (body.size() - at < len) return Damaged(absl::StrCat("event ", i, " cut short"));
    const absl::string_view e = body.substr(at, len);
    at += len;
    // What a store's AppendEncoded accepts, and what decodes to an event (the
    // remote sink resends events, not bytes): a spool that passes is committed.
    const EncodedEvent one{0, e.size(), false};
    CanonicalFields f;
    iotauth::audit::v1::AuditEvent decoded;
    if (!CheckEncodedEvent(EncodedBatch{e, absl::MakeConstSpan(&one, 1)}, one, &f).ok() ||
        f.sequence != 0 || !f.prev_hash_ok ||
        !std::all_of(f.prev_hash_raw.begin(), f.prev_hash_raw.end(),
                     [](char c) { return c == 0; }) ||
        !CanonicalFieldsToEvent(f, &decoded) || !decoded.has_time()) {
      return Damaged(absl::StrCat("event ", i, " is not an unchained audit event"));
    }
    // Nothing Record could not have queued (it caps every field the same way).
    if (CapEventFields(&decoded)) {
      return Damaged(
          absl::StrCat("event ", i, " has a field over ", kMaxAuditFieldBytes, " bytes"));
    }
    events.emplace_back(e);
  }
  if (at != body.size()) return Damaged("bytes after the last event");
  return events;
}

absl::Status SaveSpool(const std::string& path, const SpooledEvents& events) {
  const std::string data = SerializeSpool(events);
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0640);
  if (fd < 0) return Errno("create", tmp);
  const bool ok = WriteAll(fd, data) && fsync(fd) == 0;
  absl::Status st = ok ? absl::OkStatus() : Errno("write", tmp);
  close(fd);
  if (st.ok() && rename(tmp.c_str(), path.c_str()) != 0) st = Errno("rename", tmp);
  if (st.ok()) st = SyncDir(path);
  if (!st.ok()) unlink(tmp.c_str());
  return st;
}

absl::StatusOr<std::optional<SpooledEvents>> LoadSpool(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<SpooledEvents>();
    return Errno("open", path);
  }
  // The next start commits what the file holds into the chain: only a file this
  // service wrote (its own user, writable by no one else) is trusted.
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    absl::Status s = Errno("stat", path);
    close(fd);
    return s;
  }
  if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("audit spool ", path,
                     " is not trusted: not a regular file of this user, or writable by others"));
  }
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = Errno("read", path);
      close(fd);
      return s;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  absl::StatusOr<SpooledEvents> events = ParseSpool(data);
  if (!events.ok()) {
    return absl::Status(events.status().code(),
                        absl::StrCat(path, ": ", events.status().message()));
  }
  return std::optional<SpooledEvents>(std::move(*events));
}

absl::Status RemoveSpool(const std::string& path) {
  if (unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("remove", path);
  }
  return SyncDir(path);
}

absl::StatusOr<std::string> SetAsideSpool(const std::string& path, int64_t unix_seconds) {
  std::string aside = absl::StrCat(path, ".damaged.", unix_seconds);
  if (rename(path.c_str(), aside.c_str()) != 0) return Errno("set aside", path);
  if (absl::Status st = SyncDir(path); !st.ok()) return st;
  return aside;
}

}  // namespace iotauth::audit
