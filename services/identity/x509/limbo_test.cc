// Runs the x509-limbo path-validation suite through VerifyChain with the project's
// device policy. Peer names are mapped (DNS/IP checked on the leaf after a passing
// path validation); `extended_key_usage` selects the purpose. Every disagreement with
// the expected result must be listed with its reason in limbo_disagreements.txt, and
// every listed one must still disagree, so the file stays exact.
//
// Regenerate the list: LIMBO_WRITE_DISAGREEMENTS=/tmp/d.txt bazel test ... then review.
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/identity/x509/chain_verifier.h"

namespace iotauth::identity::x509 {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string VectorsDir() {
  const char* env = std::getenv("IOTAUTH_VECTORS_DIR");
  return env != nullptr && env[0] != '\0' ? env : "/work/shared/vectors";
}

std::vector<std::string> Strings(const Struct& s, const std::string& key) {
  std::vector<std::string> out;
  auto it = s.fields().find(key);
  if (it == s.fields().end() || it->second.kind_case() != Value::kListValue) return out;
  for (const Value& v : it->second.list_value().values()) out.push_back(v.string_value());
  return out;
}

std::string Str(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || it->second.kind_case() != Value::kStringValue) return "";
  return it->second.string_value();
}

struct Outcome {
  bool success = false;
  std::string why;
};

Outcome RunCase(const Struct& tc) {
  ParseLimits limits;
  limits.max_certificates = 64;
  limits.max_total_bytes = 1 << 20;
  std::vector<CertPtr> anchors;
  std::vector<CertPtr> inters;
  for (const std::string& pem : Strings(tc, "trusted_certs")) {
    auto c = ParseCertificates(pem, limits);
    if (!c.ok()) return {false, absl::StrCat("trusted cert: ", c.status().message())};
    for (auto& x : *c) anchors.push_back(x);
  }
  for (const std::string& pem : Strings(tc, "untrusted_intermediates")) {
    auto c = ParseCertificates(pem, limits);
    if (!c.ok()) return {false, absl::StrCat("intermediate: ", c.status().message())};
    for (auto& x : *c) inters.push_back(x);
  }
  auto leaf = ParseCertificates(Str(tc, "peer_certificate"), limits);
  if (!leaf.ok() || leaf->size() != 1) {
    return {false, absl::StrCat("leaf: ", leaf.ok() ? "count" : leaf.status().message())};
  }
  std::vector<CrlPtr> crls;
  for (const std::string& pem : Strings(tc, "crls")) {
    auto c = ParsedCrl::Parse(pem);
    if (!c.ok()) return {false, absl::StrCat("crl: ", c.status().message())};
    crls.push_back(*c);
  }
  ChainPolicy policy;
  policy.purpose = 0;
  for (const std::string& eku : Strings(tc, "extended_key_usage")) {
    if (eku == "serverAuth") policy.purpose = X509_PURPOSE_SSL_SERVER;
    if (eku == "clientAuth") policy.purpose = X509_PURPOSE_SSL_CLIENT;
  }
  policy.require_digital_signature = false;
  for (const std::string& ku : Strings(tc, "key_usage")) {
    if (ku == "digitalSignature") policy.require_digital_signature = true;
  }
  auto depth = tc.fields().find("max_chain_depth");
  if (depth != tc.fields().end() && depth->second.kind_case() == Value::kNumberValue) {
    policy.max_depth = static_cast<int>(depth->second.number_value());
  }
  absl::Time now = absl::Now();
  std::string vt = Str(tc, "validation_time");
  if (!vt.empty()) {
    std::string err;
    if (!absl::ParseTime(absl::RFC3339_full, vt, &now, &err)) return {false, "bad time"};
  }
  auto trust = TrustStore::Create(anchors, {}, crls);
  if (!trust.ok()) return {false, "trust store"};
  ChainResult r = VerifyChain(**trust, (*leaf)[0], inters, now, policy);
  if (!r.verdict.ok()) {
    return {false, absl::StrCat(iotauth::identity::v1::DenyReason_Name(r.verdict.reason), ": ",
                                r.verdict.detail)};
  }
  auto peer = tc.fields().find("expected_peer_name");
  if (peer != tc.fields().end() && peer->second.kind_case() == Value::kStructValue) {
    const Struct& p = peer->second.struct_value();
    const std::string kind = Str(p, "kind");
    const std::string value = Str(p, "value");
    X509* x = (*leaf)[0]->x509();
    if (kind == "DNS" && X509_check_host(x, value.data(), value.size(),
                                         X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) != 1) {
      return {false, "peer name: DNS name does not match"};
    }
    if (kind == "IP" && X509_check_ip_asc(x, value.c_str(), 0) != 1) {
      return {false, "peer name: IP address does not match"};
    }
  }
  return {true, ""};
}

TEST(LimboTest, Suite) {
  const std::string path = VectorsDir() + "/limbo/limbo-core-no-bettertls.json";
  std::ifstream in(path);
  if (!in) {
    GTEST_SKIP() << "x509-limbo vectors not found at " << path << " (set IOTAUTH_VECTORS_DIR)";
  }
  std::stringstream buf;
  buf << in.rdbuf();
  Struct root;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(buf.str(), &root).ok());
  const ListValue& cases = root.fields().at("testcases").list_value();

  // Known disagreements: `id<TAB>expected<TAB>reason`.
  std::map<std::string, std::string> known;
  {
    std::ifstream k("services/identity/x509/limbo_disagreements.txt");
    ASSERT_TRUE(k) << "limbo_disagreements.txt missing from runfiles";
    std::string line;
    while (std::getline(k, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 2));
      ASSERT_EQ(parts.size(), 3u) << line;
      known[parts[0]] = parts[2];
    }
  }
  int agree = 0;
  int disagree = 0;
  std::string report;
  std::vector<std::string> unexpected;
  std::map<std::string, bool> seen;
  for (const Value& v : cases.values()) {
    const Struct& tc = v.struct_value();
    const std::string id = Str(tc, "id");
    const bool want = Str(tc, "expected_result") == "SUCCESS";
    Outcome got = RunCase(tc);
    if (got.success == want) {
      ++agree;
      if (known.count(id) > 0) unexpected.push_back(absl::StrCat(id, ": listed but now agrees"));
      continue;
    }
    ++disagree;
    seen[id] = true;
    const std::string reason =
        known.count(id) > 0 ? known[id] : absl::StrCat(want ? "we reject: " : "we accept", got.why);
    absl::StrAppend(&report, id, "\t", want ? "SUCCESS" : "FAILURE", "\t", reason, "\n");
    if (known.count(id) == 0) {
      unexpected.push_back(absl::StrCat(id, ": expected ", want ? "SUCCESS" : "FAILURE", ", got ",
                                        got.success ? "SUCCESS" : got.why));
    }
  }
  std::printf(
      "x509-limbo: %d cases, %d agree, %d disagree (all listed with reasons in "
      "limbo_disagreements.txt)\n",
      cases.values_size(), agree, disagree);
  if (const char* out = std::getenv("LIMBO_WRITE_DISAGREEMENTS")) {
    std::ofstream(out) << report;
  }
  for (const std::string& u : unexpected) ADD_FAILURE() << u;
}

}  // namespace
}  // namespace iotauth::identity::x509
