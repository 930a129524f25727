#include "services/server/server_main.h"

#include <sys/stat.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "services/common/config.h"
#include "services/common/dev_pki.h"
#include "services/common/log.h"
#include "services/common/process_hardening.h"
#include "services/common/server_runner.h"
#include "services/server/app.h"

namespace iotauth {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitStartup = 1;
constexpr int kExitUsage = 2;
// The gRPC listener stopped accepting connections (see grpc_log.h): drained and
// exited for the supervisor to start the server again.
constexpr int kExitListenerFailed = 3;

void PrintUsage(const char* binary) {
  std::cout << "Usage: " << binary << " [--config=FILE] [--set=KEY=VALUE]... [--data_dir=DIR]\n"
            << "       " << binary << " --check_config | --print_config\n\n"
            << "Started with no flags it runs on embedded development defaults: data in\n"
            << "./iotauth-data, a generated development PKI, listening on localhost.\n\n"
            << "  --config=FILE       JSON configuration file (see README: Configuration)\n"
            << "  --set=KEY=VALUE     override one key, e.g. --set=grpc.address=0.0.0.0:50051\n"
            << "                      (environment: IOTAUTH_GRPC__ADDRESS=...)\n"
            << "  --data_dir=DIR      shorthand for --set=data_dir=DIR\n"
            << "  --check_config      validate the configuration and exit\n"
            << "  --print_config      print the effective configuration as JSON and exit\n"
            << "  --announce_port     print 'LISTENING <port>' on stdout once serving (tools)\n"
            << "  --allow_core_dumps  keep core dumps and same-user ptrace on (debugging only: a\n"
            << "                      core file holds the master key and every device's keys)\n"
            << "  --grpc_memory_mb=N  memory gRPC's connections may hold before it closes the\n"
            << "                      heaviest (default: an eighth of the cgroup memory limit,\n"
            << "                      or of the machine's memory)\n";
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

absl::Status MakeDirs(const std::string& dir) {
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (!partial.empty() && ::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
        return absl::FailedPreconditionError(absl::StrCat("cannot create data directory '", partial,
                                                          "': ", std::strerror(errno),
                                                          " (choose another with --data_dir)"));
      }
    }
    if (i < dir.size()) partial += dir[i];
  }
  return absl::OkStatus();
}

void PrintHowToConnect(const ServerConfig& c, const ServerRunner& runner) {
  const bool dev = c.grpc().tls().mode() == iotauth::config::v1::TLS_MODE_DEV_PKI ||
                   c.grpc().tls().mode() == iotauth::config::v1::TLS_MODE_UNSPECIFIED;
  const bool insecure = c.grpc().tls().mode() == iotauth::config::v1::TLS_MODE_INSECURE;
  std::string host = c.grpc().address().substr(0, c.grpc().address().rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "localhost";
  std::string target = absl::StrCat(host, ":", runner.grpc_port());
  std::cout << "iotauth is serving on " << target << (insecure ? " (plaintext)" : " (TLS)");
  if (runner.metrics_port() > 0) {
    std::cout << ", metrics on http://" << host << ":" << runner.metrics_port() << "/metrics";
  }
  std::cout << "\n";
  if (dev) {
    DevPkiPaths p = DevPkiLayout(DevPkiDir(c));
    std::cout << "DEVELOPMENT DEFAULTS: generated PKI in " << p.dir
              << " (do not use in production)\n"
              << "  CLI:      bazel-bin/clients/iotauthctl/iotauthctl --address=" << target
              << " health\n"
              << "  buf curl: buf curl --protocol grpc --cacert " << p.ca_cert << " --cert "
              << p.admin_cert << " --key " << p.admin_key << " https://" << target
              << "/grpc.health.v1.Health/Check\n";
  }
  std::cout.flush();
}

}  // namespace

