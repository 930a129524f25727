// iotauthctl entry point.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "clients/iotauthctl/cli.h"

int main(int argc, char** argv) {
  // gRPC core logs handshake failures itself; the CLI already reports them with a
  // hint. GRPC_VERBOSITY set by the user still wins (overwrite = 0).
  setenv("GRPC_VERBOSITY", "NONE", 0);
  std::ios::sync_with_stdio(false);
  std::vector<std::string> args(argv + 1, argv + argc);
  iotauth::cli::App app;
  iotauth::cli::Io io{&std::cout, &std::cerr, iotauth::cli::ProcessEnv(), isatty(2) == 1,
                      isatty(1) == 1};
  const int code = iotauth::cli::RunCli(args, io, &app);
  std::cout.flush();
  return code;
}
