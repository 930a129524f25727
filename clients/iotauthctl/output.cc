#include "clients/iotauthctl/output.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <ostream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "clients/iotauthctl/command.h"
#include "google/protobuf/reflection.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace iotauth::cli {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Fields marked SECRET in proto/iotauth. Keep in sync when a contract adds one.
const std::set<std::string>& SecretFields() {
  static const auto* kFields = new std::set<std::string>{
      "iotauth.registry.v1.SharedAccessPolicy.primary_key",
      "iotauth.registry.v1.SharedAccessPolicy.secondary_key",
      "iotauth.registry.v1.Product.product_secret",
      "iotauth.registry.v1.SymmetricKey.primary_key",
      "iotauth.registry.v1.SymmetricKey.secondary_key",
      "iotauth.registry.v1.EnrollmentGroup.group_key",
      "iotauth.identity.v1.ConnectInfo.password",
      "iotauth.identity.v1.SasTokenCredential.token",
      "iotauth.identity.v1.DeviceTripleCredential.signature",
      "iotauth.identity.v1.AuthenticateResponse.issued_device_secret",
  };
  return *kFields;
}

std::string UpperSnake(absl::string_view camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    char c = camel[i];
    if (absl::ascii_isupper(c) && i > 0) out.push_back('_');
    out.push_back(absl::ascii_toupper(c));
  }
  return out;
}

std::string EnumPrefix(const EnumDescriptor* type) { return UpperSnake(type->name()) + "_"; }

std::string RenderScalar(const Message& m, const FieldDescriptor* f, int index);

std::string RenderMessageInline(const Message& m) {
  const Descriptor* d = m.GetDescriptor();
  if (d->full_name() == "google.protobuf.Timestamp") {
    return FormatTimestamp(static_cast<const google::protobuf::Timestamp&>(m));
  }
  if (d->full_name() == "google.protobuf.Duration") {
    return FormatDuration(static_cast<const google::protobuf::Duration&>(m));
  }
  if (d->full_name() == "iotauth.registry.v1.AccessRule") {
    // `allow publish devices/${device}/# [exact]`
    const Reflection* r = m.GetReflection();
    std::string effect = EnumShortName(r->GetEnum(m, d->FindFieldByName("effect")));
    std::string action = EnumShortName(r->GetEnum(m, d->FindFieldByName("action")));
    std::string out =
        absl::StrCat(effect, " ", action, " ", r->GetString(m, d->FindFieldByName("topic_filter")));
    if (r->GetBool(m, d->FindFieldByName("exact"))) out += " (exact)";
    return out;
  }
  std::vector<std::string> parts;
  for (const auto& [k, v] : Flatten(m)) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, " ");
}

std::string RenderScalar(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return EnumShortName(rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f));
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      if (f->type() == FieldDescriptor::TYPE_BYTES) return absl::StrCat("<", v.size(), " bytes>");
      return v;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return RenderMessageInline(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return "";
}

// A map field as `k=v, k2=v2` sorted by key.
std::string RenderMap(const Message& m, const FieldDescriptor* f) {
  const Reflection* r = m.GetReflection();
  std::map<std::string, std::string> entries;
  const FieldDescriptor* key_f = f->message_type()->map_key();
  const FieldDescriptor* val_f = f->message_type()->map_value();
  for (int i = 0; i < r->FieldSize(m, f); ++i) {
    const Message& e = r->GetRepeatedMessage(m, f, i);
    entries[RenderScalar(e, key_f, 0)] = RenderScalar(e, val_f, 0);
  }
  std::vector<std::string> parts;
  parts.reserve(entries.size());
  for (const auto& [k, v] : entries) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, ", ");
}

bool IsInlineMessage(const Descriptor* d) {
  const std::string& n = d->full_name();
  return n == "google.protobuf.Timestamp" || n == "google.protobuf.Duration" ||
         n == "iotauth.registry.v1.AccessRule";
}

void FlattenInto(const Message& m, const std::string& prefix, KeyValues* out) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string key = prefix + f->name();
    if (f->is_map()) {
      out->emplace_back(key, RenderMap(m, f));
    } else if (f->is_repeated()) {
      const int n = r->FieldSize(m, f);
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int i = 0; i < n; ++i) out->emplace_back(i == 0 ? key : "", RenderScalar(m, f, i));
      } else {
        std::vector<std::string> parts;
        parts.reserve(n);
        for (int i = 0; i < n; ++i) parts.push_back(RenderScalar(m, f, i));
        out->emplace_back(key, absl::StrJoin(parts, ", "));
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
               !IsInlineMessage(f->message_type())) {
      FlattenInto(r->GetMessage(m, f), key + ".", out);
    } else {
      out->emplace_back(key, RenderScalar(m, f, 0));
    }
  }
}

