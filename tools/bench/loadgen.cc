// iotauth_loadgen: load generator for IdentityService.Authenticate.
//
// gRPC callback API; N channels (separate HTTP/2 connections), calls spread over
// them round-robin. Two load models:
//   closed loop (default): --concurrency calls always in flight; each completion
//     starts the next call. Measures peak throughput.
//   fixed rate (--rate=R): calls are scheduled at R per second whatever the server
//     does (open loop); latency is measured from each call's *intended* send time,
//     so a stalled server or client shows up as latency instead of being hidden
//     (no coordinated omission). --concurrency caps the calls in flight. With the
//     CQ API one thread both sends and polls the completions, never blocking
//     (--busy_poll, the default): no hand-offs between a sender and a poller on the
//     client's core, whose tail latency would otherwise be counted as the server's.
// A call counts as a success only if its gRPC status is OK and the decision is
// ALLOW; DENY decisions and each gRPC error code are counted separately. Latency
// goes into a log-bucketed histogram (< 0.8% error). Only calls whose (intended)
// send time falls inside the measurement window, after --warmup, are counted; the
// tail of the window is drained before the report.
//
// Exit status: 0 clean run; 3 the run completed but had errors or DENYs (or no
// successful call); 1 setup failure (connect, files); 2 bad flags.

#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"
#include "tools/bench/histogram.h"

ABSL_FLAG(std::string, api, "cq",
          "cq: async completion-queue API, calls driven by --cq_threads threads of our own "
          "(cheapest client); callback: the gRPC callback API (gRPC's internal threads).");
ABSL_FLAG(int, cq_threads, 1, "--api=cq: completion queues, one polling thread each.");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server address host:port.");
ABSL_FLAG(int, channels, 4, "Number of channels (each a separate HTTP/2 connection).");
ABSL_FLAG(int, concurrency, 64,
          "Calls in flight in total (closed loop); the cap on calls in flight (fixed rate).");
