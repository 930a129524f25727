// The shared `main()` of every iotauth server binary: flag parsing, config
// loading, logging setup, composition of the hosted services, serving, and
// graceful shutdown on SIGTERM / SIGINT.
#pragma once

#include <string>
#include <vector>

namespace iotauth {

// `default_services` preselects which services the binary hosts (empty: all
// three, the embedded default). Returns the process exit code.
int ServerMain(int argc, char** argv, const std::vector<std::string>& default_services,
               const char* binary_name);

}  // namespace iotauth
