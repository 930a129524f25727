#include "services/identity/x509/x509_certificate_verifier.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/identity/directory_cache.h"
#include "services/identity/x509/test_pki.h"

namespace iotauth::identity::x509 {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;
using testing::CertSpec;
using testing::Key;
using testing::KeyType;
using testing::MakeCert;

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

class RecordingRegistrar : public CertificateDeviceRegistrar {
 public:
  absl::StatusOr<reg::Device> RegisterFromCertificate(const CaInfo& ca, absl::string_view device_id,
                                                      absl::string_view /*fingerprint*/) override {
    ++calls;
    reg::Device d;
    d.set_tenant_id(ca.tenant_id);
    d.set_device_id(std::string(device_id));
    d.set_product_key(ca.jit_product_key);
    d.set_status(ca.jit_auto_enable ? reg::DEVICE_STATUS_ENABLED
                                    : reg::DEVICE_STATUS_PENDING_APPROVAL);
    d.mutable_credentials()->set_ca_signed_allowed(true);
    return d;
  }
  int calls = 0;
};

class X509VerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeCert(CertSpec{.cn = "tenant root", .ca = true}, Key(KeyType::kP256).get(), nullptr,
                     nullptr);
    inter_ = MakeCert(CertSpec{.cn = "tenant intermediate", .ca = true, .path_len = 0},
                      Key(KeyType::kP384).get(), root_.get(), Key(KeyType::kP256).get());
    directory_ = std::make_unique<DirectoryCache>(DirectoryCache::Options{});
    AddDevice("device-1", /*ca_signed=*/true, "", "");
    SetCa(reg::CA_STATUS_VERIFIED, "");
    X509CertificateVerifier::Options o;
    o.cas = &cas_;
    o.directory = directory_.get();
    o.registrar = &registrar_;
    o.directory_writer = directory_.get();
    auto v = X509CertificateVerifier::Create(o);
    ASSERT_TRUE(v.ok());
    verifier_ = *std::move(v);
  }

  void AddDevice(const std::string& id, bool ca_signed, const std::string& primary,
                 const std::string& secondary) {
    reg::Device d;
    d.set_tenant_id("t1");
    d.set_device_id(id);
    d.set_product_key("p1");
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->set_ca_signed_allowed(ca_signed);
    d.mutable_credentials()->set_primary_thumbprint(primary);
    d.mutable_credentials()->set_secondary_thumbprint(secondary);
    ASSERT_TRUE(directory_->UpsertDevice(d).ok());
  }

  void SetCa(reg::CaStatus status, const std::string& pattern, bool jit = false) {
    reg::CaCertificate ca;
    ca.set_tenant_id("t1");
    ca.set_id("root");
    ca.set_certificate_pem(testing::Pem(root_.get()));
    ca.set_status(status);
    ca.set_device_id_pattern(pattern);
    ca.set_jit_registration(jit);
    ca.set_jit_product_key("p1");
    ASSERT_TRUE(cas_.UpsertCa(ca).ok());
  }

  // Registers the intermediate as a CA record of t1 with `status`.
  void SetIntermediate(reg::CaStatus status) {
    reg::CaCertificate ca;
    ca.set_tenant_id("t1");
    ca.set_id("inter");
    ca.set_certificate_pem(testing::Pem(inter_.get()));
    ca.set_status(status);
    ASSERT_TRUE(cas_.UpsertCa(ca).ok());
  }

  // Uploads a CRL for the registered CA `ca_id` ("root" or "inter"), signed with its
  // key, revoking `serials`, issued at `this_update` and due an hour after kNow.
  void SetCrl(const std::string& ca_id, const std::vector<long>& serials,
              absl::Time this_update = kNow - absl::Hours(1)) {
    const bool root = ca_id == "root";
    reg::CertificateRevocationList crl;
    crl.set_tenant_id("t1");
    crl.set_ca_id(ca_id);
    crl.set_crl_pem(testing::MakeCrlPem(root ? root_.get() : inter_.get(),
                                        Key(root ? KeyType::kP256 : KeyType::kP384).get(), serials,
                                        this_update, kNow + absl::Hours(1)));
    ASSERT_TRUE(cas_.UpsertCrl(crl).ok());
  }

  // Leaf signed by the intermediate; returns {leaf DER, intermediate PEM}.
  std::vector<std::string> Chain(CertSpec spec) {
    if (spec.eku.empty()) spec.eku = "clientAuth";
    X509Ptr leaf =
        MakeCert(spec, Key(KeyType::kP256).get(), inter_.get(), Key(KeyType::kP384).get());
    leaf_ = testing::Parsed(leaf.get());
    return {testing::Der(leaf.get()), testing::Pem(inter_.get())};
  }

  CertificateVerifier::Result Verify(const std::vector<std::string>& chain,
                                     absl::string_view hint = "t1", absl::Time now = kNow) {
    std::vector<absl::string_view> views(chain.begin(), chain.end());
    return verifier_->Verify(views, hint, now);
  }

  X509Ptr root_, inter_;
  CertPtr leaf_;
  CaDirectory cas_;
  RecordingRegistrar registrar_;
  std::unique_ptr<DirectoryCache> directory_;
  std::unique_ptr<X509CertificateVerifier> verifier_;
};

