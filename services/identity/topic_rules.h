// MQTT access rules: placeholder resolution (`${tenant}`, `${product}`, `${device}`,
// `${client_id}`, `${username}`, `${cert_cn}`) and topic matching with `+` and `#`.
// Shared by Authenticate (which returns the resolved rules) and Authorize.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::identity {

// Values for `${...}` placeholders.
struct Placeholders {
  absl::string_view tenant;
  absl::string_view product;
  absl::string_view device;
  absl::string_view client_id;
  absl::string_view username;
  absl::string_view cert_cn;
};

// Appends `rule` to `out` with placeholders resolved; unknown placeholders stay literal.
// A value that is empty or holds `/`, `+`, `#` or NUL could widen an allow rule (a
// client id of `#`), so such an allow rule is dropped (returns false); deny rules are
// always kept (a wider deny only restricts more).
bool ResolveRule(const iotauth::registry::v1::AccessRule& rule, const Placeholders& vars,
                 google::protobuf::RepeatedPtrField<iotauth::registry::v1::AccessRule>* out);

// INVALID_ARGUMENT unless `name` is a valid MQTT topic name (non-empty, at most 65535
// bytes, no `+`, `#` or NUL).
absl::Status ValidateTopicName(absl::string_view name);
// INVALID_ARGUMENT unless `filter` is a valid MQTT topic filter (`+` alone in a level,
// `#` alone in the last level, no NUL).
absl::Status ValidateTopicFilter(absl::string_view filter);

// True when topic name `topic` matches `filter` (MQTT 3.1.1 section 4.7; wildcards at
// the first level do not match topics starting with `$`).
bool TopicMatches(absl::string_view filter, absl::string_view topic);
// True when every topic matching `requested` also matches `rule` (subscribe allow).
bool FilterCovers(absl::string_view rule, absl::string_view requested);
// True when some topic matches both filters (subscribe deny).
bool FiltersOverlap(absl::string_view a, absl::string_view b);

// Whether `rule` applies to a request for `action` on `topic` (a name for PUBLISH, a
// filter for SUBSCRIBE): allow rules must cover the request, deny rules need only
// overlap it; `exact` rules compare literally.
bool RuleApplies(const iotauth::registry::v1::AccessRule& rule,
                 iotauth::registry::v1::RuleAction action, absl::string_view topic);

}  // namespace iotauth::identity
