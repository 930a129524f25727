// Manual micro-benchmark of the identity hot path on one thread (no gRPC):
//   bazel run -c opt //services/identity:identity_bench -- [devices [--no-deadlock-detection]]
// Prints ns per call for ParseSasToken, VerifySas, full SAS and triple Authenticate,
// the directory's memory per cached device (estimate and RSS delta), and what the
// audit log adds to a SAS Authenticate: the same calls with and without a
// LocalAuditSink over a LogAuditStore (the server's defaults), in alternating rounds,
// as process CPU per call, the writer thread included. Pin it to one CPU
// (`taskset -c 1`) so that the writer shares the core as it does in a pinned server.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/audit/log_audit_store.h"
#include "services/audit/pipeline.h"
#include "services/common/clock.h"
#include "services/identity/authenticator.h"
#include "services/identity/device_triple.h"
#include "services/identity/directory_cache.h"
#include "services/identity/dps.h"
#include "services/identity/sas_token.h"

namespace iotauth::identity {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

long RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    long kb = 0;
    if (line.rfind("VmRSS:", 0) == 0) {
      return absl::SimpleAtoi(absl::StripAsciiWhitespace(
                                  absl::StripSuffix(absl::string_view(line).substr(6), "kB")),
                              &kb)
                 ? kb
                 : 0;
    }
  }
  return 0;
}

// CPU time of `clock`: by default this thread's, so that other processes on a
// shared machine skew the figures less.
double CpuNs(clockid_t clock = CLOCK_THREAD_CPUTIME_ID) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// The whole process's CPU time: the audit writer thread included.
double ProcessCpuNs() { return CpuNs(CLOCK_PROCESS_CPUTIME_ID); }

template <typename F>
double NsPerCall(int iterations, F&& f) {
  for (int i = 0; i < iterations / 10; ++i) f(i);  // warm-up
  const double start = CpuNs();
  for (int i = 0; i < iterations; ++i) f(i);
  return (CpuNs() - start) / iterations;
}

