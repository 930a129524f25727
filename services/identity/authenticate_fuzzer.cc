// libFuzzer target: a whole Authenticate call, from the fields a broker or gateway
// forwards (MQTT CONNECT client id, username and password; an explicit SAS or
// device-triple credential; or any AuthenticateRequest) to the decision, against a
// directory of SAS, triple, EnOS, enrollment-group and X.509 (CA-signed and
// self-signed) devices, with the real X.509 verifier. Besides "no crash",
// it checks on every input:
//  - a decision is always made: ALLOW with no reason, or DENY with one;
//  - ALLOW only for an enabled registered device of tenant t1, or one the registrar
//    just created (group enrollment, EnOS activation);
//  - exactly one audit event per call;
//  - the response and the audit event parse back (every string valid UTF-8);
//  - no planted secret (device keys, policy key, group key, product secret, in any
//    encoding) in an audit event, a deny detail or an error, unless the input
//    itself carried it.
//
// Input: text lines
//   connect\n<tenant>\n<client id>\n<username>\n<password>\n<peer address>
//   sas\n<tenant>\n<token>\n<device id>
//   triple\n<tenant>\n<product key>\n<device name>\n<client id>\n<timestamp ms>\n
//       <sign method>\n<signature>
// or, for anything else, a serialized AuthenticateRequest (binary protobuf).
// The clock is fixed at 2027-01-01T00:00:00Z; seeds carry credentials valid then
// (X.509 seeds: binary requests with a chain from the CA below, or self-signed).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/stubs/common.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/common/fuzz_check.h"
#include "services/identity/authenticator.h"
#include "services/identity/directory_cache.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/x509_certificate_verifier.h"

namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;
namespace audit = ::iotauth::audit;
using iotauth::identity::Authenticator;
using iotauth::identity::DirectoryCache;

constexpr char kHub[] = "hub1.example.net";
constexpr char kKey1[] = "cGFzc3dvcmQxcGFzc3dvcmQxcGFzc3dvcmQx";  // "password1" x3
constexpr char kKey2[] = "c2Vjb25kYXJ5c2Vjb25kYXJ5";              // "secondarysecondary"
constexpr char kPolicyKey[] = "cG9saWN5a2V5cG9saWN5a2V5";         // "policykeypolicykey"
constexpr char kGroupKey[] =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
constexpr char kProductSecret[] = "productsecretproductsecret";
constexpr char kTripleSecret[] = "tripledevicesecretvalue1";
constexpr char kActivatedSecret[] = "activateddevicesecret";
// Tenant t1's registered CA (P-256; generated for this target, valid 2026-2036). Seeds
// hold a leaf it signed for device x1 and a self-signed certificate for device ss1.
constexpr char kCaPem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBmTCCAT6gAwIBAgIBATAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhhdXRoZW50\n"
    "aWNhdGUgZnV6emVyIHJvb3QwHhcNMjYxMTI2MTMwNzUxWhcNMzYxMTIzMTMwNzUx\n"
    "WjAjMSEwHwYDVQQDDBhhdXRoZW50aWNhdGUgZnV6emVyIHJvb3QwWTATBgcqhkjO\n"
    "PQIBBggqhkjOPQMBBwNCAASHbkO+Z1XqaCtE+BUEX5cDSHTrGOxSoHHOs4V/Lp09\n"
    "We+Grb49wFv7vEISskz9uWZQXjfMC9b+o0MzKPel9cKGo2MwYTAdBgNVHQ4EFgQU\n"
    "VJo+EnxvUYkBL0rEJLxZYwS5JHAwHwYDVR0jBBgwFoAUVJo+EnxvUYkBL0rEJLxZ\n"
    "YwS5JHAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZIzj0E\n"
    "AwIDSQAwRgIhAPJSb9grJft4wG6sBIzhDVBcHxFrHdJcC4B5yOajLHdcAiEA30R3\n"
    "mz9nXx/7Xnye9SY0lAoIxlDdcVLn2LaEugTh0mw=\n"
    "-----END CERTIFICATE-----\n";
// SHA-256 of ss1's self-signed certificate (DER), registered as its thumbprint.
constexpr char kSelfSignedThumbprint[] =
    "f65c72e0a330fcd43914411e6362bf38afce5aeb09b64a1fbfbfede0e0c402e4";

[[noreturn]] void Fail(const char* broken) { iotauth::fuzz::Fail("authenticate_fuzzer", broken); }

