#include "services/registry/validation.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/common/error_info.h"

namespace iotauth::registry {
namespace {

struct IdCase {
  std::string id;
  bool ok;
};

TEST(ValidateIdTest, Table) {
  const IdCase cases[] = {
      {"device-1", true},
      {"A.b_c%d*e?f!g(h)i,j:k=l@m$n'o", true},
      {std::string(128, 'x'), true},
      {std::string(129, 'x'), false},
      {"", false},
      {"has space", false},
      {"slash/no", false},
      {"hash#no", false},
      {"plus+no", false},
      {std::string("nul\0no", 6), false},
      {"\xc3\xa9t\xc3\xa9", false},  // non-ASCII
      {"semi;colon", false},
  };
  for (const IdCase& c : cases) {
    absl::Status s = ValidateId("device.device_id", c.id);
    EXPECT_EQ(s.ok(), c.ok) << "id '" << c.id << "': " << s;
    if (!c.ok) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StartsWith(s.message(), "device.device_id: ")) << s;
      EXPECT_EQ(ReasonOf(s), "INVALID_DEVICE_ID");
    }
  }
}

TEST(ValidateKeyTest, Table) {
  struct Case {
    std::string key;
    bool ok;
  } cases[] = {
      {"AAAAAAAAAAAAAAAAAAAAAA==", true},   // 16 bytes
      {std::string(86, 'A') + "==", true},  // 64 bytes
      {"AAAAAAAAAAAAAAAAAAAA", false},      // 15 bytes
      {std::string(88, 'A'), false},        // 66 bytes
      {"", false},
      {"AAAAAAAAAAAAAAAAAAAAAA", false},    // missing padding
      {"AAAAAAAAAAAAAAAAAAAAA!==", false},  // bad char
      {"AAAAAAAAAAAA AAAAAAAAA==", false},  // whitespace
  };
  for (const Case& c : cases) {
    absl::Status s = ValidateKey("device.credentials.symmetric_key.primary_key", c.key);
    EXPECT_EQ(s.ok(), c.ok) << c.key << ": " << s;
    if (!c.ok) {
      EXPECT_EQ(ReasonOf(s), "INVALID_PRIMARY_KEY");
      if (!c.key.empty()) {
        EXPECT_EQ(std::string(s.message()).find(c.key), std::string::npos)
            << "message echoes the key";
      }
    }
  }
}

TEST(ValidateThumbprintTest, Table) {
  EXPECT_TRUE(ValidateThumbprint("t", std::string(64, 'a')).ok());
  EXPECT_TRUE(ValidateThumbprint("t", std::string(64, 'F')).ok());
  EXPECT_FALSE(ValidateThumbprint("t", std::string(63, 'a')).ok());
  EXPECT_FALSE(ValidateThumbprint("t", std::string(65, 'a')).ok());
  EXPECT_FALSE(ValidateThumbprint("t", std::string(63, 'a') + "g").ok());
  EXPECT_FALSE(ValidateThumbprint("t", "").ok());
  EXPECT_EQ(NormalizeThumbprint("ABCdef"), "abcdef");
}

v1::Device GoodDevice() {
  v1::Device d;
  d.set_tenant_id("t1");
  d.set_device_id("d1");
  d.set_product_key("p1");
  return d;
}

