#include "services/identity/x509/x509_certificate_verifier.h"

#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/crypto.h"

namespace iotauth::identity::x509 {
namespace {

namespace v1 = ::iotauth::identity::v1;
namespace reg = ::iotauth::registry::v1;

constexpr absl::string_view kTenant = "{tenant}";
constexpr absl::string_view kDevice = "{device}";
constexpr size_t kMaxDeviceIdBytes = 128;

std::string NormalizeThumbprint(absl::string_view t) {
  std::string out;
  out.reserve(t.size());
  for (char c : t) {
    if (c != ':') out.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

}  // namespace

bool MatchDevicePattern(absl::string_view pattern, absl::string_view value,
                        absl::string_view tenant_id, std::string* device) {
  size_t pi = 0;
  size_t vi = 0;
  bool have_device = false;
  std::string dev;
  while (pi < pattern.size()) {
    absl::string_view rest = pattern.substr(pi);
    if (absl::StartsWith(rest, kTenant)) {
      if (!absl::StartsWith(value.substr(vi), tenant_id) || tenant_id.empty()) return false;
      pi += kTenant.size();
      vi += tenant_id.size();
      continue;
    }
    if (absl::StartsWith(rest, kDevice)) {
      if (have_device) return false;
      pi += kDevice.size();
      size_t next = pattern.find('{', pi);
      absl::string_view literal =
          pattern.substr(pi, next == absl::string_view::npos ? absl::string_view::npos : next - pi);
      size_t end;
      if (!literal.empty()) {
        end = value.find(literal, vi);
      } else if (pi == pattern.size()) {
        end = value.size();
      } else {
        end = value.find(tenant_id, vi);  // "{device}{tenant}"
      }
      if (end == absl::string_view::npos || end == vi) return false;
      dev = std::string(value.substr(vi, end - vi));
      vi = end;
      have_device = true;
      continue;
    }
    if (vi >= value.size() || value[vi] != pattern[pi]) return false;
    ++pi;
    ++vi;
  }
  if (vi != value.size() || !have_device || dev.size() > kMaxDeviceIdBytes) return false;
  *device = std::move(dev);
  return true;
}

X509CertificateVerifier::X509CertificateVerifier(Options options)
    : options_(options),
      parsed_(options_.config.parsed_cache_capacity),
      results_(options_.config.result_cache_capacity) {}

absl::StatusOr<std::unique_ptr<X509CertificateVerifier>> X509CertificateVerifier::Create(
    Options options) {
  if (options.cas == nullptr) return absl::InvalidArgumentError("cas is required");
  if (options.directory == nullptr) return absl::InvalidArgumentError("directory is required");
  if (options.config.policy.max_depth < 0 || options.config.policy.max_depth > 32) {
    return absl::InvalidArgumentError("policy.max_depth must be within 0..32");
  }
  return std::unique_ptr<X509CertificateVerifier>(new X509CertificateVerifier(options));
}

X509CertificateVerifier::Stats X509CertificateVerifier::stats() const {
  return {parsed_.hits(), parsed_.misses(), results_.hits(), results_.misses()};
}

CertificateVerifier::Result X509CertificateVerifier::Verify(
    absl::Span<const absl::string_view> chain, absl::string_view tenant_hint,
    absl::Time now) const {
  Result bad;
  bad.credential_type = reg::CREDENTIAL_TYPE_X509_CA;
  const ParseLimits& limits = options_.config.limits;
  if (chain.empty()) {
    bad.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED, "empty certificate chain");
    return bad;
  }
  size_t total = 0;
  for (absl::string_view e : chain) total += e.size();
  if (chain.size() > limits.max_certificates || total > limits.max_total_bytes) {
    bad.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED, "certificate chain too large");
    return bad;
  }
  // Entry hashes key both caches.
  std::vector<std::string> hashes;
  hashes.reserve(chain.size());
  std::string key(tenant_hint);
  key.push_back('\0');
  for (absl::string_view e : chain) {
    hashes.push_back(crypto::Sha256(e));
    key += hashes.back();
  }
  const uint64_t generation = options_.cas->generation();
  CachedOutcome cached;
  if (results_.Get(key, &cached) && cached.generation == generation && now >= cached.valid_from &&
      now < cached.valid_until) {
    return CheckDevice(*cached.outcome);
  }
  // Parse through the per-entry cache.
  std::vector<CertPtr> certs;
  for (size_t i = 0; i < chain.size(); ++i) {
    std::shared_ptr<const std::vector<CertPtr>> entry;
    if (!parsed_.Get(hashes[i], &entry)) {
      auto p = ParseCertificates(chain[i], limits);
      if (!p.ok()) {
        bad.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED,
                                    absl::StrCat("chain[", i, "]: ", p.status().message()));
        return bad;
      }
      entry = std::make_shared<const std::vector<CertPtr>>(*std::move(p));
      parsed_.Put(hashes[i], entry);
    }
    certs.insert(certs.end(), entry->begin(), entry->end());
  }
  if (certs.size() > limits.max_certificates) {
    bad.verdict = Verdict::Deny(v1::DENY_REASON_MALFORMED, "too many certificates");
    return bad;
  }
  absl::Time valid_from = absl::InfinitePast();
  absl::Time valid_until = absl::InfiniteFuture();
  auto outcome = std::make_shared<const ChainOutcome>(
      VerifyUncached(certs, tenant_hint, now, &valid_from, &valid_until));
  if (outcome->verdict.reason != v1::DENY_REASON_NOT_YET_VALID &&
      outcome->verdict.reason != v1::DENY_REASON_INTERNAL) {
    CachedOutcome c;
    c.outcome = outcome;
    c.generation = generation;
    if (outcome->verdict.ok()) {
      c.valid_from = valid_from;
      c.valid_until = std::min(valid_until, now + options_.config.max_result_ttl);
    } else {
      c.valid_from = now;
      c.valid_until = now + options_.config.max_result_ttl;
    }
    results_.Put(key, std::move(c));
  }
  return CheckDevice(*outcome);
}

