// SqliteStore: the embedded RegistryStore. One SQLite file in WAL mode with
// synchronous=FULL (an acknowledged write survives kill -9 and power loss),
// versioned schema migrations applied at Open, prepared statements cached per
// connection, one writer connection and a small pool of reader connections.
// Secrets are sealed with a SecretBox before they reach SQLite.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/clock.h"
#include "services/registry/secret_box.h"
#include "services/registry/store.h"

namespace iotauth::registry {

namespace sqlite_internal {
class Db;
}

class SqliteStore final : public RegistryStore {
 public:
  // The newest schema version this binary knows.
  static constexpr int kLatestSchemaVersion = 4;

  struct Options {
    // Database file; created when absent. `-wal` and `-shm` files live beside it.
    std::string path;
    // Seals and opens secrets. Required.
    std::shared_ptr<const SecretBox> secret_box;
    // Source of create/update/change times. Required.
    const Clock* clock = nullptr;
    // How long a statement waits for a lock held by another connection/process.
    absl::Duration busy_timeout = absl::Seconds(5);
    // Reader connections (>= 1); reads never wait for the writer.
    int max_readers = 4;
    // SQLite page cache of the writer connection, KiB (bulk imports touch many
    // index pages); readers use a quarter of it.
    int cache_size_kib = 65536;
    // WAL pages before an automatic checkpoint (SQLite's default is 1000; fewer,
    // larger checkpoints rewrite hot pages less often during bulk imports).
    int wal_autocheckpoint_pages = 10000;
    // Apply migrations up to this version only (tests of the migration path).
    int target_schema_version = kLatestSchemaVersion;
  };

  // Opens (creating if needed) and migrates the database. FAILED_PRECONDITION if
  // the file's schema is newer than this binary's; INVALID_ARGUMENT on bad
  // options; INTERNAL on SQLite errors.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(Options options);
  ~SqliteStore() override;

  // Schema version recorded in the file.
  absl::StatusOr<int> SchemaVersion();
  // Path of the database file.
  const std::string& path() const { return options_.path; }

