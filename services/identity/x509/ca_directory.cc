#include "services/identity/x509/ca_directory.h"

#include <openssl/x509.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace iotauth::identity::x509 {

namespace reg = ::iotauth::registry::v1;

std::string CaDirectory::IssuerSerialKey(absl::string_view issuer_fingerprint_hex,
                                         absl::string_view serial_hex) {
  std::string serial = absl::AsciiStrToLower(serial_hex);
  if (absl::StartsWith(serial, "0x")) serial = serial.substr(2);
  size_t nz = serial.find_first_not_of('0');
  serial = nz == std::string::npos ? "0" : serial.substr(nz);
  return absl::StrCat(absl::AsciiStrToLower(issuer_fingerprint_hex), "/", serial);
}

absl::Status CaDirectory::UpsertCa(const reg::CaCertificate& ca) {
  auto certs = ParseCertificates(ca.certificate_pem(), ParseLimits{});
  absl::MutexLock lock(&mu_);
  if (in_snapshot_) seen_[ca.tenant_id()].cas.insert(ca.id());
  Source& src = sources_[ca.tenant_id()];
  if (!certs.ok() || certs->size() != 1) {
    src.cas.erase(ca.id());
    Rebuild(ca.tenant_id());
    return absl::InvalidArgumentError(
        absl::StrCat("CA ", ca.id(), " of tenant ", ca.tenant_id(), " does not parse"));
  }
  auto info = std::make_shared<CaInfo>();
  info->tenant_id = ca.tenant_id();
  info->id = ca.id();
  info->status = ca.status();
  info->jit_registration = ca.jit_registration();
  info->jit_product_key = ca.jit_product_key();
  info->jit_auto_enable = ca.jit_auto_enable();
  info->device_id_pattern = ca.device_id_pattern();
  info->issuing = ca.issuing();
  info->cert = (*certs)[0];
  src.cas[ca.id()] = std::move(info);
  Rebuild(ca.tenant_id());
  return absl::OkStatus();
}

void CaDirectory::RemoveCa(absl::string_view tenant_id, absl::string_view ca_id) {
  absl::MutexLock lock(&mu_);
  auto it = sources_.find(tenant_id);
  if (it == sources_.end()) return;
  it->second.cas.erase(ca_id);
  it->second.crls.erase(ca_id);
  Rebuild(std::string(tenant_id));
}

absl::Status CaDirectory::UpsertRevocation(const reg::CertificateRevocation& revocation) {
  if (revocation.fingerprint().empty() && revocation.tbs_fingerprint().empty() &&
      (revocation.issuer_fingerprint().empty() || revocation.serial_hex().empty())) {
    return absl::InvalidArgumentError("revocation names no certificate");
  }
  absl::MutexLock lock(&mu_);
  if (in_snapshot_) seen_[revocation.tenant_id()].revocations.insert(revocation.id());
  sources_[revocation.tenant_id()].revocations[revocation.id()] = revocation;
  Rebuild(revocation.tenant_id());
  return absl::OkStatus();
}

void CaDirectory::RemoveRevocation(absl::string_view tenant_id, absl::string_view revocation_id) {
  absl::MutexLock lock(&mu_);
  auto it = sources_.find(tenant_id);
  if (it == sources_.end()) return;
  it->second.revocations.erase(revocation_id);
  Rebuild(std::string(tenant_id));
}

absl::Status CaDirectory::UpsertCrl(const reg::CertificateRevocationList& crl) {
  auto parsed = ParsedCrl::Parse(crl.crl_pem());
  absl::MutexLock lock(&mu_);
  if (in_snapshot_) seen_[crl.tenant_id()].crls.insert(crl.ca_id());
  Source& src = sources_[crl.tenant_id()];
  if (!parsed.ok()) {
    // Fail closed: dropping the CRL would accept what it revokes.
    src.crls[crl.ca_id()] = nullptr;
    Rebuild(crl.tenant_id());
    return absl::InvalidArgumentError(absl::StrCat("CRL of CA ", crl.ca_id(),
                                                   " does not parse: the CA is not trusted "
                                                   "until a CRL that does is uploaded"));
  }
  src.crls[crl.ca_id()] = *std::move(parsed);
  Rebuild(crl.tenant_id());
  return absl::OkStatus();
}

