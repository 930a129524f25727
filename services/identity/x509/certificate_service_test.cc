#include "services/identity/x509/certificate_service.h"

#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/identity/directory_cache.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/test_pki.h"
#include "services/identity/x509/x509_certificate_verifier.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/test_store.h"
#include "services/registry/validation.h"

namespace iotauth::identity::x509 {
namespace {

namespace iv1 = ::iotauth::identity::v1;
namespace rv1 = ::iotauth::registry::v1;
using ::iotauth::registry::ReasonOf;
using ::iotauth::registry::Secrets;
using testing::CertSpec;
using testing::KeyPtr;
using testing::KeyType;
using testing::MakeCert;
using testing::NewKey;

class RecordingSink final : public audit::AuditSink {
 public:
  void Record(audit::v1::AuditEvent&& e) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(e));
  }
  std::vector<audit::v1::AuditEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<audit::v1::AuditEvent> events_;
};

class FixedResolver final : public CallerResolver {
 public:
  Caller Resolve(const grpc::ServerContextBase& /*context*/) const override {
    absl::MutexLock lock(&mu_);
    return caller_;
  }
  void Set(uint32_t roles) {
    absl::MutexLock lock(&mu_);
    caller_.authenticated = true;
    caller_.principal = "ops@example";
    caller_.roles = roles;
  }

 private:
  mutable absl::Mutex mu_;
  Caller caller_;
};

Caller WithRoles(uint32_t roles) {
  Caller c;
  c.authenticated = true;
  c.principal = "test";
  c.roles = roles;
  return c;
}
const Caller kAdmin = WithRoles(static_cast<uint32_t>(Role::kAdmin));
const Caller kGateway = WithRoles(static_cast<uint32_t>(Role::kGateway));
const Caller kReader = WithRoles(static_cast<uint32_t>(Role::kReader));

// A CSR whose embedded public key is `claimed` but which is signed by `signer`
// (fails X509_REQ_verify).
std::string CsrWithForeignSignature(const std::string& cn, EVP_PKEY* claimed, EVP_PKEY* signer) {
  X509_REQ* req = X509_REQ_new();
  X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req, claimed);
  X509_REQ_sign(req, signer, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, req);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_REQ_free(req);
  return out;
}

std::string CsrDer(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_REQ* req = PEM_read_bio_X509_REQ(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  unsigned char* der = nullptr;
  int len = i2d_X509_REQ(req, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  X509_REQ_free(req);
  return out;
}

std::string SignSha256(EVP_PKEY* key, const std::string& data) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const EVP_MD* md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  EVP_DigestSignInit(ctx, nullptr, md, nullptr, key);
  size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                 data.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(data.data()), data.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  return sig;
}

class CertificateServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ::iotauth::registry::testing::OpenTestStore(&clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);

    rv1::Tenant t;
    t.set_id("t1");
    ASSERT_TRUE(store_->CreateTenant(t).ok());
    t.set_id("t2");
    ASSERT_TRUE(store_->CreateTenant(t).ok());
    rv1::Product p;
    p.set_tenant_id("t1");
    p.set_product_key("p1");
    ASSERT_TRUE(store_->CreateProduct(p).ok());
    AddDevice("device-1", true);
    AddDevice("no-ca", false);

    resolver_.Set(static_cast<uint32_t>(Role::kAdmin));
    auto svc = CertificateService::Create(ServiceOptions());
    ASSERT_TRUE(svc.ok()) << svc.status();
    svc_ = std::move(*svc);
  }

  // The fixture's collaborators.
  CertificateService::Options ServiceOptions() {
    CertificateService::Options o;
    o.store = store_.get();
    o.clock = &clock_;
    o.audit = &audit_;
    o.caller_resolver = &resolver_;
    return o;
  }

  void AddDevice(const std::string& id, bool ca_signed) {
    rv1::Device d;
    d.set_tenant_id("t1");
    d.set_device_id(id);
    d.set_product_key("p1");
    d.set_status(rv1::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->set_ca_signed_allowed(ca_signed);
    ASSERT_TRUE(store_->CreateDevice(d).ok());
  }

  // Registers `cert` as the registry's CreateCaCertificate would: unverified, with
  // a verification code.
  rv1::CaCertificate RegisterCa(X509* cert, const std::string& code) {
    CertPtr parsed = testing::Parsed(cert);
    rv1::CaCertificate ca;
    ca.set_tenant_id("t1");
    ca.set_id(absl::StrCat("ca-", parsed->fingerprint_hex().substr(0, 24)));
    ca.set_certificate_pem(testing::Pem(cert));
    ca.set_sha256_fingerprint(parsed->fingerprint_hex());
    ca.set_subject(parsed->subject());
    ca.set_status(rv1::CA_STATUS_UNVERIFIED);
    ca.set_verification_code(code);
    auto created = store_->CreateCaCertificate(ca);
    EXPECT_TRUE(created.ok()) << created.status();
    return *created;
  }

  absl::StatusOr<rv1::CaCertificate> Verify(const rv1::CaCertificate& ca, const std::string& pem) {
    iv1::VerifyCaPossessionRequest req;
    req.set_tenant_id("t1");
    req.set_ca_id(ca.id());
    req.set_verification_certificate(pem);
    return svc_->DoVerifyCaPossession(kAdmin, req);
  }

  rv1::CaCertificate GenerateIssuingCa() {
    iv1::CreateIssuingCaRequest req;
    req.set_tenant_id("t1");
    req.mutable_generate();
    auto ca = svc_->DoCreateIssuingCa(kAdmin, req);
    EXPECT_TRUE(ca.ok()) << ca.status();
    return ca.ok() ? *ca : rv1::CaCertificate();
  }

  absl::StatusOr<iv1::IssuedCertificate> Issue(const std::string& device, const std::string& csr) {
    iv1::IssueCertificateRequest req;
    req.set_tenant_id("t1");
    req.set_device_id(device);
    req.set_csr(csr);
    return svc_->DoIssueCertificate(kAdmin, req);
  }

  // A verifier over the registry's current CAs and revocations (what the identity
  // mirror feeds), and a directory holding device-1.
  CertificateVerifier::Result VerifyDevice(const std::vector<std::string>& chain) {
    CaDirectory cas;
    auto list = store_->ListCaCertificates("t1", ::iotauth::registry::PageRequest{100, ""});
    EXPECT_TRUE(list.ok());
    for (const auto& c : list->items) EXPECT_TRUE(cas.UpsertCa(c).ok());
    auto revs = store_->ListRevocations("t1", ::iotauth::registry::PageRequest{100, ""});
    for (const auto& r : revs->items) EXPECT_TRUE(cas.UpsertRevocation(r).ok());
    auto crls = store_->ListCrls("t1", ::iotauth::registry::PageRequest{100, ""});
    for (const auto& c : crls->items) EXPECT_TRUE(cas.UpsertCrl(c).ok());
    DirectoryCache directory(DirectoryCache::Options{});
    rv1::Device d = *store_->GetDevice("t1", "device-1", Secrets::kOmit);
    EXPECT_TRUE(directory.UpsertDevice(d).ok());
    X509CertificateVerifier::Options o;
    o.cas = &cas;
    o.directory = &directory;
    auto v = X509CertificateVerifier::Create(o);
    EXPECT_TRUE(v.ok());
    std::vector<absl::string_view> views(chain.begin(), chain.end());
    return (*v)->Verify(views, "t1", clock_.Now());
  }

  std::vector<std::string> EventsSince(int64_t cursor) {
    std::vector<std::string> out;
    auto batch = store_->ReadChanges(cursor, 100, "t1");
    EXPECT_TRUE(batch.ok());
    for (const auto& e : batch->events) {
      out.push_back(absl::StrCat(rv1::ChangeType_Name(e.type()), "/",
                                 rv1::ResourceType_Name(e.resource_type()), "/", e.resource_id()));
    }
    return out;
  }

  FakeClock clock_;
  RecordingSink audit_;
  FixedResolver resolver_;
  std::unique_ptr<::iotauth::registry::SqliteStore> store_;
  std::unique_ptr<CertificateService> svc_;
};

