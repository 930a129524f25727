// Baseline server for benchmarks: IdentityService.Authenticate on the gRPC callback
// API, answering a fixed ALLOW and doing nothing else. Its throughput is the gRPC
// framework ceiling that the real identity service is compared against (same
// compiler flags, same transport, same load generator).
//
//   noop_server --port=0                 # prints "LISTENING <port>" on stdout
//   noop_server --port=0 --tls_cert=server.pem --tls_key=server.key
//   noop_server --port=0 --api=cq [--cq_threads=N]
//
// --api=cq serves the same answer through the async completion-queue API instead
// (N threads, each polling its own queue and answering inline, no hand-off to a
// callback thread): a second baseline, for what the API style itself costs.
//
// Exits cleanly on SIGTERM or SIGINT.

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <csignal>
#include <cstdint>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "proto/iotauth/identity/v1/identity.grpc.pb.h"

ABSL_FLAG(std::string, address, "127.0.0.1", "Address to bind (IPv4, [IPv6] or a host name).");
ABSL_FLAG(int, port, 0, "Port to bind; 0 picks an ephemeral port (printed as LISTENING <port>).");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; empty serves plaintext.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(bool, tls_watch, false,
          "Serve --tls_cert/--tls_key through grpc::experimental::TlsServerCredentials and a "
          "FileWatcherCertificateProvider (files re-read every second), as iotauthd does, "
          "instead of grpc::SslServerCredentials: measures what the reloadable credentials "
          "cost per call.");
ABSL_FLAG(std::string, api, "callback",
          "callback: the callback API (what iotauthd uses); cq: the async completion-queue "
          "API, --cq_threads threads each polling its own queue and answering inline.");
ABSL_FLAG(int, cq_threads, 1, "--api=cq: completion queues, one thread each.");
ABSL_FLAG(std::vector<std::string>, server_arg, {},
          "Integer gRPC channel arguments for the server, name=value[,name=value...] "
          "(e.g. grpc.minimal_stack=1), to try what a setting costs or saves.");
ABSL_FLAG(int, work_us, 0,
          "Callback API: spin this many microseconds in each call before answering, a "
          "stand-in for a real handler's work: what a server that costs that much more per "
          "call serves here, with gRPC and the kernel as they are.");
ABSL_FLAG(std::string, response_file, "",
          "Fixed AuthenticateResponse, serialized (binary protobuf), e.g. what iotauthd "
          "answered one device: a baseline that sends the same bytes as the server it is "
          "compared with. Overrides --response_json.");
ABSL_FLAG(std::string, response_json, "",
          "Fixed AuthenticateResponse in proto JSON; default {\"decision\":\"DECISION_ALLOW\"}.");

namespace iotauth::bench {
namespace {

using ::iotauth::identity::v1::AuthenticateRequest;
using ::iotauth::identity::v1::AuthenticateResponse;
using ::iotauth::identity::v1::IdentityService;

class NoopIdentityService final : public IdentityService::CallbackService {
 public:
  NoopIdentityService(AuthenticateResponse response, int64_t work_ns)
      : response_(std::move(response)), work_ns_(work_ns) {}

  grpc::ServerUnaryReactor* Authenticate(grpc::CallbackServerContext* context,
                                         const AuthenticateRequest* /*request*/,
                                         AuthenticateResponse* response) override {
    if (work_ns_ > 0) {
      const int64_t end = absl::GetCurrentTimeNanos() + work_ns_;
      while (absl::GetCurrentTimeNanos() < end) {
      }
    }
    *response = response_;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const AuthenticateResponse response_;
  const int64_t work_ns_;
};

// --api=cq: one call's state. Posted as a request; when a call arrives it posts the
// next request and answers at once; deleted when the finish completes (or, at
// shutdown, when the request comes back not ok).
class AsyncCall {
 public:
  AsyncCall(IdentityService::AsyncService* service, grpc::ServerCompletionQueue* cq,
            const AuthenticateResponse* response)
      : service_(service), cq_(cq), response_(response), responder_(&ctx_) {
    service_->RequestAuthenticate(&ctx_, &request_, &responder_, cq_, cq_, this);
  }
  // Called with the event of this call's tag.
  void Proceed(bool ok) {
    if (finishing_ || !ok) {
      delete this;
      return;
    }
    new AsyncCall(service_, cq_, response_);  // the next call
    finishing_ = true;
    responder_.Finish(*response_, grpc::Status::OK, this);
  }