X509CertificateVerifier::ChainOutcome X509CertificateVerifier::VerifyUncached(
    const std::vector<CertPtr>& certs, absl::string_view tenant_hint, absl::Time now,
    absl::Time* valid_from, absl::Time* valid_until) const {
  std::vector<std::string> tenants;
  if (!tenant_hint.empty()) {
    tenants.emplace_back(tenant_hint);
  } else {
    for (const CertPtr& c : certs) {
      for (std::string& t : options_.cas->TenantsForIssuer(X509_get_issuer_name(c->x509()),
                                                           options_.config.max_tenants_tried)) {
        if (std::find(tenants.begin(), tenants.end(), t) == tenants.end() &&
            tenants.size() < options_.config.max_tenants_tried) {
          tenants.push_back(std::move(t));
        }
      }
    }
  }
  if (tenants.empty()) {
    ChainOutcome o;
    o.credential_type = reg::CREDENTIAL_TYPE_X509_CA;
    o.fingerprint = absl::StrCat("x509:sha256:", certs[0]->fingerprint_hex());
    o.cert_cn = certs[0]->subject_cn();
    o.not_after = certs[0]->not_after();
    o.verdict = certs[0]->self_issued() && certs.size() == 1
                    ? Verdict::Deny(v1::DENY_REASON_UNKNOWN_TENANT,
                                    "self-signed certificates need a tenant hint")
                    : Verdict::Deny(v1::DENY_REASON_UNTRUSTED_ISSUER,
                                    "no tenant trusts the certificate's issuer");
    return o;
  }
  ChainOutcome first;
  for (size_t i = 0; i < tenants.size(); ++i) {
    absl::Time from = absl::InfinitePast();
    absl::Time until = absl::InfiniteFuture();
    ChainOutcome o = VerifyInTenant(certs, tenants[i], now, &from, &until);
    if (o.verdict.ok()) {
      *valid_from = from;
      *valid_until = until;
      return o;
    }
    if (i == 0 || (first.verdict.reason == v1::DENY_REASON_UNTRUSTED_ISSUER &&
                   o.verdict.reason != v1::DENY_REASON_UNTRUSTED_ISSUER)) {
      first = std::move(o);
    }
  }
  return first;
}

