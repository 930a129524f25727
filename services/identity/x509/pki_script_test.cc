// Runs tests/pki/make_test_pki.sh (the openssl-CLI test PKI) at test time and checks
// the exact verdict of X509CertificateVerifier for each certificate it makes: the
// certificates come from a second implementation (the openssl tool, not our
// test_pki.cc), so the verifier is checked against what openssl actually emits.
#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "services/identity/directory_cache.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/certificate.h"
#include "services/identity/x509/x509_certificate_verifier.h"

namespace iotauth::identity::x509 {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

// Inside every normal certificate's window (2024-01-01..2034-01-01) and the CRL's.
const absl::Time kNow =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone());

// One line of the script's manifest.txt.
struct ManifestEntry {
  std::string sha256_hex;
  absl::Time not_before, not_after;
  std::string cn;
};

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

class PkiScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setup_error_ = new std::string();
    pki_ = new std::string(Env("TEST_TMPDIR", "/tmp") + "/pki");
    const std::string script =
        absl::StrCat(Env("TEST_SRCDIR", "."), "/", Env("TEST_WORKSPACE", "iotauth"),
                     "/tests/pki/make_test_pki.sh");
    const std::string cmd = absl::StrCat("bash '", script, "' '", *pki_, "'");
    const absl::Time start = absl::Now();
    const int rc = std::system(cmd.c_str());
    script_duration_ = absl::Now() - start;
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
      *setup_error_ =
          absl::StrCat(cmd, " failed (wait status ", rc, "); its stderr is above in the test log");
      return;
    }
    manifest_ = new std::map<std::string, ManifestEntry>();
    std::ifstream in(*pki_ + "/manifest.txt");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string name;
      std::string fp;
      std::string nb;
      std::string na;
      ManifestEntry e;
      std::string err;
      if (!(fields >> name >> fp >> nb >> na) ||
          !absl::ParseTime("%E4Y%m%d%H%M%SZ", nb, &e.not_before, &err) ||
          !absl::ParseTime("%E4Y%m%d%H%M%SZ", na, &e.not_after, &err)) {
        *setup_error_ = absl::StrCat("bad manifest line: ", line);
        return;
      }
      std::getline(fields >> std::ws, e.cn);
      e.sha256_hex = fp;
      (*manifest_)[name] = e;
    }
    if (manifest_->empty()) *setup_error_ = "manifest.txt is empty or missing";
  }

  static void TearDownTestSuite() {
    std::printf("make_test_pki.sh took %s\n", absl::FormatDuration(script_duration_).c_str());
    delete manifest_;
    delete pki_;
    delete setup_error_;
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_->empty()) << *setup_error_;
    directory_ = std::make_unique<DirectoryCache>(DirectoryCache::Options{});

    // t1 trusts its root and registers its intermediate too: CaDirectory applies a
    // CRL only for a registered CA (TenantTrust keeps CRLs by CA id), so this is the
    // only way the intermediate's CRL takes effect. Chains still carry the intermediate.
    AddCa("t1", "root", "root");
    AddCa("t1", "intermediate", "intermediate");
    reg::CertificateRevocationList crl;
    crl.set_tenant_id("t1");
    crl.set_ca_id("intermediate");
    crl.set_crl_pem(Read("intermediate.crl.pem"));
    ASSERT_TRUE(cas_.UpsertCrl(crl).ok());
    // t2 trusts only the root; the intermediate is path-building material from the
    // presented chain.
    AddCa("t2", "root", "root");

    // Every leaf's CN is an enabled device that accepts CA-signed certificates,
    // except someone-else (unknown) and the self-signed device (pinned).
    for (const auto& [name, e] : *manifest_) {
      if (e.cn.rfind("device-", 0) != 0 || e.cn == "device-self") continue;
      AddDevice("t1", e.cn, /*ca_signed=*/true, "");
      AddDevice("t2", e.cn, /*ca_signed=*/true, "");
    }
    // The verifier normalises thumbprints (colons, case); pin t1's in openssl's
    // `AB:CD:...` form to cover that.
    std::string colon;
    for (char c : Fingerprint("device-self")) {
      if (!colon.empty() && colon.size() % 3 == 2) colon.push_back(':');
      colon.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    AddDevice("t1", "device-self", /*ca_signed=*/false, colon);
    // In t2 device-self is pinned to another certificate's thumbprint.
    AddDevice("t2", "device-self", /*ca_signed=*/false, Fingerprint("device-ec"));

    X509CertificateVerifier::Options o;
    o.cas = &cas_;
    o.directory = directory_.get();
    o.directory_writer = directory_.get();
    // No registrar: no CA enables JIT registration here.
    auto v = X509CertificateVerifier::Create(o);
    ASSERT_TRUE(v.ok()) << v.status();
    verifier_ = *std::move(v);
  }

  static std::string Read(const std::string& file) {
    std::ifstream in(*pki_ + "/" + file, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static std::string Fingerprint(const std::string& name) {
    auto it = manifest_->find(name);
    return it == manifest_->end() ? "" : it->second.sha256_hex;
  }

  void AddCa(const std::string& tenant, const std::string& id, const std::string& file) {
    reg::CaCertificate ca;
    ca.set_tenant_id(tenant);
    ca.set_id(id);
    ca.set_certificate_pem(Read(file + ".pem"));
    ca.set_status(reg::CA_STATUS_VERIFIED);
    ASSERT_TRUE(cas_.UpsertCa(ca).ok()) << tenant << "/" << id;
  }

  void AddDevice(const std::string& tenant, const std::string& id, bool ca_signed,
                 const std::string& primary_thumbprint) {
    reg::Device d;
    d.set_tenant_id(tenant);
    d.set_device_id(id);
    d.set_product_key("p1");
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->set_ca_signed_allowed(ca_signed);
    d.mutable_credentials()->set_primary_thumbprint(primary_thumbprint);
    ASSERT_TRUE(directory_->UpsertDevice(d).ok()) << tenant << "/" << id;
  }

  static std::string* setup_error_;
  static std::string* pki_;
  static std::map<std::string, ManifestEntry>* manifest_;
  static absl::Duration script_duration_;

  CaDirectory cas_;
  std::unique_ptr<DirectoryCache> directory_;
  std::unique_ptr<X509CertificateVerifier> verifier_;
};

std::string* PkiScriptTest::setup_error_ = nullptr;
std::string* PkiScriptTest::pki_ = nullptr;
std::map<std::string, ManifestEntry>* PkiScriptTest::manifest_ = nullptr;
absl::Duration PkiScriptTest::script_duration_;

TEST_F(PkiScriptTest, ManifestMatchesTheParser) {
  for (const auto& [name, e] : *manifest_) {
    SCOPED_TRACE(name);
    auto certs = ParseCertificates(Read(name + ".pem"), ParseLimits{});
    ASSERT_TRUE(certs.ok()) << certs.status();
    ASSERT_EQ(certs->size(), 1u);
    const CertPtr& c = (*certs)[0];
    EXPECT_EQ(c->fingerprint_hex(), e.sha256_hex);
    EXPECT_EQ(c->not_before(), e.not_before);
    EXPECT_EQ(c->not_after(), e.not_after);
    EXPECT_EQ(c->subject_cn(), e.cn);
  }
}

// One row per certificate the script makes; each differs from a good leaf in one
// property. DENY_REASON_UNSPECIFIED means allowed.
TEST_F(PkiScriptTest, ExactReasonPerCase) {
  struct Row {
    const char* name;
    const char* tenant_hint;
    std::vector<std::string> chain;  // files without ".pem", leaf first
    DenyReason want;
    const char* want_device;  // Result::device_id ("" when the chain is refused)
  };
  auto under_inter = [&](const char* leaf) {
    return std::vector<std::string>{leaf, "intermediate"};
  };
  const Row rows[] = {
      {"good EC P-256", "t1", under_inter("device-ec"), v1::DENY_REASON_UNSPECIFIED, "device-ec"},
      {"good RSA-2048", "t1", under_inter("device-rsa"), v1::DENY_REASON_UNSPECIFIED, "device-rsa"},
      {"good EC, no tenant hint", "", under_inter("device-ec"), v1::DENY_REASON_UNSPECIFIED,
       "device-ec"},
      {"good EC, root-only tenant", "t2", under_inter("device-ec"), v1::DENY_REASON_UNSPECIFIED,
       "device-ec"},
      {"expired", "t1", under_inter("expired"), v1::DENY_REASON_EXPIRED, ""},
      {"not yet valid", "t1", under_inter("not-yet-valid"), v1::DENY_REASON_NOT_YET_VALID, ""},
      {"wrong issuer (rogue root)",
       "t1",
       {"wrong-issuer", "rogue-root"},
       v1::DENY_REASON_UNTRUSTED_ISSUER,
       ""},
      {"wrong issuer, leaf alone", "t1", {"wrong-issuer"}, v1::DENY_REASON_UNTRUSTED_ISSUER, ""},
      {"lookalike root (same name, other key)",
       "t1",
       {"lookalike-issuer", "lookalike-root"},
       v1::DENY_REASON_UNTRUSTED_ISSUER,
       ""},
      {"revoked by the intermediate's CRL", "t1", under_inter("revoked"), v1::DENY_REASON_REVOKED,
       ""},
      {"intermediate with CA:FALSE",
       "t1",
       {"ca-false-leaf", "ca-false-intermediate"},
       v1::DENY_REASON_CONSTRAINT_VIOLATED,
       ""},
      {"intermediate with CA:FALSE, root-only tenant",
       "t2",
       {"ca-false-leaf", "ca-false-intermediate"},
       v1::DENY_REASON_CONSTRAINT_VIOLATED,
       ""},
      {"pathlen:0 exceeded",
       "t1",
       {"pathlen-leaf", "sub-intermediate", "intermediate"},
       v1::DENY_REASON_CONSTRAINT_VIOLATED,
       ""},
      {"pathlen:0 exceeded, root-only tenant",
       "t2",
       {"pathlen-leaf", "sub-intermediate", "intermediate"},
       v1::DENY_REASON_CONSTRAINT_VIOLATED,
       ""},
      {"EKU serverAuth only", "t1", under_inter("server-auth"), v1::DENY_REASON_WRONG_KEY_USAGE,
       ""},
      {"SHA-1 signature", "t1", under_inter("sha1"), v1::DENY_REASON_WEAK_ALGORITHM, ""},
      {"RSA-1024 key", "t1", under_inter("rsa-1024"), v1::DENY_REASON_WEAK_ALGORITHM, ""},
      // The verifier has no "expected device" input: a client id that differs from
      // the certificate's device is the Authenticator's IDENTITY_MISMATCH. Here the
      // certificate names a device the tenant does not have.
      {"CN someone-else (not registered)", "t1", under_inter("someone-else"),
       v1::DENY_REASON_UNKNOWN_DEVICE, "someone-else"},
      {"self-signed, pinned thumbprint",
       "t1",
       {"device-self"},
       v1::DENY_REASON_UNSPECIFIED,
       "device-self"},
      // CheckDevice: a thumbprint that is not the device's is UNTRUSTED_ISSUER.
      {"self-signed, device pinned to another thumbprint",
       "t2",
       {"device-self"},
       v1::DENY_REASON_UNTRUSTED_ISSUER,
       "device-self"},
      {"self-signed, no tenant hint", "", {"device-self"}, v1::DENY_REASON_UNKNOWN_TENANT, ""},
  };

  std::string table;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    std::vector<std::string> chain;
    for (const std::string& f : row.chain) chain.push_back(Read(f + ".pem"));
    std::vector<absl::string_view> views(chain.begin(), chain.end());
    const CertificateVerifier::Result r = verifier_->Verify(views, row.tenant_hint, kNow);
    EXPECT_EQ(v1::DenyReason_Name(r.verdict.reason), v1::DenyReason_Name(row.want))
        << r.verdict.detail;
    EXPECT_EQ(r.device_id, row.want_device);
    const std::string& leaf = row.chain[0];
    EXPECT_EQ(r.fingerprint, "x509:sha256:" + Fingerprint(leaf));
    if (row.want == v1::DENY_REASON_UNSPECIFIED) {
      EXPECT_EQ(r.tenant_id, *row.tenant_hint != '\0' ? row.tenant_hint : "t1");
      EXPECT_EQ(r.credential_type, row.chain.size() == 1 ? reg::CREDENTIAL_TYPE_X509_SELF_SIGNED
                                                         : reg::CREDENTIAL_TYPE_X509_CA);
      EXPECT_EQ(r.not_after, manifest_->at(leaf).not_after);
      EXPECT_EQ(r.cert_cn, manifest_->at(leaf).cn);
    }
    absl::StrAppend(&table, "  ", row.name, " [", *row.tenant_hint ? row.tenant_hint : "no hint",
                    "] -> ", v1::DenyReason_Name(r.verdict.reason),
                    r.device_id.empty() ? "" : " device=", r.device_id,
                    r.verdict.detail.empty() ? "" : " (", r.verdict.detail,
                    r.verdict.detail.empty() ? "" : ")", "\n");
  }
  std::printf("case [tenant] -> verdict at %s:\n%s",
              absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", kNow, absl::UTCTimeZone()).c_str(),
              table.c_str());
}

}  // namespace
}  // namespace iotauth::identity::x509
