// Output of iotauthctl: human-readable key/value blocks and tables rendered from
// any proto message by reflection (so fields other engineers add show up without a
// CLI change), proto JSON for `--json`, secret redaction, enum and time
// formatting, and the import progress bar. Everything here is pure and unit-tested.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace iotauth::cli {

// `DEVICE_STATUS_ENABLED` -> `enabled` (the enum type's prefix removed, lowercase).
std::string EnumShortName(const google::protobuf::EnumValueDescriptor* value);
// Accepts a short name (`enabled`, `pending-approval`) or the full name, any case.
// Value 0 (UNSPECIFIED) is not accepted. INVALID_ARGUMENT lists the choices.
absl::StatusOr<int> ParseEnumName(const google::protobuf::EnumDescriptor* type,
                                  absl::string_view text);
// Comma-separated short names of the non-zero values, for help text.
std::string EnumChoices(const google::protobuf::EnumDescriptor* type);

// RFC 3339 in UTC (`2024-05-01T12:00:00Z`); empty for an unset timestamp.
std::string FormatTimestamp(const google::protobuf::Timestamp& t);
// `1m30s`-style.
std::string FormatDuration(const google::protobuf::Duration& d);
// RFC 3339 (`2024-05-01T12:00:00Z`, offsets allowed) or a duration meaning that
// long before `now` (`15m`, `2h`, `7d`).
absl::StatusOr<absl::Time> ParseTimeFlag(absl::string_view text, absl::Time now);

// Clears every secret-bearing field (the fields marked SECRET in the contracts)
// anywhere inside `message`. Returns whether any was set.
bool RedactSecrets(google::protobuf::Message* message);

// One line per field that is set, nested messages flattened as `a.b`, maps as
// `k=v, ...`, repeated messages one element per line.
using KeyValues = std::vector<std::pair<std::string, std::string>>;
KeyValues Flatten(const google::protobuf::Message& message);
// Aligned `key:  value` lines.
std::string RenderKeyValues(const KeyValues& kv);

// The rendered value of a dotted field path (`credentials.primary_thumbprint`);
// empty when unset or unknown.
std::string FieldValue(const google::protobuf::Message& message, absl::string_view path);

struct Column {
  std::string header;
  std::string path;  // field path for FieldValue
};

// A left-aligned table with a header row; columns separated by two spaces.
std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);
std::string RenderMessageTable(const std::vector<const google::protobuf::Message*>& messages,
                               const std::vector<Column>& columns);

// Proto3 JSON on one line (lowerCamelCase names, enums by name).
std::string ToJson(const google::protobuf::Message& message);
// The same, or an error when the message has no JSON form (say, a Timestamp outside
// years 1-9999): for exports, where "{}" would lose a record silently.
absl::StatusOr<std::string> ToJsonChecked(const google::protobuf::Message& message);

// One progress line: bar (when `fraction` is in [0,1]), count, rate, rejections.
std::string FormatProgress(int64_t count, int64_t rejected, double fraction,
                           absl::Duration elapsed);

// Progress on stderr for long streams. On a terminal the line is redrawn in place
// at most every 100 ms; otherwise a line is printed every 5 s. Not thread-safe.
class ProgressBar {
 public:
  ProgressBar(std::ostream* err, bool tty, bool enabled);
  // `fraction` < 0 when unknown.
  void Update(int64_t count, int64_t rejected, double fraction);
  // Prints the final state and ends the line.
  void Finish(int64_t count, int64_t rejected);
  absl::Duration Elapsed() const { return absl::Now() - start_; }

 private:
  std::ostream* err_;
  bool tty_;
  bool enabled_;
  absl::Time start_;
  absl::Time last_draw_;
};

class Command;
struct Invocation;

// Whether an export shows progress on stderr: unless --no_progress, and not while
// its lines go to a terminal (`to_file` false and stdout a tty), where they would mix.
bool ExportShowsProgress(const Invocation& inv, bool to_file);

// Adds --json to a (root) command.
void AddOutputFlags(Command& root);
bool JsonOutput(const Invocation& inv);

// Prints one resource: a JSON line with --json, else key/value lines. Secrets are
// cleared unless `show_secrets`; a note on stderr says when something was hidden.
void PrintResource(const Invocation& inv, google::protobuf::Message* message, bool show_secrets);
// Prints resources: JSON Lines with --json, else a table of `columns`.
void PrintResources(const Invocation& inv, const std::vector<google::protobuf::Message*>& messages,
                    const std::vector<Column>& columns, bool show_secrets);
// Non-proto results (token commands): a JSON object of strings with --json, else
// key/value lines.
void PrintFields(const Invocation& inv, const KeyValues& fields);

}  // namespace iotauth::cli