X509CertificateVerifier::ChainOutcome X509CertificateVerifier::VerifyInTenant(
    const std::vector<CertPtr>& certs, const std::string& tenant_id, absl::Time now,
    absl::Time* valid_from, absl::Time* valid_until) const {
  const ChainPolicy& policy = options_.config.policy;
  const CertPtr& leaf = certs[0];
  ChainOutcome o;
  o.tenant_id = tenant_id;
  o.fingerprint = absl::StrCat("x509:sha256:", leaf->fingerprint_hex());
  o.leaf_fingerprint_hex = leaf->fingerprint_hex();
  o.cert_cn = leaf->subject_cn();
  o.not_after = leaf->not_after();
  std::shared_ptr<const TenantTrust> trust = options_.cas->Find(tenant_id);
  const bool leaf_is_trusted_ca =
      trust != nullptr && trust->trusted_by_tbs.contains(leaf->tbs_sha256());

  if (leaf->self_issued() && certs.size() == 1 && !leaf_is_trusted_ca) {
    // Self-signed device certificate: pinned by thumbprint (checked per device).
    o.credential_type = reg::CREDENTIAL_TYPE_X509_SELF_SIGNED;
    *valid_from = leaf->not_before();
    *valid_until = leaf->not_after();
    // Whole seconds, as VerifyChain counts them: valid from notBefore through the
    // notAfter second, inclusive (RFC 5280 4.1.2.5).
    const absl::Time second = absl::FromUnixSeconds(absl::ToUnixSeconds(now));
    if (second < leaf->not_before()) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_NOT_YET_VALID, "certificate is not yet valid");
    } else if (second > leaf->not_after()) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_EXPIRED, "certificate has expired");
    } else if (Verdict v = CheckAlgorithms(*leaf, policy.algorithms, true); !v.ok()) {
      o.verdict = std::move(v);
    } else if (policy.purpose != 0 && X509_check_purpose(leaf->x509(), policy.purpose, 0) != 1) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_WRONG_KEY_USAGE,
                                "extendedKeyUsage does not allow client authentication");
    } else if (policy.require_digital_signature &&
               (X509_get_extension_flags(leaf->x509()) & EXFLAG_KUSAGE) != 0 &&
               (X509_get_key_usage(leaf->x509()) & KU_DIGITAL_SIGNATURE) == 0) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_WRONG_KEY_USAGE, "keyUsage lacks digitalSignature");
    } else if (trust != nullptr && trust->Revoked(*leaf, nullptr)) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_REVOKED, "certificate is revoked");
    } else if (leaf->subject_cn().empty() || leaf->subject_cn().size() > kMaxDeviceIdBytes) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_IDENTITY_MISMATCH,
                                "certificate has no single subject CN naming the device");
    } else {
      o.device_id = leaf->subject_cn();
    }
    return o;
  }

  o.credential_type = reg::CREDENTIAL_TYPE_X509_CA;
  if (trust == nullptr || trust->store == nullptr) {
    o.verdict = Verdict::Deny(v1::DENY_REASON_UNTRUSTED_ISSUER, "tenant has no verified CA");
    return o;
  }
  ChainResult r =
      VerifyChain(*trust->store, leaf, absl::MakeConstSpan(certs).subspan(1), now, policy);
  if (!r.verdict.ok()) {
    o.verdict = std::move(r.verdict);
    return o;
  }
  *valid_from = r.valid_from;
  *valid_until = std::min(r.valid_until, trust->store->earliest_crl_next_update());
  // The credential is good until the first of the path's notAfters and the CRLs'
  // nextUpdates, not the leaf's own notAfter: brokers disconnect, and caches and
  // offline grants end, at this time.
  o.not_after = std::min(o.not_after, *valid_until);
  for (size_t i = 1; i < r.path.size(); ++i) {
    auto disabled = trust->disabled_by_tbs.find(r.path[i]->tbs_sha256());
    if (disabled != trust->disabled_by_tbs.end()) {
      o.verdict =
          Verdict::Deny(v1::DENY_REASON_UNTRUSTED_ISSUER,
                        absl::StrCat("CA ", disabled->second->id, " at depth ", i, " is disabled"));
      return o;
    }
  }
  for (size_t i = 0; i < r.path.size(); ++i) {
    if (trust->Revoked(*r.path[i], i + 1 < r.path.size() ? r.path[i + 1].get() : nullptr)) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_REVOKED,
                                absl::StrCat("certificate at depth ", i, " is revoked"));
      return o;
    }
  }
  // The closest registered CA above the leaf decides identity rules and JIT.
  for (size_t i = 1; i < r.path.size() && o.ca == nullptr; ++i) {
    auto it = trust->trusted_by_tbs.find(r.path[i]->tbs_sha256());
    if (it != trust->trusted_by_tbs.end()) o.ca = it->second;
  }
  if (o.ca == nullptr) {
    o.verdict = Verdict::Deny(v1::DENY_REASON_INTERNAL, "validated path has no registered CA");
    return o;
  }
  if (o.ca->device_id_pattern.empty()) {
    if (leaf->subject_cn().empty() || leaf->subject_cn().size() > kMaxDeviceIdBytes) {
      o.verdict = Verdict::Deny(v1::DENY_REASON_IDENTITY_MISMATCH,
                                "certificate has no single subject CN naming the device");
      return o;
    }
    o.device_id = leaf->subject_cn();
    return o;
  }
  for (const auto* names : {&leaf->san_uris(), &leaf->san_dns()}) {
    for (const std::string& n : *names) {
      if (MatchDevicePattern(o.ca->device_id_pattern, n, tenant_id, &o.device_id)) return o;
    }
  }
  o.verdict = Verdict::Deny(v1::DENY_REASON_IDENTITY_MISMATCH,
                            absl::StrCat("no subjectAltName matches ", o.ca->device_id_pattern));
  return o;
}