TEST_F(CertificateServiceTest, CreateRejectsMissingCollaboratorsAndBadConfig) {
  CertificateService::Options o;
  EXPECT_FALSE(CertificateService::Create(o).ok());
  o.store = store_.get();
  o.clock = &clock_;
  o.audit = &audit_;
  o.caller_resolver = &resolver_;
  EXPECT_TRUE(CertificateService::Create(o).ok());
  o.config.default_validity = absl::Hours(24 * 400);  // above max_validity
  EXPECT_FALSE(CertificateService::Create(o).ok());
}

TEST_F(CertificateServiceTest, ProofOfPossessionFlow) {
  KeyPtr ca_key = NewKey(KeyType::kP256);
  X509Ptr root =
      MakeCert(CertSpec{.cn = "Tenant Root", .ca = true}, ca_key.get(), nullptr, nullptr);
  rv1::CaCertificate ca = RegisterCa(root.get(), "code-0001");
  int64_t cursor = store_->LatestCursor();
  KeyPtr leaf_key = NewKey(KeyType::kP256);

  // Wrong CN, signed by the CA's key.
  X509Ptr wrong_cn =
      MakeCert(CertSpec{.cn = "not-the-code"}, leaf_key.get(), root.get(), ca_key.get());
  auto r = Verify(ca, testing::Pem(wrong_cn.get()));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(r.status()), "POSSESSION_NOT_PROVEN");
  // Right CN, signed by another key (same issuer name).
  KeyPtr other_key = NewKey(KeyType::kP256);
  X509Ptr wrong_signer =
      MakeCert(CertSpec{.cn = "code-0001"}, leaf_key.get(), root.get(), other_key.get());
  r = Verify(ca, testing::Pem(wrong_signer.get()));
  EXPECT_EQ(ReasonOf(r.status()), "POSSESSION_NOT_PROVEN");
  // Garbage.
  EXPECT_EQ(Verify(ca, "not a certificate").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetCaCertificate("t1", ca.id())->status(), rv1::CA_STATUS_UNVERIFIED);

  // A new code invalidates the old one.
  iv1::RegenerateVerificationCodeRequest regen;
  regen.set_tenant_id("t1");
  regen.set_ca_id(ca.id());
  auto regenerated = svc_->DoRegenerateVerificationCode(kAdmin, regen);
  ASSERT_TRUE(regenerated.ok()) << regenerated.status();
  ASSERT_EQ(regenerated->verification_code().size(), 32u);
  X509Ptr old_code =
      MakeCert(CertSpec{.cn = "code-0001"}, leaf_key.get(), root.get(), ca_key.get());
  EXPECT_EQ(ReasonOf(Verify(ca, testing::Pem(old_code.get())).status()), "POSSESSION_NOT_PROVEN");

  // The proof: CN = current code, signed by the CA's key (DER accepted too).
  X509Ptr proof = MakeCert(CertSpec{.cn = regenerated->verification_code()}, leaf_key.get(),
                           root.get(), ca_key.get());
  iv1::VerifyCaPossessionRequest req;
  req.set_tenant_id("t1");
  req.set_ca_id(ca.id());
  req.set_verification_certificate(testing::Der(proof.get()));
  EXPECT_EQ(svc_->DoVerifyCaPossession(kReader, req).status().code(),
            absl::StatusCode::kPermissionDenied);
  grpc::ServerContext ctx;
  rv1::CaCertificate verified;
  ASSERT_TRUE(svc_->VerifyCaPossession(&ctx, &req, &verified).ok());
  EXPECT_EQ(verified.status(), rv1::CA_STATUS_VERIFIED);
  EXPECT_TRUE(verified.has_possession_verified_time());
  EXPECT_NE(verified.verification_code(), regenerated->verification_code());  // rotated
  EXPECT_EQ(store_->GetCaCertificate("t1", ca.id())->status(), rv1::CA_STATUS_VERIFIED);
  EXPECT_EQ(EventsSince(cursor),
            (std::vector<std::string>{
                absl::StrCat("CHANGE_TYPE_UPDATED/RESOURCE_TYPE_CA_CERTIFICATE/", ca.id()),
                absl::StrCat("CHANGE_TYPE_ENABLED/RESOURCE_TYPE_CA_CERTIFICATE/", ca.id())}));
  auto events = audit_.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type(), audit::v1::EVENT_TYPE_ISSUANCE);
  EXPECT_EQ(events.back().reason(), "VerifyCaPossession");
  EXPECT_EQ(events.back().outcome(), audit::v1::OUTCOME_SUCCESS);

  // A disabled CA is not re-verified behind the operator's back.
  rv1::CaCertificate disabled = verified;
  disabled.set_status(rv1::CA_STATUS_DISABLED);
  ASSERT_TRUE(store_->UpdateCaCertificate(disabled, "").ok());
  EXPECT_EQ(ReasonOf(svc_->DoVerifyCaPossession(kAdmin, req).status()), "CA_DISABLED");
}