int Main(int argc, char** argv) {
  int devices = 200000;
  if (argc > 1 && !absl::SimpleAtoi(argv[1], &devices)) {
    std::fprintf(stderr, "identity_bench: '%s' is not a device count\n", argv[1]);
    return 2;
  }
  // Debian's Abseil is built with Mutex deadlock detection on, which costs every lock
  // a graph-cycle update; servers should turn it off the same way (see the report).
  if (argc > 2 && std::string(argv[2]) == "--no-deadlock-detection") {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    std::printf("absl Mutex deadlock detection off\n");
  }
  const char* key = "cGFzc3dvcmQxcGFzc3dvcmQxcGFzc3dvcmQxcGFzc3dvcmQx";
  FakeClock clock(absl::FromUnixSeconds(1700000000));
  auto cache = *DirectoryCache::Create({});
  reg::Tenant t;
  t.set_id("tenant-1");
  t.set_hub_host("hub.example.net");
  (void)cache->UpsertTenant(t);
  reg::Product p;
  p.set_tenant_id("tenant-1");
  p.set_product_key("product-1");
  p.add_allowed_credential_types(reg::CREDENTIAL_TYPE_SAS);
  p.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
  auto* rule = p.add_default_rules();
  rule->set_effect(reg::RULE_EFFECT_ALLOW);
  rule->set_action(reg::RULE_ACTION_ALL);
  rule->set_topic_filter("devices/${device}/#");
  (void)cache->UpsertProduct(p);

  const long rss0 = RssKb();
  for (int i = 0; i < devices; ++i) {
    reg::Device d;
    d.set_tenant_id("tenant-1");
    d.set_device_id(absl::StrCat("device-", i));
    d.set_product_key("product-1");
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(key);
    d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(key);
    (void)cache->UpsertDevice(d);
  }
  const long rss1 = RssKb();
  auto stats = cache->GetStats();
  std::printf("devices=%zu estimate=%.0f B/device rss_delta=%.0f B/device\n", stats.devices,
              stats.bytes_per_device(), (rss1 - rss0) * 1024.0 / devices);

  Authenticator::Options o;
  o.clock = &clock;
  o.directory = cache.get();
  auto auth = *Authenticator::Create(o);

  const int n = 200000;
  std::vector<std::string> tokens;
  std::vector<v1::AuthenticateRequest> sas_requests;
  for (int i = 0; i < 1024; ++i) {
    const std::string id = absl::StrCat("device-", (i * 7919) % devices);
    tokens.push_back(*MakeSasToken(absl::StrCat("hub.example.net/devices/", id), key,
                                   clock.Now() + absl::Hours(1)));
    v1::AuthenticateRequest r;
    r.mutable_connect()->set_client_id(id);
    r.mutable_connect()->set_username(
        absl::StrCat("hub.example.net/", id, "/?api-version=2021-04-12"));
    r.mutable_connect()->set_password(tokens.back());
    r.mutable_connect()->set_peer_address("192.0.2.1:1883");
    sas_requests.push_back(std::move(r));
  }
  const std::string raw_key = "password1password1password1password1";
  auto parsed = *ParseSasToken(tokens[0]);

  const double parse_ns = NsPerCall(n, [&](int i) { (void)ParseSasToken(tokens[i & 1023]); });
  // As the directory holds them: keys scheduled once (hmac.h).
  const PrecomputedHmacSha256 right = PrecomputedHmacSha256::ForKey(raw_key);
  const PrecomputedHmacSha256 wrong = PrecomputedHmacSha256::ForKey("wrong-key-wrong-key");
  const double verify_ns = NsPerCall(n, [&](int) {
    (void)VerifySas(parsed, SasMacKeys{&right, nullptr}, clock.Now(), absl::Minutes(5));
  });
  const double verify_secondary_ns = NsPerCall(n, [&](int) {
    (void)VerifySas(parsed, SasMacKeys{&wrong, &right}, clock.Now(), absl::Minutes(5));
  });
  const double verify_raw_ns = NsPerCall(n, [&](int) {
    (void)VerifySas(parsed, SasKeyPair{raw_key, ""}, clock.Now(), absl::Minutes(5));
  });
  // Enrollment groups: a device key derived from the group key, raw (scheduled per
  // call, as before 2026-11-28's fourth session) and as the directory now holds it.
  const PrecomputedHmacSha256 group = PrecomputedHmacSha256::ForKey(raw_key);
  const double derive_raw_ns = NsPerCall(n, [&](int i) {
    (void)DeriveDeviceKeyRaw(raw_key, absl::string_view(tokens[i & 1023]).substr(0, 40));
  });
  const double derive_ns = NsPerCall(n, [&](int i) {
    MacValue out;
    (void)DeriveDeviceKeyRaw(group, absl::string_view(tokens[i & 1023]).substr(0, 40), &out);
  });
  int allowed = 0;
  const double sas_auth_ns = NsPerCall(n, [&](int i) {
    v1::AuthenticateResponse resp;
    (void)auth->Authenticate(sas_requests[i & 1023], CallContext{"bench"}, &resp);
    allowed += resp.decision() == v1::DECISION_ALLOW;
  });
  if (allowed < n) std::printf("WARNING: %d of %d SAS calls allowed\n", allowed, n);

  // Triple: distinct timestamps so no call is a replay.
  std::vector<v1::AuthenticateRequest> triple_requests;
  const int tn = 100000;
  for (int i = 0; i < tn; ++i) {
    const std::string id = absl::StrCat("device-", (i * 7919) % devices);
    auto tc = *MakeTripleConnect("product-1", id, key, "c1", TripleSignMethod::kHmacSha256,
                                 absl::ToUnixMillis(clock.Now()) - i);
    v1::AuthenticateRequest r;
    r.mutable_connect()->set_client_id(tc.client_id);
    r.mutable_connect()->set_username(tc.username);
    r.mutable_connect()->set_password(tc.password);
    triple_requests.push_back(std::move(r));
  }
  allowed = 0;
  const double start = CpuNs();
  for (int i = 0; i < tn; ++i) {
    v1::AuthenticateResponse resp;
    (void)auth->Authenticate(triple_requests[i], CallContext{"bench"}, &resp);
    allowed += resp.decision() == v1::DECISION_ALLOW;
  }
  const double triple_ns = (CpuNs() - start) / tn;
  if (allowed < tn) std::printf("WARNING: %d of %d triple calls allowed\n", allowed, tn);

  std::printf("(thread CPU time per call)\n");
  std::printf("ParseSasToken            %7.0f ns/call\n", parse_ns);
  std::printf("VerifySas (primary)      %7.0f ns/call\n", verify_ns);
  std::printf("VerifySas (secondary)    %7.0f ns/call\n", verify_secondary_ns);
  std::printf("VerifySas (raw key)      %7.0f ns/call (key scheduled per call)\n", verify_raw_ns);
  std::printf("group key derive (raw)   %7.0f ns/call (group key scheduled per call)\n",
              derive_raw_ns);
  std::printf("group key derive         %7.0f ns/call (group key scheduled once)\n", derive_ns);
  std::printf("Authenticate SAS         %7.0f ns/call (incl. audit event, null sink)\n",
              sas_auth_ns);
  std::printf("Authenticate triple      %7.0f ns/call (incl. replay cache insert)\n", triple_ns);

  // The audit log's share: a second authenticator over the same directory, its
  // decisions recorded through the pipeline into a segment log in a temporary
  // directory (the server's defaults: batches of up to 2048, 20 ms linger).
  char dir_template[] = "/tmp/identity_bench_audit.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    std::printf("audit: cannot create a temporary directory\n");
    return 1;
  }
  audit::LogAuditStore::Options so;
  so.dir = std::string(dir) + "/audit";
  auto store = audit::LogAuditStore::Open(so);
  if (!store.ok()) {
    std::printf("audit: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  audit::LocalAuditSink::Options po;
  po.store = store->get();
  po.max_batch = 2048;
  po.linger = absl::Milliseconds(20);
  auto sink = *audit::LocalAuditSink::Create(po);
  Authenticator::Options ao = o;
  ao.audit_sink = sink.get();
  auto audited = *Authenticator::Create(ao);
  // An audited round ends with a flush, so that the writer's commit of its last
  // batch counts in that round, not in the unaudited round after it.
  auto round = [&](Authenticator* a, int calls, int offset) {
    const double begin = ProcessCpuNs();
    for (int i = 0; i < calls; ++i) {
      v1::AuthenticateResponse resp;
      (void)a->Authenticate(sas_requests[(offset + i) & 1023], CallContext{"bench"}, &resp);
    }
    if (a == audited.get()) (void)sink->Flush(absl::Seconds(30));
    return (ProcessCpuNs() - begin) / calls;
  };
  constexpr int kRounds = 9;
  constexpr int kCallsPerRound = 100000;
  (void)round(audited.get(), kCallsPerRound / 10, 0);  // warm-up (and the log's first segment)
  std::vector<double> off_ns;
  std::vector<double> on_ns;
  std::vector<double> diff_ns;
  for (int r = 0; r < kRounds; ++r) {
    off_ns.push_back(round(auth.get(), kCallsPerRound, r));
    on_ns.push_back(round(audited.get(), kCallsPerRound, r));
    diff_ns.push_back(on_ns.back() - off_ns.back());
  }
  const bool flushed = sink->Flush(absl::Seconds(30));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const audit::AuditPipelineStats st = sink->Stats();
  std::printf("(process CPU per call, writer thread included; median of %d rounds of %d)\n",
              kRounds, kCallsPerRound);
  std::printf("Authenticate SAS, no audit  %7.0f ns/call\n", median(off_ns));
  std::printf("Authenticate SAS, audit log %7.0f ns/call\n", median(on_ns));
  std::printf("audit cost                  %7.0f ns/call (min %.0f, max %.0f)\n", median(diff_ns),
              *std::min_element(diff_ns.begin(), diff_ns.end()),
              *std::max_element(diff_ns.begin(), diff_ns.end()));
  std::printf("audit: %llu committed in %llu batches, %llu dropped%s\n",
              static_cast<unsigned long long>(st.committed),
              static_cast<unsigned long long>(st.batches),
              static_cast<unsigned long long>(st.dropped), flushed ? "" : ", FLUSH TIMED OUT");
  sink->Shutdown();
  sink.reset();
  store->reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace iotauth::identity

int main(int argc, char** argv) { return iotauth::identity::Main(argc, argv); }