void CaDirectory::MarkCrlUnusable(absl::string_view tenant_id, absl::string_view ca_id) {
  absl::MutexLock lock(&mu_);
  sources_[tenant_id].crls[ca_id] = nullptr;
  Rebuild(std::string(tenant_id));
}

void CaDirectory::RemoveCrl(absl::string_view tenant_id, absl::string_view ca_id) {
  absl::MutexLock lock(&mu_);
  auto it = sources_.find(tenant_id);
  if (it == sources_.end()) return;
  it->second.crls.erase(ca_id);
  Rebuild(std::string(tenant_id));
}

void CaDirectory::RemoveTenant(absl::string_view tenant_id) {
  absl::MutexLock lock(&mu_);
  sources_.erase(tenant_id);
  Rebuild(std::string(tenant_id));
}

void CaDirectory::BeginSnapshot() {
  absl::MutexLock lock(&mu_);
  in_snapshot_ = true;
  seen_.clear();
}

void CaDirectory::EndSnapshot() {
  absl::MutexLock lock(&mu_);
  if (!in_snapshot_) return;
  in_snapshot_ = false;
  // Drops what the snapshot did not bring; returns whether anything went.
  auto sweep = [](auto& map, const absl::flat_hash_set<std::string>* keep) {
    bool changed = false;
    for (auto it = map.begin(); it != map.end();) {
      if (keep == nullptr || !keep->contains(it->first)) {
        map.erase(it++);
        changed = true;
      } else {
        ++it;
      }
    }
    return changed;
  };
  std::vector<std::string> changed;
  for (auto& [tenant, src] : sources_) {
    auto s = seen_.find(tenant);
    const Seen* seen = s == seen_.end() ? nullptr : &s->second;
    bool c = sweep(src.cas, seen == nullptr ? nullptr : &seen->cas);
    c = sweep(src.revocations, seen == nullptr ? nullptr : &seen->revocations) || c;
    c = sweep(src.crls, seen == nullptr ? nullptr : &seen->crls) || c;
    if (c) changed.push_back(tenant);
  }
  seen_.clear();
  for (const std::string& tenant : changed) {
    auto it = sources_.find(tenant);
    const Source& src = it->second;
    if (src.cas.empty() && src.revocations.empty() && src.crls.empty()) sources_.erase(it);
    Rebuild(tenant);
  }
}