bool RedactInto(Message* m) {
  const Reflection* r = m->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(*m, &fields);
  bool redacted = false;
  for (const FieldDescriptor* f : fields) {
    if (SecretFields().count(f->full_name()) > 0) {
      r->ClearField(m, f);
      redacted = true;
      continue;
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_map()) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(*m, f); ++i) {
        redacted |= RedactInto(r->MutableRepeatedMessage(m, f, i));
      }
    } else {
      redacted |= RedactInto(r->MutableMessage(m, f));
    }
  }
  return redacted;
}

std::string Thousands(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace

std::string EnumShortName(const EnumValueDescriptor* value) {
  if (value == nullptr) return "";
  const std::string prefix = EnumPrefix(value->type());
  absl::string_view name = value->name();
  if (absl::StartsWith(name, prefix)) name.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(name);
}

std::string EnumChoices(const EnumDescriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    if (type->value(i)->number() != 0) names.push_back(EnumShortName(type->value(i)));
  }
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<int> ParseEnumName(const EnumDescriptor* type, absl::string_view text) {
  const std::string want = absl::AsciiStrToUpper(absl::StrReplaceAll(text, {{"-", "_"}}));
  const std::string prefix = EnumPrefix(type);
  for (int i = 0; i < type->value_count(); ++i) {
    const EnumValueDescriptor* v = type->value(i);
    if (v->number() == 0) continue;
    if (v->name() == want || v->name() == prefix + want) return v->number();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not one of: ", EnumChoices(type)));
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "";
  absl::Time time = absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  const char* fmt = t.nanos() == 0 ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%dT%H:%M:%E3SZ";
  return absl::FormatTime(fmt, time, absl::UTCTimeZone());
}

std::string FormatDuration(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos()));
}

absl::StatusOr<absl::Time> ParseTimeFlag(absl::string_view text, absl::Time now) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) return t;
  auto d = ParseDurationFlag(text);
  if (d.ok()) return now - *d;
  return absl::InvalidArgumentError(absl::StrCat(
      "'", text, "' is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration ago (15m)"));
}

bool RedactSecrets(Message* message) { return RedactInto(message); }

KeyValues Flatten(const Message& message) {
  KeyValues out;
  FlattenInto(message, "", &out);
  return out;
}

std::string RenderKeyValues(const KeyValues& kv) {
  size_t width = 0;
  for (const auto& [k, v] : kv) width = std::max(width, k.size());
  std::string out;
  for (const auto& [k, v] : kv) {
    const std::string label = k.empty() ? "" : k + ":";
    absl::StrAppend(&out, label, std::string(width + 3 - label.size(), ' '), v, "\n");
  }
  return out;
}

std::string FieldValue(const Message& message, absl::string_view path) {
  const Message* m = &message;
  std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(std::string(parts[i]));
    if (f == nullptr) return "";
    const Reflection* r = m->GetReflection();
    const bool last = i + 1 == parts.size();
    if (!last) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) return "";
      if (!r->HasField(*m, f)) return "";
      m = &r->GetMessage(*m, f);
      continue;
    }
    if (f->is_map()) return RenderMap(*m, f);
    if (f->is_repeated()) {
      std::vector<std::string> vals;
      vals.reserve(r->FieldSize(*m, f));
      for (int j = 0; j < r->FieldSize(*m, f); ++j) vals.push_back(RenderScalar(*m, f, j));
      return absl::StrJoin(vals, ", ");
    }
    // Unset fields render empty (not `unspecified` or `0`); booleans always show.
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_BOOL && !r->HasField(*m, f)) return "";
    return RenderScalar(*m, f, 0);
  }
  return "";
}

std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size(), 0);
  for (size_t c = 0; c < headers.size(); ++c) widths[c] = headers[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < headers.size(); ++c) {
      const std::string& cell = c < cells.size() ? cells[c] : "";
      if (c + 1 == headers.size()) {
        out += cell;
      } else {
        absl::StrAppend(&out, cell, std::string(widths[c] - cell.size() + 2, ' '));
      }
    }
    // Trailing blanks come from empty last cells; drop them.
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(headers);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string RenderMessageTable(const std::vector<const Message*>& messages,
                               const std::vector<Column>& columns) {
  std::vector<std::string> headers;
  headers.reserve(columns.size());
  for (const Column& c : columns) headers.push_back(c.header);
  std::vector<std::vector<std::string>> rows;
  for (const Message* m : messages) {
    std::vector<std::string> row;
    row.reserve(columns.size());
    for (const Column& c : columns) row.push_back(FieldValue(*m, c.path));
    rows.push_back(std::move(row));
  }
  return RenderTable(headers, rows);
}