TEST_F(X509VerifierTest, CaSignedByCommonName) {
  auto r = Verify(Chain({.cn = "device-1"}));
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.detail;
  EXPECT_EQ(r.tenant_id, "t1");
  EXPECT_EQ(r.device_id, "device-1");
  EXPECT_EQ(r.credential_type, reg::CREDENTIAL_TYPE_X509_CA);
  EXPECT_EQ(r.fingerprint, "x509:sha256:" + leaf_->fingerprint_hex());
  EXPECT_EQ(r.not_after, leaf_->not_after());
  EXPECT_EQ(r.cert_cn, "device-1");
}

TEST_F(X509VerifierTest, ResolvesTenantWithoutHint) {
  auto r = Verify(Chain({.cn = "device-1"}), "");
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.detail;
  EXPECT_EQ(r.tenant_id, "t1");
}

TEST_F(X509VerifierTest, OneWrongPropertyPerRow) {
  struct Row {
    const char* name;
    CertSpec spec;
    DenyReason want;
  };
  const Row rows[] = {
      {"unknown device", {.cn = "device-404"}, v1::DENY_REASON_UNKNOWN_DEVICE},
      {"no CN", {.cn = "", .org = "Acme"}, v1::DENY_REASON_IDENTITY_MISMATCH},
      {"expired",
       {.cn = "device-1", .not_after = kNow - absl::Seconds(1)},
       v1::DENY_REASON_EXPIRED},
      {"server auth", {.cn = "device-1", .eku = "serverAuth"}, v1::DENY_REASON_WRONG_KEY_USAGE},
      {"sha1", {.cn = "device-1", .md = EVP_sha1()}, v1::DENY_REASON_WEAK_ALGORITHM},
  };
  for (const Row& row : rows) {
    auto r = Verify(Chain(row.spec));
    EXPECT_EQ(r.verdict.reason, row.want)
        << row.name << ": " << v1::DenyReason_Name(r.verdict.reason) << " " << r.verdict.detail;
  }
}

TEST_F(X509VerifierTest, DeviceMustAllowCaSigned) {
  AddDevice("device-2", /*ca_signed=*/false, "", "");
  auto r = Verify(Chain({.cn = "device-2"}));
  EXPECT_EQ(r.verdict.reason, v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED);
}

