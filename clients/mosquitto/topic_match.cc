#include "clients/mosquitto/topic_match.h"

#include "absl/strings/str_split.h"

namespace iotauth::mosquitto {

namespace rv1 = ::iotauth::registry::v1;

namespace {

std::vector<absl::string_view> Levels(absl::string_view s) { return absl::StrSplit(s, '/'); }

bool IsDollar(absl::string_view level) { return !level.empty() && level[0] == '$'; }

}  // namespace

bool FilterCovers(absl::string_view rule, absl::string_view requested) {
  const std::vector<absl::string_view> r = Levels(rule);
  const std::vector<absl::string_view> q = Levels(requested);
  size_t i = 0;
  for (; i < r.size(); ++i) {
    if (r[i] == "#") {
      // `#` must be last; at the first level it does not reach `$` topics.
      if (i + 1 != r.size()) return false;
      return !(i == 0 && !q.empty() && IsDollar(q[0]));
    }
    if (i >= q.size()) return false;
    if (r[i] == "+") {
      if (q[i] == "#") return false;
      if (i == 0 && IsDollar(q[0])) return false;
      continue;
    }
    if (q[i] == "+" || q[i] == "#" || r[i] != q[i]) return false;
  }
  return i == q.size();
}

bool FiltersOverlap(absl::string_view a, absl::string_view b) {
  const std::vector<absl::string_view> x = Levels(a);
  const std::vector<absl::string_view> y = Levels(b);
  for (size_t i = 0;; ++i) {
    const bool xe = i >= x.size();
    const bool ye = i >= y.size();
    if (xe && ye) return true;
    // `#` also matches the parent level (`a/#` matches `a`).
    if (xe) return y[i] == "#" && i + 1 == y.size();
    if (ye) return x[i] == "#" && i + 1 == x.size();
    const bool xw = x[i] == "#" || x[i] == "+";
    const bool yw = y[i] == "#" || y[i] == "+";
    if (i == 0 && ((xw && !yw && IsDollar(y[0])) || (yw && !xw && IsDollar(x[0])))) return false;
    if (x[i] == "#" || y[i] == "#") return true;
    if (xw || yw) continue;
    if (x[i] != y[i]) return false;
  }
}

bool RuleApplies(const rv1::AccessRule& rule, rv1::RuleAction action, absl::string_view topic,
                 bool delivery) {
  if (rule.action() != rv1::RULE_ACTION_ALL && rule.action() != action) return false;
  if (rule.exact()) {
    // A client allowed to subscribe to the literal filter `lit/#` receives `lit/x`
    // through it; comparing literally here would refuse every such delivery.
    return delivery ? FilterCovers(rule.topic_filter(), topic) : rule.topic_filter() == topic;
  }
  if (rule.effect() == rv1::RULE_EFFECT_DENY) return FiltersOverlap(rule.topic_filter(), topic);
  return FilterCovers(rule.topic_filter(), topic);
}

bool Decide(const std::vector<rv1::AccessRule>& rules, rv1::RuleEffect default_effect,
            rv1::RuleAction action, absl::string_view topic, bool delivery) {
  for (const rv1::AccessRule& r : rules) {
    if (r.effect() == rv1::RULE_EFFECT_UNSPECIFIED) continue;
    if (RuleApplies(r, action, topic, delivery)) return r.effect() == rv1::RULE_EFFECT_ALLOW;
  }
  return default_effect == rv1::RULE_EFFECT_ALLOW;
}

}  // namespace iotauth::mosquitto
