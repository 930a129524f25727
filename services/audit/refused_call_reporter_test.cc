#include "services/audit/refused_call_reporter.h"

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/common/refused_calls.h"

namespace iotauth::audit {
namespace {

using Presented = RefusedCallTally::Presented;
using v1::AuditEvent;

class CapturingSink final : public AuditSink {
 public:
  void Record(AuditEvent&& event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  std::vector<AuditEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<AuditEvent> events_ ABSL_GUARDED_BY(mu_);
};

constexpr char kCreate[] = "/iotauth.registry.v1.DeviceRegistry/CreateTenant";

struct Fixture {
  FakeClock clock{absl::FromUnixSeconds(1700000000)};
  RefusedCallTally tally{RefusedCallTally::Options{/*max_entries=*/2}};
  CapturingSink sink;
  std::unique_ptr<RefusedCallReporter> reporter =
      *RefusedCallReporter::Create({&tally, &sink, &clock, absl::Seconds(5)});
};

TEST(RefusedCallReporterTest, OneEventPerEntryWithCountsAndNoToken) {
  Fixture f;
  const absl::Time t0 = f.clock.Now();
  for (int i = 0; i < 1000; ++i) {
    f.tally.Add(kCreate, Presented::kNothing, "", "", t0 + absl::Milliseconds(i));
  }
  f.tally.Add(kCreate, Presented::kUnknownToken, "planted-token-0123", "CN=gw", t0);
  f.clock.Advance(absl::Seconds(5));
  EXPECT_EQ(f.reporter->FlushOnce(), 2u);
  const std::vector<AuditEvent> events = f.sink.events();
  ASSERT_EQ(events.size(), 2u);
  const AuditEvent& none = events[0];
  EXPECT_EQ(none.type(), v1::EVENT_TYPE_CALLER_REFUSED);
  EXPECT_EQ(none.outcome(), v1::OUTCOME_DENY);
  EXPECT_EQ(none.reason(), "unauthenticated");
  EXPECT_EQ(none.credential_type(), "none");
  EXPECT_EQ(none.credential_fingerprint(), "");
  EXPECT_EQ(none.attributes().at("method"), kCreate);
  EXPECT_EQ(none.attributes().at("count"), "1000");
  EXPECT_EQ(none.attributes().at("first_seen"), "2023-11-14T22:13:20+00:00");
  EXPECT_EQ(none.attributes().at("last_seen"), "2023-11-14T22:13:20.999+00:00");
  EXPECT_EQ(none.attributes().count("certificate_subject"), 0u);
  EXPECT_EQ(none.time().seconds(), 1700000005);
  const AuditEvent& token = events[1];
  EXPECT_EQ(token.credential_type(), "bearer_token");
  EXPECT_EQ(token.credential_fingerprint(), RefusedCallTally::Fingerprint("planted-token-0123"));
  EXPECT_EQ(token.attributes().at("certificate_subject"), "CN=gw");
  EXPECT_EQ(token.DebugString().find("planted"), std::string::npos);
  // Drained: nothing more to write.
  EXPECT_EQ(f.reporter->FlushOnce(), 0u);
  EXPECT_EQ(f.sink.events().size(), 2u);
}

TEST(RefusedCallReporterTest, RefusalsPastTheTallysSizeAreOneOverflowEvent) {
  Fixture f;
  const absl::Time t0 = f.clock.Now();
  for (int i = 0; i < 500; ++i) {
    f.tally.Add(kCreate, Presented::kUnknownToken, "guess-" + std::to_string(i), "",
                t0 + absl::Seconds(i % 5));
  }
  EXPECT_EQ(f.reporter->FlushOnce(), 3u);
  const std::vector<AuditEvent> events = f.sink.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].attributes().at("method"), "(overflow)");
  EXPECT_EQ(events[2].attributes().at("count"), "498");
  EXPECT_EQ(events[2].credential_type(), "");
  EXPECT_EQ(events[2].credential_fingerprint(), "");
}

TEST(RefusedCallReporterTest, WhatIsLeftIsWrittenWhenTheReporterGoes) {
  Fixture f;
  f.reporter->Start();
  f.tally.Add(kCreate, Presented::kMalformedAuthorization, "", "", f.clock.Now());
  f.reporter.reset();  // stops the thread, then drains
  const std::vector<AuditEvent> events = f.sink.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].credential_type(), "authorization_header");
}

TEST(RefusedCallReporterTest, CreateChecksItsOptions) {
  RefusedCallTally tally;
  CapturingSink sink;
  EXPECT_FALSE(RefusedCallReporter::Create({nullptr, &sink}).ok());
  EXPECT_FALSE(RefusedCallReporter::Create({&tally, nullptr}).ok());
  EXPECT_FALSE(
      RefusedCallReporter::Create({&tally, &sink, &RealClock::Get(), absl::ZeroDuration()}).ok());
  EXPECT_TRUE(RefusedCallReporter::Create({&tally, &sink}).ok());
}

}  // namespace
}  // namespace iotauth::audit