int ServerMain(int argc, char** argv, const std::vector<std::string>& default_services,
               const char* binary_name) {
  BlockTerminationSignals();
  // Debian's Abseil is built with mutex deadlock detection on; its graph upkeep
  // costs every lock on the hot path. The project's lock order is tested instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  ConfigSources sources;
  sources.env = ProcessEnvironment();
  if (!default_services.empty()) {
    sources.sets.push_back(absl::StrCat("services=", absl::StrJoin(default_services, ",")));
  }
  bool check_only = false;
  bool print_config = false;
  bool announce_port = false;
  bool allow_core_dumps = false;
  uint64_t grpc_memory_mb = 0;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    auto value_of = [&](absl::string_view flag, std::string* out) {
      if (absl::StartsWith(arg, absl::StrCat(flag, "="))) {
        *out = std::string(arg.substr(flag.size() + 1));
        return true;
      }
      if (arg == flag && i + 1 < argc) {
        *out = argv[++i];
        return true;
      }
      return false;
    };
    std::string v;
    if (arg == "--help" || arg == "-h") {
      PrintUsage(binary_name);
      return kExitOk;
    }
    if (arg == "--check_config") {
      check_only = true;
    } else if (arg == "--print_config") {
      print_config = true;
    } else if (arg == "--announce_port") {
      announce_port = true;
    } else if (arg == "--allow_core_dumps") {
      allow_core_dumps = true;
    } else if (value_of("--grpc_memory_mb", &v)) {
      if (!absl::SimpleAtoi(v, &grpc_memory_mb) || grpc_memory_mb < 16) {
        std::cerr << binary_name << ": --grpc_memory_mb takes a number of MiB, at least 16\n";
        return kExitUsage;
      }
    } else if (value_of("--config", &v)) {
      sources.file = v;
    } else if (value_of("--set", &v)) {
      sources.sets.push_back(v);
    } else if (value_of("--data_dir", &v)) {
      sources.sets.push_back("data_dir=" + v);
    } else {
      std::cerr << binary_name << ": unknown flag '" << arg << "' (see --help)\n";
      return kExitUsage;
    }
  }
  // Before any secret is read: the master key, the device keys and the TLS key must
  // not end up in a core file, nor be readable by another process of this user.
  if (allow_core_dumps) {
    log::Warn(
        "core dumps are allowed (--allow_core_dumps): a core file of this process holds "
        "the master key and device keys; keep it as safe as the keys themselves");
  } else if (absl::Status st = KeepSecretsInProcess(); !st.ok()) {
    log::Error("startup failed", {{"error", std::string(st.message())},
                                  {"fix", "run with --allow_core_dumps to start anyway"}});
    return kExitStartup;
  }
  absl::StatusOr<uint64_t> open_files = RaiseOpenFileLimit();
  auto config = LoadConfig(sources);
  if (!config.ok()) {
    log::Error("invalid configuration", {{"error", std::string(config.status().message())}});
    std::cerr << binary_name << ": invalid configuration: " << config.status().message() << "\n";
    return kExitUsage;
  }
  log::Level level = log::Level::kInfo;
  log::ParseLevel(config->log().level(), &level);
  log::SetLevel(level);
  if (open_files.ok()) {
    log::Debug("open-file limit", {{"limit", absl::StrCat(*open_files)}});
  } else {
    log::Warn("cannot raise the open-file limit",
              {{"error", std::string(open_files.status().message())}});
  }
  if (print_config) {
    std::cout << ToJson(*config) << "\n";
    return kExitOk;
  }
  if (check_only) {
    std::cout << "configuration OK\n";
    return kExitOk;
  }
  if (auto st = MakeDirs(config->data_dir()); !st.ok()) {
    log::Error("startup failed", {{"error", std::string(st.message())}});
    return kExitStartup;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  auto app = CreateApp(*config, registry);
  if (!app.ok()) {
    log::Error("startup failed", {{"error", std::string(app.status().message())}});
    return kExitStartup;
  }
  auto runner = ServerRunner::Start(*config, (*app)->Services(), registry, (*app)->AuthGate(),
                                    grpc_memory_mb << 20);
  if (!runner.ok()) {
    log::Error("startup failed", {{"error", std::string(runner.status().message())}});
    (*app)->Stop();
    return kExitStartup;
  }
  if (auto st = (*app)->OnServing(**runner); !st.ok()) {
    (*runner)->Shutdown(absl::ZeroDuration());
    (*app)->Stop();
    if (st.code() == absl::StatusCode::kCancelled) {
      log::Info("stopped during start-up", {{"reason", std::string(st.message())}});
      return 0;
    }
    log::Error("startup failed", {{"error", std::string(st.message())}});
    return kExitStartup;
  }
  std::vector<std::string> names;
  for (const auto& s : (*app)->Services()) names.push_back(s.name);
  log::Info("serving",
            {{"grpc_address", config->grpc().address()},
             {"grpc_port", std::to_string((*runner)->grpc_port())},
             {"metrics_port", std::to_string((*runner)->metrics_port())},
             {"data_dir", config->data_dir()},
             {"services", absl::StrJoin(names, ",")},
             {"tls_mode", iotauth::config::v1::TlsMode_Name(config->grpc().tls().mode())}});
  if (announce_port) {
    // For tools that start the server on port 0 (tools/bench): one line, flushed.
    std::cout << "LISTENING " << (*runner)->grpc_port() << std::endl;
  } else {
    PrintHowToConnect(*config, **runner);
  }

  int sig = WaitForTerminationSignal();
  absl::Duration grace = absl::Seconds(config->shutdown().grace_period().seconds()) +
                         absl::Nanoseconds(config->shutdown().grace_period().nanos());
  const bool listener_failed = sig == SIGUSR2;
  if (listener_failed) {
    log::Error(
        "the gRPC listener stopped accepting connections; draining the open ones and exiting "
        "for the supervisor to start the server again (gRPC 1.51 does not resume accepting). "
        "If it ran out of file descriptors, raise the open-file limit (LimitNOFILE=, ulimit "
        "-Hn) above the connections expected, and look for a connection flood",
        {{"grpc", ListenerFailure()},
         {"open_file_limit", open_files.ok() ? absl::StrCat(*open_files) : "unknown"},
         {"exit_status", absl::StrCat(kExitListenerFailed)}});
  }
  log::Info("shutting down",
            {{"signal", sig == SIGTERM ? "SIGTERM" : (sig == SIGINT ? "SIGINT" : "none")},
             {"grace_period", absl::FormatDuration(grace)}});
  absl::Time start = absl::Now();
  (*app)->BeginShutdown();
  (*runner)->Shutdown(grace);
  (*app)->Stop();
  log::Info("stopped", {{"shutdown_took", absl::FormatDuration(absl::Now() - start)}});
  return listener_failed ? kExitListenerFailed : kExitOk;
}

}  // namespace iotauth
