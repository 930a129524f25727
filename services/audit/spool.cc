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
#include "services/common/posix_file.h"

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

// The directory holding `path`, open for fsync.
absl::StatusOr<int> OpenDirOf(const std::string& path) {
  const int fd = open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open the directory of", path);
  return fd;
}

absl::Status SyncDir(const std::string& path) {
  absl::StatusOr<int> fd = OpenDirOf(path);
  if (!fd.ok()) return fd.status();
  absl::Status st = fsync(*fd) == 0 ? absl::OkStatus() : Errno("fsync directory of", path);
  close(*fd);
  return st;
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
    // Retention records are the store's own, appended directly, never queued: one
    // planted here would vouch for a start of the log that was cut by hand.
    if (decoded.type() == iotauth::audit::v1::EVENT_TYPE_RETENTION) {
      return Damaged(
          absl::StrCat("event ", i, " is a retention record, which only the audit store writes"));
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
  absl::StatusOr<int> dir_fd = OpenDirOf(path);
  if (!dir_fd.ok()) return dir_fd.status();
  absl::Status st =
      posix_file::ReplaceFile(path, SerializeSpool(events), /*sync=*/true, *dir_fd, Errno);
  close(*dir_fd);
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
  absl::StatusOr<std::string> data = posix_file::ReadToEnd(fd, path, Errno);
  close(fd);
  if (!data.ok()) return data.status();
  absl::StatusOr<SpooledEvents> events = ParseSpool(*data);
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

std::string SetAsideName(const std::string& path, int64_t unix_seconds) {
  return absl::StrCat(path, ".damaged.", unix_seconds);
}

absl::StatusOr<std::string> SetAsideSpool(const std::string& path, int64_t unix_seconds) {
  std::string aside = SetAsideName(path, unix_seconds);
  if (rename(path.c_str(), aside.c_str()) != 0) return Errno("set aside", path);
  if (absl::Status st = SyncDir(path); !st.ok()) return st;
  return aside;
}

bool SpoolUntrusted(const absl::Status& load_status) {
  return load_status.code() == absl::StatusCode::kDataLoss ||
         load_status.code() == absl::StatusCode::kFailedPrecondition;
}

iotauth::audit::v1::AuditEvent SpoolLostGapEvent(const absl::Status& load_status,
                                                 absl::string_view kept_as, absl::Time now) {
  iotauth::audit::v1::AuditEvent gap;
  gap.set_event_id(NewEventId());
  SetTimestamp(now, gap.mutable_time());
  gap.set_type(iotauth::audit::v1::EVENT_TYPE_GAP);
  gap.set_outcome(iotauth::audit::v1::OUTCOME_FAILURE);
  gap.set_reason(absl::StrCat("audit events spooled at the last shutdown were lost: ",
                              load_status.message(), " (the file is kept as ", kept_as, ")"));
  (*gap.mutable_attributes())["cause"] =
      load_status.code() == absl::StatusCode::kDataLoss ? "damaged_spool" : "untrusted_spool";
  return gap;
}

absl::Status SetAsideNote(const absl::Status& load_status, absl::string_view kept_as) {
  return absl::DataLossError(absl::StrCat(load_status.message(), ": set aside as ", kept_as,
                                          " and recorded as a GAP event"));
}

}  // namespace iotauth::audit
