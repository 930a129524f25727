#include "services/common/tls_reloader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "services/common/crypto.h"
#include "services/common/log.h"

namespace iotauth {
namespace {

absl::Status ErrnoStatus(absl::string_view what, absl::string_view path) {
  const int err = errno;
  return absl::UnavailableError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(err)));
}

// Names a set of contents without keeping a copy of the key around for it.
std::string Fingerprint(const TlsFiles& f) {
  return absl::StrCat(f.with_identity ? crypto::Sha256(f.cert_chain) : "",
                      f.with_identity ? crypto::Sha256(f.private_key) : "",
                      f.with_ca ? crypto::Sha256(f.ca_bundle) : "");
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// Writes one staged file and gives it `mtime`: gRPC tells a file it read half-way
// through a swap by a changed modification time, in whole seconds.
absl::Status WriteStaged(const std::string& dir, const std::string& name, absl::string_view data,
                         int64_t mtime) {
  const std::string path = absl::StrCat(dir, "/", name);
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("create", path);
  if (!posix_file::WriteAll(fd, data, 0)) {
    absl::Status st = ErrnoStatus("write", path);
    close(fd);
    return st;
  }
  const struct timespec times[2] = {{static_cast<time_t>(mtime), 0},
                                    {static_cast<time_t>(mtime), 0}};
  if (futimens(fd, times) != 0) {
    absl::Status st = ErrnoStatus("set the times of", path);
    close(fd);
    return st;
  }
  if (close(fd) != 0) return ErrnoStatus("close", path);
  return absl::OkStatus();
}

// Removes the staging directories of processes that are gone (their lock is free);
// the caller holds the root's lock, so none is being made meanwhile.
void RemoveAbandoned(const std::string& root) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    if (!entry.is_directory(ec)) continue;
    const std::string dir = entry.path().string();
    absl::StatusOr<std::unique_ptr<posix_file::FileLock>> lock =
        posix_file::FileLock::Acquire(dir + "/lock", "the TLS staging directory");
    if (!lock.ok()) continue;  // a live process's
    std::filesystem::remove_all(dir, ec);
  }
}

absl::Status CheckPaired(const TlsSourcePaths& paths) {
  if (paths.cert_file.empty() != paths.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS certificate file needs its key file, and a key file its certificate file");
  }
  return absl::OkStatus();
}

}  // namespace

TlsReloader::TlsReloader(TlsSourcePaths paths, Options options)
    : paths_(std::move(paths)), options_(std::move(options)) {}

absl::StatusOr<std::shared_ptr<TlsReloader>> TlsReloader::Start(const TlsSourcePaths& paths,
                                                                Options options) {
  if (absl::Status paired = CheckPaired(paths); !paired.ok()) return paired;
  absl::StatusOr<TlsFiles> files = ReadTlsFiles(paths);
  if (!files.ok()) return files.status();
  return StartWith(paths, *std::move(files), std::move(options));
}