CertificateVerifier::Result X509CertificateVerifier::CheckDevice(const ChainOutcome& o) const {
  Result r;
  r.verdict = o.verdict;
  r.tenant_id = o.tenant_id;
  r.device_id = o.device_id;
  r.credential_type = o.credential_type;
  r.not_after = o.not_after;
  r.fingerprint = o.fingerprint;
  r.cert_cn = o.cert_cn;
  if (!r.verdict.ok()) return r;
  std::shared_ptr<const DeviceRecord> device =
      options_.directory->FindDevice(o.tenant_id, o.device_id);
  if (device == nullptr) {
    if (o.ca != nullptr && o.ca->jit_registration && options_.registrar != nullptr) {
      auto registered =
          options_.registrar->RegisterFromCertificate(*o.ca, o.device_id, o.leaf_fingerprint_hex);
      if (!registered.ok()) {
        r.verdict =
            Verdict::Deny(v1::DENY_REASON_INTERNAL,
                          absl::StrCat("JIT registration failed: ",
                                       absl::StatusCodeToString(registered.status().code())));
        return r;
      }
      if (options_.directory_writer != nullptr) {
        options_.directory_writer->UpsertRegisteredDevice(*registered).IgnoreError();
      }
      // The registrar returns the stored record when the device already existed
      // (the cache had not seen it yet): it decides like a cached one.
      if (!registered->credentials().ca_signed_allowed()) {
        r.verdict = Verdict::Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                                  "device does not accept CA-signed certificates");
      }
      return r;
    }
    r.verdict = Verdict::Deny(v1::DENY_REASON_UNKNOWN_DEVICE, "unknown device");
    return r;
  }
  if (o.credential_type == reg::CREDENTIAL_TYPE_X509_SELF_SIGNED) {
    const std::string& fp = o.leaf_fingerprint_hex;
    const std::string p = NormalizeThumbprint(device->primary_thumbprint);
    const std::string s = NormalizeThumbprint(device->secondary_thumbprint);
    const bool match = (!p.empty() && crypto::ConstantTimeEquals(fp, p)) ||
                       (!s.empty() && crypto::ConstantTimeEquals(fp, s));
    if (!match) {
      r.verdict = Verdict::Deny(v1::DENY_REASON_UNTRUSTED_ISSUER,
                                "self-signed certificate's thumbprint is not registered for "
                                "this device");
    }
    return r;
  }
  if (!device->ca_signed_allowed) {
    r.verdict = Verdict::Deny(v1::DENY_REASON_CREDENTIAL_TYPE_NOT_ALLOWED,
                              "device does not accept CA-signed certificates");
  }
  return r;
}

}  // namespace iotauth::identity::x509
