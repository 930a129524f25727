#include "clients/iotauthctl/device_io.h"

#include <istream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/iotauthctl/output.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace iotauth::cli {
namespace {

using iotauth::registry::v1::Device;
using iotauth::registry::v1::DeviceStatus;

// First line of a parser message: protobuf's JSON errors may quote the input,
// which can hold a key.
std::string FirstLine(absl::string_view s) { return std::string(s.substr(0, s.find('\n'))); }

// Spreadsheets ("CSV UTF-8") and some editors start a file with a UTF-8 byte order
// mark; it is not part of the first column's name (or the first JSON object).
void StripByteOrderMark(std::string* first_line) {
  if (absl::StartsWith(*first_line, "\xEF\xBB\xBF")) first_line->erase(0, 3);
}

}  // namespace

CsvReader::Result CsvReader::Next(std::vector<std::string>* fields, std::string* error) {
  fields->clear();
  std::string line;
  // Skip blank lines.
  while (true) {
    if (!std::getline(*in_, line)) return Result::kEof;
    record_line_ = next_line_++;
    if (record_line_ == 1) StripByteOrderMark(&line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) break;
  }
  std::string field;
  bool in_quotes = false;
  bool was_quoted = false;
  size_t i = 0;
  while (true) {
    if (i >= line.size()) {
      if (in_quotes) {
        // A quoted field continues on the next physical line.
        std::string more;
        if (!std::getline(*in_, more)) {
          *error = "unterminated quoted field";
          return Result::kError;
        }
        ++next_line_;
        if (!more.empty() && more.back() == '\r') more.pop_back();
        field.push_back('\n');
        line = std::move(more);
        i = 0;
        continue;
      }
      fields->push_back(std::move(field));
      return Result::kRecord;
    }
    const char c = line[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          field.push_back('"');
          i += 2;
          continue;
        }
        in_quotes = false;
        ++i;
        if (i < line.size() && line[i] != ',') {
          *error = absl::StrCat("unexpected character after closing quote in field ",
                                fields->size() + 1);
          return Result::kError;
        }
        continue;
      }
      field.push_back(c);
      ++i;
      continue;
    }
    if (c == ',') {
      fields->push_back(std::move(field));
      field.clear();
      was_quoted = false;
      ++i;
      continue;
    }
    if (c == '"') {
      if (!field.empty() || was_quoted) {
        *error = absl::StrCat("unexpected quote inside unquoted field ", fields->size() + 1);
        return Result::kError;
      }
      in_quotes = true;
      was_quoted = true;
      ++i;
      continue;
    }
    field.push_back(c);
    ++i;
  }
}