TEST_F(X509VerifierTest, UntrustedWhenCaUnverifiedDisabledOrOtherTenant) {
  auto chain = Chain({.cn = "device-1"});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  SetCa(reg::CA_STATUS_DISABLED, "");
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  SetCa(reg::CA_STATUS_UNVERIFIED, "");
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  SetCa(reg::CA_STATUS_VERIFIED, "");
  EXPECT_TRUE(Verify(chain).verdict.ok());
  EXPECT_EQ(Verify(chain, "t2").verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  cas_.RemoveCa("t1", "root");
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
}

TEST_F(X509VerifierTest, SanPattern) {
  SetCa(reg::CA_STATUS_VERIFIED, "urn:dev:{tenant}:{device}");
  auto ok = Verify(Chain({.cn = "ignored", .san = "URI:urn:dev:t1:device-1"}));
  ASSERT_TRUE(ok.verdict.ok()) << ok.verdict.detail;
  EXPECT_EQ(ok.device_id, "device-1");
  EXPECT_EQ(Verify(Chain({.cn = "device-1", .san = "URI:urn:dev:t9:device-1"})).verdict.reason,
            v1::DENY_REASON_IDENTITY_MISMATCH);
  EXPECT_EQ(Verify(Chain({.cn = "device-1"})).verdict.reason, v1::DENY_REASON_IDENTITY_MISMATCH);
}

TEST(MatchDevicePatternTest, Cases) {
  std::string d;
  EXPECT_TRUE(MatchDevicePattern("urn:dev:{tenant}:{device}", "urn:dev:t1:abc", "t1", &d));
  EXPECT_EQ(d, "abc");
  EXPECT_TRUE(MatchDevicePattern("{device}.{tenant}.example", "d-9.t1.example", "t1", &d));
  EXPECT_EQ(d, "d-9");
  EXPECT_FALSE(MatchDevicePattern("urn:dev:{tenant}:{device}", "urn:dev:t2:abc", "t1", &d));
  EXPECT_FALSE(MatchDevicePattern("urn:dev:{tenant}:{device}", "urn:dev:t1:", "t1", &d));
  EXPECT_FALSE(MatchDevicePattern("urn:{device}", "urx:a", "t1", &d));
  EXPECT_FALSE(MatchDevicePattern("urn:static", "urn:static", "t1", &d));
}

TEST_F(X509VerifierTest, RevocationByFingerprintAndIssuerSerialBeatsTheCache) {
  auto chain = Chain({.cn = "device-1", .serial = 0x1234});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  EXPECT_TRUE(Verify(chain).verdict.ok());
  EXPECT_GE(verifier_->stats().result_hits, 1u);
  reg::CertificateRevocation rv;
  rv.set_tenant_id("t1");
  rv.set_id("r1");
  rv.set_fingerprint(leaf_->fingerprint_hex());
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  cas_.RemoveRevocation("t1", "r1");
  EXPECT_TRUE(Verify(chain).verdict.ok());
  rv.clear_fingerprint();
  rv.set_issuer_fingerprint(testing::Parsed(inter_.get())->fingerprint_hex());
  rv.set_serial_hex("0x001234");
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
}

TEST_F(X509VerifierTest, CachesOfSizeZeroAreOff) {
  X509CertificateVerifier::Options o;
  o.cas = &cas_;
  o.directory = directory_.get();
  o.config.parsed_cache_capacity = 0;
  o.config.result_cache_capacity = 0;
  auto uncached = X509CertificateVerifier::Create(o);
  ASSERT_TRUE(uncached.ok());
  auto chain = Chain({.cn = "device-1"});
  std::vector<absl::string_view> views(chain.begin(), chain.end());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*uncached)->Verify(views, "t1", kNow).verdict.ok());
  EXPECT_EQ((*uncached)->stats().result_hits, 0u);
  EXPECT_EQ((*uncached)->stats().parse_hits, 0u);
  EXPECT_GE((*uncached)->stats().result_misses, 3u);
}

TEST_F(X509VerifierTest, CrlUploadRevokes) {
  auto chain = Chain({.cn = "device-1", .serial = 77});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  // The CRL is the root's (it revokes the intermediate's serial).
  CertPtr inter = testing::Parsed(inter_.get());
  long serial = std::stol(inter->serial_hex(), nullptr, 16);
  SetCrl("root", {serial});
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  // Past nextUpdate the stale CRL fails closed.
  SetCrl("root", {}, kNow - absl::Hours(2));
  EXPECT_TRUE(Verify(chain).verdict.ok());
  EXPECT_EQ(Verify(chain, "t1", kNow + absl::Hours(2)).verdict.reason, v1::DENY_REASON_REVOKED);
}