TEST(ValidateDeviceTest, OnePropertyAtATime) {
  struct Case {
    const char* name;
    void (*mutate)(v1::Device*);
    const char* reason;  // empty = ok
  } cases[] = {
      {"valid", [](v1::Device*) {}, ""},
      {"no tenant", [](v1::Device* d) { d->clear_tenant_id(); }, "INVALID_TENANT_ID"},
      {"bad id", [](v1::Device* d) { d->set_device_id("a b"); }, "INVALID_DEVICE_ID"},
      {"no product", [](v1::Device* d) { d->clear_product_key(); }, "INVALID_PRODUCT_KEY"},
      {"too many tags",
       [](v1::Device* d) {
         for (int i = 0; i <= 64; ++i) (*d->mutable_tags())["k" + std::to_string(i)] = "v";
       },
       "INVALID_TAGS"},
      {"long tag key", [](v1::Device* d) { (*d->mutable_tags())[std::string(129, 'k')] = "v"; },
       "INVALID_TAGS"},
      {"long tag value", [](v1::Device* d) { (*d->mutable_tags())["k"] = std::string(513, 'v'); },
       "INVALID_TAGS"},
      {"control char in tag", [](v1::Device* d) { (*d->mutable_tags())["k"] = "a\nb"; },
       "INVALID_TAGS"},
      {"too many rules",
       [](v1::Device* d) {
         for (int i = 0; i <= 100; ++i) {
           auto* r = d->add_rules();
           r->set_effect(v1::RULE_EFFECT_ALLOW);
           r->set_action(v1::RULE_ACTION_ALL);
           r->set_topic_filter("t");
         }
       },
       "INVALID_RULES"},
      {"rule without effect",
       [](v1::Device* d) {
         auto* r = d->add_rules();
         r->set_action(v1::RULE_ACTION_ALL);
         r->set_topic_filter("t");
       },
       "INVALID_RULES"},
      {"rule with long filter",
       [](v1::Device* d) {
         auto* r = d->add_rules();
         r->set_effect(v1::RULE_EFFECT_DENY);
         r->set_action(v1::RULE_ACTION_PUBLISH);
         r->set_topic_filter(std::string(513, 'a'));
       },
       "INVALID_RULES"},
      {"rule with '#' before the last level",
       [](v1::Device* d) {
         auto* r = d->add_rules();
         r->set_effect(v1::RULE_EFFECT_ALLOW);
         r->set_action(v1::RULE_ACTION_PUBLISH);
         r->set_topic_filter("#/status");
       },
       "INVALID_RULES"},
      {"rule with '+' inside a level",
       [](v1::Device* d) {
         auto* r = d->add_rules();
         r->set_effect(v1::RULE_EFFECT_ALLOW);
         r->set_action(v1::RULE_ACTION_PUBLISH);
         r->set_topic_filter("a/b+/c");
       },
       "INVALID_RULES"},
      {"exact rule holding '#' literally",
       [](v1::Device* d) {
         auto* r = d->add_rules();
         r->set_effect(v1::RULE_EFFECT_ALLOW);
         r->set_action(v1::RULE_ACTION_PUBLISH);
         r->set_exact(true);
         r->set_topic_filter("a/#/b");
       },
       ""},
      {"only a primary key",
       [](v1::Device* d) {
         d->mutable_credentials()->mutable_symmetric_key()->set_primary_key(
             "AAAAAAAAAAAAAAAAAAAAAA==");
       },
       "INVALID_SECONDARY_KEY"},
      {"bad thumbprint",
       [](v1::Device* d) { d->mutable_credentials()->set_primary_thumbprint("abc"); },
       "INVALID_PRIMARY_THUMBPRINT"},
      {"bad status", [](v1::Device* d) { d->set_status(static_cast<v1::DeviceStatus>(42)); },
       "INVALID_STATUS"},
  };
  for (const Case& c : cases) {
    v1::Device d = GoodDevice();
    c.mutate(&d);
    absl::Status s = ValidateDevice(d);
    if (std::string(c.reason).empty()) {
      EXPECT_TRUE(s.ok()) << c.name << ": " << s;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
      EXPECT_EQ(ReasonOf(s), c.reason) << c.name << ": " << s;
    }
  }
}

TEST(ValidateSizesTest, PemBatchPage) {
  EXPECT_TRUE(ValidatePemSize("ca.certificate_pem", "x").ok());
  EXPECT_EQ(ReasonOf(ValidatePemSize("ca.certificate_pem", std::string(16 * 1024 + 1, 'x'))),
            "INVALID_CERTIFICATE_PEM");
  EXPECT_FALSE(ValidatePemSize("ca.certificate_pem", "").ok());
  EXPECT_TRUE(ValidateBatchSize("devices", 10000).ok());
  EXPECT_FALSE(ValidateBatchSize("devices", 10001).ok());
  EXPECT_FALSE(ValidateBatchSize("devices", 0).ok());
  int32_t eff = 0;
  EXPECT_TRUE(ValidatePageSize("page_size", 0, &eff).ok());
  EXPECT_EQ(eff, 100);
  EXPECT_TRUE(ValidatePageSize("page_size", 1000, &eff).ok());
  EXPECT_FALSE(ValidatePageSize("page_size", 1001, &eff).ok());
  EXPECT_FALSE(ValidatePageSize("page_size", -1, &eff).ok());
}

TEST(ValidateTenantTest, PoliciesAndHost) {
  v1::Tenant t;
  t.set_id("t1");
  t.set_hub_host("hub.example.net");
  EXPECT_TRUE(ValidateTenant(t).ok());
  t.set_hub_host("bad host/");
  EXPECT_EQ(ReasonOf(ValidateTenant(t)), "INVALID_HUB_HOST");
  t.set_hub_host("hub");
  auto* p = t.add_policies();
  p->set_name("service");
  p->set_primary_key("AAAAAAAAAAAAAAAAAAAAAA==");
  p->set_secondary_key("short");
  EXPECT_EQ(ReasonOf(ValidateTenant(t)), "INVALID_SECONDARY_KEY");
}

TEST(ReasonTest, FallsBackToCodeName) {
  EXPECT_EQ(ReasonOf(absl::NotFoundError("x")), "NOT_FOUND");
  EXPECT_EQ(ReasonOf(WithErrorReason(absl::FailedPreconditionError("x"), "UNKNOWN_PRODUCT")),
            "UNKNOWN_PRODUCT");
  EXPECT_EQ(ReasonOf(absl::OkStatus()), "");
}

}  // namespace
}  // namespace iotauth::registry
