// The raw-OpenSSL side of the X.509 Authenticate benchmark: what verifying a presented
// chain costs with OpenSSL alone, on one core, for the same requests the load generator
// sends. Per chain: parse every entry of `connect.peer_certificate_chain` (PEM or DER,
// as the server receives it), then X509_verify_cert against a prepared X509_STORE
// holding --ca, with the flags iotauth uses (X509_STRICT, PARTIAL_CHAIN, purpose
// sslclient). Prints microseconds per chain; tools/bench/x509_server_bench.sh adds the
// no-op RPC's server CPU per call to it.
//
//   openssl_chain_baseline --ca=root.pem --requests_file=x509.jsonl [--duration=5s] [--json]
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "services/common/openssl_ptr.h"

ABSL_FLAG(std::string, ca, "", "PEM trust anchor(s) (the tenant's registered root).");
ABSL_FLAG(std::string, requests_file, "",
          "AuthenticateRequest per line (proto JSON), each with connect.peer_certificate_chain.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "How long to loop over the chains.");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of text.");

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "openssl_chain_baseline: %s\n", msg.c_str());
  return 1;
}

// Parses one chain entry the way a server must: PEM when it looks like PEM, else DER.
X509* ParseEntry(const std::string& bytes) {
  if (absl::StrContains(bytes, "-----BEGIN")) {
    BIO* bio = BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
    X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return x;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return d2i_X509(nullptr, &p, static_cast<long>(bytes.size()));
}

// One full verification from bytes; true when OpenSSL accepts the chain.
bool VerifyOnce(X509_STORE* store, const google::protobuf::RepeatedPtrField<std::string>& chain,
                time_t now) {
  X509* leaf = ParseEntry(chain.Get(0));
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (int i = 1; i < chain.size(); ++i) {
    if (X509* x = ParseEntry(chain.Get(i))) sk_X509_push(untrusted, x);
  }
  bool ok = false;
  if (leaf != nullptr) {
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) == 1) {
      X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
      X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
      X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_PARTIAL_CHAIN);
      X509_VERIFY_PARAM_set_depth(param, 5);
      X509_VERIFY_PARAM_set_time(param, now);
      ok = X509_verify_cert(ctx) == 1;
    }
    X509_STORE_CTX_free(ctx);
  }
  X509_free(leaf);
  sk_X509_pop_free(untrusted, X509_free);
  ERR_clear_error();
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "openssl_chain_baseline --ca=root.pem --requests_file=F [--duration=5s] [--json]");
  absl::ParseCommandLine(argc, argv);
  iotauth::X509StorePtr store(X509_STORE_new());
  if (X509_STORE_load_file(store.get(), absl::GetFlag(FLAGS_ca).c_str()) != 1) {
    return Fail(absl::StrCat("cannot load --ca ", absl::GetFlag(FLAGS_ca)));
  }
  std::ifstream in(absl::GetFlag(FLAGS_requests_file));
  if (!in) return Fail("cannot read --requests_file");
  std::vector<iotauth::identity::v1::AuthenticateRequest> requests;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view v = absl::StripAsciiWhitespace(line);
    if (v.empty() || v[0] == '#') continue;
    iotauth::identity::v1::AuthenticateRequest r;
    if (!google::protobuf::util::JsonStringToMessage(std::string(v), &r).ok() ||
        r.connect().peer_certificate_chain_size() == 0) {
      return Fail("a request without connect.peer_certificate_chain");
    }
    requests.push_back(std::move(r));
  }
  if (requests.empty()) return Fail("no requests");
  const time_t now = time(nullptr);
  // Every chain must verify, or the figure would time a failure path.
  for (const auto& r : requests) {
    if (!VerifyOnce(store.get(), r.connect().peer_certificate_chain(), now)) {
      return Fail("OpenSSL rejects a chain of --requests_file (wrong --ca?)");
    }
  }
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_duration));
  uint64_t n = 0;
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 64; ++i, ++n) {
      VerifyOnce(store.get(), requests[n % requests.size()].connect().peer_certificate_chain(),
                 now);
    }
  }
  const double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  const double cpu_us = 1e6 * static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"chains\":%llu,\"distinct\":%zu,\"us_per_chain\":%.2f,\"cpu_us_per_chain\":%.2f}\n",
        static_cast<unsigned long long>(n), requests.size(), wall_us / n, cpu_us / n);
  } else {
    std::printf(
        "raw OpenSSL parse + X509_verify_cert: %.1f us/chain wall, %.1f us CPU (%llu chains, %zu "
        "distinct)\n",
        wall_us / n, cpu_us / n, static_cast<unsigned long long>(n), requests.size());
  }
  return 0;
}