class CountingSink final : public audit::AuditSink {
 public:
  void Record(audit::v1::AuditEvent&& event) override { events.push_back(std::move(event)); }
  std::vector<audit::v1::AuditEvent> events;
};

class FakeRegistrar final : public iotauth::identity::DeviceRegistrar {
 public:
  absl::StatusOr<reg::Device> RegisterFromEnrollmentGroup(
      const iotauth::identity::EnrollmentGroupRecord& group, absl::string_view device_id,
      absl::string_view /*key*/) override {
    created.insert(std::string(device_id));
    reg::Device d;
    d.set_tenant_id(group.tenant_id);
    d.set_device_id(std::string(device_id));
    d.set_product_key(group.product_key);
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.set_enrollment_group_id(group.id);
    return d;
  }
  absl::StatusOr<Activation> ActivateDevice(const iotauth::identity::ProductRecord& product,
                                            absl::string_view device_name) override {
    created.insert(std::string(device_name));
    Activation a;
    a.device.set_tenant_id(product.tenant_id);
    a.device.set_device_id(std::string(device_name));
    a.device.set_product_key(product.product_key);
    a.device.set_status(reg::DEVICE_STATUS_ENABLED);
    a.device_secret = kActivatedSecret;
    return a;
  }
  absl::Status MarkActivated(const iotauth::identity::ProductRecord& /*product*/,
                             absl::string_view /*device_id*/) override {
    return absl::OkStatus();
  }

  std::set<std::string> created;
};

void Check(const absl::Status& s) {
  if (!s.ok()) Fail("directory set-up");
}

void AddDevice(DirectoryCache* cache, const std::string& id, const std::string& product,
               reg::DeviceStatus status, const std::string& primary = kKey1) {
  reg::Device d;
  d.set_tenant_id("t1");
  d.set_device_id(id);
  d.set_product_key(product);
  d.set_status(status);
  d.mutable_credentials()->mutable_symmetric_key()->set_primary_key(primary);
  d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(kKey2);
  Check(cache->UpsertDevice(d));
}

std::unique_ptr<DirectoryCache> MakeDirectory() {
  auto cache = DirectoryCache::Create({});
  if (!cache.ok()) Fail("directory set-up");
  reg::Tenant t;
  t.set_id("t1");
  t.set_hub_host(kHub);
  auto* p = t.add_policies();
  p->set_name("gateway");
  p->set_primary_key(kPolicyKey);
  Check((*cache)->UpsertTenant(t));

  reg::Product sas;
  sas.set_tenant_id("t1");
  sas.set_product_key("pk-sas");
  sas.add_allowed_credential_types(reg::CREDENTIAL_TYPE_SAS);
  reg::AccessRule* r = sas.add_default_rules();
  r->set_effect(reg::RULE_EFFECT_ALLOW);
  r->set_action(reg::RULE_ACTION_ALL);
  r->set_topic_filter("devices/${device}/#");
  Check((*cache)->UpsertProduct(sas));
  reg::Product triple;
  triple.set_tenant_id("t1");
  triple.set_product_key("pk-triple");
  triple.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE);
  triple.add_allowed_credential_types(reg::CREDENTIAL_TYPE_DEVICE_TRIPLE_ENOS);
  triple.set_product_secret(kProductSecret);
  triple.set_dynamic_activation(true);
  Check((*cache)->UpsertProduct(triple));
  reg::Product weak = triple;
  weak.set_product_key("pk-weak");
  weak.set_allow_weak_sign_methods(true);
  weak.set_dynamic_activation(false);
  Check((*cache)->UpsertProduct(weak));

  AddDevice(cache->get(), "d1", "pk-sas", reg::DEVICE_STATUS_ENABLED);
  AddDevice(cache->get(), "off1", "pk-sas", reg::DEVICE_STATUS_DISABLED);
  AddDevice(cache->get(), "pending1", "pk-sas", reg::DEVICE_STATUS_PENDING_APPROVAL);
  AddDevice(cache->get(), "dev3", "pk-triple", reg::DEVICE_STATUS_ENABLED, kTripleSecret);
  AddDevice(cache->get(), "off3", "pk-triple", reg::DEVICE_STATUS_DISABLED, kTripleSecret);
  AddDevice(cache->get(), "weak3", "pk-weak", reg::DEVICE_STATUS_ENABLED, kTripleSecret);

  reg::Product x509;
  x509.set_tenant_id("t1");
  x509.set_product_key("pk-x509");
  x509.add_allowed_credential_types(reg::CREDENTIAL_TYPE_X509_CA);
  x509.add_allowed_credential_types(reg::CREDENTIAL_TYPE_X509_SELF_SIGNED);
  Check((*cache)->UpsertProduct(x509));
  reg::Device x1;
  x1.set_tenant_id("t1");
  x1.set_device_id("x1");
  x1.set_product_key("pk-x509");
  x1.set_status(reg::DEVICE_STATUS_ENABLED);
  x1.mutable_credentials()->set_ca_signed_allowed(true);
  Check((*cache)->UpsertDevice(x1));
  reg::Device ss1 = x1;
  ss1.set_device_id("ss1");
  ss1.mutable_credentials()->set_ca_signed_allowed(false);
  ss1.mutable_credentials()->set_primary_thumbprint(kSelfSignedThumbprint);
  Check((*cache)->UpsertDevice(ss1));

  reg::EnrollmentGroup g;
  g.set_tenant_id("t1");
  g.set_id("g1");
  g.set_group_key(kGroupKey);
  g.set_product_key("pk-sas");
  g.set_enabled(true);
  Check((*cache)->UpsertEnrollmentGroup(g));
  return *std::move(cache);
}

