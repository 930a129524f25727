// The iotauthctl command tree and its entry point, separate from main() so tests
// can run whole command lines in-process (with an injected channel and clock).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "clients/iotauthctl/command.h"
#include "clients/iotauthctl/connection.h"

namespace iotauth::cli {

// The root command `iotauthctl` with every subcommand.
std::unique_ptr<Command> BuildCli();

// Runs one command line (without the program name). Returns the exit code.
int RunCli(const std::vector<std::string>& args, Io io, App* app);

}  // namespace iotauth::cli
