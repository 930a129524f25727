#include "clients/iotauthctl/command.h"

#include <cstdlib>
#include <ostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace iotauth::cli {
namespace {

std::string Canonical(absl::string_view name) { return absl::StrReplaceAll(name, {{"-", "_"}}); }

absl::StatusOr<bool> ParseBool(absl::string_view flag, absl::string_view value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("flag --", flag, ": '", value, "' is not a boolean (true or false)"));
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<absl::Duration> ParseDurationFlag(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  double number = 0;
  if (absl::SimpleAtod(text, &number) && !text.empty() &&
      text.find_first_not_of("0123456789.") == absl::string_view::npos) {
    return absl::Seconds(number);
  }
  if (absl::EndsWith(text, "d")) {
    absl::string_view n = text.substr(0, text.size() - 1);
    if (!n.empty() && n.find_first_not_of("0123456789.") == absl::string_view::npos &&
        absl::SimpleAtod(n, &number)) {
      return absl::Hours(24 * number);
    }
  }
  absl::Duration d;
  if (absl::ParseDuration(text, &d) && d != absl::InfiniteDuration()) return d;
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not a duration (examples: 90s, 10m, 1h30m, 2d, 3600)"));
}

Flags::Flags(std::map<std::string, std::vector<std::string>> given,
             std::map<std::string, const FlagSpec*> specs, EnvLookup env)
    : given_(std::move(given)), specs_(std::move(specs)), env_(std::move(env)) {}

const FlagSpec* Flags::Spec(absl::string_view name) const {
  auto it = specs_.find(Canonical(name));
  return it == specs_.end() ? nullptr : it->second;
}

bool Flags::GivenOnCommandLine(absl::string_view name) const {
  return given_.count(Canonical(name)) > 0;
}

bool Flags::Has(absl::string_view name) const {
  if (GivenOnCommandLine(name)) return true;
  const FlagSpec* spec = Spec(name);
  if (spec != nullptr && !spec->env.empty() && env_) {
    auto v = env_(spec->env);
    return v.has_value() && !v->empty();
  }
  return false;
}

std::string Flags::Get(absl::string_view name) const {
  auto it = given_.find(Canonical(name));
  if (it != given_.end() && !it->second.empty()) return it->second.back();
  const FlagSpec* spec = Spec(name);
  if (spec == nullptr) return "";
  if (!spec->env.empty() && env_) {
    auto v = env_(spec->env);
    if (v.has_value() && !v->empty()) return *v;
  }
  return spec->default_value;
}

std::vector<std::string> Flags::GetAll(absl::string_view name) const {
  auto it = given_.find(Canonical(name));
  if (it == given_.end()) return {};
  return it->second;
}

absl::StatusOr<bool> Flags::GetBool(absl::string_view name) const {
  const std::string v = Get(name);
  if (v.empty()) return false;
  return ParseBool(name, v);
}

bool Flags::IsSet(absl::string_view name) const {
  auto v = GetBool(name);
  return v.ok() && *v;
}

absl::StatusOr<int64_t> Flags::GetInt(absl::string_view name) const {
  const std::string v = Get(name);
  int64_t n = 0;
  if (v.empty()) return 0;
  if (!absl::SimpleAtoi(v, &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", v, "' is not an integer"));
  }
  return n;
}

absl::StatusOr<absl::Duration> Flags::GetDuration(absl::string_view name) const {
  auto d = ParseDurationFlag(Get(name));
  if (!d.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("flag --", name, ": ", d.status().message()));
  }
  return d;
}

int Invocation::UsageError(absl::string_view message) const {
  err() << "error: " << message << "\n"
        << "Run '" << path << " --help' for usage.\n";
  return kExitUsage;
}

int Invocation::LocalError(absl::string_view message) const {
  err() << "error: " << message << "\n";
  return kExitLocalError;
}

Command::Command(std::string name, std::string summary)
    : name_(std::move(name)), summary_(std::move(summary)) {}

Command& Command::Sub(std::string name, std::string summary) {
  children_.push_back(std::make_unique<Command>(std::move(name), std::move(summary)));
  children_.back()->parent_ = this;
  return *children_.back();
}

Command& Command::Flag(FlagSpec spec) {
  spec.name = Canonical(spec.name);
  flags_.push_back(std::move(spec));
  return *this;
}

Command& Command::Args(std::string usage, int min_args, int max_args) {
  args_usage_ = std::move(usage);
  min_args_ = min_args;
  max_args_ = max_args;
  return *this;
}

Command& Command::Description(std::string text) {
  description_ = std::move(text);
  return *this;
}

Command& Command::Run(Handler handler) {
  handler_ = std::move(handler);
  return *this;
}

const Command* Command::FindChild(absl::string_view name) const {
  for (const auto& c : children_) {
    if (c->name_ == name) return c.get();
  }
  return nullptr;
}

const FlagSpec* Command::FindFlag(absl::string_view name) const {
  const std::string canonical = Canonical(name);
  for (const Command* c = this; c != nullptr; c = c->parent_) {
    for (const FlagSpec& f : c->flags_) {
      if (f.name == canonical) return &f;
    }
  }
  return nullptr;
}

std::string Command::Path() const {
  if (parent_ == nullptr) return name_;
  return absl::StrCat(parent_->Path(), " ", name_);
}

namespace {

void AppendFlagHelp(const std::vector<FlagSpec>& flags, std::ostringstream& os) {
  std::vector<std::string> lefts;
  size_t width = 0;
  for (const FlagSpec& f : flags) {
    std::string left = absl::StrCat("  --", f.name);
    if (!f.is_bool()) absl::StrAppend(&left, " ", f.value_name);
    width = std::max(width, left.size());
    lefts.push_back(std::move(left));
  }
  for (size_t i = 0; i < flags.size(); ++i) {
    const FlagSpec& f = flags[i];
    os << lefts[i] << std::string(width - lefts[i].size() + 3, ' ') << f.help;
    std::vector<std::string> notes;
    if (!f.default_value.empty()) notes.push_back(absl::StrCat("default ", f.default_value));
    if (!f.env.empty()) notes.push_back(absl::StrCat("env ", f.env));
    if (f.repeated) notes.emplace_back("repeatable");
    if (!notes.empty()) os << " (" << absl::StrJoin(notes, ", ") << ")";
    os << "\n";
  }
}

}  // namespace

std::string Command::Help() const {
  std::ostringstream os;
  os << "Usage: " << Path();
  if (!children_.empty()) os << " COMMAND";
  if (!args_usage_.empty()) os << " " << args_usage_;
  os << " [flags]\n\n" << summary_ << "\n";
  if (!description_.empty()) os << "\n" << description_ << "\n";
  if (!children_.empty()) {
    os << "\nCommands:\n";
    size_t width = 0;
    for (const auto& c : children_) width = std::max(width, c->name_.size());
    for (const auto& c : children_) {
      os << "  " << c->name_ << std::string(width - c->name_.size() + 3, ' ') << c->summary_
         << "\n";
    }
  }
  if (!flags_.empty()) {
    os << "\nFlags:\n";
    AppendFlagHelp(flags_, os);
  }
  std::vector<FlagSpec> inherited;
  for (const Command* c = parent_; c != nullptr; c = c->parent_) {
    inherited.insert(inherited.end(), c->flags_.begin(), c->flags_.end());
  }
  if (!inherited.empty()) {
    os << "\nGlobal flags:\n";
    AppendFlagHelp(inherited, os);
  }
  os << "\nFlag names accept '-' or '_' (--show-keys = --show_keys); --flag=value or --flag "
        "value.\n";
  if (!children_.empty()) os << "Run '" << Path() << " COMMAND --help' for a command's flags.\n";
  return os.str();
}

ParseResult Parse(const Command& root, const std::vector<std::string>& argv, EnvLookup env) {
  ParseResult r;
  const Command* cmd = &root;
  std::map<std::string, std::vector<std::string>> given;
  bool only_args = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& tok = argv[i];
    if (only_args) {
      r.args.push_back(tok);
      continue;
    }
    if (tok == "--") {
      only_args = true;
      continue;
    }
    if (tok == "-h" || tok == "--help") {
      r.help = true;
      continue;
    }
    if (absl::StartsWith(tok, "--")) {
      absl::string_view body = absl::string_view(tok).substr(2);
      absl::string_view name = body;
      std::optional<std::string> value;
      size_t eq = body.find('=');
      if (eq != absl::string_view::npos) {
        name = body.substr(0, eq);
        value = std::string(body.substr(eq + 1));
      }
      const FlagSpec* spec = cmd->FindFlag(name);
      if (spec == nullptr) {
        r.command = cmd;
        r.error = absl::StrCat("unknown flag --", name, " for '", cmd->Path(), "'");
        return r;
      }
      if (spec->is_bool()) {
        if (!value.has_value()) value = "true";
        auto b = ParseBool(spec->name, *value);
        if (!b.ok()) {
          r.command = cmd;
          r.error = std::string(b.status().message());
          return r;
        }
      } else if (!value.has_value()) {
        if (i + 1 >= argv.size()) {
          r.command = cmd;
          r.error = absl::StrCat("flag --", spec->name, " needs a value (", spec->value_name, ")");
          return r;
        }
        value = argv[++i];
      }
      given[spec->name].push_back(*value);
      continue;
    }
    if (tok.size() > 1 && tok[0] == '-') {
      r.command = cmd;
      r.error = absl::StrCat("unknown flag ", tok, " (flags start with --)");
      return r;
    }
    if (r.args.empty()) {
      if (const Command* child = cmd->FindChild(tok)) {
        cmd = child;
        continue;
      }
      if (tok == "help" && !cmd->children().empty()) {
        r.help = true;
        continue;
      }
    }
    r.args.push_back(tok);
  }
  r.command = cmd;
  std::map<std::string, const FlagSpec*> specs;
  for (const Command* c = cmd; c != nullptr; c = c->parent()) {
    for (const FlagSpec& f : c->flags()) specs.emplace(f.name, &f);
  }
  r.flags = Flags(std::move(given), specs, env);  // `specs` is used below
  if (r.help) return r;
  if (!cmd->children().empty() && !cmd->handler()) {
    if (!r.args.empty()) {
      r.error = absl::StrCat("unknown command '", r.args[0], "' for '", cmd->Path(), "'");
    }
    return r;
  }
  const int n = static_cast<int>(r.args.size());
  if (n < cmd->min_args() || n > cmd->max_args()) {
    if (cmd->max_args() == 0) {
      r.error = absl::StrCat("unexpected argument '", r.args[0], "' for '", cmd->Path(), "'");
    } else if (n < cmd->min_args()) {
      r.error = absl::StrCat("missing argument ", cmd->args_usage(), " for '", cmd->Path(), "'");
    } else {
      r.error = absl::StrCat("too many arguments for '", cmd->Path(), "' (expected ",
                             cmd->args_usage(), ")");
    }
    return r;
  }
  // Validate the typed value of every given flag once, so handlers can trust them.
  for (const auto& [name, spec] : specs) {
    (void)name;
    if (spec->is_bool()) {
      auto b = r.flags.GetBool(spec->name);
      if (!b.ok()) {
        r.error = std::string(b.status().message());
        return r;
      }
    }
  }
  return r;
}

int Dispatch(const Command& root, const std::vector<std::string>& argv, Io io, void* app) {
  ParseResult r = Parse(root, argv, io.env);
  Invocation inv;
  inv.command = r.command;
  inv.path = r.command->Path();
  inv.flags = std::move(r.flags);
  inv.args = std::move(r.args);
  inv.io = io;
  inv.app = app;
  if (!r.error.empty()) return inv.UsageError(r.error);
  if (r.help) {
    inv.out() << r.command->Help();
    return kExitOk;
  }
  if (!r.command->handler()) {
    inv.err() << r.command->Help();
    return kExitUsage;
  }
  return r.command->handler()(inv);
}

}  // namespace iotauth::cli
