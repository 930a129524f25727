#include "services/identity/topic_rules.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"

namespace iotauth::identity {
namespace {

namespace reg = ::iotauth::registry::v1;

bool Lookup(const Placeholders& vars, absl::string_view name, absl::string_view* value) {
  if (name == "tenant") {
    *value = vars.tenant;
  } else if (name == "product") {
    *value = vars.product;
  } else if (name == "device") {
    *value = vars.device;
  } else if (name == "client_id") {
    *value = vars.client_id;
  } else if (name == "username") {
    *value = vars.username;
  } else if (name == "cert_cn") {
    *value = vars.cert_cn;
  } else {
    return false;
  }
  return true;
}

bool SafeTopicValue(absl::string_view v) {
  return !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    return c == '/' || c == '+' || c == '#' || c == '\0';
  });
}

using Levels = absl::InlinedVector<absl::string_view, 16>;

Levels Split(absl::string_view s) {
  Levels out;
  for (absl::string_view level : absl::StrSplit(s, '/')) out.push_back(level);
  return out;
}

// MQTT: wildcards at the first level never match a `$` topic such as `$SYS/...`.
bool DollarGuard(const Levels& filter, const Levels& topic) {
  if (topic.empty() || topic[0].empty() || topic[0][0] != '$') return true;
  return !filter.empty() && filter[0] != "+" && filter[0] != "#";
}

// Does every topic of `req` (levels, may contain wildcards) match `rule`?
bool Covers(absl::Span<const absl::string_view> rule, absl::Span<const absl::string_view> req) {
  size_t i = 0;
  for (; i < rule.size(); ++i) {
    // Covers the parent and everything below; a `#` before the last level is no
    // filter at all (the registry refuses one): it matches nothing.
    if (rule[i] == "#") return i + 1 == rule.size();
    if (i >= req.size()) return false;
    if (req[i] == "#") return false;  // the request is wider than a non-# rule level
    if (rule[i] == "+") continue;     // any single level, including a requested `+`
    if (req[i] == "+" || req[i] != rule[i]) return false;
  }
  return i == req.size();
}

// Is there a topic matching both `a` and `b`?
bool Overlap(absl::Span<const absl::string_view> a, absl::Span<const absl::string_view> b) {
  size_t i = 0;
  for (; i < a.size() && i < b.size(); ++i) {
    if (a[i] == "#" || b[i] == "#") return true;
    if (a[i] == "+" || b[i] == "+") continue;
    if (a[i] != b[i]) return false;
  }
  if (a.size() == b.size()) return true;
  // One is longer: it overlaps only if its next level is `#` (which matches the parent).
  const auto& longer = a.size() > b.size() ? a : b;
  return longer.size() == i + 1 && longer[i] == "#";
}

}  // namespace

bool ResolveRule(const reg::AccessRule& rule, const Placeholders& vars,
                 google::protobuf::RepeatedPtrField<reg::AccessRule>* out) {
  const std::string& f = rule.topic_filter();
  if (f.find("${") == std::string::npos) {
    *out->Add() = rule;
    return true;
  }
  std::string resolved;
  resolved.reserve(f.size() + 32);
  bool safe = true;
  size_t i = 0;
  while (i < f.size()) {
    const size_t open = f.find("${", i);
    if (open == std::string::npos) {
      resolved.append(f, i, std::string::npos);
      break;
    }
    const size_t close = f.find('}', open + 2);
    if (close == std::string::npos) {
      resolved.append(f, i, std::string::npos);
      break;
    }
    resolved.append(f, i, open - i);
    absl::string_view value;
    if (Lookup(vars, absl::string_view(f).substr(open + 2, close - open - 2), &value)) {
      if (!SafeTopicValue(value)) safe = false;
      resolved.append(value.data(), value.size());
    } else {
      resolved.append(f, open, close + 1 - open);  // unknown: kept literally
    }
    i = close + 1;
  }
  if (!safe && rule.effect() != reg::RULE_EFFECT_DENY) return false;
  reg::AccessRule* r = out->Add();
  r->set_effect(rule.effect());
  r->set_action(rule.action());
  r->set_exact(rule.exact());
  r->set_topic_filter(std::move(resolved));
  return true;
}

absl::Status ValidateTopicName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("topic is empty");
  if (name.size() > 65535) return absl::InvalidArgumentError("topic exceeds 65535 bytes");
  for (char c : name) {
    if (c == '+' || c == '#') {
      return absl::InvalidArgumentError("topic name contains a wildcard");
    }
    if (c == '\0') return absl::InvalidArgumentError("topic contains NUL");
  }
  return absl::OkStatus();
}

absl::Status ValidateTopicFilter(absl::string_view filter) {
  if (filter.empty()) return absl::InvalidArgumentError("topic filter is empty");
  if (filter.size() > 65535) return absl::InvalidArgumentError("topic filter exceeds 65535 bytes");
  if (filter.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("topic filter contains NUL");
  }
  const Levels levels = Split(filter);
  for (size_t i = 0; i < levels.size(); ++i) {
    const absl::string_view l = levels[i];
    if (l.find('#') != absl::string_view::npos && (l != "#" || i + 1 != levels.size())) {
      return absl::InvalidArgumentError("'#' must be alone in the last level of a topic filter");
    }
    if (l.find('+') != absl::string_view::npos && l != "+") {
      return absl::InvalidArgumentError("'+' must be alone in a topic filter level");
    }
  }
  return absl::OkStatus();
}

bool TopicMatches(absl::string_view filter, absl::string_view topic) {
  const Levels f = Split(filter);
  const Levels t = Split(topic);
  return DollarGuard(f, t) && Covers(f, t);
}

bool FilterCovers(absl::string_view rule, absl::string_view requested) {
  const Levels r = Split(rule);
  const Levels q = Split(requested);
  return DollarGuard(r, q) && Covers(r, q);
}

bool FiltersOverlap(absl::string_view a, absl::string_view b) {
  const Levels x = Split(a);
  const Levels y = Split(b);
  return DollarGuard(x, y) && DollarGuard(y, x) && Overlap(x, y);
}

bool RuleApplies(const reg::AccessRule& rule, reg::RuleAction action, absl::string_view topic) {
  if (rule.action() != reg::RULE_ACTION_ALL && rule.action() != action) return false;
  if (rule.exact()) return rule.topic_filter() == topic;
  if (action == reg::RULE_ACTION_PUBLISH) return TopicMatches(rule.topic_filter(), topic);
  return rule.effect() == reg::RULE_EFFECT_DENY ? FiltersOverlap(rule.topic_filter(), topic)
                                                : FilterCovers(rule.topic_filter(), topic);
}

}  // namespace iotauth::identity
