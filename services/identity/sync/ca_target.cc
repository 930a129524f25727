#include "services/identity/sync/ca_target.h"

#include "services/common/log.h"

namespace iotauth::identity {

void CaMirrorTarget::Check(const absl::Status& st, absl::string_view kind, absl::string_view id) {
  if (st.ok()) return;
  malformed_.fetch_add(1);
  log::Warn(
      "malformed registry record mirrored",
      {{"kind", std::string(kind)}, {"id", std::string(id)}, {"error", std::string(st.message())}});
}

void CaMirrorTarget::RemoveTenant(const std::string& tenant_id) { cas_->RemoveTenant(tenant_id); }
void CaMirrorTarget::Clear() { cas_->Clear(); }
void CaMirrorTarget::BeginSnapshot() { cas_->BeginSnapshot(); }
void CaMirrorTarget::EndSnapshot() { cas_->EndSnapshot(); }

void CaMirrorTarget::UpsertCa(const iotauth::registry::v1::CaCertificate& ca) {
  Check(cas_->UpsertCa(ca), "ca_certificate", ca.id());
}
void CaMirrorTarget::RemoveCa(const std::string& tenant_id, const std::string& ca_id) {
  cas_->RemoveCa(tenant_id, ca_id);
}
void CaMirrorTarget::UpsertRevocation(const iotauth::registry::v1::CertificateRevocation& r) {
  Check(cas_->UpsertRevocation(r), "revocation", r.id());
}
void CaMirrorTarget::RemoveRevocation(const std::string& tenant_id,
                                      const std::string& revocation_id) {
  cas_->RemoveRevocation(tenant_id, revocation_id);
}
void CaMirrorTarget::UpsertCrl(const iotauth::registry::v1::CertificateRevocationList& crl) {
  Check(cas_->UpsertCrl(crl), "crl", crl.ca_id());
}
void CaMirrorTarget::MarkCrlUnusable(const std::string& tenant_id, const std::string& ca_id) {
  cas_->MarkCrlUnusable(tenant_id, ca_id);
}
void CaMirrorTarget::RemoveCrl(const std::string& tenant_id, const std::string& ca_id) {
  cas_->RemoveCrl(tenant_id, ca_id);
}

}  // namespace iotauth::identity
