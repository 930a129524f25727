// MQTT topic matching for the Mosquitto plugin's local enforcement of the access
// rules Authenticate returns (placeholders already resolved by iotauth). Same
// semantics as iotauth's Authorize: first matching rule wins; an allow rule must
// cover the whole request, a deny rule needs only to overlap it; `exact` rules compare
// literally; wildcards at the first level never match topics starting with `$`.
//
// Deliveries are the one place the plugin sees a request iotauth's Authorize does
// not: the broker asks whether a message on a concrete topic may reach a subscriber.
// An `exact` rule only ever allowed subscribing to its filter string itself, so for a
// delivery it applies when that subscription would receive the message.
#pragma once

#include <vector>

#include "absl/strings/string_view.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::mosquitto {

// True when every topic matching filter `requested` also matches filter `rule`
// (a topic name is a filter without wildcards, so this is also name matching).
bool FilterCovers(absl::string_view rule, absl::string_view requested);
// True when some topic name matches both filters.
bool FiltersOverlap(absl::string_view a, absl::string_view b);

// Whether `rule` decides a request for `action` (PUBLISH or SUBSCRIBE) on `topic`.
// `delivery` marks a SUBSCRIBE-action check of a message on topic name `topic`
// being delivered to a subscriber (rather than a SUBSCRIBE to filter `topic`): an
// `exact` rule then applies when its filter, as a literal subscription, matches
// `topic`. Non-exact rules decide deliveries as they decide subscribes.
bool RuleApplies(const iotauth::registry::v1::AccessRule& rule,
                 iotauth::registry::v1::RuleAction action, absl::string_view topic,
                 bool delivery = false);

// The first applying rule's effect, else `default_effect` (UNSPECIFIED means deny).
// Returns true for allow. `delivery` as for RuleApplies.
bool Decide(const std::vector<iotauth::registry::v1::AccessRule>& rules,
            iotauth::registry::v1::RuleEffect default_effect,
            iotauth::registry::v1::RuleAction action, absl::string_view topic,
            bool delivery = false);

}  // namespace iotauth::mosquitto