// Tenant t1's CAs: read-only, shared by every input.
const iotauth::identity::x509::CaDirectory& Cas() {
  static const auto* cas = [] {
    auto* d = new iotauth::identity::x509::CaDirectory;
    reg::CaCertificate ca;
    ca.set_tenant_id("t1");
    ca.set_id("root");
    ca.set_certificate_pem(kCaPem);
    ca.set_status(reg::CA_STATUS_VERIFIED);
    Check(d->UpsertCa(ca));
    return d;
  }();
  return *cas;
}

// Every form a planted secret could leak in.
const std::vector<std::string>& Secrets() {
  static const auto* secrets = [] {
    auto* out = new std::vector<std::string>;
    for (const char* b64 : {kKey1, kKey2, kPolicyKey, kGroupKey}) {
      out->push_back(b64);
      auto raw = iotauth::crypto::Base64Decode(b64);
      if (raw.ok()) {
        out->push_back(*raw);
        out->push_back(iotauth::crypto::HexEncode(*raw));
      }
    }
    for (const char* s : {kProductSecret, kTripleSecret, kActivatedSecret}) out->push_back(s);
    return out;
  }();
  return *secrets;
}

// A secret in `text` that the caller did not send itself in `input` (the fuzzer may
// learn a secret from the comparisons here and send it as, say, a device id).
bool LeaksSecret(absl::string_view text, absl::string_view input) {
  return std::any_of(Secrets().begin(), Secrets().end(), [&](const std::string& s) {
    return text.find(s) != absl::string_view::npos && input.find(s) == absl::string_view::npos;
  });
}

std::string Line(const std::vector<absl::string_view>& lines, size_t i) {
  return i < lines.size() ? std::string(lines[i]) : std::string();
}

// gRPC refuses a request whose string fields are not UTF-8 before any handler runs
// (protobuf's parser does); so do the text forms here.
bool AllUtf8(const std::vector<absl::string_view>& lines, size_t bytes_line) {
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i != bytes_line && !google::protobuf::internal::IsStructurallyValidUTF8(
                               lines[i].data(), static_cast<int>(lines[i].size()))) {
      return false;
    }
  }
  return true;
}

bool BuildRequest(absl::string_view in, v1::AuthenticateRequest* req) {
  const std::vector<absl::string_view> lines = absl::StrSplit(in, '\n');
  const absl::string_view kind = lines.empty() ? absl::string_view() : lines[0];
  if (kind == "connect") {
    if (!AllUtf8(lines, /*bytes_line=*/4)) return false;  // the password is `bytes`
    req->set_tenant_id(Line(lines, 1));
    auto* c = req->mutable_connect();
    c->set_client_id(Line(lines, 2));
    c->set_username(Line(lines, 3));
    c->set_password(Line(lines, 4));
    c->set_peer_address(Line(lines, 5));
    c->set_protocol(v1::PROTOCOL_MQTT);
    return true;
  }
  if (kind == "sas") {
    if (!AllUtf8(lines, lines.size())) return false;
    req->set_tenant_id(Line(lines, 1));
    auto* s = req->mutable_credential()->mutable_sas();
    s->set_token(Line(lines, 2));
    s->set_device_id(Line(lines, 3));
    return true;
  }
  if (kind == "triple") {
    if (!AllUtf8(lines, lines.size())) return false;
    req->set_tenant_id(Line(lines, 1));
    auto* t = req->mutable_credential()->mutable_device_triple();
    t->set_product_key(Line(lines, 2));
    t->set_device_name(Line(lines, 3));
    t->set_client_id(Line(lines, 4));
    int64_t ts = 0;
    if (absl::SimpleAtoi(Line(lines, 5), &ts)) t->set_timestamp_ms(ts);
    t->set_sign_method(Line(lines, 6));
    t->set_signature(Line(lines, 7));
    return true;
  }
  return req->ParseFromArray(in.data(), static_cast<int>(in.size()));
}

