#include "services/identity/x509/chain_verifier.h"

#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/identity/x509/test_pki.h"

namespace iotauth::identity::x509 {
namespace {

namespace v1 = ::iotauth::identity::v1;
using testing::CertSpec;
using testing::Key;
using testing::KeyType;
using testing::MakeCert;
using testing::Parsed;

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

// One scenario: a root (trusted), an intermediate and a leaf, each from a spec that a
// row changes in exactly one property.
struct Scenario {
  CertSpec root{.cn = "root", .ca = true};
  CertSpec inter{.cn = "intermediate", .ca = true, .path_len = 0};
  CertSpec leaf{.cn = "device-1", .eku = "clientAuth"};
  KeyType leaf_key = KeyType::kP256;
  KeyType inter_key = KeyType::kP256;
  // Sign the intermediate with a root that is not in the trust store.
  bool foreign_root = false;
  // Extra intermediate between the intermediate and the leaf (pathLen test).
  bool extra_intermediate = false;
  // Leave the intermediate out of the request.
  bool omit_intermediate = false;
  // Flip a bit in the leaf's signature.
  bool corrupt_leaf_signature = false;
  // CRL by the intermediate revoking the leaf; and its validity.
  bool crl_revokes_leaf = false;
  bool crl_present = false;
  absl::Time crl_next_update = kNow + absl::Hours(24);
  ChainPolicy policy;
  absl::Time now = kNow;
};

struct Row {
  const char* name;
  std::function<void(Scenario&)> change;
  DenyReason want;
};

ChainResult RunScenario(const Scenario& s) {
  auto root_key = Key(KeyType::kP256);
  auto inter_key = Key(s.inter_key);
  auto other_root_key = testing::NewKey(KeyType::kP256);
  X509Ptr root = MakeCert(s.root, root_key.get(), nullptr, nullptr);
  CertSpec other = s.root;
  other.cn = "other root";
  X509Ptr foreign = MakeCert(other, other_root_key.get(), nullptr, nullptr);
  X509Ptr inter = s.foreign_root
                      ? MakeCert(s.inter, inter_key.get(), foreign.get(), other_root_key.get())
                      : MakeCert(s.inter, inter_key.get(), root.get(), root_key.get());
  X509* leaf_issuer = inter.get();
  EVP_PKEY* leaf_issuer_key = inter_key.get();
  X509Ptr extra;
  auto extra_key = Key(KeyType::kP384);
  if (s.extra_intermediate) {
    CertSpec e{.cn = "intermediate 2", .ca = true};
    extra = MakeCert(e, extra_key.get(), inter.get(), inter_key.get());
    leaf_issuer = extra.get();
    leaf_issuer_key = extra_key.get();
  }
  auto leaf_key = Key(s.leaf_key);
  CertSpec leaf_spec = s.leaf;
  leaf_spec.serial = 4242;
  X509Ptr leaf = MakeCert(leaf_spec, leaf_key.get(), leaf_issuer, leaf_issuer_key);
  CertPtr leaf_parsed;
  if (s.corrupt_leaf_signature) {
    std::string der = testing::Der(leaf.get());
    der[der.size() - 3] ^= 0x01;
    auto p = ParsedCertificate::FromDer(der);
    EXPECT_TRUE(p.ok());
    leaf_parsed = *p;
  } else {
    leaf_parsed = Parsed(leaf.get());
  }
  std::vector<CrlPtr> crls;
  if (s.crl_present) {
    std::vector<long> serials = {7};
    if (s.crl_revokes_leaf) serials.push_back(4242);
    auto crl = ParsedCrl::Parse(testing::MakeCrlPem(inter.get(), inter_key.get(), serials,
                                                    kNow - absl::Hours(1), s.crl_next_update));
    EXPECT_TRUE(crl.ok()) << crl.status();
    crls.push_back(*crl);
  }
  auto trust = TrustStore::Create({Parsed(root.get())}, {}, crls);
  EXPECT_TRUE(trust.ok());
  std::vector<CertPtr> inters;
  if (extra) inters.push_back(Parsed(extra.get()));
  if (!s.omit_intermediate) inters.push_back(Parsed(inter.get()));
  return VerifyChain(**trust, leaf_parsed, inters, s.now, s.policy);
}

class ChainVerifierTable : public ::testing::TestWithParam<Row> {};

TEST_P(ChainVerifierTable, ExactReason) {
  const Row& row = GetParam();
  Scenario s;
  row.change(s);
  ChainResult r = RunScenario(s);
  EXPECT_EQ(r.verdict.reason, row.want)
      << row.name << ": got " << v1::DenyReason_Name(r.verdict.reason) << " (" << r.verdict.detail
      << ")";
  if (row.want == v1::DENY_REASON_UNSPECIFIED) {
    ASSERT_EQ(r.path.size(), s.extra_intermediate ? 4u : 3u);
    EXPECT_EQ(r.path.back()->subject_cn(), "root");
  }
}

const Row kRows[] = {
    {"ec_p256_leaf", [](Scenario&) {}, v1::DENY_REASON_UNSPECIFIED},
    {"rsa2048_leaf", [](Scenario& s) { s.leaf_key = KeyType::kRsa2048; },
     v1::DENY_REASON_UNSPECIFIED},
    {"p384_leaf", [](Scenario& s) { s.leaf_key = KeyType::kP384; }, v1::DENY_REASON_UNSPECIFIED},
    {"ed25519_leaf", [](Scenario& s) { s.leaf_key = KeyType::kEd25519; },
     v1::DENY_REASON_UNSPECIFIED},
    {"rsa_intermediate", [](Scenario& s) { s.inter_key = KeyType::kRsa2048; },
     v1::DENY_REASON_UNSPECIFIED},
    {"no_eku_is_fine", [](Scenario& s) { s.leaf.eku = ""; }, v1::DENY_REASON_UNSPECIFIED},
    {"no_key_usage_is_fine", [](Scenario& s) { s.leaf.omit_key_usage = true; },
     v1::DENY_REASON_UNSPECIFIED},
    {"expired", [](Scenario& s) { s.leaf.not_after = kNow - absl::Seconds(1); },
     v1::DENY_REASON_EXPIRED},
    // RFC 5280 4.1.2.5: "from notBefore through notAfter, inclusive", per second.
    {"valid_in_its_not_after_second",
     [](Scenario& s) {
       s.leaf.not_after = kNow;
       s.now = kNow + absl::Milliseconds(999);
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"intermediate_valid_in_its_not_after_second", [](Scenario& s) { s.inter.not_after = kNow; },
     v1::DENY_REASON_UNSPECIFIED},
    {"valid_from_its_not_before_second", [](Scenario& s) { s.leaf.not_before = kNow; },
     v1::DENY_REASON_UNSPECIFIED},
    {"intermediate_expired", [](Scenario& s) { s.inter.not_after = kNow - absl::Hours(1); },
     v1::DENY_REASON_EXPIRED},
    {"not_yet_valid", [](Scenario& s) { s.leaf.not_before = kNow + absl::Minutes(5); },
     v1::DENY_REASON_NOT_YET_VALID},
    {"wrong_issuer", [](Scenario& s) { s.foreign_root = true; }, v1::DENY_REASON_UNTRUSTED_ISSUER},
    {"missing_intermediate", [](Scenario& s) { s.omit_intermediate = true; },
     v1::DENY_REASON_UNTRUSTED_ISSUER},
    {"bad_signature", [](Scenario& s) { s.corrupt_leaf_signature = true; },
     v1::DENY_REASON_BAD_SIGNATURE},
    {"intermediate_ca_false", [](Scenario& s) { s.inter.ca = false; },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"intermediate_without_basic_constraints",
     [](Scenario& s) { s.inter.no_basic_constraints = true; }, v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"path_len_exceeded", [](Scenario& s) { s.extra_intermediate = true; },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"path_len_one_allows_two",
     [](Scenario& s) {
       s.extra_intermediate = true;
       s.inter.path_len = 1;
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"depth_limit",
     [](Scenario& s) {
       s.extra_intermediate = true;
       s.inter.path_len = 1;
       s.policy.max_depth = 1;
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    // RFC 5280 4.2.1.12: the extension lists "one or more purposes".
    {"empty_eku", [](Scenario& s) { s.leaf.eku = "DER:30:00"; }, v1::DENY_REASON_WRONG_KEY_USAGE},
    {"server_auth_only_eku", [](Scenario& s) { s.leaf.eku = "serverAuth"; },
     v1::DENY_REASON_WRONG_KEY_USAGE},
    {"key_usage_without_digital_signature",
     [](Scenario& s) {
       s.leaf_key = KeyType::kRsa2048;
       s.leaf.key_usage = "critical,keyEncipherment";
     },
     v1::DENY_REASON_WRONG_KEY_USAGE},
    {"intermediate_without_key_cert_sign",
     [](Scenario& s) { s.inter.key_usage = "critical,digitalSignature"; },
     v1::DENY_REASON_WRONG_KEY_USAGE},
    {"sha1_signed", [](Scenario& s) { s.leaf.md = EVP_sha1(); }, v1::DENY_REASON_WEAK_ALGORITHM},
    {"rsa1024_leaf", [](Scenario& s) { s.leaf_key = KeyType::kRsa1024; },
     v1::DENY_REASON_WEAK_ALGORITHM},
    {"p521_leaf", [](Scenario& s) { s.leaf_key = KeyType::kP521; }, v1::DENY_REASON_WEAK_ALGORITHM},
    {"rsa_modulus_of_a_part_byte", [](Scenario& s) { s.leaf_key = KeyType::kRsa2052; },
     v1::DENY_REASON_WEAK_ALGORITHM},
    // RFC 5280 profile rules OpenSSL's path validation leaves out.
    {"undecodable_authority_info_access",
     [](Scenario& s) {
       // A SEQUENCE holding an INTEGER where AccessDescriptions belong.
       s.leaf.raw_extensions = {{NID_info_access, false, std::string("\x30\x03\x02\x01\x00", 5)}};
     },
     v1::DENY_REASON_MALFORMED},
    {"noncritical_policy_constraints",
     [](Scenario& s) { s.inter.policy_constraints = "inhibitPolicyMapping:1"; },
     v1::DENY_REASON_MALFORMED},
    {"critical_policy_constraints",
     [](Scenario& s) { s.inter.policy_constraints = "critical,inhibitPolicyMapping:1"; },
     v1::DENY_REASON_UNSPECIFIED},
    {"name_constraints_without_subtrees",
     [](Scenario& s) {
       s.inter.raw_extensions = {{NID_name_constraints, true, std::string("\x30\x00", 2)}};
     },
     v1::DENY_REASON_MALFORMED},
    {"name_constraints_with_an_empty_permitted_subtree",
     [](Scenario& s) {
       s.inter.raw_extensions = {{NID_name_constraints, true, std::string("\x30\x02\xa0\x00", 4)}};
     },
     v1::DENY_REASON_MALFORMED},
    {"leaf_is_a_ca",
     [](Scenario& s) {
       s.leaf.ca = true;
       s.leaf.key_usage = "critical,digitalSignature,keyCertSign";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    // CA:TRUE with a keyUsage lacking keyCertSign: OpenSSL's X509_check_ca says "not
    // a CA", but the certificate still claims to be one.
    {"leaf_claims_ca_without_key_cert_sign",
     [](Scenario& s) {
       s.leaf.ca = true;
       s.leaf.key_usage = "critical,digitalSignature";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    // RFC 5280 4.2.1.10: nameConstraints belong on CA certificates only.
    {"leaf_with_name_constraints",
     [](Scenario& s) { s.leaf.name_constraints = "critical,permitted;DNS:.example.com"; },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"leaf_with_noncritical_name_constraints",
     [](Scenario& s) { s.leaf.name_constraints = "permitted;DNS:.example.com"; },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"unknown_critical_extension", [](Scenario& s) { s.leaf.unknown_critical_extension = true; },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"name_constraints_ok",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,permitted;DNS:.example.com";
       s.leaf.san = "DNS:d1.example.com";
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"name_constraints_violated",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,permitted;DNS:.example.com";
       s.leaf.san = "DNS:d1.other.org";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    // A wildcard SAN matching the name an excluded subtree names (CVE-2025-61727).
    {"wildcard_san_matches_an_excluded_name",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,excluded;DNS:bar.example.com";
       s.leaf.san = "DNS:d1.example.org,DNS:*.EXAMPLE.com";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"wildcard_san_matches_an_excluded_name_from_the_root",
     [](Scenario& s) {
       s.root.name_constraints = "critical,excluded;DNS:bar.example.com";
       s.leaf.san = "DNS:*.example.com";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    // OpenSSL's leading dot excludes the subdomains only: beyond a wildcard's label.
    {"wildcard_san_beside_excluded_subdomains",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,excluded;DNS:.bar.example.com";
       s.leaf.san = "DNS:*.example.com";
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"wildcard_san_under_an_excluded_subtree",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,excluded;DNS:example.com";
       s.leaf.san = "DNS:*.example.com";
     },
     v1::DENY_REASON_CONSTRAINT_VIOLATED},
    {"wildcard_san_beside_an_excluded_subtree",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,excluded;DNS:bar.example.com";
       s.leaf.san = "DNS:*.other.example.com";
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"wildcard_san_above_a_deeper_excluded_subtree",
     [](Scenario& s) {
       s.inter.name_constraints = "critical,excluded;DNS:a.bar.example.com";
       s.leaf.san = "DNS:*.example.com";
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"crl_not_listing_leaf", [](Scenario& s) { s.crl_present = true; },
     v1::DENY_REASON_UNSPECIFIED},
    {"crl_revokes_leaf",
     [](Scenario& s) {
       s.crl_present = true;
       s.crl_revokes_leaf = true;
     },
     v1::DENY_REASON_REVOKED},
    {"crl_stale_rejected",
     [](Scenario& s) {
       s.crl_present = true;
       s.crl_next_update = kNow - absl::Hours(1);
     },
     v1::DENY_REASON_REVOKED},
    {"crl_stale_within_grace",
     [](Scenario& s) {
       s.crl_present = true;
       s.crl_next_update = kNow - absl::Hours(1);
       s.policy.stale_crl = StaleCrlPolicy::kGrace;
       s.policy.stale_crl_grace = absl::Hours(2);
     },
     v1::DENY_REASON_UNSPECIFIED},
    {"crl_stale_past_grace",
     [](Scenario& s) {
       s.crl_present = true;
       s.crl_next_update = kNow - absl::Hours(3);
       s.policy.stale_crl = StaleCrlPolicy::kGrace;
       s.policy.stale_crl_grace = absl::Hours(2);
     },
     v1::DENY_REASON_REVOKED},
    {"crl_stale_used_still_revokes",
     [](Scenario& s) {
       s.crl_present = true;
       s.crl_revokes_leaf = true;
       s.crl_next_update = kNow - absl::Hours(3);
       s.policy.stale_crl = StaleCrlPolicy::kUseStale;
     },
     v1::DENY_REASON_REVOKED},
    {"crl_required_but_absent", [](Scenario& s) { s.policy.require_crls = true; },
     v1::DENY_REASON_REVOKED},
};

INSTANTIATE_TEST_SUITE_P(Rows, ChainVerifierTable, ::testing::ValuesIn(kRows),
                         [](const ::testing::TestParamInfo<Row>& i) { return i.param.name; });

// A trusted CA's own certificate presented as the device's (a path of one, the leaf
// being the anchor) is no device certificate either.
TEST(ChainVerifierTest, ATrustedCaPresentedAsTheLeafIsACaLeaf) {
  auto root_key = Key(KeyType::kP256);
  // Everything else a device leaf needs: it signs (digitalSignature), no EKU check.
  X509Ptr root = MakeCert(
      CertSpec{.cn = "root", .ca = true, .key_usage = "critical,digitalSignature,keyCertSign"},
      root_key.get(), nullptr, nullptr);
  auto trust = TrustStore::Create({Parsed(root.get())}, {}, {});
  ASSERT_TRUE(trust.ok()) << trust.status();
  ChainPolicy policy;
  policy.purpose = 0;  // no EKU check: the CA check is what refuses it
  ChainResult r = VerifyChain(**trust, Parsed(root.get()), {}, kNow, policy);
  EXPECT_EQ(r.verdict.reason, v1::DENY_REASON_CONSTRAINT_VIOLATED) << r.verdict.detail;
  EXPECT_TRUE(r.path.empty());
  policy.reject_ca_leaf = false;  // the policy switch still decides
  r = VerifyChain(**trust, Parsed(root.get()), {}, kNow, policy);
  EXPECT_TRUE(r.verdict.ok()) << r.verdict.detail;
}

TEST(ParseTest, RejectsGarbageAndLimits) {
  ParseLimits limits;
  EXPECT_FALSE(ParseCertificates("", limits).ok());
  EXPECT_FALSE(ParseCertificates("hello", limits).ok());
  EXPECT_FALSE(
      ParseCertificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", limits)
          .ok());
  X509Ptr c = MakeCert(CertSpec{}, Key(KeyType::kP256).get(), nullptr, nullptr);
  std::string der = testing::Der(c.get());
  EXPECT_TRUE(ParseCertificates(der, limits).ok());
  EXPECT_FALSE(ParseCertificates(der + "x", limits).ok());
  std::string pem = testing::Pem(c.get());
  auto two = ParseCertificates(pem + pem, limits);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2u);
  limits.max_certificates = 1;
  EXPECT_FALSE(ParseCertificates(pem + pem, limits).ok());
  limits.max_entry_bytes = 10;
  EXPECT_FALSE(ParseCertificates(der, limits).ok());
}

TEST(ParseTest, ExtractsFacts) {
  CertSpec spec{.cn = "dev-7", .san = "URI:urn:dev:t1:dev-7,DNS:dev-7.example", .serial = 0x0102};
  X509Ptr c = MakeCert(spec, Key(KeyType::kP256).get(), nullptr, nullptr);
  CertPtr p = Parsed(c.get());
  EXPECT_EQ(p->subject_cn(), "dev-7");
  EXPECT_EQ(p->serial_hex(), "102");
  ASSERT_EQ(p->san_uris().size(), 1u);
  EXPECT_EQ(p->san_uris()[0], "urn:dev:t1:dev-7");
  ASSERT_EQ(p->san_dns().size(), 1u);
  EXPECT_TRUE(p->self_issued());
  EXPECT_EQ(p->fingerprint_hex().size(), 64u);
}

}  // namespace
}  // namespace iotauth::identity::x509