absl::StatusOr<std::shared_ptr<TlsReloader>> TlsReloader::StartWith(const TlsSourcePaths& paths,
                                                                    TlsFiles initial,
                                                                    Options options) {
  if (absl::Status paired = CheckPaired(paths); !paired.ok()) return paired;
  std::shared_ptr<TlsReloader> r(new TlsReloader(paths, std::move(options)));
  absl::StatusOr<TlsCertificateInfo> info = CheckTlsFiles(initial);
  if (!info.ok()) {
    std::string named;
    for (const std::string* p : {&paths.cert_file, &paths.key_file, &paths.ca_file}) {
      if (!p->empty()) absl::StrAppend(&named, named.empty() ? "" : ", ", *p);
    }
    return absl::Status(info.status().code(),
                        absl::StrCat(info.status().message(), " (", named, ")"));
  }

  // The private directory: made, locked and cleaned up under the root's lock, so
  // that processes starting together on one data directory do not remove each
  // other's.
  const std::string& root = r->options_.staging_root;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", root, ": ", ec.message(),
                                               " (it must be writable by this process's user)"));
  }
  // The root must be ours and private: whoever can write to it could swap the
  // staged files (a CA bundle or key of their choosing) under gRPC. A shared place
  // such as /tmp is safe only through a directory this user made.
  {
    struct stat st {};
    if (lstat(root.c_str(), &st) != 0) return ErrnoStatus("inspect", root);
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the TLS staging directory ", root,
          " is not a directory (a symbolic link is refused too): point it at a private one"));
    }
    if (st.st_uid != geteuid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the TLS staging directory ", root, " belongs to uid ", st.st_uid, ", not to uid ",
          geteuid(), " that this process runs as: remove it, or point it at a private one"));
    }
    if (chmod(root.c_str(), 0700) != 0) return ErrnoStatus("make private", root);
  }
  {
    absl::StatusOr<std::unique_ptr<posix_file::FileLock>> root_lock =
        posix_file::FileLock::Acquire(root + "/.lock", "the TLS staging root", /*wait=*/true);
    if (!root_lock.ok()) return root_lock.status();
    RemoveAbandoned(root);
    std::string templ = absl::StrCat(root, "/", r->options_.use, "-XXXXXX");
    if (mkdtemp(templ.data()) == nullptr) return ErrnoStatus("create a directory under", root);
    r->dir_ = templ;
    absl::StatusOr<std::unique_ptr<posix_file::FileLock>> own =
        posix_file::FileLock::Acquire(r->dir_ + "/lock", "the TLS staging directory");
    if (!own.ok()) return own.status();
    r->dir_lock_ = std::move(*own);
  }

  {
    absl::MutexLock lock(&r->mu_);
    absl::Status staged = r->Stage(initial);
    if (!staged.ok()) return staged;
    r->served_fingerprint_ = Fingerprint(initial);
    r->served_ = std::move(initial);
    r->served_info_ = *info;
    r->seen_fingerprint_ = r->served_fingerprint_;
  }
  const std::string live = r->dir_ + "/live";
  r->provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      r->has_identity() ? live + "/key.pem" : "", r->has_identity() ? live + "/cert.pem" : "",
      r->has_ca() ? live + "/ca.pem" : "", /*refresh_interval_sec=*/1);
  if (!r->has_identity()) {
    log::Info("tls: trusting CA bundle", {{"use", r->options_.use},
                                          {"ca_file", paths.ca_file},
                                          {"certificates", absl::StrCat(info->ca_count)}});
  } else if (info->not_after < r->options_.clock->Now()) {
    log::Warn(
        "tls: the certificate has expired; clients will refuse it until the files are "
        "replaced (they are read again every second)",
        {{"use", r->options_.use},
         {"cert_file", paths.cert_file},
         {"not_after", Rfc3339(info->not_after)}});
  }
  if (r->has_identity()) {
    log::Info("tls: serving certificate", {{"use", r->options_.use},
                                           {"subject", info->subject},
                                           {"serial", info->serial_hex},
                                           {"not_after", Rfc3339(info->not_after)},
                                           {"cert_file", paths.cert_file}});
  }
  if (r->options_.poll_thread) {
    TlsReloader* self = r.get();
    r->thread_ = std::thread([self] { self->Loop(); });
  }
  return r;
}

TlsReloader::~TlsReloader() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
  provider_.reset();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void TlsReloader::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) Poll();
}

absl::Status TlsReloader::Stage(const TlsFiles& files) {
  const uint64_t gen = generation_ + 1;
  const std::string gen_dir = absl::StrCat(dir_, "/gen-", gen);
  std::error_code ec;
  std::filesystem::remove_all(gen_dir, ec);  // a leftover of a failed attempt
  if (mkdir(gen_dir.c_str(), 0700) != 0) return ErrnoStatus("create", gen_dir);
  // Strictly increasing, whatever the clock does.
  const int64_t mtime = std::max(absl::ToUnixSeconds(options_.clock->Now()), last_mtime_ + 1);
  absl::Status st = absl::OkStatus();
  if (files.with_identity) {
    st = WriteStaged(gen_dir, "key.pem", files.private_key, mtime);
    if (st.ok()) st = WriteStaged(gen_dir, "cert.pem", files.cert_chain, mtime);
  }
  if (st.ok() && files.with_ca) st = WriteStaged(gen_dir, "ca.pem", files.ca_bundle, mtime);
  const std::string next = dir_ + "/live.next";
  const std::string live = dir_ + "/live";
  if (st.ok()) {
    unlink(next.c_str());
    if (symlink(absl::StrCat("gen-", gen).c_str(), next.c_str()) != 0) {
      st = ErrnoStatus("create the symbolic link", next);
    }
  }
  if (st.ok() && rename(next.c_str(), live.c_str()) != 0) st = ErrnoStatus("rename", next);
  if (!st.ok()) {
    std::filesystem::remove_all(gen_dir, ec);
    return st;
  }
  generation_ = gen;
  last_mtime_ = mtime;
  // The generation before the previous one: gRPC may still be reading the previous.
  if (gen > 2) std::filesystem::remove_all(absl::StrCat(dir_, "/gen-", gen - 2), ec);
  return absl::OkStatus();
}

