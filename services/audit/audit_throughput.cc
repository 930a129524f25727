// Throughput check for the local audit pipeline (the segment log, or SQLite):
// producers record authentication-like events for a while; prints sustained
// committed events/s, the producer-side cost of Record(), drops and the batch
// commit latency distribution.
//
//   bazel run -c opt //services/audit:audit_throughput --
//       [seconds] [producers] [rate] [max_batch] [linger_ms] [log|sqlite]
//
// rate: offered events/s over all producers (0 = as fast as Record() returns,
// with the block policy so nothing is dropped); with a rate the drop policy is
// used and drops are reported.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/audit/canonical.h"
#include "services/audit/event_util.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/pipeline.h"
#include "services/audit/sqlite_audit_store.h"

namespace iotauth::audit {
namespace {

class LatencyRecorder final : public AuditPipelineObserver {
 public:
  void OnBatchCommitted(const CommittedBatch& batch) override {
    absl::MutexLock l(&mu_);
    latencies_.push_back(batch.latency);
    sizes_.push_back(batch.events);
  }
  void Print() {
    absl::MutexLock l(&mu_);
    if (latencies_.empty()) return;
    std::vector<absl::Duration> sorted = latencies_;
    std::sort(sorted.begin(), sorted.end());
    auto pct = [&sorted](double p) {
      return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
    };
    double total = 0;
    for (size_t s : sizes_) total += static_cast<double>(s);
    std::printf("batches: %zu, mean batch %.1f events\n", sorted.size(), total / sorted.size());
    std::printf("batch commit latency: p50 %s  p90 %s  p99 %s  max %s\n",
                absl::FormatDuration(pct(0.5)).c_str(), absl::FormatDuration(pct(0.9)).c_str(),
                absl::FormatDuration(pct(0.99)).c_str(),
                absl::FormatDuration(sorted.back()).c_str());
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::Duration> latencies_;
  std::vector<size_t> sizes_;
};

double CpuSeconds(int who) {
  rusage u;
  getrusage(who, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

iotauth::audit::v1::AuditEvent SampleEvent(int producer, uint64_t i) {
  iotauth::audit::v1::AuditEvent e;
  e.set_type(iotauth::audit::v1::EVENT_TYPE_AUTHENTICATION);
  e.set_tenant_id("tenant-0001");
  e.set_product_key("a1B2c3D4e5");
  e.set_device_id(absl::StrCat("device-", producer, "-", i % 10000));
  e.set_outcome(i % 10 ? iotauth::audit::v1::OUTCOME_ALLOW : iotauth::audit::v1::OUTCOME_DENY);
  e.set_reason(i % 10 ? "OK" : "DENY_REASON_BAD_SIGNATURE");
  e.set_credential_type("CREDENTIAL_TYPE_SAS");
  e.set_credential_fingerprint("sha256:6f1ed002ab5595859014ebf0951522d9");
  e.set_caller("gateway-eu-1");
  e.set_peer_address("ipv4:10.1.2.3:50412");
  e.set_request_id(absl::StrCat("req-", producer, "-", i));
  e.mutable_duration()->set_nanos(41000);
  return e;
}

// argv[i] as a number, `fallback` when absent; exits on anything else.
template <typename T>
T Arg(int argc, char** argv, int i, T fallback) {
  if (argc <= i) return fallback;
  T v{};
  bool ok = false;
  if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtod(argv[i], &v);
  } else {
    ok = absl::SimpleAtoi(argv[i], &v);
  }
  if (!ok) {
    std::fprintf(stderr, "audit_throughput: argument %d ('%s') is not a number\n", i, argv[i]);
    std::exit(2);
  }
  return v;
}

int Main(int argc, char** argv) {
  const int seconds = Arg(argc, argv, 1, 5);
  const int producers = Arg(argc, argv, 2, 2);
  const double rate = Arg(argc, argv, 3, 0.0);
  const size_t max_batch = Arg(argc, argv, 4, LocalAuditSink::Options().max_batch);
  const absl::Duration linger =
      argc > 5 ? absl::Milliseconds(Arg(argc, argv, 5, 0)) : LocalAuditSink::Options().linger;
  const std::string backend = argc > 6 ? argv[6] : "log";
  const std::string path =
      absl::StrCat("/tmp/audit_throughput_", getpid(), backend == "sqlite" ? ".db" : ".log");
  std::unique_ptr<AuditStore> store_holder;
  if (backend == "sqlite") {
    SqliteAuditStore::Options so;
    so.path = path;
    auto s = SqliteAuditStore::Open(so);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 1;
    }
    store_holder = std::move(*s);
  } else {
    LogAuditStore::Options lo;
    lo.dir = path;
    auto s = LogAuditStore::Open(lo);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      return 1;
    }
    store_holder = std::move(*s);
  }
  auto* store = &store_holder;
  LatencyRecorder recorder;
  LocalAuditSink::Options o;
  o.store = store->get();
  o.observer = &recorder;
  o.max_batch = max_batch;
  o.linger = linger;
  o.full_queue_policy =
      rate > 0 ? LocalAuditSink::FullQueuePolicy::kDrop : LocalAuditSink::FullQueuePolicy::kBlock;
  o.block_timeout = absl::Seconds(10);
  auto sink = LocalAuditSink::Create(o);
  if (!sink.ok()) return 1;

