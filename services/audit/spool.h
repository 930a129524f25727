// The shutdown spool: audit events a sink could not hand over before its process
// exits (the store refused the last commits, or the remote audit service did not
// acknowledge them in time) are written to one small file, and the next start
// commits them before anything else. Loss stays out of the log only while the file
// waits; nothing is dropped silently.
//
// File layout (integers big-endian):
//   "IOTSPOL1"                     8 bytes
//   u32 n                          events
//   n times: u32 length, bytes     an unchained canonical encoding (canonical.h)
//   32 bytes                       SHA-256 of everything before
// Each event keeps its event_id, so one committed before the file was removed (a
// crash in between) is recognised as a duplicate, not written twice.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/audit/v1/audit.pb.h"

namespace iotauth::audit {

// Unchained canonical encodings, oldest first.
using SpooledEvents = std::vector<std::string>;

// The file's bytes. Every element must be an unchained canonical encoding.
std::string SerializeSpool(const SpooledEvents& events);

// Parses a spool file. DATA_LOSS when it is cut short, fails its checksum, or holds
// anything Record could not have queued: only unchained canonical encodings with an
// event_id and a valid time, no field over kMaxAuditFieldBytes (ParseCanonical is
// fuzzed by canonical_fuzz; spool_test cuts and flips every byte of a file).
absl::StatusOr<SpooledEvents> ParseSpool(absl::string_view bytes);

// Writes the spool durably: a temporary file, fsync, rename over `path`, fsync of
// the directory. Replaces an existing spool.
absl::Status SaveSpool(const std::string& path, const SpooledEvents& events);

// The spool at `path`; nullopt when there is none. DATA_LOSS as ParseSpool;
// FAILED_PRECONDITION when the file is not a regular file owned by this process's
// user, or is writable by group or others (its events would enter the chain).
absl::StatusOr<std::optional<SpooledEvents>> LoadSpool(const std::string& path);

// Removes the spool durably (the directory is fsynced). OK when there is none.
absl::Status RemoveSpool(const std::string& path);

// Moves a damaged spool aside to SetAsideName(path, unix_seconds) (kept for
// inspection) and returns that name.
absl::StatusOr<std::string> SetAsideSpool(const std::string& path, int64_t unix_seconds);
// `path` + ".damaged.<unix seconds>".
std::string SetAsideName(const std::string& path, int64_t unix_seconds);

// What a sink does with a LoadSpool failure, the same in both sinks:
//  - SpoolUntrusted: the file must not be committed (DATA_LOSS: damaged;
//    FAILED_PRECONDITION: not trusted), as opposed to could not be read;
//  - SpoolLostGapEvent: the GAP event saying its events were lost, where the file
//    went (`kept_as`), and why (attribute `cause`: damaged_spool or
//    untrusted_spool);
//  - SetAsideNote: the operator's note once the file is set aside (DATA_LOSS).
bool SpoolUntrusted(const absl::Status& load_status);
iotauth::audit::v1::AuditEvent SpoolLostGapEvent(const absl::Status& load_status,
                                                 absl::string_view kept_as, absl::Time now);
absl::Status SetAsideNote(const absl::Status& load_status, absl::string_view kept_as);

}  // namespace iotauth::audit