void CheckDecision(const v1::AuthenticateResponse& resp, const FakeRegistrar& registrar,
                   absl::string_view input) {
  if (resp.decision() == v1::DECISION_ALLOW) {
    if (resp.deny_reason() != v1::DENY_REASON_UNSPECIFIED) Fail("ALLOW with a deny reason");
    if (resp.identity().tenant_id() != "t1") Fail("ALLOW for another tenant");
    static const std::set<std::string>* const enabled =
        new std::set<std::string>{"d1", "dev3", "weak3", "x1", "ss1"};
    const std::string& id = resp.identity().device_id();
    if (enabled->count(id) == 0 && registrar.created.count(id) == 0) {
      Fail("ALLOW for a device that is not enabled");
    }
  } else if (resp.decision() == v1::DECISION_DENY) {
    if (resp.deny_reason() == v1::DENY_REASON_UNSPECIFIED) Fail("DENY without a reason");
    if (LeaksSecret(resp.deny_detail(), input)) Fail("secret in the deny detail");
  } else {
    Fail("no decision");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  iotauth::fuzz::SilenceProtobufLogging();
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  v1::AuthenticateRequest req;
  if (!BuildRequest(in, &req)) return 0;

  static const iotauth::FakeClock* const clock =
      new iotauth::FakeClock(absl::FromUnixSeconds(1798761600));  // 2027-01-01T00:00:00Z
  // Fresh state per input: limiter lockouts, replays and registrations of one input
  // do not decide the next one.
  std::unique_ptr<DirectoryCache> cache = MakeDirectory();
  FakeRegistrar registrar;
  CountingSink sink;
  Authenticator::Options o;
  o.clock = clock;
  o.directory = cache.get();
  o.directory_writer = cache.get();
  o.registrar = &registrar;
  o.audit_sink = &sink;
  iotauth::identity::x509::X509CertificateVerifier::Options xo;
  xo.cas = &Cas();
  xo.directory = cache.get();
  xo.directory_writer = cache.get();
  auto verifier = iotauth::identity::x509::X509CertificateVerifier::Create(xo);
  if (!verifier.ok()) Fail("verifier set-up");
  o.certificate_verifier = verifier->get();
  auto auth = Authenticator::Create(o);
  if (!auth.ok()) Fail("authenticator set-up");

  // Twice: the second call meets the replay cache and the failure counters.
  for (int round = 0; round < 2; ++round) {
    v1::AuthenticateResponse resp;
    const size_t before = sink.events.size();
    absl::Status s = (*auth)->Authenticate(req, iotauth::identity::CallContext{"fuzz"}, &resp);
    if (!s.ok()) {
      // Only an oversized field is refused without a decision; nothing is audited
      // and the message names the field, not its value.
      if (s.code() != absl::StatusCode::kInvalidArgument) Fail("error other than INVALID_ARGUMENT");
      if (LeaksSecret(s.message(), in)) Fail("secret in the error message");
      if (sink.events.size() != before) Fail("refused request was audited");
      return 0;
    }
    CheckDecision(resp, registrar, in);
    if (sink.events.size() != before + 1) Fail("not exactly one audit event");
    // What the caller and the audit store parse must be valid protobuf (every
    // string UTF-8, even when built from parts of the input).
    if (std::getenv("IOTAUTH_FUZZ_DEBUG") != nullptr) {
      std::fprintf(stderr, "round %d:\n%s", round, resp.DebugString().c_str());
    }
    v1::AuthenticateResponse resp_again;
    if (!resp_again.ParseFromString(resp.SerializeAsString())) {
      Fail("response does not parse back (UTF-8)");
    }
    audit::v1::AuditEvent event_again;
    if (!event_again.ParseFromString(sink.events.back().SerializeAsString())) {
      Fail("audit event does not parse back (UTF-8)");
    }
    if (LeaksSecret(sink.events.back().SerializeAsString(), in)) Fail("secret in the audit event");
  }
  return 0;
}
