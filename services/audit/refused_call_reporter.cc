#include "services/audit/refused_call_reporter.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/audit/event_util.h"
#include "services/common/thread_name.h"

namespace iotauth::audit {

namespace {

using v1::AuditEvent;

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

AuditEvent Refusal(absl::string_view method, absl::string_view presented, uint64_t count,
                   absl::Time first, absl::Time last) {
  AuditEvent e;
  e.set_type(v1::EVENT_TYPE_CALLER_REFUSED);
  e.set_outcome(v1::OUTCOME_DENY);
  e.set_reason("unauthenticated");
  e.set_credential_type(std::string(presented));
  auto& a = *e.mutable_attributes();
  a["method"] = std::string(method);
  a["count"] = absl::StrCat(count);
  a["first_seen"] = Rfc3339(first);
  a["last_seen"] = Rfc3339(last);
  return e;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RefusedCallReporter>> RefusedCallReporter::Create(Options options) {
  if (options.tally == nullptr || options.sink == nullptr || options.clock == nullptr) {
    return absl::InvalidArgumentError("RefusedCallReporter needs a tally, a sink and a clock");
  }
  if (options.interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("RefusedCallReporter's interval must be positive");
  }
  return std::unique_ptr<RefusedCallReporter>(new RefusedCallReporter(options));
}

RefusedCallReporter::~RefusedCallReporter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  FlushOnce();
}

void RefusedCallReporter::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

std::vector<AuditEvent> RefusedCallReporter::ToEvents(const RefusedCallTally::Drained& drained) {
  std::vector<AuditEvent> out;
  out.reserve(drained.entries.size() + 1);
  for (const RefusedCallTally::Entry& entry : drained.entries) {
    AuditEvent e = Refusal(entry.method, RefusedCallTally::PresentedName(entry.presented),
                           entry.count, entry.first, entry.last);
    e.set_credential_fingerprint(entry.token_fingerprint);
    if (!entry.cert_subject.empty()) {
      (*e.mutable_attributes())["certificate_subject"] = entry.cert_subject;
    }
    out.push_back(std::move(e));
  }
  if (drained.overflow > 0) {
    // Their details were not kept: what they presented is unknown too.
    out.push_back(
        Refusal("(overflow)", "", drained.overflow, drained.overflow_first, drained.overflow_last));
  }
  return out;
}

size_t RefusedCallReporter::FlushOnce() const {
  const RefusedCallTally::Drained drained = options_.tally->Drain();
  if (drained.empty()) return 0;
  std::vector<AuditEvent> events = ToEvents(drained);
  const absl::Time now = options_.clock->Now();
  for (AuditEvent& e : events) {
    SetTimestamp(now, e.mutable_time());
    options_.sink->Record(std::move(e));
  }
  return events.size();
}

void RefusedCallReporter::Run() {
  SetCurrentThreadName("refused-calls");
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), options_.interval)) return;
    }
    FlushOnce();
  }
}

}  // namespace iotauth::audit
