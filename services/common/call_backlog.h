// A bound on the calls each caller has waiting between the auth gate and a handler.
//
// Debian's gRPC 1.51 (before the fix for CVE-2023-44487, "rapid reset") lets a client
// open streams and reset each at once: the reset frees the stream's slot under the
// concurrent-stream cap, but the call it started stays queued inside the server
// until gRPC gets to it, and that queue has no bound. Two clients with a gateway
// certificate took iotauthd to 1.5 GiB that way through Authenticate. None of those
// calls ever reaches a handler, which is what this counts: the gate admits a call
// (Admit); the call reaches its handler (the hot methods, through CallMeter) or ends
// (the others, through the metrics interceptor), which settles it (Started); and
// each caller's difference, its debt, is capped. A legitimate caller's calls start within
// milliseconds, so its debt stays near zero; the debt also decays at `forgiven_per_second`, for the
// odd call a client cancels while it waits.
#pragma once

#include <grpcpp/server_context.h>

#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/clock.h"

namespace iotauth {

class CallBacklog {
 public:
  struct Options {
    double max_waiting = 2048;         // per caller: admitted and not settled
    double forgiven_per_second = 100;  // the debt's decay
    size_t max_callers = 10000;        // beyond it, new callers share one entry
  };

  // `clock` outlives this.
  explicit CallBacklog(Options options, const Clock* clock = &RealClock::Get());

  // The key of a caller: its `authorization` header when the call carries one, else
  // its verified certificate's subject. Gate and server derive it alike from what
  // each sees. A hash: no token is kept.
  static uint64_t KeyOf(absl::string_view authorization, absl::string_view cert_subject);

  // The same key for a call the server holds: its first `authorization` header, else
  // its verified certificate's subject; 0 when it has neither (no debt to settle).
  static uint64_t KeyOfCall(const grpc::ServerContextBase& context);

  // At the gate, for an authenticated call: false (and counted) when the caller
  // already has max_waiting calls admitted and not started.
  bool Admit(uint64_t caller);
  // When a call of `caller` reached its handler, or ended: its place is free again.
  // Key 0 is ignored.
  void Started(uint64_t caller);

  uint64_t refused() const;
  // Callers with a debt (for tests).
  size_t callers() const;

 private:
  struct Debt {
    double calls = 0;
    absl::Time at;
  };
  static constexpr uint64_t kOverflowKey = 1;  // KeyOf never gives 0 or 1

  // The debt decayed to `now`.
  double Settle(Debt& d, absl::Time now) const;

  const Options options_;
  const Clock* clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Debt> debts_ ABSL_GUARDED_BY(mu_);
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iotauth
