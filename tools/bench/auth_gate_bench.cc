// What the auth gate adds to a TLS call, on one core: EarlyAuthGate::Process for a
// bearer-token caller and for a certificate caller (each admission counted in the
// caller's backlog), and the settle a handler does (CallBacklog::KeyOf + Started).
// Baseline in the same run: one SHA-256 of the token with raw OpenSSL (EVP_Digest),
// the part of a token check no implementation can skip.
//
//   bazel run -c opt //tools/bench:auth_gate_bench -- [--calls=2000000]

#include <grpcpp/security/auth_metadata_processor.h>
#include <openssl/evp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "proto/iotauth/config/v1/config.pb.h"
#include "services/common/auth_gate.h"
#include "services/common/call_backlog.h"
#include "services/common/crypto.h"

ABSL_FLAG(int, calls, 2000000, "calls per measurement");

namespace iotauth::bench {
namespace {

template <typename F>
double NanosPerCall(int calls, F&& f) {
  for (int i = 0; i < calls / 10; ++i) f();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) f();
  const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
  return took.count() / calls;
}

int Main(int calls) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as iotauthd
  iotauth::config::v1::AuthConfig a;
  a.set_roles_from_ou(true);
  auto* t = a.add_bearer_tokens();
  t->set_name("gateway-1");
  const std::string token = "bench-token-0123456789abcdef0123456789abcdef";
  t->set_sha256(crypto::Sha256Hex(token));
  t->add_roles("gateway");
  const ConfiguredCallerResolver resolver(a);
  EarlyAuthGate gate(&resolver);

  const std::string path_key = ":path";
  const std::string path = "/iotauth.identity.v1.IdentityService/Authenticate";
  const std::string auth_key = "authorization";
  const std::string header = "Bearer " + token;
  grpc::AuthMetadataProcessor::InputMetadata with_token;
  with_token.insert({grpc::string_ref(path_key), grpc::string_ref(path)});
  with_token.insert({grpc::string_ref(auth_key), grpc::string_ref(header)});
  grpc::AuthMetadataProcessor::OutputMetadata consumed;
  grpc::AuthMetadataProcessor::OutputMetadata response;
  const uint64_t token_key = CallBacklog::KeyOf(header, "");

  int failures = 0;
  const double bearer = NanosPerCall(calls, [&] {
    if (!gate.Process(with_token, nullptr, &consumed, &response).ok()) ++failures;
    gate.backlog()->Started(CallBacklog::KeyOf(header, ""));  // the handler's settle
  });
  const double settle = NanosPerCall(calls, [&] {
    gate.backlog()->Admit(token_key);
    gate.backlog()->Started(CallBacklog::KeyOf(header, ""));
  });
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const double sha = NanosPerCall(
      calls, [&] { EVP_Digest(token.data(), token.size(), digest, &len, EVP_sha256(), nullptr); });
  std::printf("calls per measurement: %d (one core)\n", calls);
  std::printf("gate, bearer-token caller (Process + settle): %.0f ns\n", bearer);
  std::printf("  of which the backlog (Admit + KeyOf + Started): %.0f ns\n", settle);
  std::printf("baseline, raw OpenSSL SHA-256 of the token: %.0f ns (gate / baseline %.1f)\n", sha,
              bearer / sha);
  if (failures != 0) {
    std::printf("FAILED: %d calls refused\n", failures);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace iotauth::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return iotauth::bench::Main(absl::GetFlag(FLAGS_calls));
}