absl::Status TlsReloader::Apply(const TlsFiles& files, const std::string& fingerprint) {
  absl::StatusOr<TlsCertificateInfo> info = CheckTlsFiles(files);
  if (!info.ok()) return info.status();
  if (files.with_identity && info->not_after < options_.clock->Now()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the new certificate expired at ", Rfc3339(info->not_after)));
  }
  absl::Status staged = Stage(files);
  if (!staged.ok()) return staged;
  served_ = files;
  served_info_ = *info;
  served_fingerprint_ = fingerprint;
  rejected_fingerprint_.clear();
  files_rejected_ = false;
  ++applied_;
  log::Info(files.with_identity ? "tls: new connections now get the replaced certificate"
                                : "tls: new connections now trust the replaced CA bundle",
            {{"use", options_.use},
             {"subject", info->subject},
             {"serial", info->serial_hex},
             {"not_after", files.with_identity ? Rfc3339(info->not_after) : ""},
             {"cert_file", paths_.cert_file},
             {"ca_file", paths_.ca_file}});
  return absl::OkStatus();
}

void TlsReloader::Reject(const absl::Status& why, const std::string& fingerprint) {
  rejected_fingerprint_ = fingerprint;
  last_rejection_ = std::string(why.message());
  files_rejected_ = true;
  ++rejected_;
  log::Error(
      "tls: the changed files cannot be used; new connections still get the previous "
      "certificate. Replace them with a readable certificate and its own key (they are "
      "read again every second)",
      {{"use", options_.use},
       {"reason", last_rejection_},
       {"cert_file", paths_.cert_file},
       {"key_file", paths_.key_file},
       {"ca_file", paths_.ca_file},
       {"serving_serial", served_info_.serial_hex},
       {"serving_not_after", Rfc3339(served_info_.not_after)}});
}

void TlsReloader::Poll() {
  absl::StatusOr<TlsFiles> files = ReadTlsFiles(paths_);
  const std::string fingerprint =
      files.ok() ? Fingerprint(*files) : absl::StrCat("error:", files.status().message());
  absl::MutexLock lock(&mu_);
  if (fingerprint == served_fingerprint_) {
    seen_fingerprint_ = fingerprint;
    rejected_fingerprint_.clear();
    files_rejected_ = false;
    // Put back a staged set something removed (a cleaner of old files).
    if (access((dir_ + (has_identity() ? "/live/cert.pem" : "/live/ca.pem")).c_str(), R_OK) != 0) {
      absl::Status st = Stage(served_);
      if (!st.ok()) {
        log::Error("tls: cannot stage the files again", {{"reason", st.ToString()}});
      }
    }
    return;
  }
  // Acted on once two reads in a row agree: a writer may be half-way through.
  if (fingerprint != seen_fingerprint_) {
    seen_fingerprint_ = fingerprint;
    return;
  }
  if (fingerprint == rejected_fingerprint_) return;  // refused already, unchanged since
  absl::Status st = files.ok() ? Apply(*files, fingerprint) : files.status();
  if (!st.ok()) Reject(st, fingerprint);
}

TlsReloader::Snapshot TlsReloader::snapshot() const {
  absl::MutexLock lock(&mu_);
  Snapshot s;
  s.served = served_info_;
  s.applied = applied_;
  s.rejected = rejected_;
  s.files_rejected = files_rejected_;
  s.last_rejection = last_rejection_;
  s.staged_dir = dir_ + "/live";
  return s;
}

std::vector<prometheus::MetricFamily> TlsReloader::Collect() const {
  const Snapshot s = snapshot();
  const prometheus::ClientMetric::Label use{"use", options_.use};
  prometheus::ClientMetric expiry;
  expiry.label = {use};
  expiry.gauge.value = static_cast<double>(absl::ToUnixSeconds(s.served.not_after));
  prometheus::MetricFamily reloads{
      "iotauth_tls_reloads_total",
      "Replaced TLS files: applied (new connections get them) or rejected (unreadable, "
      "mismatched or expired; the previous certificate stays in use).",
      prometheus::MetricType::Counter,
      {}};
  for (const auto& [result, n] : {std::pair<const char*, uint64_t>{"applied", s.applied},
                                  std::pair<const char*, uint64_t>{"rejected", s.rejected}}) {
    prometheus::ClientMetric m;
    m.label = {use, {"result", result}};
    m.counter.value = static_cast<double>(n);
    reloads.metric.push_back(std::move(m));
  }
  prometheus::ClientMetric rejected;
  rejected.label = {use};
  rejected.gauge.value = s.files_rejected ? 1 : 0;
  std::vector<prometheus::MetricFamily> out{
      std::move(reloads),
      {"iotauth_tls_files_rejected",
       "1 while the TLS files on disk are a rejected set (the previous certificate is still "
       "served); 0 when they are the set in use.",
       prometheus::MetricType::Gauge,
       {rejected}},
  };
  if (has_identity()) {
    out.push_back({"iotauth_tls_certificate_expiry_timestamp_seconds",
                   "notAfter of the certificate new TLS connections get (use=\"server\") or "
                   "present (use=\"upstream\"), in Unix seconds.",
                   prometheus::MetricType::Gauge,
                   {expiry}});
  }
  return out;
}

}  // namespace iotauth