TEST_F(X509VerifierTest, AnUnusableCrlDistrustsItsCaInsteadOfDroppingTheRevocations) {
  auto chain = Chain({.cn = "device-1", .serial = 77});
  CertPtr inter = testing::Parsed(inter_.get());
  SetCrl("root", {std::stol(inter->serial_hex(), nullptr, 16)});
  ASSERT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  // A CRL that does not parse (or, from the mirror, cannot be read): the CA is no
  // longer trusted. Dropping the CRL instead accepted the revoked intermediate.
  reg::CertificateRevocationList bad;
  bad.set_tenant_id("t1");
  bad.set_ca_id("root");
  bad.set_crl_pem("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n");
  EXPECT_FALSE(cas_.UpsertCrl(bad).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  // A usable CRL restores it; so does removing the CRL.
  SetCrl("root", {});
  EXPECT_TRUE(Verify(chain).verdict.ok()) << Verify(chain).verdict.detail;
  cas_.MarkCrlUnusable("t1", "root");
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  cas_.RemoveCrl("t1", "root");
  EXPECT_TRUE(Verify(chain).verdict.ok());
}

TEST_F(X509VerifierTest, AVerifiedIntermediateUnderItsVerifiedRootIsStillRevocable) {
  // Both registered and verified: the path must still reach the root, or the root's
  // CRL and a revocation of the intermediate by issuer and serial would not apply.
  SetIntermediate(reg::CA_STATUS_VERIFIED);
  auto chain = Chain({.cn = "device-1", .serial = 78});
  ASSERT_TRUE(Verify(chain).verdict.ok());
  CertPtr inter = testing::Parsed(inter_.get());
  SetCrl("root", {std::stol(inter->serial_hex(), nullptr, 16)});
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  SetCrl("root", {});
  ASSERT_TRUE(Verify(chain).verdict.ok());
  reg::CertificateRevocation rv;
  rv.set_tenant_id("t1");
  rv.set_id("r-inter");
  rv.set_issuer_fingerprint(testing::Parsed(root_.get())->fingerprint_hex());
  rv.set_serial_hex(inter->serial_hex());
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  // With the root not trusted, the verified intermediate anchors the chain alone.
  cas_.RemoveRevocation("t1", "r-inter");
  SetCa(reg::CA_STATUS_UNVERIFIED, "");
  EXPECT_TRUE(Verify(chain).verdict.ok()) << Verify(chain).verdict.detail;
}

TEST_F(X509VerifierTest, CrlOfARegisteredButUnverifiedIntermediateRevokes) {
  // Only the root is trusted; the intermediate is registered (not verified, so not an
  // anchor) just to carry its CRL. Its revocations must still apply.
  auto chain = Chain({.cn = "device-1", .serial = 78});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  SetIntermediate(reg::CA_STATUS_UNVERIFIED);
  SetCrl("inter", {78});
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  EXPECT_TRUE(Verify(Chain({.cn = "device-1", .serial = 79})).verdict.ok());
}

TEST_F(X509VerifierTest, AReencodedSignatureDoesNotEscapeRevocationOrADisabledCa) {
  auto chain = Chain({.cn = "device-1", .serial = 0x4321});
  X509Ptr flipped_leaf = WithEcdsaSignatureVariant(leaf_->x509(), Key(KeyType::kP384).get());
  X509Ptr flipped_inter = WithEcdsaSignatureVariant(inter_.get(), Key(KeyType::kP256).get());
  ASSERT_NE(flipped_leaf, nullptr);
  ASSERT_NE(flipped_inter, nullptr);
  const std::vector<std::string> flipped = {testing::Der(flipped_leaf.get()), chain[1]};
  const std::vector<std::string> via_flipped_inter = {chain[0], testing::Pem(flipped_inter.get())};
  // The attack is real: another DER (another fingerprint), still a valid chain.
  ASSERT_NE(testing::Parsed(flipped_leaf.get())->fingerprint_hex(), leaf_->fingerprint_hex());
  ASSERT_EQ(testing::Parsed(flipped_leaf.get())->tbs_fingerprint_hex(),
            leaf_->tbs_fingerprint_hex());
  ASSERT_TRUE(Verify(flipped).verdict.ok()) << Verify(flipped).verdict.detail;
  ASSERT_TRUE(Verify(via_flipped_inter).verdict.ok());

  reg::CertificateRevocation rv;
  rv.set_tenant_id("t1");
  rv.set_id("r1");
  // Revoked by DER fingerprint: both encodings are refused.
  rv.set_fingerprint(leaf_->fingerprint_hex());
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  EXPECT_EQ(Verify(flipped).verdict.reason, v1::DENY_REASON_REVOKED);
  // ... and by the fingerprint of the flipped one.
  rv.set_fingerprint(testing::Parsed(flipped_leaf.get())->fingerprint_hex());
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_REVOKED);
  // By certificate (the tbs fingerprint alone here).
  rv.clear_fingerprint();
  rv.set_tbs_fingerprint(leaf_->tbs_fingerprint_hex());
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(flipped).verdict.reason, v1::DENY_REASON_REVOKED);
  // By issuer and serial, the issuer presented with a flipped signature.
  rv.clear_tbs_fingerprint();
  rv.set_issuer_fingerprint(testing::Parsed(inter_.get())->fingerprint_hex());
  rv.set_serial_hex("4321");
  SetIntermediate(reg::CA_STATUS_UNVERIFIED);  // registered, so the revocation names it
  ASSERT_TRUE(cas_.UpsertRevocation(rv).ok());
  EXPECT_EQ(Verify(via_flipped_inter).verdict.reason, v1::DENY_REASON_REVOKED);
  cas_.RemoveRevocation("t1", "r1");
  EXPECT_TRUE(Verify(via_flipped_inter).verdict.ok());
  // A disabled intermediate stays disabled with its signature flipped.
  SetIntermediate(reg::CA_STATUS_DISABLED);
  EXPECT_EQ(Verify(via_flipped_inter).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
}

