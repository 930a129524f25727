// libFuzzer target: MQTT topic rules against a reference. Topics and filters come
// from devices (PUBLISH topic names, SUBSCRIBE filters), rules from the registry.
//
// Input: lines `rule filter`, `requested filter or topic`, `topic`, then placeholder
// values (device, client id, username) for ResolveRule.
//
// Checked for every valid input, with `ref` a plain level-by-level MQTT 3.1.1
// matcher written here (section 4.7: `+` one level, `#` this level and below
// including the parent, no first-level wildcard match for `$` topics):
//  - TopicMatches agrees with ref;
//  - FilterCovers(rule, requested) is sound: no topic matching `requested` escapes
//    `rule` (an allow rule never grants a subscription wider than itself);
//  - FiltersOverlap is sound: two filters that share a topic overlap (a deny rule is
//    never missed);
// the candidate topics being the input topic and topics built from both filters,
// each wildcard replaced by levels drawn from the input ("x", "", "$x" and the
// filters' own literal levels; `#` also by nothing and by one or two levels).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "services/identity/topic_rules.h"

namespace {

namespace reg = ::iotauth::registry::v1;
using iotauth::identity::FilterCovers;
using iotauth::identity::FiltersOverlap;
using iotauth::identity::TopicMatches;
using iotauth::identity::ValidateTopicFilter;
using iotauth::identity::ValidateTopicName;

constexpr size_t kMaxCandidates = 4096;
constexpr size_t kMaxPool = 10;

[[noreturn]] void Fail(const char* broken, absl::string_view a, absl::string_view b,
                       absl::string_view t) {
  std::fprintf(stderr, "topic_rules_fuzzer: %s\n  a=\"%.*s\"\n  b=\"%.*s\"\n  topic=\"%.*s\"\n",
               broken, static_cast<int>(a.size()), a.data(), static_cast<int>(b.size()), b.data(),
               static_cast<int>(t.size()), t.data());
  std::abort();
}

bool Ref(absl::string_view filter, absl::string_view topic) {
  const std::vector<absl::string_view> f = absl::StrSplit(filter, '/');
  const std::vector<absl::string_view> t = absl::StrSplit(topic, '/');
  if (!topic.empty() && topic[0] == '$' && (f[0] == "+" || f[0] == "#")) return false;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#") return true;
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return f.size() == t.size();
}

// Topics that `filter` matches, wildcards replaced from `pool`.
void Expand(const std::vector<absl::string_view>& levels, size_t i,
            const std::vector<std::string>& pool, std::vector<std::string>* parts,
            std::set<std::string>* out) {
  if (out->size() >= kMaxCandidates) return;
  if (i == levels.size()) {
    out->insert(absl::StrJoin(*parts, "/"));
    return;
  }
  if (levels[i] == "+") {
    for (const std::string& v : pool) {
      parts->push_back(v);
      Expand(levels, i + 1, pool, parts, out);
      parts->pop_back();
    }
    return;
  }
  if (levels[i] == "#") {
    if (!parts->empty()) out->insert(absl::StrJoin(*parts, "/"));  // the parent level
    for (const std::string& v : pool) {
      parts->push_back(v);
      out->insert(absl::StrJoin(*parts, "/"));
      for (const std::string& w : pool) {
        if (out->size() >= kMaxCandidates) break;
        parts->push_back(w);
        out->insert(absl::StrJoin(*parts, "/"));
        parts->pop_back();
      }
      parts->pop_back();
    }
    return;
  }
  parts->push_back(std::string(levels[i]));
  Expand(levels, i + 1, pool, parts, out);
  parts->pop_back();
}

void AddLiterals(absl::string_view s, std::vector<std::string>* pool) {
  for (absl::string_view l : absl::StrSplit(s, '/')) {
    if (pool->size() >= kMaxPool) return;
    if (l == "+" || l == "#") continue;
    bool seen = false;
    for (const std::string& p : *pool) seen = seen || p == l;
    if (!seen) pool->push_back(std::string(l));
  }
}

std::string Line(const std::vector<absl::string_view>& lines, size_t i) {
  return i < lines.size() ? std::string(lines[i]) : std::string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  const std::vector<absl::string_view> lines = absl::StrSplit(in, '\n');
  const std::string a = Line(lines, 0);
  const std::string b = Line(lines, 1);
  const std::string topic = Line(lines, 2);

  // Placeholder resolution must not crash on anything (templates are admin input,
  // values device input).
  reg::AccessRule rule;
  rule.set_effect(lines.size() % 2 == 0 ? reg::RULE_EFFECT_ALLOW : reg::RULE_EFFECT_DENY);
  rule.set_action(reg::RULE_ACTION_ALL);
  rule.set_topic_filter(a);
  const std::string device = Line(lines, 3);
  const std::string client = Line(lines, 4);
  const std::string user = Line(lines, 5);
  iotauth::identity::Placeholders vars{"t1", "p1", device, client, user, "cn"};
  google::protobuf::RepeatedPtrField<reg::AccessRule> resolved;
  const bool kept = iotauth::identity::ResolveRule(rule, vars, &resolved);
  if (kept != (resolved.size() == 1)) Fail("ResolveRule result and output disagree", a, b, topic);
  for (const reg::RuleAction action : {reg::RULE_ACTION_PUBLISH, reg::RULE_ACTION_SUBSCRIBE}) {
    (void)iotauth::identity::RuleApplies(rule, action, b);
  }

  const bool a_ok = ValidateTopicFilter(a).ok();
  const bool b_ok = ValidateTopicFilter(b).ok();
  const bool t_ok = ValidateTopicName(topic).ok();
  if (a_ok && t_ok && TopicMatches(a, topic) != Ref(a, topic)) {
    Fail("TopicMatches disagrees with the reference", a, "", topic);
  }
  if (!a_ok || !b_ok) return 0;

  std::vector<std::string> pool = {"x", "", "$x"};
  AddLiterals(a, &pool);
  AddLiterals(b, &pool);
  if (t_ok) AddLiterals(topic, &pool);
  std::set<std::string> candidates;
  std::vector<std::string> parts;
  const std::vector<absl::string_view> la = absl::StrSplit(a, '/');
  const std::vector<absl::string_view> lb = absl::StrSplit(b, '/');
  Expand(la, 0, pool, &parts, &candidates);
  Expand(lb, 0, pool, &parts, &candidates);
  if (t_ok) candidates.insert(topic);

  const bool covers = FilterCovers(a, b);
  const bool overlap = FiltersOverlap(a, b);
  if (FiltersOverlap(b, a) != overlap) Fail("FiltersOverlap is not symmetric", a, b, "");
  if (!FilterCovers(a, a)) Fail("a filter does not cover itself", a, "", "");
  for (const std::string& t : candidates) {
    if (t.empty() || !ValidateTopicName(t).ok()) continue;
    const bool in_a = Ref(a, t);
    const bool in_b = Ref(b, t);
    if (TopicMatches(a, t) != in_a) Fail("TopicMatches disagrees with the reference", a, "", t);
    if (covers && in_b && !in_a) Fail("FilterCovers(a, b) but a topic of b escapes a", a, b, t);
    if (in_a && in_b && !overlap) {
      Fail("a topic matches both filters, FiltersOverlap says no", a, b, t);
    }
  }
  return 0;
}
