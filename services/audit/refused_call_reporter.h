// Writes the auth gate's tally of refused calls (RefusedCallTally) to the audit log:
// every `interval`, one EVENT_TYPE_CALLER_REFUSED event per entry, and one for the
// refusals past the tally's size. A flood of refused calls costs the log at most
// (max_entries + 1) events per interval, whatever its rate. Nothing is written for
// an interval without refusals.
#pragma once

#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/audit/sink_interface.h"
#include "services/common/clock.h"
#include "services/common/refused_calls.h"

namespace iotauth::audit {

class RefusedCallReporter {
 public:
  struct Options {
    RefusedCallTally* tally = nullptr;  // required; outlives the reporter
    AuditSink* sink = nullptr;          // required; outlives the reporter
    const Clock* clock = &RealClock::Get();
    absl::Duration interval = absl::Seconds(5);
  };

  static absl::StatusOr<std::unique_ptr<RefusedCallReporter>> Create(Options options);
  // Stops the thread (if started) and writes what is left.
  ~RefusedCallReporter();
  RefusedCallReporter(const RefusedCallReporter&) = delete;
  RefusedCallReporter& operator=(const RefusedCallReporter&) = delete;

  // Drains the tally every interval on a thread of its own.
  void Start();
  // Drains the tally once and records its events; returns how many were recorded.
  size_t FlushOnce() const;

  // The events one drain gives, in order (for tests and FlushOnce).
  static std::vector<v1::AuditEvent> ToEvents(const RefusedCallTally::Drained& drained);

 private:
  explicit RefusedCallReporter(Options options) : options_(options) {}
  void Run();

  const Options options_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace iotauth::audit
