// libFuzzer target: the Mosquitto plugin's local topic decisions against iotauth's
// own (services/identity/topic_rules). The plugin enforces, inside the broker, the
// rules Authenticate returned, on topics and filters the devices send; wherever the
// two disagree, the broker would let through what Authorize refuses, or refuse
// what it allows.
//
// Input: line 1 a rule's topic filter, line 2 the request (a topic name for
// PUBLISH, a filter for SUBSCRIBE), line 3's first byte the rule's flags (bit 0
// allow/deny, bit 1 exact, bit 2 action ALL, bit 3 the request's action).
//
// Checked whenever both are valid (ValidateTopicFilter; a PUBLISH request also
// ValidateTopicName):
//  - FilterCovers and FiltersOverlap agree with iotauth's;
//  - RuleApplies and a one-rule Decide agree with iotauth's RuleApplies;
//  - a delivery of a topic name (the plugin's own case: a message reaching a
//    subscriber) is decided as iotauth decides that topic for a subscription to
//    it, except `exact` rules, which apply when their filter, subscribed
//    literally, would receive the message (TopicMatches).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "clients/mosquitto/topic_match.h"
#include "services/identity/topic_rules.h"

namespace {

namespace reg = ::iotauth::registry::v1;
namespace plugin = ::iotauth::mosquitto;
namespace ours = ::iotauth::identity;

[[noreturn]] void Fail(const char* what, absl::string_view a, absl::string_view b, int flags) {
  std::fprintf(stderr, "topic_match_fuzzer: %s\n  rule=\"%.*s\"\n  request=\"%.*s\"\n  flags=%d\n",
               what, static_cast<int>(a.size()), a.data(), static_cast<int>(b.size()), b.data(),
               flags);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  const std::vector<absl::string_view> lines = absl::StrSplit(in, absl::MaxSplits('\n', 2));
  const std::string a(lines.empty() ? "" : lines[0]);
  const std::string b(lines.size() < 2 ? "" : lines[1]);
  const int flags = lines.size() < 3 || lines[2].empty() ? 0 : static_cast<uint8_t>(lines[2][0]);

  // Anything at all must not crash the plugin (it runs inside the broker).
  (void)plugin::FilterCovers(a, b);
  (void)plugin::FiltersOverlap(a, b);

  if (!ours::ValidateTopicFilter(a).ok() || !ours::ValidateTopicFilter(b).ok()) return 0;
  if (plugin::FilterCovers(a, b) != ours::FilterCovers(a, b)) Fail("FilterCovers", a, b, flags);
  if (plugin::FiltersOverlap(a, b) != ours::FiltersOverlap(a, b)) {
    Fail("FiltersOverlap", a, b, flags);
  }

  reg::AccessRule rule;
  rule.set_topic_filter(a);
  rule.set_effect((flags & 1) != 0 ? reg::RULE_EFFECT_DENY : reg::RULE_EFFECT_ALLOW);
  rule.set_exact((flags & 2) != 0);
  const reg::RuleAction action =
      (flags & 8) != 0 ? reg::RULE_ACTION_SUBSCRIBE : reg::RULE_ACTION_PUBLISH;
  rule.set_action((flags & 4) != 0 ? reg::RULE_ACTION_ALL : action);
  if (action == reg::RULE_ACTION_PUBLISH && !ours::ValidateTopicName(b).ok()) return 0;

  const bool applies = ours::RuleApplies(rule, action, b);
  if (plugin::RuleApplies(rule, action, b) != applies) Fail("RuleApplies", a, b, flags);
  const bool allowed = applies && rule.effect() == reg::RULE_EFFECT_ALLOW;
  if (plugin::Decide({rule}, reg::RULE_EFFECT_UNSPECIFIED, action, b) != allowed) {
    Fail("Decide", a, b, flags);
  }

  // A message on topic name `b` delivered to a subscriber.
  if (!ours::ValidateTopicName(b).ok()) return 0;
  const bool delivery_applies =
      rule.action() != reg::RULE_ACTION_ALL && rule.action() != reg::RULE_ACTION_SUBSCRIBE ? false
      : rule.exact() ? ours::TopicMatches(a, b)
                     : ours::RuleApplies(rule, reg::RULE_ACTION_SUBSCRIBE, b);
  if (plugin::RuleApplies(rule, reg::RULE_ACTION_SUBSCRIBE, b, /*delivery=*/true) !=
      delivery_applies) {
    Fail("RuleApplies (delivery)", a, b, flags);
  }
  return 0;
}