std::string CsvEscape(absl::string_view field) {
  if (field.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string CsvLine(const std::vector<std::string>& fields) {
  std::vector<std::string> escaped;
  escaped.reserve(fields.size());
  for (const auto& f : fields) escaped.push_back(CsvEscape(f));
  return absl::StrCat(absl::StrJoin(escaped, ","), "\n");
}

absl::StatusOr<DeviceFileFormat> DeviceFileFormatFor(absl::string_view path,
                                                     absl::string_view explicit_format) {
  std::string f = absl::AsciiStrToLower(explicit_format);
  if (f.empty()) {
    const std::string p = absl::AsciiStrToLower(path);
    if (absl::EndsWith(p, ".csv")) return DeviceFileFormat::kCsv;
    if (absl::EndsWith(p, ".jsonl") || absl::EndsWith(p, ".ndjson") || absl::EndsWith(p, ".json")) {
      return DeviceFileFormat::kJsonl;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot tell the format of '", path, "' from its extension: pass --format csv|jsonl"));
  }
  if (f == "csv") return DeviceFileFormat::kCsv;
  if (f == "jsonl" || f == "json" || f == "ndjson") return DeviceFileFormat::kJsonl;
  return absl::InvalidArgumentError(
      absl::StrCat("--format '", explicit_format, "' is not csv or jsonl"));
}

const std::vector<std::string>& DeviceCsvColumns() {
  static const auto* kColumns = new std::vector<std::string>{"device_id",
                                                             "product_key",
                                                             "status",
                                                             "tags",
                                                             "primary_key",
                                                             "secondary_key",
                                                             "primary_thumbprint",
                                                             "secondary_thumbprint",
                                                             "ca_signed_allowed",
                                                             "enrollment_group_id"};
  return *kColumns;
}

std::vector<std::string> DeviceCsvRow(const Device& d) {
  bool plain = true;
  std::vector<std::string> tag_parts;
  std::map<std::string, std::string> tags(d.tags().begin(), d.tags().end());
  for (const auto& [k, v] : tags) {
    if (absl::StrContains(k, ';') || absl::StrContains(k, '=') || absl::StrContains(v, ';') ||
        absl::StrContains(v, '=')) {
      plain = false;
    }
    tag_parts.push_back(absl::StrCat(k, "=", v));
  }
  std::string tags_cell = absl::StrJoin(tag_parts, ";");
  if (!plain) {
    google::protobuf::Struct s;
    for (const auto& [k, v] : tags) (*s.mutable_fields())[k].set_string_value(v);
    tags_cell = ToJson(s);
  }
  const auto& c = d.credentials();
  std::string status;
  if (d.status() != iotauth::registry::v1::DEVICE_STATUS_UNSPECIFIED) {
    status = EnumShortName(
        iotauth::registry::v1::DeviceStatus_descriptor()->FindValueByNumber(d.status()));
  }
  return {d.device_id(),
          d.product_key(),
          status,
          tags_cell,
          c.symmetric_key().primary_key(),
          c.symmetric_key().secondary_key(),
          c.primary_thumbprint(),
          c.secondary_thumbprint(),
          c.ca_signed_allowed() ? "true" : "",
          d.enrollment_group_id()};
}

absl::StatusOr<std::map<std::string, std::string>> ParseTagsCell(absl::string_view cell) {
  std::map<std::string, std::string> tags;
  cell = absl::StripAsciiWhitespace(cell);
  if (cell.empty()) return tags;
  if (cell.front() == '{') {
    google::protobuf::Struct s;
    auto st = google::protobuf::util::JsonStringToMessage(std::string(cell), &s);
    if (!st.ok()) return absl::InvalidArgumentError("tags: invalid JSON object");
    for (const auto& [k, v] : s.fields()) {
      if (v.kind_case() != google::protobuf::Value::kStringValue) {
        return absl::InvalidArgumentError(absl::StrCat("tags: value of '", k, "' is not a string"));
      }
      tags[k] = v.string_value();
    }
    return tags;
  }
  for (absl::string_view part : absl::StrSplit(cell, ';', absl::SkipWhitespace())) {
    size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tags: '", part, "' is not key=value (use k=v;k2=v2 or a JSON object)"));
    }
    tags[std::string(absl::StripAsciiWhitespace(part.substr(0, eq)))] =
        std::string(absl::StripAsciiWhitespace(part.substr(eq + 1)));
  }
  return tags;
}

DeviceReader::DeviceReader(std::istream* in, DeviceFileFormat format, std::string tenant_id)
    : in_(in), format_(format), tenant_id_(std::move(tenant_id)), csv_(in) {}

absl::StatusOr<DeviceReader::Result> DeviceReader::Next(Device* device, RowError* error) {
  device->Clear();
  if (format_ == DeviceFileFormat::kCsv) return NextCsv(device, error);
  return NextJsonl(device, error);
}

DeviceReader::Result DeviceReader::CheckTenant(Device* device, RowError* error) {
  if (!device->tenant_id().empty() && device->tenant_id() != tenant_id_) {
    error->line = line_;
    error->message = absl::StrCat("tenant_id '", device->tenant_id(), "' differs from --tenant '",
                                  tenant_id_, "'");
    return Result::kRowError;
  }
  if (device->device_id().empty()) {
    error->line = line_;
    error->message = "device_id is empty";
    return Result::kRowError;
  }
  device->set_tenant_id(tenant_id_);
  return Result::kDevice;
}

absl::Status DeviceReader::ReadHeader() {
  header_read_ = true;
  std::vector<std::string> fields;
  std::string err;
  CsvReader::Result r = csv_.Next(&fields, &err);
  if (r == CsvReader::Result::kEof) return absl::OkStatus();
  if (r == CsvReader::Result::kError) {
    return absl::InvalidArgumentError(absl::StrCat("line ", csv_.record_line(), ": header: ", err));
  }
  const auto& known = DeviceCsvColumns();
  std::set<std::string> seen;
  for (std::string& f : fields) {
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(f));
    if (!absl::StartsWith(name, "tag:") &&
        std::find(known.begin(), known.end(), name) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", csv_.record_line(), ": unknown column '", f,
                       "' (known: ", absl::StrJoin(known, ", "), ", tag:<name>)"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", csv_.record_line(), ": duplicate column '", f, "'"));
    }
    if (absl::StartsWith(name, "tag:")) {
      name = "tag:" + std::string(absl::StripAsciiWhitespace(f).substr(4));
    }
    columns_.push_back(std::move(name));
  }
  if (seen.count("device_id") == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("line ", csv_.record_line(), ": the header has no device_id column"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceReader::Result> DeviceReader::NextCsv(Device* d, RowError* error) {
  if (!header_read_) {
    absl::Status s = ReadHeader();
    if (!s.ok()) return s;
  }
  if (columns_.empty()) return Result::kEof;
  std::vector<std::string> fields;
  std::string err;
  CsvReader::Result r = csv_.Next(&fields, &err);
  line_ = csv_.record_line();
  if (r == CsvReader::Result::kEof) return Result::kEof;
  error->line = line_;
  if (r == CsvReader::Result::kError) {
    error->message = err;
    return Result::kRowError;
  }
  if (fields.size() != columns_.size()) {
    error->message = absl::StrCat("expected ", columns_.size(), " fields, found ", fields.size());
    return Result::kRowError;
  }
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string& col = columns_[i];
    const std::string& v = fields[i];
    auto* creds = d->mutable_credentials();
    if (col == "device_id") {
      d->set_device_id(std::string(absl::StripAsciiWhitespace(v)));
    } else if (col == "product_key") {
      d->set_product_key(std::string(absl::StripAsciiWhitespace(v)));
    } else if (col == "status") {
      if (absl::StripAsciiWhitespace(v).empty()) continue;
      auto s = ParseEnumName(iotauth::registry::v1::DeviceStatus_descriptor(),
                             absl::StripAsciiWhitespace(v));
      if (!s.ok()) {
        error->message = absl::StrCat("status: ", s.status().message());
        return Result::kRowError;
      }
      d->set_status(static_cast<DeviceStatus>(*s));
    } else if (col == "tags") {
      auto tags = ParseTagsCell(v);
      if (!tags.ok()) {
        error->message = std::string(tags.status().message());
        return Result::kRowError;
      }
      for (auto& [k, tv] : *tags) (*d->mutable_tags())[k] = tv;
    } else if (absl::StartsWith(col, "tag:")) {
      if (!v.empty()) (*d->mutable_tags())[col.substr(4)] = v;
    } else if (col == "primary_key") {
      if (!v.empty()) creds->mutable_symmetric_key()->set_primary_key(v);
    } else if (col == "secondary_key") {
      if (!v.empty()) creds->mutable_symmetric_key()->set_secondary_key(v);
    } else if (col == "primary_thumbprint") {
      creds->set_primary_thumbprint(std::string(absl::StripAsciiWhitespace(v)));
    } else if (col == "secondary_thumbprint") {
      creds->set_secondary_thumbprint(std::string(absl::StripAsciiWhitespace(v)));
    } else if (col == "ca_signed_allowed") {
      const std::string b = absl::AsciiStrToLower(absl::StripAsciiWhitespace(v));
      if (b == "true" || b == "1" || b == "yes") {
        creds->set_ca_signed_allowed(true);
      } else if (!(b.empty() || b == "false" || b == "0" || b == "no")) {
        error->message = absl::StrCat("ca_signed_allowed: '", v, "' is not true or false");
        return Result::kRowError;
      }
    } else if (col == "enrollment_group_id") {
      d->set_enrollment_group_id(std::string(absl::StripAsciiWhitespace(v)));
    }
  }
  if (d->credentials().ByteSizeLong() == 0) d->clear_credentials();
  return CheckTenant(d, error);
}

absl::StatusOr<DeviceReader::Result> DeviceReader::NextJsonl(Device* d, RowError* error) {
  std::string line;
  while (true) {
    if (!std::getline(*in_, line)) return Result::kEof;
    line_ = next_jsonl_line_++;
    if (line_ == 1) StripByteOrderMark(&line);
    if (!absl::StripAsciiWhitespace(line).empty()) break;
  }
  error->line = line_;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(line, d, opts);
  if (!st.ok()) {
    error->message = absl::StrCat("invalid JSON device: ", FirstLine(st.message().as_string()));
    return Result::kRowError;
  }
  return CheckTenant(d, error);
}

}  // namespace iotauth::cli