  std::atomic<uint64_t> recorded{0};
  std::atomic<int64_t> producer_cpu_us{0};
  const double cpu_start = CpuSeconds(RUSAGE_SELF);
  std::atomic<int64_t> record_ns{0};
  const absl::Time start = absl::Now();
  const absl::Time end = start + absl::Seconds(seconds);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(std::max(producers, 0)));
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      uint64_t i = 0;
      int64_t spent = 0;
      const double per_thread = rate / producers;
      while (absl::Now() < end) {
        // With a rate: send the events due by now, then sleep a millisecond.
        const uint64_t due =
            rate > 0
                ? static_cast<uint64_t>(absl::ToDoubleSeconds(absl::Now() - start) * per_thread)
                : i + 256;
        // Build the events first: the timed part is Record() alone.
        std::vector<iotauth::audit::v1::AuditEvent> chunk;
        for (uint64_t j = i; j < due; ++j) chunk.push_back(SampleEvent(p, j));
        const absl::Time t0 = absl::Now();
        for (auto& e : chunk) (*sink)->Record(std::move(e));
        spent += absl::ToInt64Nanoseconds(absl::Now() - t0);
        i = due;
        if (rate > 0) absl::SleepFor(absl::Milliseconds(1));
      }
      recorded += i;
      record_ns += spent;
      producer_cpu_us += static_cast<int64_t>(CpuSeconds(RUSAGE_THREAD) * 1e6);
    });
  }
  for (auto& t : threads) t.join();
  const absl::Time produced = absl::Now();
  (*sink)->Shutdown();
  const absl::Time drained = absl::Now();
  const double pipeline_cpu = CpuSeconds(RUSAGE_SELF) - cpu_start - producer_cpu_us / 1e6;
  AuditPipelineStats st = (*sink)->Stats();
  const double elapsed = absl::ToDoubleSeconds(drained - start);
  std::printf("producers %d, max_batch %zu, linger %s, %s, %d s\n", producers, max_batch,
              absl::FormatDuration(linger).c_str(),
              rate > 0 ? absl::StrCat("offered ", rate, " events/s, drop policy").c_str()
                       : "flat out, block policy",
              seconds);
  std::printf("recorded %llu, committed %llu, dropped %llu (gap events %llu)\n",
              static_cast<unsigned long long>(recorded.load()),
              static_cast<unsigned long long>(st.committed),
              static_cast<unsigned long long>(st.dropped),
              static_cast<unsigned long long>(st.gap_events));
  std::printf("sustained: %.0f committed events/s (drain after producers stopped: %s)\n",
              st.committed / elapsed, absl::FormatDuration(drained - produced).c_str());
  std::printf("Record() cost on the producer: %.2f us/event (includes waits when blocked)\n",
              recorded.load() ? record_ns.load() / 1000.0 / recorded.load() : 0.0);
  std::printf("writer-side CPU (process minus producer threads): %.2f us/committed event\n",
              st.committed ? pipeline_cpu * 1e6 / st.committed : 0.0);
  recorder.Print();
  auto v = (*store)->Verify(0, 0);
  std::printf("verify: %s, %llu events checked\n", v.ok() && v->ok ? "ok" : "FAILED",
              v.ok() ? static_cast<unsigned long long>(v->events_checked) : 0ULL);
  const absl::Time vstart = absl::Now();
  (void)(*store)->Verify(0, 0);
  std::printf("verify speed: %.0f events/s\n",
              v.ok() ? v->events_checked / absl::ToDoubleSeconds(absl::Now() - vstart) : 0.0);
  {
    // CPU cost of the chain alone (canonical encoding + SHA-256) per event.
    iotauth::audit::v1::AuditEvent e = SampleEvent(0, 1);
    e.set_event_id(NewEventId());
    e.set_prev_hash(std::string(kGenesisHash));
    const absl::Time t0 = absl::Now();
    constexpr int kN = 200000;
    for (int i = 0; i < kN; ++i) {
      e.set_sequence(i);
      (void)ChainEvent(e.prev_hash(), &e);
    }
    std::printf("chain hash cost: %.2f us/event\n",
                absl::ToDoubleMicroseconds(absl::Now() - t0) / kN);
    const absl::Time t1 = absl::Now();
    for (int i = 0; i < kN; ++i) (void)NewEventId();
    std::printf("event id cost: %.2f us/event\n",
                absl::ToDoubleMicroseconds(absl::Now() - t1) / kN);
  }
  store->reset();
  for (const char* s : {"", "-wal", "-shm"}) std::remove((path + s).c_str());
  if (backend != "sqlite" && std::system(absl::StrCat("rm -rf '", path, "'").c_str()) != 0) {
    std::fprintf(stderr, "could not remove %s\n", path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace iotauth::audit

int main(int argc, char** argv) { return iotauth::audit::Main(argc, argv); }