void CaDirectory::Clear() {
  absl::MutexLock lock(&mu_);
  in_snapshot_ = false;
  seen_.clear();
  sources_.clear();
  snapshots_.clear();
  issuer_index_.clear();
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

void CaDirectory::Rebuild(const std::string& tenant_id) {
  auto it = sources_.find(tenant_id);
  if (it == sources_.end()) {
    snapshots_.erase(tenant_id);
  } else {
    const Source& src = it->second;
    auto t = std::make_shared<TenantTrust>();
    t->tenant_id = tenant_id;
    std::vector<CertPtr> anchors;
    std::vector<CrlPtr> crls;
    for (const auto& [id, ca] : src.cas) {
      t->cas[id] = ca;
      // Every registered CA's CRL applies, anchor or not: a tenant may register an
      // intermediate only to publish its CRL. A CRL can only add revocations, and
      // OpenSSL uses it only for certificates whose issuer in the path has its name and
      // verifies its signature (a mismatch fails closed).
      auto crl = src.crls.find(id);
      if (crl != src.crls.end() && crl->second == nullptr) {
        // Its CRL is known but unusable: the CA counts as disabled, so no chain
        // through it passes (MarkCrlUnusable).
        t->disabled_by_tbs[ca->cert->tbs_sha256()] = ca;
        continue;
      }
      if (crl != src.crls.end()) crls.push_back(crl->second);
      if (ca->status == reg::CA_STATUS_DISABLED) t->disabled_by_tbs[ca->cert->tbs_sha256()] = ca;
      if (ca->status != reg::CA_STATUS_VERIFIED) continue;
      t->trusted_by_tbs[ca->cert->tbs_sha256()] = ca;
      anchors.push_back(ca->cert);
    }
    if (!anchors.empty()) {
      auto store = TrustStore::Create(std::move(anchors), {}, std::move(crls));
      if (store.ok()) t->store = *std::move(store);
    }
    // A revocation names its issuer by the CA's DER fingerprint; the check names it
    // by the tbs fingerprint of the certificate in the path.
    absl::flat_hash_map<std::string, std::string> tbs_by_fingerprint;
    for (const auto& [id, ca] : src.cas) {
      tbs_by_fingerprint[ca->cert->fingerprint_hex()] = ca->cert->tbs_fingerprint_hex();
    }
    for (const auto& [id, r] : src.revocations) t->AddRevocation(r, tbs_by_fingerprint);
    snapshots_[tenant_id] = std::move(t);
  }
  // Rebuild the issuer index (writes are rare).
  issuer_index_.clear();
  for (const auto& [tid, snap] : snapshots_) {
    for (const auto& [sha, ca] : snap->trusted_by_tbs) {
      int ok = 0;
      unsigned long h =
          X509_NAME_hash_ex(X509_get_subject_name(ca->cert->x509()), nullptr, nullptr, &ok);
      if (ok != 1) continue;
      auto& v = issuer_index_[h];
      if (std::find(v.begin(), v.end(), tid) == v.end()) v.push_back(tid);
    }
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

void TenantTrust::AddRevocation(
    const reg::CertificateRevocation& r,
    const absl::flat_hash_map<std::string, std::string>& tbs_by_fingerprint) {
  if (!r.fingerprint().empty()) revoked_fingerprints.insert(absl::AsciiStrToLower(r.fingerprint()));
  if (!r.tbs_fingerprint().empty()) revoked_tbs.insert(absl::AsciiStrToLower(r.tbs_fingerprint()));
  if (!r.issuer_fingerprint().empty() && !r.serial_hex().empty()) {
    const std::string issuer = absl::AsciiStrToLower(r.issuer_fingerprint());
    auto tbs = tbs_by_fingerprint.find(issuer);
    revoked_issuer_serials.insert(CaDirectory::IssuerSerialKey(
        tbs != tbs_by_fingerprint.end() ? tbs->second : issuer, r.serial_hex()));
  }
}

bool TenantTrust::Revoked(const ParsedCertificate& cert, const ParsedCertificate* issuer) const {
  if (revoked_fingerprints.contains(cert.fingerprint_hex()) ||
      revoked_tbs.contains(cert.tbs_fingerprint_hex())) {
    return true;
  }
  // A DER fingerprint names one encoding of the signature; the other ECDSA one is
  // the same certificate (the signer is the issuer, or the certificate itself at the
  // top of the path).
  if (!revoked_fingerprints.empty()) {
    const std::string variant =
        SignatureVariantFingerprintHex(cert, issuer != nullptr ? *issuer : cert);
    if (!variant.empty() && revoked_fingerprints.contains(variant)) return true;
  }
  return issuer != nullptr && (revoked_issuer_serials.contains(CaDirectory::IssuerSerialKey(
                                   issuer->tbs_fingerprint_hex(), cert.serial_hex())) ||
                               revoked_issuer_serials.contains(CaDirectory::IssuerSerialKey(
                                   issuer->fingerprint_hex(), cert.serial_hex())));
}

std::shared_ptr<const TenantTrust> CaDirectory::Find(absl::string_view tenant_id) const {
  absl::MutexLock lock(&mu_);
  auto it = snapshots_.find(tenant_id);
  return it == snapshots_.end() ? nullptr : it->second;
}

std::vector<std::string> CaDirectory::TenantsForIssuer(const X509_NAME* issuer,
                                                       size_t limit) const {
  int ok = 0;
  unsigned long h = X509_NAME_hash_ex(issuer, nullptr, nullptr, &ok);
  std::vector<std::string> out;
  if (ok != 1) return out;
  absl::MutexLock lock(&mu_);
  auto it = issuer_index_.find(h);
  if (it == issuer_index_.end()) return out;
  for (const std::string& t : it->second) {
    if (out.size() >= limit) break;
    out.push_back(t);
  }
  return out;
}

}  // namespace iotauth::identity::x509
