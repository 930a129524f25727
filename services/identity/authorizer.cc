#include "services/identity/authorizer.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/error_info.h"
#include "services/identity/topic_rules.h"

namespace iotauth::identity {
namespace {

namespace reg = ::iotauth::registry::v1;
constexpr size_t kMaxIdBytes = 128;
constexpr size_t kMaxFieldBytes = 1024;

}  // namespace

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(Options options) {
  if (options.directory == nullptr) {
    return absl::InvalidArgumentError("Authorizer needs a directory");
  }
  if (options.default_effect == reg::RULE_EFFECT_UNSPECIFIED) {
    return absl::InvalidArgumentError("default_effect must be ALLOW or DENY");
  }
  return std::unique_ptr<Authorizer>(new Authorizer(options));
}

Authorizer::Authorizer(Options options)
    : options_(options),
      clock_(options_.clock != nullptr ? options_.clock : &RealClock::Get()),
      audit_(options_.audit_sink) {}

absl::Status Authorizer::Authorize(const v1::AuthorizeRequest& request, const CallContext& context,
                                   v1::AuthorizeResponse* response) const {
  if (options_.ready != nullptr && !options_.ready->load(std::memory_order_acquire)) {
    return DirectoryLoadingError();
  }
  const absl::Time start = clock_->Now();
  const v1::Identity& id = request.identity();
  if (id.tenant_id().empty() || id.device_id().empty()) {
    return InvalidFieldError("identity", "identity.tenant_id and identity.device_id are required");
  }
  if (id.tenant_id().size() > kMaxIdBytes || id.device_id().size() > kMaxIdBytes ||
      id.product_key().size() > kMaxIdBytes) {
    const std::string limit_text = absl::StrCat(kMaxIdBytes);
    return InvalidFieldError("identity",
                             absl::StrCat("identity fields exceed ", kMaxIdBytes, " bytes"),
                             {{"limit_bytes", limit_text}});
  }
  if (request.client_id().size() > kMaxFieldBytes) {
    return InvalidFieldError("client_id", "client_id is too long");
  }
  if (request.username().size() > kMaxFieldBytes) {
    return InvalidFieldError("username", "username is too long");
  }
  if (request.cert_cn().size() > kMaxFieldBytes) {
    return InvalidFieldError("cert_cn", "cert_cn is too long");
  }
  if (request.request_id().size() > kMaxIdBytes) {
    return InvalidFieldError("request_id", "request_id is too long");
  }
  if (request.topic().size() > options_.max_topic_bytes) {
    const std::string limit_text = absl::StrCat(options_.max_topic_bytes);
    return InvalidFieldError("topic",
                             absl::StrCat("topic exceeds ", options_.max_topic_bytes, " bytes"),
                             {{"limit_bytes", limit_text}});
  }
  const reg::RuleAction action = request.action();
  if (action == reg::RULE_ACTION_PUBLISH) {
    absl::Status s = ValidateTopicName(request.topic());
    if (!s.ok()) return InvalidFieldError("topic", s.message());
  } else if (action == reg::RULE_ACTION_SUBSCRIBE) {
    absl::Status s = ValidateTopicFilter(request.topic());
    if (!s.ok()) return InvalidFieldError("topic", s.message());
  } else {
    return InvalidFieldError("action",
                             "action must be RULE_ACTION_PUBLISH or RULE_ACTION_SUBSCRIBE");
  }

  response->set_request_id(request.request_id());
  response->set_matched_rule_index(-1);
  std::string deny_reason;
  auto device = options_.directory->FindDevice(id.tenant_id(), id.device_id());
  std::shared_ptr<const ProductRecord> product;
  if (device == nullptr) {
    deny_reason = "unknown device";
  } else if (device->status != reg::DEVICE_STATUS_ENABLED) {
    deny_reason = "device is not enabled";
  } else if (!id.product_key().empty() && id.product_key() != device->product_key) {
    deny_reason = "identity names another product";
  } else if ((product = options_.directory->FindProduct(device->product_key)) == nullptr) {
    deny_reason = "device's product is not known";
  }

  if (deny_reason.empty()) {
    const Placeholders vars{device->tenant_id,   device->product_key, device->device_id,
                            request.client_id(), request.username(),  request.cert_cn()};
    google::protobuf::RepeatedPtrField<reg::AccessRule> rules;
    rules.Reserve(static_cast<int>(device->rules.size() + product->default_rules.size()));
    for (const auto& r : device->rules) ResolveRule(r, vars, &rules);
    for (const auto& r : product->default_rules) ResolveRule(r, vars, &rules);
    reg::RuleEffect effect = options_.default_effect;
    for (int i = 0; i < rules.size(); ++i) {
      if (RuleApplies(rules[i], action, request.topic())) {
        effect = rules[i].effect();
        response->set_matched_rule_index(i);
        *response->mutable_matched_rule() = rules[i];
        break;
      }
    }
    response->set_decision(effect == reg::RULE_EFFECT_ALLOW ? v1::DECISION_ALLOW
                                                            : v1::DECISION_DENY);
  } else {
    response->set_decision(v1::DECISION_DENY);
  }

  const bool allow = response->decision() == v1::DECISION_ALLOW;
  const bool audited = audit_ != nullptr && (!allow || options_.audit_allows);
  if (audited) {
    absl::Status admitted = audit::AdmitAudited(options_.audit_gate);
    if (!admitted.ok()) {
      response->Clear();
      return admitted;
    }
  }
  const Basis basis = !deny_reason.empty()                  ? kDevice
                      : response->matched_rule_index() >= 0 ? kRule
                                                            : kDefaultEffect;
  counts_[CountIndex(allow, action == reg::RULE_ACTION_PUBLISH, basis)].fetch_add(
      1, std::memory_order_relaxed);
  if (audited) {
    namespace av1 = ::iotauth::audit::v1;
    av1::AuditEvent e;
    const absl::Time end = clock_->Now();
    e.mutable_time()->set_seconds(absl::ToUnixSeconds(end));
    e.set_type(av1::EVENT_TYPE_AUTHORIZATION);
    e.set_tenant_id(id.tenant_id());
    e.set_product_key(device != nullptr ? device->product_key : id.product_key());
    e.set_device_id(id.device_id());
    e.set_outcome(allow ? av1::OUTCOME_ALLOW : av1::OUTCOME_DENY);
    e.set_reason(basis == kDevice ? "DEVICE" : basis == kRule ? "RULE" : "DEFAULT_EFFECT");
    e.set_caller(std::string(context.caller));
    e.set_request_id(request.request_id());
    const int64_t ns = absl::ToInt64Nanoseconds(end - start);
    e.mutable_duration()->set_seconds(ns / 1000000000);
    e.mutable_duration()->set_nanos(static_cast<int32_t>(ns % 1000000000));
    auto& attrs = *e.mutable_attributes();
    attrs["action"] = reg::RuleAction_Name(action);
    attrs["topic"] = request.topic();
    attrs["matched_rule_index"] = absl::StrCat(response->matched_rule_index());
    if (!deny_reason.empty()) attrs["detail"] = deny_reason;
    audit_->Record(std::move(e));
  }
  return absl::OkStatus();
}

std::vector<Authorizer::CountRow> Authorizer::DecisionCounts() const {
  static constexpr const char* kBasisNames[kBases] = {"rule", "default_effect", "device"};
  std::vector<CountRow> rows;
  rows.reserve(counts_.size());
  for (const bool allow : {true, false}) {
    for (const bool publish : {true, false}) {
      for (int basis = 0; basis < kBases; ++basis) {
        rows.push_back({allow ? "allow" : "deny", publish ? "publish" : "subscribe",
                        kBasisNames[basis],
                        counts_[CountIndex(allow, publish, static_cast<Basis>(basis))].load(
                            std::memory_order_relaxed)});
      }
    }
  }
  return rows;
}

}  // namespace iotauth::identity