  // RegistryStore.
  absl::StatusOr<v1::Tenant> CreateTenant(const v1::Tenant& tenant) override;
  absl::StatusOr<v1::Tenant> GetTenant(absl::string_view tenant_id, Secrets secrets) override;
  absl::StatusOr<v1::Tenant> UpdateTenant(const v1::Tenant& tenant,
                                          absl::string_view expected_etag) override;
  absl::Status DeleteTenant(absl::string_view tenant_id, absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::Tenant>> ListTenants(const PageRequest& page) override;

  absl::StatusOr<v1::Product> CreateProduct(const v1::Product& product) override;
  absl::StatusOr<v1::Product> GetProduct(absl::string_view tenant_id, absl::string_view product_key,
                                         Secrets secrets) override;
  absl::StatusOr<v1::Product> FindProduct(absl::string_view product_key, Secrets secrets) override;
  absl::StatusOr<v1::Product> UpdateProduct(const v1::Product& product,
                                            absl::string_view expected_etag) override;
  absl::Status DeleteProduct(absl::string_view tenant_id, absl::string_view product_key,
                             absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::Product>> ListProducts(absl::string_view tenant_id,
                                                 const PageRequest& page) override;

  absl::StatusOr<v1::Device> CreateDevice(const v1::Device& device) override;
  absl::StatusOr<v1::Device> GetDevice(absl::string_view tenant_id, absl::string_view device_id,
                                       Secrets secrets) override;
  absl::StatusOr<v1::Device> UpdateDevice(const v1::Device& device,
                                          absl::string_view expected_etag) override;
  absl::Status DeleteDevice(absl::string_view tenant_id, absl::string_view device_id,
                            absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::Device>> ListDevices(absl::string_view tenant_id,
                                               const DeviceFilter& filter, const PageRequest& page,
                                               Secrets secrets) override;
  absl::StatusOr<BatchResult> CreateDevices(absl::string_view tenant_id,
                                            absl::Span<const v1::Device> devices) override;

  absl::StatusOr<v1::EnrollmentGroup> CreateEnrollmentGroup(
      const v1::EnrollmentGroup& group) override;
  absl::StatusOr<v1::EnrollmentGroup> GetEnrollmentGroup(absl::string_view tenant_id,
                                                         absl::string_view group_id,
                                                         Secrets secrets) override;
  absl::StatusOr<v1::EnrollmentGroup> UpdateEnrollmentGroup(
      const v1::EnrollmentGroup& group, absl::string_view expected_etag) override;
  absl::Status DeleteEnrollmentGroup(absl::string_view tenant_id, absl::string_view group_id,
                                     absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::EnrollmentGroup>> ListEnrollmentGroups(absl::string_view tenant_id,
                                                                 const PageRequest& page) override;

  absl::StatusOr<v1::CaCertificate> CreateCaCertificate(const v1::CaCertificate& ca) override;
  absl::StatusOr<v1::CaCertificate> GetCaCertificate(absl::string_view tenant_id,
                                                     absl::string_view ca_id) override;
  absl::StatusOr<v1::CaCertificate> UpdateCaCertificate(const v1::CaCertificate& ca,
                                                        absl::string_view expected_etag) override;
  absl::Status DeleteCaCertificate(absl::string_view tenant_id, absl::string_view ca_id,
                                   absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::CaCertificate>> ListCaCertificates(absl::string_view tenant_id,
                                                             const PageRequest& page) override;

  absl::StatusOr<v1::CaCertificate> SetCaVerification(absl::string_view tenant_id,
                                                      absl::string_view ca_id, v1::CaStatus status,
                                                      absl::string_view verification_code,
                                                      absl::string_view expected_etag) override;

  absl::StatusOr<v1::CertificateRevocation> CreateRevocation(
      const v1::CertificateRevocation& revocation) override;
  absl::StatusOr<v1::CertificateRevocation> GetRevocation(absl::string_view tenant_id,
                                                          absl::string_view revocation_id) override;
  absl::Status DeleteRevocation(absl::string_view tenant_id, absl::string_view revocation_id,
                                absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::CertificateRevocation>> ListRevocations(absl::string_view tenant_id,
                                                                  const PageRequest& page) override;

  absl::StatusOr<v1::CertificateRevocationList> PutCrl(const v1::CertificateRevocationList& crl,
                                                       absl::string_view expected_etag) override;
  absl::StatusOr<v1::CertificateRevocationList> GetCrl(absl::string_view tenant_id,
                                                       absl::string_view ca_id) override;
  absl::Status DeleteCrl(absl::string_view tenant_id, absl::string_view ca_id,
                         absl::string_view expected_etag) override;
  absl::StatusOr<Page<v1::CertificateRevocationList>> ListCrls(absl::string_view tenant_id,
                                                               const PageRequest& page) override;

  absl::StatusOr<v1::IssuingCa> CreateIssuingCa(const v1::IssuingCa& issuing,
                                                const v1::CaCertificate& ca) override;
  absl::StatusOr<v1::IssuingCa> GetIssuingCa(absl::string_view tenant_id, Secrets secrets) override;

  absl::StatusOr<ChangeBatch> ReadChanges(int64_t after_cursor, int32_t limit,
                                          absl::string_view tenant_id) override;
  absl::StatusOr<int64_t> PruneChanges(absl::Time older_than) override;
  int64_t LatestCursor() override { return notifier_.latest(); }
  absl::StatusOr<std::optional<absl::Time>> ChangeTime(int64_t cursor) override;
  ChangeNotifier& notifier() override { return notifier_; }

  absl::Status RewrapSecrets(std::shared_ptr<const SecretBox> new_box, int batch_size,
                             const std::function<void(const RewrapProgress&)>& progress) override;

 private:
  struct Txn;
  class ReaderLease;

  explicit SqliteStore(Options options);
  absl::Status Init();
  absl::Status Migrate();

  // Runs `fn` in one BEGIN IMMEDIATE transaction on the writer connection; commits
  // when it returns OK, rolls back otherwise, then wakes change watchers.
  absl::Status WriteTxn(const std::function<absl::Status(Txn&)>& fn);
  absl::StatusOr<std::unique_ptr<sqlite_internal::Db>> OpenConnection(bool writer) const;
  absl::StatusOr<std::unique_ptr<sqlite_internal::Db>> AcquireReaderOrError();
  void ReleaseReader(std::unique_ptr<sqlite_internal::Db> db);
  std::shared_ptr<const SecretBox> box() const;

  Options options_;
  ChangeNotifier notifier_;

  mutable absl::Mutex box_mu_;
  std::shared_ptr<const SecretBox> box_ ABSL_GUARDED_BY(box_mu_);

  absl::Mutex write_mu_;
  std::unique_ptr<sqlite_internal::Db> writer_ ABSL_GUARDED_BY(write_mu_);

  absl::Mutex readers_mu_;
  std::vector<std::unique_ptr<sqlite_internal::Db>> idle_readers_ ABSL_GUARDED_BY(readers_mu_);
  int open_readers_ ABSL_GUARDED_BY(readers_mu_) = 0;
};

}  // namespace iotauth::registry