 private:
  IdentityService::AsyncService* service_;
  grpc::ServerCompletionQueue* cq_;
  const AuthenticateResponse* response_;
  grpc::ServerContext ctx_;
  AuthenticateRequest request_;
  grpc::ServerAsyncResponseWriter<AuthenticateResponse> responder_;
  bool finishing_ = false;
};

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

int Run() {
  AuthenticateResponse response;
  response.set_decision(iotauth::identity::v1::DECISION_ALLOW);
  if (const std::string json = absl::GetFlag(FLAGS_response_json); !json.empty()) {
    response.Clear();
    if (auto st = google::protobuf::util::JsonStringToMessage(json, &response); !st.ok()) {
      std::fprintf(stderr, "noop_server: --response_json: %s\n", st.ToString().c_str());
      return 2;
    }
  }
  if (const std::string path = absl::GetFlag(FLAGS_response_file); !path.empty()) {
    std::string bytes;
    if (!ReadFile(path, &bytes) || !response.ParseFromString(bytes)) {
      std::fprintf(stderr,
                   "noop_server: --response_file: cannot read a serialized "
                   "AuthenticateResponse from %s\n",
                   path.c_str());
      return 2;
    }
  }

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  const std::string cert_path = absl::GetFlag(FLAGS_tls_cert);
  const std::string key_path = absl::GetFlag(FLAGS_tls_key);
  if (cert_path.empty() != key_path.empty()) {
    std::fprintf(stderr, "noop_server: --tls_cert and --tls_key go together\n");
    return 2;
  }
  if (!cert_path.empty() && absl::GetFlag(FLAGS_tls_watch)) {
    grpc::experimental::TlsServerCredentialsOptions options(
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(key_path, cert_path,
                                                                             1));
    options.watch_identity_key_cert_pairs();
    creds = grpc::experimental::TlsServerCredentials(options);
  } else if (!cert_path.empty()) {
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!ReadFile(cert_path, &pair.cert_chain) || !ReadFile(key_path, &pair.private_key)) {
      std::fprintf(stderr, "noop_server: cannot read --tls_cert or --tls_key\n");
      return 2;
    }
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back(std::move(pair));
    creds = grpc::SslServerCredentials(options);
  }

  // Block the shutdown signals before gRPC starts its threads (they inherit the
  // mask), so that only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string api = absl::GetFlag(FLAGS_api);
  const int cq_threads = absl::GetFlag(FLAGS_cq_threads);
  if ((api != "callback" && api != "cq") || cq_threads < 1) {
    std::fprintf(stderr, "noop_server: --api is callback or cq; --cq_threads >= 1\n");
    return 2;
  }
  NoopIdentityService service(response, int64_t{absl::GetFlag(FLAGS_work_us)} * 1000);
  IdentityService::AsyncService async_service;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  grpc::ServerBuilder builder;
  // A leftover server on the same port would silently take half the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (const std::string& arg : absl::GetFlag(FLAGS_server_arg)) {
    const size_t eq = arg.find('=');
    int value = 0;
    if (eq == std::string::npos || !absl::SimpleAtoi(arg.substr(eq + 1), &value)) {
      std::fprintf(stderr, "noop_server: --server_arg wants name=integer, got %s\n", arg.c_str());
      return 2;
    }
    builder.AddChannelArgument(arg.substr(0, eq), value);
  }
  int selected_port = 0;
  const std::string address = absl::GetFlag(FLAGS_address);
  builder.AddListeningPort(absl::StrCat(address, ":", absl::GetFlag(FLAGS_port)), creds,
                           &selected_port);
  if (api == "cq") {
    builder.RegisterService(&async_service);
    for (int i = 0; i < cq_threads; ++i) cqs.push_back(builder.AddCompletionQueue());
  } else {
    builder.RegisterService(&service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    std::fprintf(stderr, "noop_server: cannot listen on %s:%d\n", address.c_str(),
                 absl::GetFlag(FLAGS_port));
    return 1;
  }
  std::printf("LISTENING %d\n", selected_port);
  std::fflush(stdout);
  std::fprintf(stderr, "noop_server: %s on %s:%d\n", cert_path.empty() ? "plaintext" : "TLS",
               address.c_str(), selected_port);

  std::vector<std::thread> threads;
  for (auto& cq : cqs) {
    // Enough requests posted that a burst of new calls is accepted at once.
    for (int i = 0; i < 64; ++i) new AsyncCall(&async_service, cq.get(), &response);
    threads.emplace_back([q = cq.get()] {
      void* tag = nullptr;
      bool ok = false;
      while (q->Next(&tag, &ok)) static_cast<AsyncCall*>(tag)->Proceed(ok);
    });
  }
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "noop_server: signal %d, shutting down\n", sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  for (auto& cq : cqs) cq->Shutdown();
  for (auto& t : threads) t.join();
  server->Wait();
  return 0;
}

}  // namespace
}  // namespace iotauth::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Baseline IdentityService server: Authenticate returns a fixed ALLOW.\n"
      "  noop_server --port=0 [--tls_cert=F --tls_key=F]");
  absl::ParseCommandLine(argc, argv);
  // As iotauthd does (server_main.cc): Debian's Abseil is built with mutex deadlock
  // detection on, and its graph upkeep runs on every lock gRPC takes (~4% of the
  // baseline's CPU samples at peak). The baseline runs as the servers it measures.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return iotauth::bench::Run();
}
