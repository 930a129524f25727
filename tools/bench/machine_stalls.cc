// How often this machine takes a CPU away from a running thread, and for how long:
// the floor under any latency percentile measured here. Spins for --duration on the
// CPU it runs on (pin it with taskset), reading the monotonic clock; every gap
// between two consecutive reads longer than 50 us is a stall (the hypervisor, an
// interrupt, another thread). A shared 2-vCPU VM measured idle: about one stall over
// 1 ms per second per CPU, up to 8 ms.
//
//   taskset -c 1 machine_stalls --duration=5s [--json]
#include <sched.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <ctime>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "How long to spin.");
ABSL_FLAG(bool, json, false, "One JSON object on stdout instead of text.");

namespace {

int64_t NowNs() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Measures CPU stalls: machine_stalls --duration=5s [--json]");
  absl::ParseCommandLine(argc, argv);
  const int64_t duration_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_duration));
  if (duration_ns <= 0) {
    std::fprintf(stderr, "machine_stalls: --duration must be positive\n");
    return 2;
  }
  uint64_t over_100us = 0;
  uint64_t over_1ms = 0;
  uint64_t over_5ms = 0;
  int64_t stalled_ns = 0;
  int64_t max_ns = 0;
  const int64_t start = NowNs();
  const int64_t end = start + duration_ns;
  int64_t last = start;
  for (int64_t now = start; now < end; now = NowNs()) {
    const int64_t gap = now - last;
    last = now;
    if (gap <= 50000) continue;
    stalled_ns += gap;
    if (gap > max_ns) max_ns = gap;
    if (gap > 100000) ++over_100us;
    if (gap > 1000000) ++over_1ms;
    if (gap > 5000000) ++over_5ms;
  }
  const double seconds = static_cast<double>(duration_ns) / 1e9;
  const int cpu = sched_getcpu();
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"cpu\":%d,\"seconds\":%.1f,\"stalls_over_100us\":%" PRIu64
                ",\"stalls_over_1ms\":%" PRIu64 ",\"stalls_over_5ms\":%" PRIu64
                ",\"max_stall_us\":%.0f,\"stalled_fraction\":%.5f}\n",
                cpu, seconds, over_100us, over_1ms, over_5ms, static_cast<double>(max_ns) / 1e3,
                static_cast<double>(stalled_ns) / static_cast<double>(duration_ns));
  } else {
    std::printf("CPU %d, %.1fs: %" PRIu64 " stalls > 100 us, %" PRIu64 " > 1 ms, %" PRIu64
                " > 5 ms; longest %.2f ms; %.2f%% of the time stalled\n",
                cpu, seconds, over_100us, over_1ms, over_5ms, static_cast<double>(max_ns) / 1e6,
                100.0 * static_cast<double>(stalled_ns) / static_cast<double>(duration_ns));
  }
  return 0;
}
