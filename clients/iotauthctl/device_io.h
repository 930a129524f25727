// Device files for `device import` and `device export`: CSV (RFC 4180: quoted
// fields, "" escapes, separators and newlines inside quotes, CRLF) and JSON Lines
// (one proto3-JSON Device per line, the format `device export` writes). Readers
// are incremental (a million-row file is never held in memory) and report each
// bad row with its line number instead of stopping.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::cli {

// Reads CSV records one at a time.
class CsvReader {
 public:
  explicit CsvReader(std::istream* in) : in_(in) {}

  enum class Result { kRecord, kEof, kError };
  // kRecord: `*fields` holds the record. kError: `*error` says why; the malformed
  // record has been consumed and reading may continue. Blank lines are skipped.
  Result Next(std::vector<std::string>* fields, std::string* error);
  // 1-based line on which the last returned record (or error) started.
  int64_t record_line() const { return record_line_; }

 private:
  std::istream* in_;
  int64_t next_line_ = 1;
  int64_t record_line_ = 0;
};

// Quotes a field when it holds a comma, quote, CR or LF.
std::string CsvEscape(absl::string_view field);
// Fields joined with commas, escaped, with a trailing "\n".
std::string CsvLine(const std::vector<std::string>& fields);

enum class DeviceFileFormat { kCsv, kJsonl };
// `explicit_format` ("csv", "jsonl", "json", or empty) wins; otherwise the file
// extension (.csv, .jsonl, .ndjson, .json). INVALID_ARGUMENT when neither tells.
absl::StatusOr<DeviceFileFormat> DeviceFileFormatFor(absl::string_view path,
                                                     absl::string_view explicit_format);

// The CSV columns `device export` writes and `device import` understands.
// Columns `tag:<name>` are also accepted on import. Only `device_id` is required.
const std::vector<std::string>& DeviceCsvColumns();
// One export row for `device` in DeviceCsvColumns order. Tags are written as
// `k=v;k2=v2`, or as a JSON object when a key or value holds `;` or `=`.
std::vector<std::string> DeviceCsvRow(const iotauth::registry::v1::Device& device);
// Parses a tags cell: `k=v;k2=v2` or a JSON object of strings.
absl::StatusOr<std::map<std::string, std::string>> ParseTagsCell(absl::string_view cell);

struct RowError {
  int64_t line = 0;     // 1-based line in the file
  std::string message;  // never contains a key
};

// Reads devices from CSV or JSON Lines.
class DeviceReader {
 public:
  // Every device gets `tenant_id`; a row naming another tenant is rejected.
  DeviceReader(std::istream* in, DeviceFileFormat format, std::string tenant_id);

  enum class Result { kDevice, kEof, kRowError };
  // kRowError: `*error` describes the skipped row. A fatal problem (a CSV header
  // with an unknown or duplicate column, or without device_id) is an
  // INVALID_ARGUMENT status.
  absl::StatusOr<Result> Next(iotauth::registry::v1::Device* device, RowError* error);
  // Line of the last device or error returned.
  int64_t line() const { return line_; }

 private:
  absl::Status ReadHeader();
  absl::StatusOr<Result> NextCsv(iotauth::registry::v1::Device* device, RowError* error);
  absl::StatusOr<Result> NextJsonl(iotauth::registry::v1::Device* device, RowError* error);
  Result CheckTenant(iotauth::registry::v1::Device* device, RowError* error);

  std::istream* in_;
  DeviceFileFormat format_;
  std::string tenant_id_;
  CsvReader csv_;
  bool header_read_ = false;
  std::vector<std::string> columns_;
  int64_t line_ = 0;
  int64_t next_jsonl_line_ = 1;
};

}  // namespace iotauth::cli