absl::StatusOr<std::string> ToJsonChecked(const Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = false;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, opts);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not representable as JSON: ", std::string(status.message())));
  }
  return out;
}

std::string ToJson(const Message& message) {
  absl::StatusOr<std::string> json = ToJsonChecked(message);
  return json.ok() ? *std::move(json) : "{}";
}

std::string FormatProgress(int64_t count, int64_t rejected, double fraction,
                           absl::Duration elapsed) {
  std::string out;
  if (fraction >= 0) {
    fraction = std::min(1.0, fraction);
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(std::lround(fraction * kWidth));
    absl::StrAppend(&out, "[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ",
                    absl::StrFormat("%3d%%", static_cast<int>(fraction * 100)), "  ");
  }
  const double secs = absl::ToDoubleSeconds(elapsed);
  const int64_t rate = secs > 0 ? static_cast<int64_t>(static_cast<double>(count) / secs) : 0;
  absl::StrAppend(&out, Thousands(count), " rows  ", Thousands(rate), " rows/s");
  if (rejected > 0) absl::StrAppend(&out, "  ", Thousands(rejected), " rejected");
  const int64_t s = absl::ToInt64Seconds(elapsed);
  absl::StrAppend(&out, absl::StrFormat("  %d:%02d", s / 60, s % 60));
  return out;
}

ProgressBar::ProgressBar(std::ostream* err, bool tty, bool enabled)
    : err_(err), tty_(tty), enabled_(enabled), start_(absl::Now()), last_draw_(absl::Now()) {}

void ProgressBar::Update(int64_t count, int64_t rejected, double fraction) {
  if (!enabled_) return;
  const absl::Time now = absl::Now();
  const absl::Duration interval = tty_ ? absl::Milliseconds(100) : absl::Seconds(5);
  if (now - last_draw_ < interval) return;
  last_draw_ = now;
  const std::string line = FormatProgress(count, rejected, fraction, now - start_);
  if (tty_) {
    *err_ << "\r" << line << "\033[K" << std::flush;
  } else {
    *err_ << line << "\n" << std::flush;
  }
}

void ProgressBar::Finish(int64_t count, int64_t rejected) {
  if (!enabled_) return;
  const std::string line = FormatProgress(count, rejected, 1.0, absl::Now() - start_);
  if (tty_) {
    *err_ << "\r" << line << "\033[K\n" << std::flush;
  } else {
    *err_ << line << "\n" << std::flush;
  }
}

bool ExportShowsProgress(const Invocation& inv, bool to_file) {
  return !inv.flags.IsSet("no_progress") && (to_file || !inv.io.out_is_tty);
}

void AddOutputFlags(Command& root) {
  root.Flag({"json", "", "Print proto JSON: one object, or JSON Lines for lists and streams"});
}

bool JsonOutput(const Invocation& inv) { return inv.flags.IsSet("json"); }

namespace {
void NoteRedacted(const Invocation& inv) {
  inv.err() << "note: secrets omitted; pass --show-keys to print them\n";
}
}  // namespace

void PrintResource(const Invocation& inv, Message* message, bool show_secrets) {
  const bool redacted = !show_secrets && RedactSecrets(message);
  if (JsonOutput(inv)) {
    inv.out() << ToJson(*message) << "\n";
  } else {
    inv.out() << RenderKeyValues(Flatten(*message));
  }
  if (redacted) NoteRedacted(inv);
}

void PrintResources(const Invocation& inv, const std::vector<Message*>& messages,
                    const std::vector<Column>& columns, bool show_secrets) {
  bool redacted = false;
  if (!show_secrets) {
    for (Message* m : messages) redacted |= RedactSecrets(m);
  }
  if (JsonOutput(inv)) {
    for (const Message* m : messages) inv.out() << ToJson(*m) << "\n";
  } else {
    std::vector<const Message*> cm(messages.begin(), messages.end());
    inv.out() << RenderMessageTable(cm, columns);
  }
  if (redacted) NoteRedacted(inv);
}

void PrintFields(const Invocation& inv, const KeyValues& fields) {
  if (JsonOutput(inv)) {
    google::protobuf::Struct s;
    for (const auto& [k, v] : fields) (*s.mutable_fields())[k].set_string_value(v);
    inv.out() << ToJson(s) << "\n";
  } else {
    inv.out() << RenderKeyValues(fields);
  }
}

}  // namespace iotauth::cli