TEST_F(X509VerifierTest, ReportedExpiryIsTheChainsEarliest) {
  // The intermediate expires long before the leaf: the credential ends with it.
  const absl::Time inter_end = kNow + absl::Hours(1);
  inter_ = MakeCert(
      CertSpec{.cn = "tenant intermediate", .ca = true, .path_len = 0, .not_after = inter_end},
      Key(KeyType::kP384).get(), root_.get(), Key(KeyType::kP256).get());
  auto r = Verify(Chain({.cn = "device-1", .not_after = kNow + absl::Hours(24 * 300)}));
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.detail;
  EXPECT_EQ(r.not_after, inter_end);
}

TEST_F(X509VerifierTest, DisabledIntermediateUnderATrustedRootIsRefused) {
  auto chain = Chain({.cn = "device-1"});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  SetIntermediate(reg::CA_STATUS_DISABLED);
  auto r = Verify(chain);  // the cached ALLOW is dropped with the CA change
  EXPECT_EQ(r.verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  EXPECT_NE(r.verdict.detail.find("inter"), std::string::npos);
  SetIntermediate(reg::CA_STATUS_UNVERIFIED);  // merely registered: no effect on trust
  EXPECT_TRUE(Verify(chain).verdict.ok());
}

TEST_F(X509VerifierTest, CachedResultExpiresAtNotAfter) {
  auto chain = Chain({.cn = "device-1", .not_after = kNow + absl::Minutes(1)});
  EXPECT_TRUE(Verify(chain).verdict.ok());
  EXPECT_TRUE(Verify(chain, "t1", kNow + absl::Seconds(30)).verdict.ok());
  EXPECT_EQ(Verify(chain, "t1", kNow + absl::Minutes(2)).verdict.reason, v1::DENY_REASON_EXPIRED);
}

// RFC 5280 4.1.2.5: valid through the notAfter second, inclusive, on both paths
// (OpenSSL's own check calls the exact second expired; the chain verifier mends it).
TEST_F(X509VerifierTest, ValidThroughTheNotAfterSecondOnBothPaths) {
  const absl::Time end = kNow + absl::Minutes(1);
  auto chain = Chain({.cn = "device-1", .not_after = end});
  X509Ptr self = MakeCert(CertSpec{.cn = "device-3", .not_after = end},
                          Key(KeyType::kEd25519).get(), nullptr, nullptr);
  AddDevice("device-3", false, std::string(64, 'a'),
            testing::Parsed(self.get())->fingerprint_hex());
  const std::vector<std::string> self_chain = {testing::Pem(self.get())};
  for (absl::Duration after : {absl::ZeroDuration(), absl::Milliseconds(999)}) {
    auto r = Verify(chain, "t1", end + after);
    EXPECT_TRUE(r.verdict.ok()) << after << ": " << r.verdict.detail;
    auto s = Verify(self_chain, "t1", end + after);
    EXPECT_TRUE(s.verdict.ok()) << after << ": " << s.verdict.detail;
    EXPECT_EQ(s.credential_type, reg::CREDENTIAL_TYPE_X509_SELF_SIGNED);
  }
  EXPECT_EQ(Verify(chain, "t1", end + absl::Seconds(1)).verdict.reason, v1::DENY_REASON_EXPIRED);
  EXPECT_EQ(Verify(self_chain, "t1", end + absl::Seconds(1)).verdict.reason,
            v1::DENY_REASON_EXPIRED);
}

TEST_F(X509VerifierTest, SelfSignedThumbprint) {
  X509Ptr self =
      MakeCert(CertSpec{.cn = "device-3"}, Key(KeyType::kEd25519).get(), nullptr, nullptr);
  CertPtr p = testing::Parsed(self.get());
  std::vector<std::string> chain = {testing::Pem(self.get())};
  AddDevice("device-3", false, std::string(64, 'a'), p->fingerprint_hex());
  auto r = Verify(chain);
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.detail;
  EXPECT_EQ(r.credential_type, reg::CREDENTIAL_TYPE_X509_SELF_SIGNED);
  EXPECT_EQ(r.device_id, "device-3");
  AddDevice("device-3", false, std::string(64, 'a'), std::string(64, 'b'));
  EXPECT_EQ(Verify(chain).verdict.reason, v1::DENY_REASON_UNTRUSTED_ISSUER);
  EXPECT_EQ(Verify(chain, "").verdict.reason, v1::DENY_REASON_UNKNOWN_TENANT);
}

TEST_F(X509VerifierTest, JitRegistration) {
  SetCa(reg::CA_STATUS_VERIFIED, "", /*jit=*/true);
  auto r = Verify(Chain({.cn = "new-device"}));
  ASSERT_TRUE(r.verdict.ok()) << r.verdict.detail;
  EXPECT_EQ(registrar_.calls, 1);
  auto d = directory_->FindDevice("t1", "new-device");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->status, reg::DEVICE_STATUS_PENDING_APPROVAL);
}

TEST_F(X509VerifierTest, HostileInput) {
  EXPECT_EQ(Verify({}).verdict.reason, v1::DENY_REASON_MALFORMED);
  EXPECT_EQ(Verify({"garbage"}).verdict.reason, v1::DENY_REASON_MALFORMED);
  EXPECT_EQ(Verify({std::string(1 << 20, 'A')}).verdict.reason, v1::DENY_REASON_MALFORMED);
  std::vector<std::string> many(50, "x");
  EXPECT_EQ(Verify(many).verdict.reason, v1::DENY_REASON_MALFORMED);
}

}  // namespace
}  // namespace iotauth::identity::x509
