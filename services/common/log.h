// Structured JSON logging: one JSON object per line on stderr, e.g.
//   {"ts":"2026-11-25T20:00:00.123Z","level":"info","msg":"listening","address":"..."}
// Callers pass fields explicitly; never pass a secret as a field.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace iotauth::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

using Field = std::pair<absl::string_view, std::string>;

// Parses "debug", "info", "warn", "error".
bool ParseLevel(absl::string_view name, Level* level);
void SetLevel(Level level);
bool Enabled(Level level);

// Where lines go instead of stderr: `line` is the JSON object without its newline.
// For a host process with a log of its own (the Mosquitto plugin hands lines to the
// broker's). nullptr restores stderr. Set it before any thread logs.
using Sink = void (*)(Level level, absl::string_view line);
void SetSink(Sink sink);

// Thread-safe; each line is written with one write(2) (or handed to the sink whole).
void Write(Level level, absl::string_view msg, std::initializer_list<Field> fields = {});

inline void Debug(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, msg, fields);
}
inline void Info(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kInfo, msg, fields);
}
inline void Warn(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kWarn, msg, fields);
}
inline void Error(absl::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kError, msg, fields);
}

// JSON string escaping (exposed for tests).
std::string JsonEscape(absl::string_view s);
// The line Write would emit, without the trailing newline (exposed for tests).
std::string FormatLine(absl::Time now, Level level, absl::string_view msg,
                       std::initializer_list<Field> fields);

}  // namespace iotauth::log