TEST_F(CertificateServiceTest, IssuingCaIsGeneratedOnceAndRegisteredVerified) {
  int64_t cursor = store_->LatestCursor();
  grpc::ServerContext ctx;
  iv1::CreateIssuingCaRequest req;
  req.set_tenant_id("t1");
  req.mutable_generate()->set_common_name("Acme devices CA");
  rv1::CaCertificate ca;
  ASSERT_TRUE(svc_->CreateIssuingCa(&ctx, &req, &ca).ok());
  EXPECT_TRUE(ca.issuing());
  EXPECT_EQ(ca.status(), rv1::CA_STATUS_VERIFIED);
  EXPECT_EQ(ca.subject(), "CN=Acme devices CA");
  EXPECT_EQ(ca.not_after().seconds(), 1700000000 + 5 * 365 * 24 * 3600);
  auto issuing = store_->GetIssuingCa("t1", Secrets::kInclude);
  ASSERT_TRUE(issuing.ok());
  EXPECT_TRUE(issuing->generated());
  EXPECT_EQ(issuing->ca_id(), ca.id());
  EXPECT_TRUE(absl::StartsWith(issuing->private_key_pem(), "-----BEGIN PRIVATE KEY-----"));
  EXPECT_EQ(EventsSince(cursor),
            (std::vector<std::string>{
                absl::StrCat("CHANGE_TYPE_CREATED/RESOURCE_TYPE_CA_CERTIFICATE/", ca.id()),
                absl::StrCat("CHANGE_TYPE_CREATED/RESOURCE_TYPE_ISSUING_CA/", ca.id())}));
  grpc::ServerContext ctx2;
  EXPECT_EQ(svc_->CreateIssuingCa(&ctx2, &req, &ca).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // The key never reaches the audit log.
  std::string key_body = issuing->private_key_pem().substr(28, 40);
  for (const auto& e : audit_.events()) {
    std::string bytes = e.SerializeAsString();
    EXPECT_EQ(bytes.find(key_body), std::string::npos);
    EXPECT_EQ(bytes.find("PRIVATE KEY"), std::string::npos);
  }
}

TEST_F(CertificateServiceTest, RefusedWhileTheAuditLogCannotRecordIt) {
  audit::AuditGate gate;
  CertificateService::Options o = ServiceOptions();
  o.audit_gate = &gate;
  auto svc = CertificateService::Create(o);
  ASSERT_TRUE(svc.ok()) << svc.status();
  gate.SetWritable(false);
  const int64_t cursor = store_->LatestCursor();
  iv1::CreateIssuingCaRequest req;
  req.set_tenant_id("t1");
  req.mutable_generate()->set_common_name("Acme devices CA");
  rv1::CaCertificate ca;
  {
    grpc::ServerContext ctx;
    const grpc::Status s = (*svc)->CreateIssuingCa(&ctx, &req, &ca);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  // Nothing was made, changed or recorded.
  EXPECT_EQ(store_->GetIssuingCa("t1", Secrets::kOmit).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->LatestCursor(), cursor);
  EXPECT_TRUE(audit_.events().empty());
  EXPECT_EQ(gate.refused(), 1U);
  gate.SetWritable(true);
  grpc::ServerContext ctx;
  ASSERT_TRUE((*svc)->CreateIssuingCa(&ctx, &req, &ca).ok());
  EXPECT_EQ(audit_.events().size(), 1U);
}

TEST_F(CertificateServiceTest, ImportedIssuingCaMustMatchItsKey) {
  KeyPtr key = NewKey(KeyType::kP384);
  X509Ptr cert = MakeCert(CertSpec{.cn = "Imported CA", .ca = true, .path_len = 0}, key.get(),
                          nullptr, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string key_pem(data, static_cast<size_t>(len));
  BIO_free(bio);

  iv1::CreateIssuingCaRequest req;
  req.set_tenant_id("t1");
  req.mutable_import()->set_certificate_pem(testing::Pem(cert.get()));
  req.mutable_import()->set_private_key_pem(
      CsrWithForeignSignature("x", key.get(), key.get()));  // not a key
  EXPECT_EQ(svc_->DoCreateIssuingCa(kAdmin, req).status().code(),
            absl::StatusCode::kInvalidArgument);
  X509Ptr leaf = MakeCert(CertSpec{.cn = "leaf"}, key.get(), nullptr, nullptr);
  req.mutable_import()->set_certificate_pem(testing::Pem(leaf.get()));
  req.mutable_import()->set_private_key_pem(key_pem);
  EXPECT_EQ(ReasonOf(svc_->DoCreateIssuingCa(kAdmin, req).status()), "INVALID_CERTIFICATE_PEM");
  KeyPtr other = NewKey(KeyType::kP384);
  X509Ptr other_cert = MakeCert(CertSpec{.cn = "Other", .ca = true}, other.get(), nullptr, nullptr);
  req.mutable_import()->set_certificate_pem(testing::Pem(other_cert.get()));
  EXPECT_EQ(ReasonOf(svc_->DoCreateIssuingCa(kAdmin, req).status()), "INVALID_PRIVATE_KEY_PEM");

  req.mutable_import()->set_certificate_pem(testing::Pem(cert.get()));
  auto ca = svc_->DoCreateIssuingCa(kAdmin, req);
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_FALSE(store_->GetIssuingCa("t1", Secrets::kOmit)->generated());
  // Devices get certificates signed by the imported key (P-384 -> SHA-384).
  KeyPtr device_key = NewKey(KeyType::kP256);
  auto issued = Issue("device-1", testing::MakeCsrPem("device-1", device_key.get()));
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_TRUE(VerifyDevice({issued->certificate_pem()}).verdict.ok());
}

TEST_F(CertificateServiceTest, IssuanceChecksCsrSubjectAndDevice) {
  KeyPtr device_key = NewKey(KeyType::kP256);
  // No issuing CA yet.
  EXPECT_EQ(ReasonOf(Issue("device-1", testing::MakeCsrPem("device-1", device_key.get())).status()),
            "NO_ISSUING_CA");
  rv1::CaCertificate ca = GenerateIssuingCa();

  KeyPtr other_key = NewKey(KeyType::kP256);
  auto bad_sig =
      Issue("device-1", CsrWithForeignSignature("device-1", device_key.get(), other_key.get()));
  EXPECT_EQ(bad_sig.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(bad_sig.status()), "BAD_CSR_SIGNATURE");
  EXPECT_EQ(ReasonOf(Issue("device-1", testing::MakeCsrPem("device-2", device_key.get())).status()),
            "SUBJECT_MISMATCH");
  EXPECT_EQ(ReasonOf(Issue("ghost", testing::MakeCsrPem("ghost", device_key.get())).status()),
            "UNKNOWN_DEVICE");
  EXPECT_EQ(ReasonOf(Issue("no-ca", testing::MakeCsrPem("no-ca", device_key.get())).status()),
            "CA_SIGNED_NOT_ALLOWED");
  EXPECT_EQ(ReasonOf(Issue("device-1",
                           testing::MakeCsrPem("device-1", testing::Key(KeyType::kRsa1024).get()))
                         .status()),
            "WEAK_ALGORITHM");
  EXPECT_EQ(Issue("device-1", "garbage").status().code(), absl::StatusCode::kInvalidArgument);
  iv1::IssueCertificateRequest too_long;
  too_long.set_tenant_id("t1");
  too_long.set_device_id("device-1");
  too_long.set_csr(testing::MakeCsrPem("device-1", device_key.get()));
  too_long.mutable_validity()->set_seconds(400LL * 24 * 3600);
  EXPECT_EQ(ReasonOf(svc_->DoIssueCertificate(kAdmin, too_long).status()), "INVALID_VALIDITY");
  EXPECT_EQ(svc_->DoIssueCertificate(kGateway, too_long).status().code(),
            absl::StatusCode::kPermissionDenied);

  // DER CSR, through the gRPC handler (audited).
  iv1::IssueCertificateRequest req;
  req.set_tenant_id("t1");
  req.set_device_id("device-1");
  req.set_csr(CsrDer(testing::MakeCsrPem("device-1", device_key.get())));
  grpc::ServerContext ctx;
  iv1::IssuedCertificate issued;
  ASSERT_TRUE(svc_->IssueCertificate(&ctx, &req, &issued).ok());
  EXPECT_EQ(issued.device_id(), "device-1");
  EXPECT_EQ(issued.issuer_pem(), ca.certificate_pem());
  EXPECT_EQ(issued.not_after().seconds(), 1700000000 + 30 * 24 * 3600);  // default 30 days
  EXPECT_EQ(issued.not_before().seconds(), 1700000000 - 300);
  CertPtr leaf = *ParseCertificates(issued.certificate_pem(), ParseLimits{})->begin();
  EXPECT_EQ(leaf->subject(), "CN=device-1");
  EXPECT_EQ(leaf->serial_hex(), issued.serial_hex());
  EXPECT_EQ(leaf->fingerprint_hex(), issued.fingerprint());
  EXPECT_FALSE(leaf->is_ca());
  EXPECT_EQ(X509_get_extended_key_usage(leaf->x509()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  EXPECT_EQ(X509_get_key_usage(leaf->x509()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_GE(issued.serial_hex().size(), 30u);  // random, ~127 bits

  // The issued certificate authenticates through the verifier fed with the stored CAs.
  auto result = VerifyDevice({issued.certificate_pem()});
  ASSERT_TRUE(result.verdict.ok()) << result.verdict.detail;
  EXPECT_EQ(result.device_id, "device-1");
  EXPECT_EQ(result.credential_type, rv1::CREDENTIAL_TYPE_X509_CA);

  auto events = audit_.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type(), audit::v1::EVENT_TYPE_ISSUANCE);
  EXPECT_EQ(events.back().device_id(), "device-1");
  EXPECT_EQ(events.back().credential_fingerprint(), "x509:sha256:" + issued.fingerprint());
  EXPECT_EQ(events.back().attributes().at("serial_hex"), issued.serial_hex());

  // Disabling the issuing CA stops issuance.
  rv1::CaCertificate disabled = *store_->GetCaCertificate("t1", ca.id());
  disabled.set_status(rv1::CA_STATUS_DISABLED);
  ASSERT_TRUE(store_->UpdateCaCertificate(disabled, "").ok());
  EXPECT_EQ(ReasonOf(Issue("device-1", testing::MakeCsrPem("device-1", device_key.get())).status()),
            "ISSUING_CA_UNAVAILABLE");
}

TEST_F(CertificateServiceTest, RenewalNeedsAValidCurrentCertificateAndItsKey) {
  GenerateIssuingCa();
  KeyPtr k1 = NewKey(KeyType::kP256);
  auto current = Issue("device-1", testing::MakeCsrPem("device-1", k1.get()));
  ASSERT_TRUE(current.ok()) << current.status();
  KeyPtr k2 = NewKey(KeyType::kEd25519);
  std::string csr = testing::MakeCsrPem("device-1", k2.get());

  iv1::RenewCertificateRequest req;
  req.set_tenant_id("t1");
  req.add_current_chain(current->certificate_pem());
  req.set_csr(csr);
  req.set_current_key_signature(SignSha256(k2.get(), CsrDer(csr)));  // wrong key
  EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, req).status()), "BAD_KEY_SIGNATURE");
  req.set_current_key_signature(SignSha256(k1.get(), CsrDer(csr)));
  EXPECT_EQ(svc_->DoRenewCertificate(kReader, req).status().code(),
            absl::StatusCode::kPermissionDenied);
  clock_.Advance(absl::Hours(24 * 20));
  auto renewed = svc_->DoRenewCertificate(kGateway, req);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->device_id(), "device-1");
  EXPECT_NE(renewed->serial_hex(), current->serial_hex());
  EXPECT_TRUE(VerifyDevice({renewed->certificate_pem()}).verdict.ok());

  // A CSR naming another device is refused.
  std::string other = testing::MakeCsrPem("no-ca", k2.get());
  iv1::RenewCertificateRequest wrong = req;
  wrong.set_csr(other);
  wrong.set_current_key_signature(SignSha256(k1.get(), CsrDer(other)));
  EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, wrong).status()), "SUBJECT_MISMATCH");

  // Revoked, then expired, current certificates are refused.
  iv1::RevokeCertificateRequest revoke;
  revoke.set_tenant_id("t1");
  revoke.set_fingerprint(current->fingerprint());
  ASSERT_TRUE(svc_->DoRevokeCertificate(kAdmin, revoke).ok());
  EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, req).status()),
            "CURRENT_CERTIFICATE_INVALID");
  {
    // ... in either encoding of its ECDSA signature ((r, n - s) needs no key).
    CertPtr cur = *ParseCertificates(current->certificate_pem(), ParseLimits{})->begin();
    CertPtr issuer = *ParseCertificates(current->issuer_pem(), ParseLimits{})->begin();
    X509Ptr flipped = WithEcdsaSignatureVariant(cur->x509(), X509_get0_pubkey(issuer->x509()));
    ASSERT_NE(flipped, nullptr);
    ASSERT_NE(testing::Parsed(flipped.get())->fingerprint_hex(), cur->fingerprint_hex());
    iv1::RenewCertificateRequest flipped_req = req;
    flipped_req.set_current_chain(0, testing::Pem(flipped.get()));
    EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, flipped_req).status()),
              "CURRENT_CERTIFICATE_INVALID");
  }
  iv1::RenewCertificateRequest from_renewed = req;
  from_renewed.set_current_chain(0, renewed->certificate_pem());
  std::string csr3 = testing::MakeCsrPem("device-1", k1.get());
  from_renewed.set_csr(csr3);
  from_renewed.set_current_key_signature(SignSha256(k2.get(), CsrDer(csr3)));  // Ed25519 proof
  ASSERT_TRUE(svc_->DoRenewCertificate(kGateway, from_renewed).ok());
  clock_.Advance(absl::Hours(24 * 31));
  EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, from_renewed).status()),
            "CURRENT_CERTIFICATE_INVALID");
  // A chain from an unregistered CA is refused.
  X509Ptr rogue = MakeCert(CertSpec{.cn = "device-1"}, k1.get(), nullptr, nullptr);
  from_renewed.set_current_chain(0, testing::Pem(rogue.get()));
  EXPECT_EQ(ReasonOf(svc_->DoRenewCertificate(kGateway, from_renewed).status()),
            "CURRENT_CERTIFICATE_INVALID");
}

