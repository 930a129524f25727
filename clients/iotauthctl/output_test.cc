#include "clients/iotauthctl/output.h"

#include "gtest/gtest.h"
#include "proto/iotauth/audit/v1/audit.pb.h"
#include "proto/iotauth/identity/v1/identity.pb.h"
#include "proto/iotauth/registry/v1/types.pb.h"

namespace iotauth::cli {
namespace {

namespace rv1 = ::iotauth::registry::v1;

rv1::Device SampleDevice() {
  rv1::Device d;
  d.set_tenant_id("t1");
  d.set_device_id("dev-1");
  d.set_product_key("p1");
  d.set_status(rv1::DEVICE_STATUS_ENABLED);
  (*d.mutable_tags())["site"] = "berlin";
  (*d.mutable_tags())["floor"] = "3";
  auto* rule = d.add_rules();
  rule->set_effect(rv1::RULE_EFFECT_ALLOW);
  rule->set_action(rv1::RULE_ACTION_PUBLISH);
  rule->set_topic_filter("devices/${device}/#");
  auto* rule2 = d.add_rules();
  rule2->set_effect(rv1::RULE_EFFECT_DENY);
  rule2->set_action(rv1::RULE_ACTION_ALL);
  rule2->set_topic_filter("x");
  rule2->set_exact(true);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key("UFJJTUFSWQ==");
  d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key("U0VDT05EQVJZ");
  d.mutable_credentials()->set_primary_thumbprint("abcd");
  d.mutable_update_time()->set_seconds(1714564800);  // 2024-05-01T12:00:00Z
  return d;
}

TEST(EnumTest, ShortNamesRoundTrip) {
  const auto* status = rv1::DeviceStatus_descriptor();
  EXPECT_EQ(EnumShortName(status->FindValueByNumber(rv1::DEVICE_STATUS_PENDING_APPROVAL)),
            "pending_approval");
  EXPECT_EQ(*ParseEnumName(status, "pending-approval"), rv1::DEVICE_STATUS_PENDING_APPROVAL);
  EXPECT_EQ(*ParseEnumName(status, "ENABLED"), rv1::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(*ParseEnumName(status, "device_status_disabled"), rv1::DEVICE_STATUS_DISABLED);
  auto bad = ParseEnumName(status, "unspecified");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("enabled, disabled, pending_approval"), std::string::npos);
  EXPECT_EQ(*ParseEnumName(rv1::CredentialType_descriptor(), "x509-self-signed"),
            rv1::CREDENTIAL_TYPE_X509_SELF_SIGNED);
  EXPECT_EQ(EnumShortName(iotauth::identity::v1::DenyReason_descriptor()->FindValueByNumber(
                iotauth::identity::v1::DENY_REASON_BAD_SIGNATURE)),
            "bad_signature");
}

TEST(TimeTest, FormatAndParse) {
  google::protobuf::Timestamp ts;
  EXPECT_EQ(FormatTimestamp(ts), "");
  ts.set_seconds(1714564800);
  EXPECT_EQ(FormatTimestamp(ts), "2024-05-01T12:00:00Z");
  ts.set_nanos(250000000);
  EXPECT_EQ(FormatTimestamp(ts), "2024-05-01T12:00:00.250Z");
  const absl::Time now = absl::FromUnixSeconds(1714564800);
  EXPECT_EQ(*ParseTimeFlag("15m", now), now - absl::Minutes(15));
  EXPECT_EQ(*ParseTimeFlag("2024-05-01T12:00:00Z", now), now);
  EXPECT_EQ(*ParseTimeFlag("2024-05-01T14:00:00+02:00", now), now);
  EXPECT_FALSE(ParseTimeFlag("yesterday", now).ok());
}

TEST(RedactTest, ClearsEverySecretAndReports) {
  rv1::Device d = SampleDevice();
  EXPECT_TRUE(RedactSecrets(&d));
  EXPECT_EQ(d.credentials().symmetric_key().primary_key(), "");
  EXPECT_EQ(d.credentials().symmetric_key().secondary_key(), "");
  EXPECT_EQ(d.credentials().primary_thumbprint(), "abcd");  // not secret
  EXPECT_FALSE(RedactSecrets(&d));

  rv1::Tenant t;
  t.set_id("t");
  auto* p = t.add_policies();
  p->set_name("gw");
  p->set_primary_key("S0VZ");
  EXPECT_TRUE(RedactSecrets(&t));
  EXPECT_EQ(t.policies(0).name(), "gw");
  EXPECT_EQ(t.policies(0).primary_key(), "");

  rv1::Product prod;
  prod.set_product_secret("s");
  EXPECT_TRUE(RedactSecrets(&prod));
  rv1::EnrollmentGroup g;
  g.set_group_key("k");
  EXPECT_TRUE(RedactSecrets(&g));
  iotauth::identity::v1::AuthenticateResponse resp;
  resp.set_issued_device_secret("s");
  EXPECT_TRUE(RedactSecrets(&resp));
  EXPECT_EQ(resp.issued_device_secret(), "");
}

TEST(FlattenTest, DeviceKeyValues) {
  rv1::Device d = SampleDevice();
  RedactSecrets(&d);
  const std::string text = RenderKeyValues(Flatten(d));
  EXPECT_EQ(text,
            "tenant_id:                       t1\n"
            "device_id:                       dev-1\n"
            "product_key:                     p1\n"
            "status:                          enabled\n"
            "tags:                            floor=3, site=berlin\n"
            "rules:                           allow publish devices/${device}/#\n"
            "                                 deny all x (exact)\n"
            "credentials.primary_thumbprint:  abcd\n"
            "update_time:                     2024-05-01T12:00:00Z\n");
}

TEST(FieldValueTest, Paths) {
  rv1::Device d = SampleDevice();
  EXPECT_EQ(FieldValue(d, "device_id"), "dev-1");
  EXPECT_EQ(FieldValue(d, "status"), "enabled");
  EXPECT_EQ(FieldValue(d, "tags"), "floor=3, site=berlin");
  EXPECT_EQ(FieldValue(d, "credentials.primary_thumbprint"), "abcd");
  EXPECT_EQ(FieldValue(d, "update_time"), "2024-05-01T12:00:00Z");
  EXPECT_EQ(FieldValue(d, "create_time"), "");
  EXPECT_EQ(FieldValue(d, "no_such_field"), "");
  EXPECT_EQ(FieldValue(d, "device_id.x"), "");
  iotauth::audit::v1::AuditEvent e;
  e.set_sequence(18446744073709551615ull);
  EXPECT_EQ(FieldValue(e, "sequence"), "18446744073709551615");
}

TEST(TableTest, AlignsColumns) {
  EXPECT_EQ(RenderTable({"ID", "NAME", "X"}, {{"a", "long name", ""}, {"bbbb", "n", "1"}}),
            "ID    NAME       X\n"
            "a     long name\n"
            "bbbb  n          1\n");
  rv1::Device a = SampleDevice();
  rv1::Device b;
  b.set_device_id("dev-22");
  EXPECT_EQ(RenderMessageTable({&a, &b}, {{"DEVICE", "device_id"}, {"STATUS", "status"}}),
            "DEVICE  STATUS\n"
            "dev-1   enabled\n"
            "dev-22\n");
}

TEST(JsonTest, OneLineProtoJson) {
  rv1::Device d;
  d.set_device_id("d");
  d.set_status(rv1::DEVICE_STATUS_DISABLED);
  EXPECT_EQ(ToJson(d), R"({"deviceId":"d","status":"DEVICE_STATUS_DISABLED"})");
}

TEST(ProgressTest, Format) {
  EXPECT_EQ(FormatProgress(1234567, 0, 0.5, absl::Seconds(10)),
            "[############............]  50%  1,234,567 rows  123,456 rows/s  0:10");
  EXPECT_EQ(FormatProgress(10, 2, -1, absl::Seconds(65)), "10 rows  0 rows/s  2 rejected  1:05");
  EXPECT_EQ(FormatProgress(0, 0, 2.0, absl::ZeroDuration()),
            "[########################] 100%  0 rows  0 rows/s  0:00");
}

}  // namespace
}  // namespace iotauth::cli