ABSL_FLAG(double, rate, 0,
          "Calls per second, open loop; 0 = closed loop at --concurrency calls in flight.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "Load applied before measuring.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Measurement window.");
ABSL_FLAG(absl::Duration, tick, absl::Microseconds(50),
          "Fixed rate: the sender wakes at most once per tick and sends all calls due; "
          "adds up to one tick to the measured latency. 0: wake for every call.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "Per-call deadline.");
ABSL_FLAG(bool, busy_poll, true,
          "Fixed rate, --api=cq: one thread sends the calls due and polls the completion "
          "queue without blocking, in a loop (no thread hand-offs, no timer slack; the "
          "client's core shows as fully busy, and client_busy_fraction says how much of it "
          "was work). false: a sender thread that sleeps per --tick and a polling thread.");
ABSL_FLAG(std::string, mode, "raw",
          "raw: one fixed request (--request_json, else a built-in ~250-byte MQTT connect; "
          "--requests_file accepted unchecked); sas / triple / x509: --requests_file required, "
          "each request must carry a SAS token / a device triple / a certificate chain.");
ABSL_FLAG(uint64_t, start_request, 0,
          "Index (modulo the number of requests) of the first request sent. Device-triple "
          "requests are single-use (replays are refused): a second run against the same "
          "server starts after the requests the first one sent (its JSON's requests_sent).");
ABSL_FLAG(std::string, requests_file, "",
          "One AuthenticateRequest per line in proto JSON, cycled round-robin. Blank lines "
          "and lines starting with # are skipped.");
ABSL_FLAG(std::string, request_json, "", "raw mode: the fixed request in proto JSON.");
ABSL_FLAG(bool, tls, false, "Use TLS (implied by --tls_ca/--tls_cert/--tls_key).");
ABSL_FLAG(std::string, tls_ca, "", "PEM roots to verify the server; empty: system roots.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate chain (mutual TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, authority, "",
          ":authority to send and, with TLS, the name to verify in the server certificate.");
ABSL_FLAG(std::string, bearer_token, "",
          "Sent as `authorization: Bearer <token>` metadata on every call.");
ABSL_FLAG(bool, json, false, "Print the result as one JSON object on stdout.");
ABSL_FLAG(bool, progress, true, "Live progress on stderr once a second.");
ABSL_FLAG(bool, allow_deny, false, "Do not fail (exit 3) when the server answers DENY.");
ABSL_FLAG(int, server_pid, 0,
          "If set, also report this local process's CPU time per call (from /proc).");
ABSL_FLAG(std::string, label, "", "Free text copied into the result (e.g. `noop`).");
ABSL_FLAG(std::string, dump_body, "",
          "Write the request at --start_request (default the first) as a gRPC "
          "length-prefixed message (the HTTP/2 body of a unary call, e.g. for h2load -d) to "
          "this file and exit.");
ABSL_FLAG(int, dump_batch, 0,
          "With --dump_body: write an AuthenticateBatchRequest of this many requests instead "
          "(from --start_request on, round-robin), the body of one AuthenticateBatch call.");

namespace iotauth::bench {
namespace {

using ::iotauth::identity::v1::AuthenticateBatchRequest;
using ::iotauth::identity::v1::AuthenticateRequest;
using ::iotauth::identity::v1::AuthenticateResponse;
using ::iotauth::identity::v1::IdentityService;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t t) {
  const int64_t d = t - NowNs();
  if (d > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(d));
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

const char* StatusCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "OTHER";
}

// CPU seconds (user + system) of this process.
double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of another local process, from /proc/<pid>/stat: `total` is utime +
// stime, `system` stime alone (the kernel's share: sockets, wake-ups); -1 on error.
struct ProcessCpu {
  double total = -1;
  double system = -1;
};
ProcessCpu ProcessCpuSeconds(int pid) {
  std::string stat;
  if (!ReadFile(absl::StrCat("/proc/", pid, "/stat"), &stat)) return {};
  // The command name (field 2) may hold spaces; fields after the last ')' are fixed.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return {};
  std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  if (fields.size() < 13) return {};
  const auto tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double user = std::stod(fields[11]) / tick;
  const double system = std::stod(fields[12]) / tick;
  return {user + system, system};
}

// Busy CPU seconds of the whole machine (all CPUs, /proc/stat: everything but idle
// and iowait); -1 on error. Minus client and server CPU, this is what other
// processes took during the run: a benchmark on a busy machine is not a benchmark.
double MachineBusySeconds() {
  std::string stat;
  if (!ReadFile("/proc/stat", &stat)) return -1;
  std::vector<std::string> f =
      absl::StrSplit(stat.substr(0, stat.find('\n')), ' ', absl::SkipEmpty());
  // cpu user nice system idle iowait irq softirq steal ...
  if (f.size() < 9 || f[0] != "cpu") return -1;
  double busy = 0;
  for (int i : {1, 2, 3, 6, 7, 8}) busy += std::stod(f[i]);
  return busy / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The raw-mode default: what a broker sends for an MQTT CONNECT with a SAS token
// (about 250 bytes serialized). A real server denies it (the signature is filler).
AuthenticateRequest DefaultRawRequest() {
  AuthenticateRequest r;
  auto* c = r.mutable_connect();
  c->set_client_id("bench-device-000001");
  c->set_username("bench-hub.example.net/bench-device-000001/?api-version=2021-04-12");
  c->set_password(
      "SharedAccessSignature sr=bench-hub.example.net%2Fdevices%2Fbench-device-000001"
      "&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D&se=4102444800");
  c->set_peer_address("127.0.0.1:50000");
  c->set_listener("mqtts");
  c->set_protocol(iotauth::identity::v1::PROTOCOL_MQTT);
  r.set_request_id("bench");
  return r;
}

bool IsSas(const AuthenticateRequest& r) {
  if (r.has_credential()) return r.credential().has_sas();
  return r.has_connect() && absl::StartsWith(r.connect().password(), "SharedAccessSignature ");
}

bool IsX509(const AuthenticateRequest& r) {
  if (r.has_credential()) return r.credential().has_x509();
  return r.has_connect() && r.connect().peer_certificate_chain_size() > 0;
}

bool IsTriple(const AuthenticateRequest& r) {
  if (r.has_credential()) return r.credential().has_device_triple();
  return r.has_connect() && absl::StrContains(r.connect().client_id(), "|securemode=");
}

// Loads the request template(s) for --mode; empty result and a message on error.
std::vector<AuthenticateRequest> LoadRequests(std::string* error) {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string file = absl::GetFlag(FLAGS_requests_file);
  std::vector<AuthenticateRequest> out;
  if (mode != "raw" && mode != "sas" && mode != "triple" && mode != "x509") {
    *error = "--mode must be raw, sas, triple or x509";
    return {};
  }
  if (file.empty()) {
    if (mode != "raw") {
      *error = absl::StrCat("--mode=", mode, " needs --requests_file");
      return {};
    }
    AuthenticateRequest r = DefaultRawRequest();
    if (const std::string json = absl::GetFlag(FLAGS_request_json); !json.empty()) {
      r.Clear();
      if (auto st = google::protobuf::util::JsonStringToMessage(json, &r); !st.ok()) {
        *error = absl::StrCat("--request_json: ", st.ToString());
        return {};
      }
    }
    out.push_back(std::move(r));
    return out;
  }
  std::ifstream in(file);
  if (!in) {
    *error = absl::StrCat("cannot read --requests_file ", file);
    return {};
  }
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    absl::string_view v = absl::StripAsciiWhitespace(line);
    if (v.empty() || v[0] == '#') continue;
    AuthenticateRequest r;
    if (auto st = google::protobuf::util::JsonStringToMessage(std::string(v), &r); !st.ok()) {
      *error = absl::StrCat(file, ":", n, ": ", st.ToString());
      return {};
    }
    if ((mode == "sas" && !IsSas(r)) || (mode == "triple" && !IsTriple(r)) ||
        (mode == "x509" && !IsX509(r))) {
      *error = absl::StrCat(file, ":", n, ": not a ", mode, " request");
      return {};
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) *error = absl::StrCat(file, ": no requests");
  return out;
}

std::shared_ptr<grpc::ChannelCredentials> MakeCredentials(std::string* error) {
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (!absl::GetFlag(FLAGS_tls) && ca.empty() && cert.empty() && key.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (cert.empty() != key.empty()) {
    *error = "--tls_cert and --tls_key go together";
    return nullptr;
  }
  grpc::SslCredentialsOptions options;
  if ((!ca.empty() && !ReadFile(ca, &options.pem_root_certs)) ||
      (!cert.empty() && !ReadFile(cert, &options.pem_cert_chain)) ||
      (!key.empty() && !ReadFile(key, &options.pem_private_key))) {
    *error = "cannot read a --tls_* file";
    return nullptr;
  }
  return grpc::SslCredentials(options);
}

struct Config {
  bool use_cq = true;
  int cq_threads = 1;
  int concurrency = 64;
  double rate = 0;
  int64_t warmup_ns = 0;
  int64_t duration_ns = 0;
  int64_t timeout_ns = 0;
  int64_t tick_ns = 0;
  bool busy_poll = false;       // fixed rate with the CQ API: one spinning thread
  uint64_t start_request = 0;   // index of the first request sent (then round-robin)
  std::string bearer_metadata;  // "Bearer <token>" or empty
  bool progress = true;
};

struct Results {
  uint64_t calls = 0;  // measured calls, any outcome
  uint64_t allow = 0;
  uint64_t deny = 0;
  uint64_t errors = 0;
  std::vector<std::pair<std::string, uint64_t>> errors_by_code;
  std::vector<std::pair<std::string, uint64_t>> deny_reasons;
  double elapsed_s = 0;  // duration, or longer when a fixed-rate window drained late
  double client_cpu_s = 0;
  double server_cpu_s = -1;
  double server_sys_s = -1;    // the kernel's part of server_cpu_s
  double other_cpu_s = -1;     // the rest of the machine (includes the server if no pid)
  uint64_t requests_sent = 0;  // all calls started, warm-up included
  double busy_fraction = -1;   // --busy_poll: share of the window spent on calls
};

class LoadGenerator {
 public:
  LoadGenerator(Config config, std::vector<std::unique_ptr<IdentityService::Stub>> stubs,
                std::vector<AuthenticateRequest> requests)
      : config_(std::move(config)),
        stubs_(std::move(stubs)),
        requests_(std::move(requests)),
        next_request_(config_.start_request) {}

  Results Run(int server_pid) {
    const int64_t t0 = NowNs();
    measure_start_ns_ = t0 + config_.warmup_ns;
    measure_end_ns_ = measure_start_ns_ + config_.duration_ns;

    for (int i = 0; config_.use_cq && i < config_.cq_threads; ++i) {
      cqs_.push_back(std::make_unique<grpc::CompletionQueue>());
    }
    std::vector<std::thread> pollers;
    const bool busy = BusyPolling();
    for (auto& cq : cqs_) {
      if (!busy) pollers.emplace_back([this, q = cq.get()] { Poll(q); });
    }
    std::thread sender;
    if (busy) {
      sender = std::thread([this, t0] { FixedRateBusyLoop(t0); });
    } else if (config_.rate > 0) {
      sender = std::thread([this, t0] { FixedRateSender(t0); });
    } else {
      for (int i = 0; i < config_.concurrency; ++i) {
        StartCall(i % static_cast<int>(stubs_.size()), NowNs());
      }
    }

    double cpu_start = 0;
    ProcessCpu server_cpu_start;
    double machine_start = 0;
    bool measuring = false;
    int64_t next_print = t0 + 1000000000;
    uint64_t last_completed = 0;
    int64_t last_print = t0;
    while (true) {
      const int64_t now = NowNs();
      if (!measuring && now >= measure_start_ns_) {
        cpu_start = SelfCpuSeconds();
        machine_start = MachineBusySeconds();
        if (server_pid > 0) server_cpu_start = ProcessCpuSeconds(server_pid);
        measuring = true;
      }
      if (now >= measure_end_ns_) break;
      if (now >= next_print) {
        const uint64_t completed = completed_.load(std::memory_order_relaxed);
        if (config_.progress) {
          std::fprintf(stderr,
                       "[%6.1fs] %-7s qps=%-8.0f calls=%-9" PRIu64 " errors=%-6" PRIu64
                       " deny=%-6" PRIu64 " in_flight=%d\n",
                       (now - t0) / 1e9, measuring ? "measure" : "warmup",
                       (completed - last_completed) * 1e9 / static_cast<double>(now - last_print),
                       completed, all_errors_.load(std::memory_order_relaxed),
                       all_denies_.load(std::memory_order_relaxed),
                       in_flight_.load(std::memory_order_relaxed));
        }
        last_completed = completed;
        last_print = now;
        next_print += 1000000000;
      }
      SleepUntilNs(std::min(next_print, measuring ? measure_end_ns_ : measure_start_ns_));
    }
    Results r;
    r.client_cpu_s = SelfCpuSeconds() - cpu_start;
    const double machine_end = MachineBusySeconds();
    if (server_pid > 0) {
      const ProcessCpu end = ProcessCpuSeconds(server_pid);
      if (end.total >= 0 && server_cpu_start.total >= 0) {
        r.server_cpu_s = end.total - server_cpu_start.total;
        r.server_sys_s = end.system - server_cpu_start.system;
      }
    }
    if (machine_start >= 0 && machine_end >= 0) {
      r.other_cpu_s = std::max(
          0.0, machine_end - machine_start - r.client_cpu_s - std::max(0.0, r.server_cpu_s));
    }
    if (sender.joinable()) sender.join();
    // Drain: calls sent inside the window are part of the result, however slow.
    const int64_t drain_deadline = NowNs() + config_.timeout_ns + 2000000000;
    while (in_flight_.load() > 0 && NowNs() < drain_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (in_flight_.load() > 0) {
      std::fprintf(stderr, "loadgen: %d calls still in flight after the deadline\n",
                   in_flight_.load());
    }
    for (auto& cq : cqs_) cq->Shutdown();
    for (auto& t : pollers) t.join();
    if (busy) {  // what the spinning thread left: calls past the drain deadline
      for (auto& cq : cqs_) Poll(cq.get());
      const auto window_ns = static_cast<double>(config_.duration_ns);
      r.busy_fraction = std::clamp(1.0 - static_cast<double>(idle_ns_) / window_ns, 0.0, 1.0);
    }

    r.allow = allow_.load();
    r.deny = deny_.load();
    for (int c = 1; c < kCodes; ++c) {
      if (const uint64_t n = errors_[c].load(); n > 0) {
        r.errors += n;
        r.errors_by_code.emplace_back(StatusCodeName(c), n);
      }
    }
    for (int d = 0; d < kReasons; ++d) {
      if (const uint64_t n = deny_reasons_[d].load(); n > 0) {
        r.deny_reasons.emplace_back(iotauth::identity::v1::DenyReason_IsValid(d)
                                        ? iotauth::identity::v1::DenyReason_Name(d)
                                        : absl::StrCat("DENY_REASON_", d),
                                    n);
      }
    }
    r.calls = r.allow + r.deny + r.errors;
    r.requests_sent = next_request_.load() - config_.start_request;
    // Fixed rate: if the calls of the window finished late (server or client behind),
    // throughput is calls over the time they really took, not over the schedule.
    r.elapsed_s = config_.duration_ns / 1e9;
    if (config_.rate > 0) {
      r.elapsed_s =
          std::max(r.elapsed_s, (last_measured_done_ns_.load() - measure_start_ns_) / 1e9);
    }
    return r;
  }

  const Histogram& latency() const { return latency_; }
  bool BusyPolling() const { return config_.busy_poll && config_.use_cq && config_.rate > 0; }
  const Histogram& send_lag() const { return send_lag_; }

 private:
  static constexpr int kCodes = 18;    // gRPC codes 0..16, 17 = anything else
  static constexpr int kReasons = 64;  // DenyReason values; larger ones share the last

  struct Call {
    grpc::ClientContext context;
    AuthenticateResponse response;
    grpc::Status status;  // --api=cq
    std::unique_ptr<grpc::ClientAsyncResponseReader<AuthenticateResponse>> reader;
    int64_t intended_ns = 0;
    int channel = 0;
  };

  void StartCall(int channel, int64_t intended_ns) {
    auto* call = new Call;
    call->intended_ns = intended_ns;
    call->channel = channel;
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::nanoseconds(config_.timeout_ns));
    if (!config_.bearer_metadata.empty()) {
      call->context.AddMetadata("authorization", config_.bearer_metadata);
    }
    const AuthenticateRequest& request =
        requests_[next_request_.fetch_add(1, std::memory_order_relaxed) % requests_.size()];
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    if (config_.use_cq) {
      call->reader = stubs_[channel]->AsyncAuthenticate(&call->context, request,
                                                        cqs_[channel % cqs_.size()].get());
      call->reader->Finish(&call->response, &call->status, call);
      return;
    }
    stubs_[channel]->async()->Authenticate(
        &call->context, &request, &call->response,
        [this, call](grpc::Status status) { OnDone(call, status); });
  }

  void OnDone(Call* call, const grpc::Status& status) {
    const int64_t done = NowNs();
    const bool measured =
        call->intended_ns >= measure_start_ns_ && call->intended_ns < measure_end_ns_;
    const bool ok = status.ok();
    const bool allow = ok && call->response.decision() == iotauth::identity::v1::DECISION_ALLOW;
    completed_.fetch_add(1, std::memory_order_relaxed);
    if (!ok) all_errors_.fetch_add(1, std::memory_order_relaxed);
    if (ok && !allow) all_denies_.fetch_add(1, std::memory_order_relaxed);
    if (measured) {
      int64_t last = last_measured_done_ns_.load(std::memory_order_relaxed);
      while (done > last &&
             !last_measured_done_ns_.compare_exchange_weak(last, done, std::memory_order_relaxed)) {
      }
      if (!ok) {
        errors_[std::min<int>(status.error_code(), kCodes - 1)].fetch_add(1);
      } else {
        latency_.Record(static_cast<uint64_t>(std::max<int64_t>(0, done - call->intended_ns)));
        if (allow) {
          allow_.fetch_add(1, std::memory_order_relaxed);
        } else {
          deny_.fetch_add(1, std::memory_order_relaxed);
          deny_reasons_[std::clamp<int>(call->response.deny_reason(), 0, kReasons - 1)].fetch_add(
              1, std::memory_order_relaxed);
        }
      }
    }
    // Closed loop: keep the concurrency constant until the window ends. The next
    // call starts before this one is released so in_flight_ never dips to 0 early.
    if (config_.rate <= 0 && done < measure_end_ns_) StartCall(call->channel, done);
    delete call;
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  }

  // --api=cq: this thread polls its queue and runs each completion (which, in the
  // closed loop, starts the next call from the same thread: no hand-offs).
  void Poll(grpc::CompletionQueue* cq) {
    void* tag = nullptr;
    bool ok = false;
    while (cq->Next(&tag, &ok)) {
      auto* call = static_cast<Call*>(tag);
      OnDone(call, call->status);
    }
  }

  // The fixed-rate schedule: call i is due at t0 + i * period_ns; `due` is the next one.
  struct Schedule {
    Schedule(int64_t start_ns, double rate) : t0(start_ns), period_ns(1e9 / rate), due(start_ns) {}
    int64_t t0;
    double period_ns;
    uint64_t i = 0;
    int64_t due;
  };
  // Starts every call of `schedule` due by `now` (inside the window, under the
  // in-flight cap), round-robin over the channels, recording each one's send lag.
  // True if it started any.
  bool SendCallsDue(int64_t now, Schedule* schedule) {
    const auto channels = static_cast<uint64_t>(stubs_.size());
    bool sent = false;
    while (schedule->due <= now && schedule->due < measure_end_ns_ &&
           in_flight_.load(std::memory_order_relaxed) < config_.concurrency) {
      const int64_t due = schedule->due;
      if (due >= measure_start_ns_) send_lag_.Record(static_cast<uint64_t>(now - due));
      StartCall(static_cast<int>(schedule->i % channels), due);
      ++schedule->i;
      schedule->due = schedule->t0 +
                      static_cast<int64_t>(static_cast<double>(schedule->i) * schedule->period_ns);
      sent = true;
    }
    return sent;
  }

  // Open loop: the i-th call is due at t0 + i / rate. A call that cannot be sent on
  // time (sender woke late, or --concurrency calls already in flight) keeps its due
  // time, so the delay is part of its measured latency.
  //
  // The sender wakes at most once per --tick and sends every call due by then:
  // waking for each call (40 k/s) costs a thread switch per call on the client's
  // core, which made the client the bottleneck at half of the closed-loop peak.
  // The price is up to one tick of send lag, counted in the latency (conservative).
  // The sender does not poll the completion queue itself: with the CQ API, I/O only
  // progresses in a thread blocked in the queue, and that wait is precise to 1 ms.
  void FixedRateSender(int64_t t0) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake within microseconds, not 50 us
    Schedule schedule(t0, config_.rate);
    while (schedule.due < measure_end_ns_) {
      const int64_t now = NowNs();
      SendCallsDue(now, &schedule);
      if (schedule.due > now) {
        SleepUntilNs(std::max(schedule.due, now + config_.tick_ns));
      } else {  // at the in-flight cap
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
  }

  // --busy_poll: the fixed-rate schedule and the completions on one thread that never
  // blocks. Each pass sends the calls due, then takes every completion ready (a
  // zero-timeout poll of the queue, which also moves the connections' I/O). Nothing
  // waits for a wake-up, so a call is sent within a pass of its due time and a
  // response is seen within a pass of its arrival; the price is a client core spent
  // spinning. Passes that did nothing inside the window count as idle (busy_fraction).
  void FixedRateBusyLoop(int64_t t0) {
    const int64_t give_up = measure_end_ns_ + config_.timeout_ns + 2000000000;
    const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    Schedule schedule(t0, config_.rate);
    for (;;) {
      const int64_t now = NowNs();
      bool worked = SendCallsDue(now, &schedule);
      for (auto& cq : cqs_) {
        void* tag = nullptr;
        bool ok = false;
        while (cq->AsyncNext(&tag, &ok, no_wait) == grpc::CompletionQueue::GOT_EVENT) {
          auto* call = static_cast<Call*>(tag);
          OnDone(call, call->status);
          worked = true;
        }
      }
      const int64_t after = NowNs();
      if (!worked && now >= measure_start_ns_ && after <= measure_end_ns_) idle_ns_ += after - now;
      if (schedule.due >= measure_end_ns_ && in_flight_.load(std::memory_order_acquire) == 0) {
        return;
      }
      if (after > give_up) return;
    }
  }

  const Config config_;
  const std::vector<std::unique_ptr<IdentityService::Stub>> stubs_;
  const std::vector<AuthenticateRequest> requests_;
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs_;
  int64_t measure_start_ns_ = 0;
  int64_t measure_end_ns_ = 0;

  std::atomic<uint64_t> next_request_;
  std::atomic<int> in_flight_{0};
  int64_t idle_ns_ = 0;  // --busy_poll: the spinning thread's empty passes in the window
  std::atomic<uint64_t> completed_{0};  // all phases, for progress
  std::atomic<uint64_t> all_errors_{0};
  std::atomic<uint64_t> all_denies_{0};
  std::atomic<int64_t> last_measured_done_ns_{0};
  std::atomic<uint64_t> allow_{0};
  std::atomic<uint64_t> deny_{0};
  std::array<std::atomic<uint64_t>, kCodes> errors_{};
  std::array<std::atomic<uint64_t>, kReasons> deny_reasons_{};
  Histogram latency_;   // ns, status-OK calls
  Histogram send_lag_;  // ns, fixed rate: how late the sender issued each call
};

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonCounts(const std::vector<std::pair<std::string, uint64_t>>& counts) {
  std::vector<std::string> parts;
  parts.reserve(counts.size());
  for (const auto& [name, n] : counts) parts.push_back(absl::StrCat(JsonString(name), ":", n));
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

double Us(uint64_t ns) { return ns / 1000.0; }

int Run() {
  Config config;
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "cq" && api != "callback") {
    std::fprintf(stderr, "loadgen: --api must be cq or callback\n");
    return 2;
  }
  config.use_cq = api == "cq";
  config.cq_threads = absl::GetFlag(FLAGS_cq_threads);
  config.concurrency = absl::GetFlag(FLAGS_concurrency);
  config.rate = absl::GetFlag(FLAGS_rate);
  config.warmup_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_warmup));
  config.duration_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_duration));
  config.timeout_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_timeout));
  config.start_request = absl::GetFlag(FLAGS_start_request);
  config.tick_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_tick));
  config.progress = absl::GetFlag(FLAGS_progress);
  config.busy_poll = absl::GetFlag(FLAGS_busy_poll);
  if (const std::string token = absl::GetFlag(FLAGS_bearer_token); !token.empty()) {
    config.bearer_metadata = absl::StrCat("Bearer ", token);
  }
  const int num_channels = absl::GetFlag(FLAGS_channels);
  if (num_channels < 1 || config.concurrency < 1 || config.rate < 0 || config.warmup_ns < 0 ||
      config.duration_ns <= 0 || config.timeout_ns <= 0 || config.cq_threads < 1) {
    std::fprintf(stderr,
                 "loadgen: need --channels>=1, --concurrency>=1, --rate>=0, --warmup>=0, "
                 "--duration>0, --timeout>0, --cq_threads>=1\n");
    return 2;
  }

  std::string error;
  std::vector<AuthenticateRequest> requests = LoadRequests(&error);
  if (requests.empty()) {
    std::fprintf(stderr, "loadgen: %s\n", error.c_str());
    return 2;
  }
  size_t request_bytes = 0;
  for (const auto& r : requests) request_bytes += r.ByteSizeLong();

  if (const std::string path = absl::GetFlag(FLAGS_dump_body); !path.empty()) {
    // gRPC message framing: 1 byte compressed flag (0), 4 bytes big-endian length.
    std::string msg;
    if (const int batch = absl::GetFlag(FLAGS_dump_batch); batch > 0) {
      AuthenticateBatchRequest b;
      for (int i = 0; i < batch; ++i) {
        *b.add_requests() = requests[(config.start_request + i) % requests.size()];
      }
      msg = b.SerializeAsString();
    } else {
      msg = requests[config.start_request % requests.size()].SerializeAsString();
    }
    const auto n = static_cast<uint32_t>(msg.size());
    std::string body = {'\0', static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                        static_cast<char>(n >> 8), static_cast<char>(n)};
    body += msg;
    std::ofstream out(path, std::ios::binary);
    out << body;
    if (!out) {
      std::fprintf(stderr, "loadgen: cannot write %s\n", path.c_str());
      return 1;
    }
    std::fprintf(stderr, "loadgen: wrote %zu bytes (5 + %u) to %s\n", body.size(), n, path.c_str());
    return 0;
  }

  std::shared_ptr<grpc::ChannelCredentials> creds = MakeCredentials(&error);
  if (creds == nullptr) {
    std::fprintf(stderr, "loadgen: %s\n", error.c_str());
    return 2;
  }
  const bool tls = absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca).empty() ||
                   !absl::GetFlag(FLAGS_tls_cert).empty();
  const std::string target = absl::GetFlag(FLAGS_target);
  const std::string authority = absl::GetFlag(FLAGS_authority);
  std::vector<std::unique_ptr<IdentityService::Stub>> stubs;
  for (int i = 0; i < num_channels; ++i) {
    grpc::ChannelArguments args;
    // Channels with identical arguments may share one subchannel (one TCP
    // connection); a distinct argument and a local pool keep them apart.
    args.SetInt("iotauth.bench.channel_index", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!authority.empty()) {
      args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, authority);
      if (tls) args.SetSslTargetNameOverride(authority);
    }
    auto channel = grpc::CreateCustomChannel(target, creds, args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "loadgen: channel %d cannot connect to %s\n", i, target.c_str());
      return 1;
    }
    stubs.push_back(IdentityService::NewStub(channel));
  }
  const std::string label = absl::GetFlag(FLAGS_label);
  const char* load = config.rate > 0 ? "fixed_rate" : "closed_loop";
  std::fprintf(stderr,
               "loadgen: %s %s, %s, %d channels, %s %d, rate %.0f/s, warmup %.1fs, "
               "duration %.1fs, %zu request(s) of %zu bytes on average\n",
               target.c_str(), tls ? "TLS" : "plaintext", load, num_channels,
               config.rate > 0 ? "max in flight" : "in flight", config.concurrency, config.rate,
               config.warmup_ns / 1e9, config.duration_ns / 1e9, requests.size(),
               request_bytes / requests.size());

  LoadGenerator generator(config, std::move(stubs), requests);
  const Results r = generator.Run(absl::GetFlag(FLAGS_server_pid));
  const Histogram& h = generator.latency();
  const double seconds = r.elapsed_s;
  const double qps = r.allow / seconds;
  // The client shares a 2-core machine with the server: say when it was the limit.
  const double window_s = config.duration_ns / 1e9;  // CPU is sampled over the window
  // A spinning client (--busy_poll) is always on its core: count its passes with work.
  const bool client_bound =
      r.busy_fraction >= 0 ? r.busy_fraction > 0.9 : r.client_cpu_s / window_s > 0.9;
  // Other processes (with --server_pid) taking over 10% of a core spoil the figures.
  const double other_cores = r.other_cpu_s / window_s;
  const bool machine_busy = absl::GetFlag(FLAGS_server_pid) > 0 && other_cores > 0.1;
  // Fixed rate: the schedule was kept if calls were sent on time and finished in time.
  const double send_lag_p99_us = Us(generator.send_lag().Quantile(0.99));
  const bool rate_kept = config.rate <= 0 || (r.calls / seconds >= 0.98 * config.rate &&
                                              send_lag_p99_us < config.tick_ns / 1e3 + 250);
  const double per_call = r.calls > 0 ? 1e6 / r.calls : 0;

  if (absl::GetFlag(FLAGS_json)) {
    std::string out = absl::StrCat(
        "{\"label\":", JsonString(label), ",\"target\":", JsonString(target),
        ",\"api\":", JsonString(api), ",\"transport\":", JsonString(tls ? "tls" : "plaintext"),
        ",\"mode\":", JsonString(absl::GetFlag(FLAGS_mode)), ",\"load\":", JsonString(load),
        ",\"channels\":", num_channels, ",\"concurrency\":", config.concurrency,
        ",\"target_rate\":", config.rate, ",\"warmup_s\":", config.warmup_ns / 1e9,
        ",\"duration_s\":", config.duration_ns / 1e9, ",\"elapsed_s\":", seconds,
        ",\"requests\":", requests.size(), ",\"request_bytes\":", request_bytes / requests.size(),
        ",\"start_request\":", config.start_request, ",\"requests_sent\":", r.requests_sent);
    absl::StrAppend(&out, ",\"calls\":", r.calls, ",\"allow\":", r.allow, ",\"deny\":", r.deny,
                    ",\"errors\":", r.errors, ",\"errors_by_code\":", JsonCounts(r.errors_by_code),
                    ",\"deny_reasons\":", JsonCounts(r.deny_reasons),
                    absl::StrFormat(R"(,"qps":%.1f,"completed_qps":%.1f)", qps, r.calls / seconds));
    absl::StrAppend(
        &out, absl::StrFormat(
                  ",\"latency_us\":{\"count\":%d,\"min\":%.1f,\"mean\":%.1f,\"p50\":%.1f,"
                  "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
                  h.Count(), Us(h.Min()), h.Mean() / 1000, Us(h.Quantile(0.5)), Us(h.Quantile(0.9)),
                  Us(h.Quantile(0.99)), Us(h.Quantile(0.999)), Us(h.Max())));
    if (config.rate > 0) {
      const Histogram& lag = generator.send_lag();
      absl::StrAppend(&out,
                      absl::StrFormat(R"(,"send_lag_us":{"p99":%.1f,"max":%.1f})",
                                      Us(lag.Quantile(0.99)), Us(lag.Max())),
                      ",\"rate_kept\":", rate_kept ? "true" : "false");
    }
    absl::StrAppend(&out, absl::StrFormat(R"(,"client_cpu_s":%.3f,"client_cpu_us_per_call":%.2f)",
                                          r.client_cpu_s, r.client_cpu_s * per_call));
    absl::StrAppend(&out, ",\"busy_poll\":", r.busy_fraction >= 0 ? "true" : "false");
    if (r.busy_fraction >= 0) {
      absl::StrAppend(&out, absl::StrFormat(R"(,"client_busy_fraction":%.3f)", r.busy_fraction));
    }
    if (r.server_cpu_s >= 0) {
      absl::StrAppend(&out, absl::StrFormat(R"(,"server_cpu_s":%.3f,"server_cpu_us_per_call":%.2f)",
                                            r.server_cpu_s, r.server_cpu_s * per_call));
      absl::StrAppend(
          &out, absl::StrFormat(R"(,"server_sys_us_per_call":%.2f)", r.server_sys_s * per_call));
    }
    if (r.other_cpu_s >= 0) {
      absl::StrAppend(&out, absl::StrFormat(",\"other_cpu_cores\":%.2f", other_cores));
    }
    absl::StrAppend(&out, ",\"client_bound\":", client_bound ? "true" : "false",
                    ",\"machine_busy\":", machine_busy ? "true" : "false", "}\n");
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("%-22s %s%s%s\n", "target", target.c_str(), label.empty() ? "" : "  ",
                label.c_str());
    std::printf("%-22s %s, %s API, %s, %d channels, %s %d%s\n", "setup", tls ? "TLS" : "plaintext",
                api.c_str(), load, num_channels, config.rate > 0 ? "max in flight" : "in flight",
                config.concurrency,
                config.rate > 0 ? absl::StrFormat(", rate %.0f/s", config.rate).c_str() : "");
    std::printf("%-22s %" PRIu64 " in %.2fs (allow %" PRIu64 ", deny %" PRIu64 ", errors %" PRIu64
                ")\n",
                "calls", r.calls, seconds, r.allow, r.deny, r.errors);
    for (const auto& [name, n] : r.errors_by_code) {
      std::printf("  error %-18s %" PRIu64 "\n", name.c_str(), n);
    }
    for (const auto& [name, n] : r.deny_reasons) {
      std::printf("  deny %-40s %" PRIu64 "\n", name.c_str(), n);
    }
    std::printf("%-22s %.0f\n", "qps (allow)", qps);
    std::printf("%-22s p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  (mean %.0f)\n",
                "latency us", Us(h.Quantile(0.5)), Us(h.Quantile(0.9)), Us(h.Quantile(0.99)),
                Us(h.Quantile(0.999)), Us(h.Max()), h.Mean() / 1000);
    if (config.rate > 0) {
      std::printf("%-22s p99 %.0f  max %.0f\n", "send lag us",
                  Us(generator.send_lag().Quantile(0.99)), Us(generator.send_lag().Max()));
    }
    std::printf("%-22s %.2fs (%.2f us/call, %.2f cores)\n", "client cpu", r.client_cpu_s,
                r.client_cpu_s * per_call, r.client_cpu_s / window_s);
    if (r.busy_fraction >= 0) {
      std::printf("%-22s %.2f of the window on calls (the rest polling an idle queue)\n",
                  "client busy (spins)", r.busy_fraction);
    }
    if (r.server_cpu_s >= 0) {
      std::printf("%-22s %.2fs (%.2f us/call, %.2f of them in the kernel; %.2f cores)\n",
                  "server cpu", r.server_cpu_s, r.server_cpu_s * per_call,
                  r.server_sys_s * per_call, r.server_cpu_s / window_s);
    }
    if (r.other_cpu_s >= 0) {
      std::printf("%-22s %.2f cores%s\n", "other processes cpu", other_cores,
                  absl::GetFlag(FLAGS_server_pid) > 0 ? "" : " (includes the server)");
    }
    if (machine_busy) std::printf("WARNING: other processes used the CPUs: figures unreliable\n");
    if (client_bound) std::printf("WARNING: the client used > 0.9 core: it may be the limit\n");
    if (!rate_kept) std::printf("WARNING: the fixed rate was not kept (see send lag, elapsed)\n");
  }
  std::fflush(stdout);
  const bool denies_fail = r.deny > 0 && !absl::GetFlag(FLAGS_allow_deny);
  if (r.errors > 0 || denies_fail || r.allow + r.deny == 0) {
    std::fprintf(stderr, "loadgen: FAILED run: %" PRIu64 " errors, %" PRIu64 " denies\n", r.errors,
                 r.deny);
    return 3;
  }
  return 0;
}

}  // namespace
}  // namespace iotauth::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Load generator for iotauth IdentityService.Authenticate.\n"
      "  iotauth_loadgen --target=127.0.0.1:PORT [--channels=4 --concurrency=64]\n"
      "                  [--rate=QPS] [--mode=raw|sas|triple|x509 --requests_file=F] [--json]");
  absl::ParseCommandLine(argc, argv);
  // Debian's Abseil has mutex deadlock detection on; the servers turn it off, and so
  // does the client, whose CPU limits the closed-loop runs on 2 cores.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return iotauth::bench::Run();
}
