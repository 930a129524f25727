// Feeds the X.509 CaDirectory (registered CAs, explicit revocations, CRLs) from the
// RegistryMirror. Combine it with DirectoryMirrorTarget through FanoutMirrorTarget.
// A record that does not parse (for example a corrupt stored PEM) is dropped from
// the directory, counted and logged without its content.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "services/identity/sync/registry_mirror.h"
#include "services/identity/x509/ca_directory.h"

namespace iotauth::identity {

class CaMirrorTarget final : public MirrorTarget {
 public:
  // `cas` is not owned and must outlive the target.
  explicit CaMirrorTarget(x509::CaDirectory* cas) : cas_(cas) {}

  // Tenants matter only for removal; products, devices and groups not at all.
  void UpsertTenant(const iotauth::registry::v1::Tenant&) override {}
  void RemoveTenant(const std::string& tenant_id) override;
  void UpsertProduct(const iotauth::registry::v1::Product&) override {}
  void RemoveProduct(const std::string&, const std::string&) override {}
  void UpsertDevice(const iotauth::registry::v1::Device&) override {}
  void RemoveDevice(const std::string&, const std::string&) override {}
  void UpsertGroup(const iotauth::registry::v1::EnrollmentGroup&) override {}
  void RemoveGroup(const std::string&, const std::string&) override {}
  void Clear() override;
  void BeginSnapshot() override;
  void EndSnapshot() override;

  void UpsertCa(const iotauth::registry::v1::CaCertificate& ca) override;
  void RemoveCa(const std::string& tenant_id, const std::string& ca_id) override;
  void UpsertRevocation(const iotauth::registry::v1::CertificateRevocation& revocation) override;
  void RemoveRevocation(const std::string& tenant_id, const std::string& revocation_id) override;
  void UpsertCrl(const iotauth::registry::v1::CertificateRevocationList& crl) override;
  void RemoveCrl(const std::string& tenant_id, const std::string& ca_id) override;
  void MarkCrlUnusable(const std::string& tenant_id, const std::string& ca_id) override;

  int64_t malformed_records() const { return malformed_.load(); }

 private:
  void Check(const absl::Status& st, absl::string_view kind, absl::string_view id);
  x509::CaDirectory* cas_;
  std::atomic<int64_t> malformed_{0};
};

}  // namespace iotauth::identity