// Renewal names the device by Authenticate's rule (the closest registered CA above
// the leaf), not by the anchor's: a leaf whose CN and SAN name different devices
// renews only into the device it authenticates as.
TEST_F(CertificateServiceTest, RenewalNamesTheDeviceAsAuthenticateDoes) {
  GenerateIssuingCa();
  KeyPtr root_key = NewKey(KeyType::kP256);
  X509Ptr root =
      MakeCert(CertSpec{.cn = "Renewal Root", .ca = true}, root_key.get(), nullptr, nullptr);
  KeyPtr mid_key = NewKey(KeyType::kP256);
  X509Ptr mid = MakeCert(CertSpec{.cn = "Renewal Intermediate", .ca = true}, mid_key.get(),
                         root.get(), root_key.get());
  rv1::CaCertificate root_ca = RegisterCa(root.get(), "code-r");
  root_ca.set_status(rv1::CA_STATUS_VERIFIED);
  ASSERT_TRUE(store_->UpdateCaCertificate(root_ca, "").ok());
  rv1::CaCertificate mid_ca = RegisterCa(mid.get(), "code-m");
  mid_ca.set_status(rv1::CA_STATUS_VERIFIED);
  mid_ca.set_device_id_pattern("urn:dev:{device}");
  ASSERT_TRUE(store_->UpdateCaCertificate(mid_ca, "").ok());
  KeyPtr leaf_key = NewKey(KeyType::kP256);
  X509Ptr leaf =
      MakeCert(CertSpec{.cn = "victim", .eku = "clientAuth", .san = "URI:urn:dev:attacker"},
               leaf_key.get(), mid.get(), mid_key.get());
  AddDevice("attacker", true);
  EXPECT_EQ(VerifyDevice({testing::Pem(leaf.get()), testing::Pem(mid.get())}).device_id,
            "attacker");

  auto renew = [&](const std::string& cn) {
    const std::string csr = testing::MakeCsrPem(cn, leaf_key.get());
    iv1::RenewCertificateRequest req;
    req.set_tenant_id("t1");
    req.add_current_chain(testing::Pem(leaf.get()));
    req.add_current_chain(testing::Pem(mid.get()));
    req.set_csr(csr);
    req.set_current_key_signature(SignSha256(leaf_key.get(), CsrDer(csr)));
    return svc_->DoRenewCertificate(kGateway, req);
  };
  EXPECT_EQ(ReasonOf(renew("victim").status()), "SUBJECT_MISMATCH");
  auto renewed = renew("attacker");
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->device_id(), "attacker");
}

