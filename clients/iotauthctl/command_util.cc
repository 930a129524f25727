#include "clients/iotauthctl/command_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace iotauth::cli {

using iotauth::registry::v1::AccessRule;

absl::StatusOr<AccessRule> ParseRuleFlag(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits(':', 2));
  if (parts.size() != 3 || parts[2].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rule '", text, "' is not EFFECT:ACTION:FILTER (e.g. allow:publish:devices/${device}/#)"));
  }
  AccessRule rule;
  const std::string effect = absl::AsciiStrToLower(parts[0]);
  if (effect == "allow") {
    rule.set_effect(iotauth::registry::v1::RULE_EFFECT_ALLOW);
  } else if (effect == "deny") {
    rule.set_effect(iotauth::registry::v1::RULE_EFFECT_DENY);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("rule '", text, "': effect '", parts[0], "' is not allow or deny"));
  }
  const std::string action = absl::AsciiStrToLower(parts[1]);
  if (action == "publish" || action == "pub") {
    rule.set_action(iotauth::registry::v1::RULE_ACTION_PUBLISH);
  } else if (action == "subscribe" || action == "sub") {
    rule.set_action(iotauth::registry::v1::RULE_ACTION_SUBSCRIBE);
  } else if (action == "all" || action == "pubsub") {
    rule.set_action(iotauth::registry::v1::RULE_ACTION_ALL);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("rule '", text, "': action '", parts[1],
                                                   "' is not publish, subscribe or all"));
  }
  absl::string_view filter = parts[2];
  if (absl::StartsWith(filter, "exact:") && filter.size() > 6) {
    rule.set_exact(true);
    filter.remove_prefix(6);
  }
  rule.set_topic_filter(std::string(filter));
  return rule;
}

absl::StatusOr<std::vector<AccessRule>> ParseRuleFlags(const std::vector<std::string>& values) {
  std::vector<AccessRule> rules;
  for (const auto& v : values) {
    auto r = ParseRuleFlag(v);
    if (!r.ok()) return r.status();
    rules.push_back(*std::move(r));
  }
  return rules;
}

absl::StatusOr<std::map<std::string, std::string>> ParseTagFlags(
    const std::vector<std::string>& values) {
  std::map<std::string, std::string> tags;
  for (const auto& v : values) {
    size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tag '", v, "' is not key=value"));
    }
    if (!tags.emplace(v.substr(0, eq), v.substr(eq + 1)).second) {
      return absl::InvalidArgumentError(absl::StrCat("tag '", v.substr(0, eq), "' given twice"));
    }
  }
  return tags;
}

std::vector<std::string> SplitListFlag(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipWhitespace())) {
      out.emplace_back(absl::StripAsciiWhitespace(part));
    }
  }
  return out;
}

bool RequireFlag(const Invocation& inv, absl::string_view name, std::string* value, int* exit) {
  *value = inv.flags.Get(name);
  if (!value->empty()) return true;
  *exit = inv.UsageError(absl::StrCat("flag --", name, " is required"));
  return false;
}

absl::StatusOr<std::string> SecretFromFlags(const Invocation& inv, absl::string_view value_flag,
                                            absl::string_view file_flag, bool optional) {
  const bool has_value = inv.flags.Has(value_flag);
  const bool has_file = inv.flags.Has(file_flag);
  if (has_value && has_file) {
    return absl::InvalidArgumentError(
        absl::StrCat("give --", value_flag, " or --", file_flag, ", not both"));
  }
  if (has_value) return std::string(absl::StripAsciiWhitespace(inv.flags.Get(value_flag)));
  if (has_file) {
    auto content = AppOf(inv).read_file(inv.flags.Get(file_flag));
    if (!content.ok()) return content.status();
    return std::string(absl::StripAsciiWhitespace(*content));
  }
  if (optional) return std::string();
  return absl::InvalidArgumentError(
      absl::StrCat("flag --", value_flag, " or --", file_flag, " is required"));
}

int StatusToExit(const Invocation& inv, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kInvalidArgument) return inv.UsageError(status.message());
  return inv.LocalError(status.message());
}

void AddPageFlags(Command& cmd) {
  cmd.Flag({"page_size", "N", "Items per page (server default when 0)"})
      .Flag({"page_token", "TOKEN", "Start at this page (from a previous list)"})
      .Flag({"all", "", "Follow every page"});
}

int ListPages(const Invocation& inv, const Connection& conn, absl::string_view rpc,
              const std::function<grpc::Status(grpc::ClientContext*, int32_t, const std::string&,
                                               std::string*)>& fetch) {
  auto page_size = inv.flags.GetInt("page_size");
  if (!page_size.ok()) return inv.UsageError(page_size.status().message());
  if (*page_size < 0 || *page_size > 1000) return inv.UsageError("--page_size must be 0 to 1000");
  const bool all = inv.flags.IsSet("all");
  std::string token = inv.flags.Get("page_token");
  while (true) {
    grpc::ClientContext context;
    conn.PrepareUnary(&context);
    std::string next;
    grpc::Status s = fetch(&context, static_cast<int32_t>(*page_size), token, &next);
    if (!s.ok()) return ReportRpcError(inv, s, rpc, conn.settings());
    if (next.empty()) return kExitOk;
    if (!all) {
      inv.err() << "note: more results: pass --page_token " << next << " (or --all)\n";
      return kExitOk;
    }
    if (next == token) return kExitOk;  // defensive: a server repeating its token
    token = std::move(next);
  }
}

ExportOutput::~ExportOutput() {
  if (!tmp_.empty() && !committed_) {
    file_.close();
    ::unlink(tmp_.c_str());
  }
}

absl::Status ExportOutput::Open(const std::string& path, std::ostream* stdout_stream) {
  if (path.empty() || path == "-") {
    out_ = stdout_stream;
    return absl::OkStatus();
  }
  path_ = path;
  tmp_ = absl::StrCat(path, ".tmp-", ::getpid());
  const int fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    tmp_.clear();
    return absl::FailedPreconditionError(absl::StrCat("cannot write '", path, "': cannot create '",
                                                      path, ".tmp-", ::getpid(),
                                                      "': ", std::strerror(err),
                                                      " (check the directory exists and is "
                                                      "writable)"));
  }
  ::close(fd);
  file_.open(tmp_, std::ios::binary | std::ios::trunc);
  if (!file_) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write '", tmp_, "'"));
  }
  out_ = &file_;
  return absl::OkStatus();
}

absl::Status ExportOutput::Commit() {
  if (!to_file()) {
    out_->flush();
    return out_->good() ? absl::OkStatus() : absl::DataLossError("writing to stdout failed");
  }
  auto fail = [this](absl::string_view what) {
    const int err = errno;
    file_.close();
    ::unlink(tmp_.c_str());
    return absl::DataLossError(absl::StrCat("writing '", path_, "' failed (", what, ": ",
                                            std::strerror(err),
                                            "); free space or fix the path and run it again (",
                                            "an earlier file of that name is unchanged)"));
  };
  file_.flush();
  if (!file_.good()) return fail("write");
  file_.close();
  if (file_.fail()) return fail("close");
  const int fd = ::open(tmp_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("reopen");
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) return fail("fsync");
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) return fail("rename");
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace iotauth::cli
