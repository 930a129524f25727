// A tally of the calls the auth gate refused as unauthenticated, for the audit log.
// The gate refuses such calls as their headers arrive, before any handler (which
// used to audit them) runs. One audit event per refusal would let anyone who can
// reach the port write to the log at the rate they choose, so refusals are counted
// here, one entry per (method, what was presented, token fingerprint, certificate
// subject), and a reporter drains the tally every few seconds into one event per
// entry. The credential itself is never kept: a bearer token only as a truncated
// SHA-256 fingerprint, enough to tell one wrong token tried many times from many
// tokens tried once each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace iotauth {

class RefusedCallTally {
 public:
  // What the refused call carried in place of a credential.
  enum class Presented {
    kNothing,                 // no authorization header, no client certificate
    kMalformedAuthorization,  // an authorization header that is not "Bearer <token>"
    kUnknownToken,            // a bearer token that matches no configured token
  };

  struct Options {
    // Distinct entries kept between two drains; refusals past it are counted in
    // `overflow` without their details (each new token is a new entry, so a
    // caller guessing tokens reaches it at once).
    size_t max_entries = 256;
  };

  struct Entry {
    std::string method;  // MethodLabel of the call's path
    Presented presented = Presented::kNothing;
    std::string token_fingerprint;  // kUnknownToken: Fingerprint(token)
    std::string cert_subject;       // the verified client certificate's, if any
    uint64_t count = 0;
    absl::Time first;
    absl::Time last;
  };

  struct Drained {
    std::vector<Entry> entries;  // in the order first seen
    uint64_t overflow = 0;       // refusals past max_entries
    absl::Time overflow_first;
    absl::Time overflow_last;
    bool empty() const { return entries.empty() && overflow == 0; }
  };

  RefusedCallTally() : RefusedCallTally(Options{}) {}
  explicit RefusedCallTally(Options options) : options_(options) {}

  // Counts one refusal. `token` is the bearer token for kUnknownToken (it is
  // hashed here, only when the call is a new entry's first, and not kept).
  void Add(absl::string_view path, Presented presented, absl::string_view token,
           absl::string_view cert_subject, absl::Time now);

  // Everything counted since the last drain; the tally starts empty again.
  Drained Drain();

  // The path when it looks like a gRPC method ("/pkg.Service/Method": letters,
  // digits, '.', '_', '/', '-', at most 128 bytes), else "(malformed)": a path is
  // whatever the client sent.
  static std::string MethodLabel(absl::string_view path);
  // "sha256:" and the first 8 bytes of the token's SHA-256, in hex.
  static std::string Fingerprint(absl::string_view token);
  // "none", "authorization_header" or "bearer_token".
  static absl::string_view PresentedName(Presented presented);

 private:
  const Options options_;
  absl::Mutex mu_;
  // Key: method, presented, token hash and subject, '\0'-separated.
  absl::flat_hash_map<std::string, size_t> index_ ABSL_GUARDED_BY(mu_);
  Drained pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace iotauth