TEST_F(CertificateServiceTest, RevocationReasonInTheAuditIsCutAtACharacterBoundary) {
  GenerateIssuingCa();
  KeyPtr key = NewKey(KeyType::kP256);
  auto issued = Issue("device-1", testing::MakeCsrPem("device-1", key.get()));
  ASSERT_TRUE(issued.ok());
  iv1::RevokeCertificateRequest req;
  req.set_tenant_id("t1");
  req.set_certificate(issued->certificate_pem());
  // Byte 64 is inside the first two-byte character.
  req.set_reason(std::string(63, 'r') + "\xC3\xA9\xC3\xA9");
  grpc::ServerContext ctx;
  rv1::CertificateRevocation rev;
  ASSERT_TRUE(svc_->RevokeCertificate(&ctx, &req, &rev).ok());
  const audit::v1::AuditEvent e = audit_.events().back();
  ASSERT_EQ(e.reason(), "RevokeCertificate");
  ASSERT_EQ(e.attributes().count("revocation_reason"), 1U) << e.DebugString();
  EXPECT_EQ(e.attributes().at("revocation_reason"), std::string(63, 'r'));
  audit::v1::AuditEvent again;
  EXPECT_TRUE(again.ParseFromString(e.SerializeAsString()));
}

TEST_F(CertificateServiceTest, RevocationsAreStoredOnceAndDenyTheCertificate) {
  rv1::CaCertificate ca = GenerateIssuingCa();
  KeyPtr key = NewKey(KeyType::kP256);
  auto issued = Issue("device-1", testing::MakeCsrPem("device-1", key.get()));
  ASSERT_TRUE(issued.ok());
  ASSERT_TRUE(VerifyDevice({issued->certificate_pem()}).verdict.ok());
  int64_t cursor = store_->LatestCursor();

  iv1::RevokeCertificateRequest req;
  req.set_tenant_id("t1");
  req.set_certificate(issued->certificate_pem());
  req.set_reason("keyCompromise");
  req.set_device_id("device-1");
  grpc::ServerContext ctx;
  rv1::CertificateRevocation rev;
  ASSERT_TRUE(svc_->RevokeCertificate(&ctx, &req, &rev).ok());
  EXPECT_EQ(rev.fingerprint(), issued->fingerprint());
  EXPECT_EQ(rev.id(), CertificateService::RevocationIdForFingerprint(issued->fingerprint()));
  EXPECT_EQ(audit_.events().back().type(), audit::v1::EVENT_TYPE_ISSUANCE);
  EXPECT_EQ(audit_.events().back().reason(), "RevokeCertificate");
  // The same certificate by fingerprint (any case) is the same revocation.
  iv1::RevokeCertificateRequest by_fp;
  by_fp.set_tenant_id("t1");
  by_fp.set_fingerprint(absl::AsciiStrToUpper(issued->fingerprint()));
  EXPECT_EQ(svc_->DoRevokeCertificate(kAdmin, by_fp).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto result = VerifyDevice({issued->certificate_pem()});
  EXPECT_EQ(result.verdict.reason, iv1::DENY_REASON_REVOKED);

  // By issuer and serial (0x prefix and leading zeros normalised).
  iv1::RevokeCertificateRequest by_serial;
  by_serial.set_tenant_id("t1");
  by_serial.mutable_issuer_serial()->set_ca_id(ca.id());
  by_serial.mutable_issuer_serial()->set_serial_hex("0x00" +
                                                    absl::AsciiStrToUpper(issued->serial_hex()));
  auto rev2 = svc_->DoRevokeCertificate(kAdmin, by_serial);
  ASSERT_TRUE(rev2.ok()) << rev2.status();
  EXPECT_EQ(rev2->serial_hex(), issued->serial_hex());
  EXPECT_EQ(rev2->issuer_fingerprint(), ca.sha256_fingerprint());
  by_serial.mutable_issuer_serial()->set_serial_hex("xyz");
  EXPECT_EQ(svc_->DoRevokeCertificate(kAdmin, by_serial).status().code(),
            absl::StatusCode::kInvalidArgument);
  by_serial.mutable_issuer_serial()->set_serial_hex("1");
  by_serial.mutable_issuer_serial()->set_ca_id("ca-unknown");
  EXPECT_EQ(ReasonOf(svc_->DoRevokeCertificate(kAdmin, by_serial).status()), "UNKNOWN_CA");
  iv1::RevokeCertificateRequest none;
  none.set_tenant_id("t1");
  EXPECT_EQ(svc_->DoRevokeCertificate(kAdmin, none).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Lifting both revocations makes the certificate authenticate again.
  iv1::DeleteRevocationRequest del;
  del.set_tenant_id("t1");
  del.set_revocation_id(rev.id());
  ASSERT_TRUE(svc_->DoDeleteRevocation(kAdmin, del).ok());
  EXPECT_EQ(VerifyDevice({issued->certificate_pem()}).verdict.reason, iv1::DENY_REASON_REVOKED);
  del.set_revocation_id(rev2->id());
  ASSERT_TRUE(svc_->DoDeleteRevocation(kAdmin, del).ok());
  EXPECT_TRUE(VerifyDevice({issued->certificate_pem()}).verdict.ok());
  EXPECT_EQ(svc_->DoDeleteRevocation(kAdmin, del).code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(EventsSince(cursor),
            (std::vector<std::string>{
                absl::StrCat("CHANGE_TYPE_CREATED/RESOURCE_TYPE_REVOCATION/", rev.id()),
                absl::StrCat("CHANGE_TYPE_CREATED/RESOURCE_TYPE_REVOCATION/", rev2->id()),
                absl::StrCat("CHANGE_TYPE_DELETED/RESOURCE_TYPE_REVOCATION/", rev.id()),
                absl::StrCat("CHANGE_TYPE_DELETED/RESOURCE_TYPE_REVOCATION/", rev2->id())}));
}

TEST_F(CertificateServiceTest, TheCrlSizeLimitHoldsForTheStoredPem) {
  // A DER CRL just under the limit is stored as PEM, a third larger: the limit must
  // hold for what is stored and mirrored, not only for what was sent.
  KeyPtr ca_key = NewKey(KeyType::kP256);
  X509Ptr root = MakeCert(CertSpec{.cn = "Big Root", .ca = true}, ca_key.get(), nullptr, nullptr);
  rv1::CaCertificate ca = RegisterCa(root.get(), "code");
  const absl::Time now = clock_.Now();
  std::vector<long> serials;
  for (long i = 1; i <= 200; ++i) serials.push_back(i);
  const std::string pem =
      testing::MakeCrlPem(root.get(), ca_key.get(), serials, now, now + absl::Hours(24), 1);
  BIO* in = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_CRL* crl = PEM_read_bio_X509_CRL(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  ASSERT_NE(crl, nullptr);
  unsigned char* der_bytes = nullptr;
  const int der_len = i2d_X509_CRL(crl, &der_bytes);
  X509_CRL_free(crl);
  ASSERT_GT(der_len, 0);
  const std::string der(reinterpret_cast<char*>(der_bytes), static_cast<size_t>(der_len));
  OPENSSL_free(der_bytes);

  CertificateService::Options o = ServiceOptions();
  o.config.max_crl_bytes = der.size() + 16;
  auto small = CertificateService::Create(o);
  ASSERT_TRUE(small.ok()) << small.status();
  iv1::UploadCrlRequest req;
  req.set_tenant_id("t1");
  req.set_ca_id(ca.id());
  req.set_crl(der);
  auto stored = (*small)->DoUploadCrl(kAdmin, req);
  EXPECT_EQ(stored.status().code(), absl::StatusCode::kInvalidArgument) << stored.status();
  EXPECT_NE(stored.status().message().find("as PEM"), absl::string_view::npos) << stored.status();
  EXPECT_EQ(store_->GetCrl("t1", ca.id()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CertificateServiceTest, CrlUploadChecksSignerAndOrder) {
  KeyPtr ca_key = NewKey(KeyType::kP256);
  X509Ptr root = MakeCert(CertSpec{.cn = "CRL Root", .ca = true}, ca_key.get(), nullptr, nullptr);
  rv1::CaCertificate ca = RegisterCa(root.get(), "code");
  ca.set_status(rv1::CA_STATUS_VERIFIED);
  ASSERT_TRUE(store_->UpdateCaCertificate(ca, "").ok());
  int64_t cursor = store_->LatestCursor();
  absl::Time now = clock_.Now();

  auto upload = [&](const std::string& crl) {
    iv1::UploadCrlRequest req;
    req.set_tenant_id("t1");
    req.set_ca_id(ca.id());
    req.set_crl(crl);
    return svc_->DoUploadCrl(kAdmin, req);
  };
  std::string crl1 = testing::MakeCrlPem(root.get(), ca_key.get(), {5, 6}, now - absl::Hours(1),
                                         now + absl::Hours(24), 1);
  auto stored = upload(crl1);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->crl_number(), "1");
  EXPECT_EQ(stored->revoked_count(), 2);
  EXPECT_EQ(stored->next_update().seconds(), absl::ToUnixSeconds(now + absl::Hours(24)));
  EXPECT_EQ(ReasonOf(upload(crl1).status()), "CRL_NOT_NEWER");
  KeyPtr other_key = NewKey(KeyType::kP256);
  EXPECT_EQ(ReasonOf(upload(testing::MakeCrlPem(root.get(), other_key.get(), {}, now,
                                                now + absl::Hours(24), 9))
                         .status()),
            "CRL_BAD_SIGNATURE");
  X509Ptr stranger =
      MakeCert(CertSpec{.cn = "Stranger", .ca = true}, other_key.get(), nullptr, nullptr);
  EXPECT_EQ(ReasonOf(upload(testing::MakeCrlPem(stranger.get(), other_key.get(), {}, now,
                                                now + absl::Hours(24), 9))
                         .status()),
            "CRL_ISSUER_MISMATCH");
  EXPECT_EQ(upload("junk").status().code(), absl::StatusCode::kInvalidArgument);
  // A delta CRL would replace the complete one: refused.
  EXPECT_EQ(upload(testing::MakeCrlPem(root.get(), ca_key.get(), {8}, now, now + absl::Hours(24), 3,
                                       /*delta_base=*/1))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // A CRL naming another certificate of the CA (re-issued with the same name and key)
  // is one OpenSSL would never apply: refused, not stored unused.
  X509Ptr reissued = MakeCert(CertSpec{.cn = "CRL Root", .ca = true, .serial = 4242}, ca_key.get(),
                              nullptr, nullptr);
  const std::string for_reissued =
      testing::MakeCrlPem(reissued.get(), ca_key.get(), {8}, now, now + absl::Hours(24), 3,
                          /*delta_base=*/0, /*akid_issuer_serial=*/true);
  EXPECT_EQ(ReasonOf(upload(for_reissued).status()), "CRL_ISSUER_MISMATCH");
  auto second = upload(
      testing::MakeCrlPem(root.get(), ca_key.get(), {5, 6, 7}, now, now + absl::Hours(24), 2));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(store_->GetCrl("t1", ca.id())->crl_number(), "2");
  EXPECT_EQ(
      EventsSince(cursor),
      (std::vector<std::string>{absl::StrCat("CHANGE_TYPE_CREATED/RESOURCE_TYPE_CRL/", ca.id()),
                                absl::StrCat("CHANGE_TYPE_UPDATED/RESOURCE_TYPE_CRL/", ca.id())}));

  // A device certificate with a listed serial is denied through the stored CRL.
  X509Ptr revoked = MakeCert(CertSpec{.cn = "device-1", .eku = "clientAuth", .serial = 7},
                             NewKey(KeyType::kP256).get(), root.get(), ca_key.get());
  EXPECT_EQ(VerifyDevice({testing::Pem(revoked.get())}).verdict.reason, iv1::DENY_REASON_REVOKED);
  X509Ptr good = MakeCert(CertSpec{.cn = "device-1", .eku = "clientAuth", .serial = 8},
                          NewKey(KeyType::kP256).get(), root.get(), ca_key.get());
  EXPECT_TRUE(VerifyDevice({testing::Pem(good.get())}).verdict.ok());
  // A stored CRL that OpenSSL cannot apply to the CA (stored before this check, or
  // by hand) does not count as "no CRL": revocation status unknown, fail closed.
  {
    rv1::CertificateRevocationList unusable = *store_->GetCrl("t1", ca.id());
    X509Ptr reissued_root = MakeCert(CertSpec{.cn = "CRL Root", .ca = true, .serial = 4243},
                                     ca_key.get(), nullptr, nullptr);
    unusable.set_crl_pem(testing::MakeCrlPem(reissued_root.get(), ca_key.get(), {}, now,
                                             now + absl::Hours(24), 4, 0, true));
    unusable.set_crl_number("4");
    ASSERT_TRUE(store_->PutCrl(unusable, unusable.etag()).ok());
    EXPECT_EQ(VerifyDevice({testing::Pem(good.get())}).verdict.reason, iv1::DENY_REASON_REVOKED);
  }

  // Audited as ISSUANCE through the handler.
  iv1::UploadCrlRequest req;
  req.set_tenant_id("t1");
  req.set_ca_id("ca-missing");
  req.set_crl(crl1);
  grpc::ServerContext ctx;
  rv1::CertificateRevocationList out;
  EXPECT_EQ(svc_->UploadCrl(&ctx, &req, &out).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(audit_.events().back().reason(), "UploadCrl");
  EXPECT_EQ(audit_.events().back().outcome(), audit::v1::OUTCOME_FAILURE);
  EXPECT_EQ(audit_.events().back().attributes().at("error"), "UNKNOWN_CA");
}

}  // namespace
}  // namespace iotauth::identity::x509
