// Helpers shared by the iotauthctl command groups: required flags, values that
// several commands parse the same way (access rules, tags, secrets from a flag or
// a file, page loops), and the unary-call wrapper that maps failures to exit code 3.
#pragma once

#include <fstream>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "clients/iotauthctl/command.h"
#include "clients/iotauthctl/connection.h"
#include "clients/iotauthctl/output.h"
#include "grpcpp/grpcpp.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::cli {

// `EFFECT:ACTION:FILTER` or `EFFECT:ACTION:exact:FILTER`, e.g.
// `allow:publish:devices/${device}/telemetry/#`. EFFECT allow|deny; ACTION
// publish|subscribe|all (pub, sub accepted). The filter may contain ':'.
absl::StatusOr<iotauth::registry::v1::AccessRule> ParseRuleFlag(absl::string_view text);
// Every value of a repeated --rule flag.
absl::StatusOr<std::vector<iotauth::registry::v1::AccessRule>> ParseRuleFlags(
    const std::vector<std::string>& values);
// `key=value` values of a repeated --tag flag. Duplicate keys are an error.
absl::StatusOr<std::map<std::string, std::string>> ParseTagFlags(
    const std::vector<std::string>& values);
// Values of a repeated flag that may also hold comma-separated lists.
std::vector<std::string> SplitListFlag(const std::vector<std::string>& values);

// The value of `name`, or a usage error (exit code in *exit) when missing.
bool RequireFlag(const Invocation& inv, absl::string_view name, std::string* value, int* exit);

// A secret from `--<value_flag>` or `--<file_flag>` (whitespace trimmed); exactly
// one must be given (unless `optional`, then both absent yields "").
// INVALID_ARGUMENT for a usage problem, NOT_FOUND for an unreadable file.
absl::StatusOr<std::string> SecretFromFlags(const Invocation& inv, absl::string_view value_flag,
                                            absl::string_view file_flag, bool optional = false);

// Where an export writes: stdout for "" or "-", else a file that appears only once
// the export is complete. The data goes to `<path>.tmp-<pid>`, created mode 0600 (an
// export may hold keys or device records), and Commit() flushes, fsyncs and renames
// it over `path`; a failed or abandoned export leaves any earlier file untouched and
// removes its temporary.
class ExportOutput {
 public:
  ExportOutput() = default;
  ExportOutput(const ExportOutput&) = delete;
  ExportOutput& operator=(const ExportOutput&) = delete;
  ~ExportOutput();

  // Opens the destination. `stdout_stream` is used for "" and "-".
  absl::Status Open(const std::string& path, std::ostream* stdout_stream);
  std::ostream& stream() { return *out_; }
  bool to_file() const { return !path_.empty(); }
  // OK when everything written reached the destination; otherwise an error that
  // names the file and what to check, and the temporary is removed.
  absl::Status Commit();

 private:
  std::ostream* out_ = nullptr;
  std::ofstream file_;
  std::string path_;
  std::string tmp_;
  bool committed_ = false;
};

// Maps a bad typed flag value (status) to a usage error.
int StatusToExit(const Invocation& inv, const absl::Status& status);

// Runs one unary call with a prepared context; reports failures (exit 3).
inline int CallUnary(const Invocation& inv, const Connection& conn, absl::string_view rpc,
                     const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  grpc::ClientContext context;
  conn.PrepareUnary(&context);
  grpc::Status status = call(&context);
  if (!status.ok()) return ReportRpcError(inv, status, rpc, conn.settings());
  return kExitOk;
}

// Pagination flags shared by list commands: --page_size, --page_token, --all.
void AddPageFlags(Command& cmd);

// Runs a paginated list: `fetch(page_token, &next_token)` fetches one page and
// appends to the caller's items. Follows pages with --all; otherwise tells on
// stderr how to get the next page.
int ListPages(const Invocation& inv, const Connection& conn, absl::string_view rpc,
              const std::function<grpc::Status(grpc::ClientContext*, int32_t page_size,
                                               const std::string& page_token,
                                               std::string* next_token)>& fetch);

}  // namespace iotauth::cli
