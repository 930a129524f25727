// A small command framework for iotauthctl: a tree of subcommands, each with its
// own flags (flags of ancestors are inherited, so global flags work anywhere),
// positional arguments and `--help`. Parsing is pure (no I/O) so it is unit-tested
// without a server.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace iotauth::cli {

// Process exit codes: the CLI's contract with scripts.
enum ExitCode : int {
  kExitOk = 0,
  // A local failure: unreadable file, missing development PKI, bad input file.
  kExitLocalError = 1,
  // Bad command line (unknown command or flag, bad or missing value).
  kExitUsage = 2,
  // An RPC failed (the gRPC code and message are printed with a hint).
  kExitRpcError = 3,
  // Authenticate or Authorize answered DENY.
  kExitDenied = 4,
  // The command completed but found a problem: rejected import rows, a broken
  // audit chain, a health check that is not SERVING.
  kExitCheckFailed = 5,
};

// Declares one flag. A flag without `value_name` is a boolean (`--x`, `--x=false`).
struct FlagSpec {
  std::string name;        // canonical name with underscores, without dashes
  std::string value_name;  // placeholder in help, e.g. "ID"; empty for booleans
  std::string help;
  std::string default_value;  // used when neither the flag nor `env` is set
  std::string env;            // environment variable read when the flag is absent
  bool repeated = false;      // may be given several times; GetAll returns every value

  bool is_bool() const { return value_name.empty(); }
};

// Environment lookup (injected so tests need not touch the real environment).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup ProcessEnv();

// Values of the flags of one invocation.
class Flags {
 public:
  Flags() = default;
  Flags(std::map<std::string, std::vector<std::string>> given,
        std::map<std::string, const FlagSpec*> specs, EnvLookup env);

  // Given on the command line, or through its environment variable.
  bool Has(absl::string_view name) const;
  // Given on the command line (environment not considered).
  bool GivenOnCommandLine(absl::string_view name) const;
  // Last command-line value, else the environment, else the default.
  std::string Get(absl::string_view name) const;
  // Every command-line value of a repeated flag (values may also be comma lists
  // when the caller splits them).
  std::vector<std::string> GetAll(absl::string_view name) const;
  // Typed getters; INVALID_ARGUMENT names the flag.
  absl::StatusOr<bool> GetBool(absl::string_view name) const;
  absl::StatusOr<int64_t> GetInt(absl::string_view name) const;
  // Durations like `90s`, `10m`, `1h30m`, `2d`, or a bare number of seconds.
  absl::StatusOr<absl::Duration> GetDuration(absl::string_view name) const;
  // Convenience: a boolean flag that is set (parse errors were rejected earlier).
  bool IsSet(absl::string_view name) const;

 private:
  const FlagSpec* Spec(absl::string_view name) const;

  std::map<std::string, std::vector<std::string>> given_;
  std::map<std::string, const FlagSpec*> specs_;
  EnvLookup env_;
};

// Parses `90s`, `10m`, `1h30m`, `1.5h`, `2d`, or a bare number of seconds.
absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view text);

class Command;

// Where a handler's output goes, and test hooks.
struct Io {
  std::ostream* out;
  std::ostream* err;
  EnvLookup env;
  // Whether `err` is a terminal (progress bars redraw in place only then).
  bool err_is_tty = false;
  // Whether `out` is a terminal (exports to it draw no progress: the lines would mix).
  bool out_is_tty = false;
};

// Everything a command handler sees.
struct Invocation {
  const Command* command = nullptr;
  std::string path;  // "iotauthctl device list"
  Flags flags;
  std::vector<std::string> args;
  Io io;
  // Opaque per-process state owned by the CLI (connection factory, ...).
  void* app = nullptr;

  std::ostream& out() const { return *io.out; }
  std::ostream& err() const { return *io.err; }
  // Prints `error: <message>` and the help hint; returns kExitUsage.
  int UsageError(absl::string_view message) const;
  // Prints `error: <message>`; returns kExitLocalError.
  int LocalError(absl::string_view message) const;
};

using Handler = std::function<int(Invocation&)>;

class Command {
 public:
  Command(std::string name, std::string summary);

  // Adds a child command and returns it.
  Command& Sub(std::string name, std::string summary);
  Command& Flag(FlagSpec spec);
  // Positional arguments: usage text (e.g. "DEVICE_ID") and accepted count.
  Command& Args(std::string usage, int min_args, int max_args);
  // Longer description shown by --help.
  Command& Description(std::string text);
  Command& Run(Handler handler);

  const std::string& name() const { return name_; }
  const std::string& summary() const { return summary_; }
  const Command* parent() const { return parent_; }
  const Command* FindChild(absl::string_view name) const;
  const std::vector<std::unique_ptr<Command>>& children() const { return children_; }
  const std::vector<FlagSpec>& flags() const { return flags_; }
  const Handler& handler() const { return handler_; }
  const std::string& args_usage() const { return args_usage_; }
  int min_args() const { return min_args_; }
  int max_args() const { return max_args_; }

  // Full path, e.g. "iotauthctl device list".
  std::string Path() const;
  // Help text: usage, description, subcommands, flags, inherited flags.
  std::string Help() const;

  // Finds the flag visible at this command (its own or an ancestor's), matching
  // `-` and `_` alike.
  const FlagSpec* FindFlag(absl::string_view name) const;

 private:
  std::string name_;
  std::string summary_;
  std::string description_;
  std::string args_usage_;
  int min_args_ = 0;
  int max_args_ = 0;
  Command* parent_ = nullptr;
  std::vector<std::unique_ptr<Command>> children_;
  std::vector<FlagSpec> flags_;
  Handler handler_;
};

// The outcome of parsing argv (without the program name) against a tree.
struct ParseResult {
  const Command* command = nullptr;  // deepest command reached
  bool help = false;                 // --help / -h / `help` seen
  std::string error;                 // non-empty: usage error
  Flags flags;
  std::vector<std::string> args;
};

ParseResult Parse(const Command& root, const std::vector<std::string>& argv, EnvLookup env);

// Parses and dispatches: prints help (exit 0), usage errors (exit 2), or runs the
// handler. A command with children and no handler prints its help and exits 2
// when no subcommand is named.
int Dispatch(const Command& root, const std::vector<std::string>& argv, Io io, void* app);

}  // namespace iotauth::cli
