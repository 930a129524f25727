// RegistryStore: the storage interface of the device registry (tenants, products,
// devices, enrollment groups, CA certificates, certificate revocations, CRLs, issuing
// CAs, and the change log). No SQL here:
// SqliteStore is the embedded implementation; a PostgreSQL one can follow.
//
// Contract shared by every implementation:
// - Resources go in and out as the v1 protos with secrets in plaintext; an
//   implementation encrypts them at rest. Reads return secrets only when asked
//   with Secrets::kInclude.
// - The store owns create_time, update_time and etag (inputs are ignored). An etag
//   is opaque; it changes on every mutation and is never reused.
// - Every mutation appends to the change log in the same transaction, so a change
//   is visible in ReadChanges exactly when the mutation is committed. Cursors are
//   positive, strictly increasing and never reused; 0 means "before everything".
// - `expected_etag` empty means unconditional; otherwise a mismatch is
//   FAILED_PRECONDITION and nothing changes.
// - Errors: NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION (etag mismatch, deleting
//   a non-empty tenant or a product with devices, unknown product), INTERNAL
//   (storage), each with a stable reason (ReasonOf in validation.h).
// - Thread-safe; an acknowledged (returned OK) write is durable.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "proto/iotauth/registry/v1/registry.pb.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/registry/secret_box.h"

namespace iotauth::registry {

// Whether reads decrypt and return secret fields.
enum class Secrets { kOmit, kInclude };

// One page of a keyed listing: items with a key greater than `after_key`
// (empty = from the start), ordered by key.
struct PageRequest {
  int32_t page_size = 100;
  std::string after_key;
};

template <typename T>
struct Page {
  std::vector<T> items;
  // Key of the last item; pass it as `after_key` for the next page.
  std::string last_key;
  // Whether items exist after this page.
  bool more = false;
};

// Device list filters; empty members match everything. All tags must match.
struct DeviceFilter {
  std::string product_key;
  v1::DeviceStatus status = v1::DEVICE_STATUS_UNSPECIFIED;
  std::map<std::string, std::string> tags;
};

// Per-item outcome of a batch insert.
struct BatchItemError {
  // Position of the item in the batch.
  size_t index = 0;
  // ALREADY_EXISTS, FAILED_PRECONDITION (UNKNOWN_PRODUCT), ... with a stable reason.
  absl::Status status;
};

struct BatchResult {
  int64_t inserted = 0;
  std::vector<BatchItemError> errors;
};

// A slice of the change log.
struct ChangeBatch {
  // ChangeEvent.cursor is the decimal cursor of each event.
  std::vector<v1::ChangeEvent> events;
  // Highest cursor examined (>= the last event's); resume after it. Equals the
  // request's `after_cursor` when nothing newer exists.
  int64_t next_cursor = 0;
};

struct RewrapProgress {
  int64_t rows_done = 0;
  int64_t rows_total = 0;
};

// In-process wake-up for change-log readers: the store calls Publish after each
// committed mutation; WatchChanges waits on it instead of polling. A PostgreSQL
// store would Publish from LISTEN/NOTIFY. Thread-safe.
class ChangeNotifier {
 public:
  using Listener = std::function<void(int64_t latest_cursor)>;

  explicit ChangeNotifier(int64_t latest = 0) : latest_(latest) {}

  // Records that changes up to `cursor` are committed and wakes waiters.
  void Publish(int64_t cursor) {
    std::vector<Listener> listeners;
    {
      absl::MutexLock lock(&mu_);
      if (cursor <= latest_) return;
      latest_ = cursor;
      for (auto& [id, l] : listeners_) listeners.push_back(l);
    }
    for (auto& l : listeners) l(cursor);
  }
  int64_t latest() const {
    absl::MutexLock lock(&mu_);
    return latest_;
  }
  // Blocks until a change after `after_cursor` is committed or `timeout` passes.
  // Returns whether one is.
  bool WaitFor(int64_t after_cursor, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto newer = [this, after_cursor]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return latest_ > after_cursor; };
    return mu_.AwaitWithTimeout(absl::Condition(&newer), timeout);
  }
  // Calls `listener` (outside the lock, on the committing thread; keep it short)
  // after each commit. Returns an id for RemoveListener.
  int64_t AddListener(Listener listener) {
    absl::MutexLock lock(&mu_);
    int64_t id = ++next_listener_id_;
    listeners_[id] = std::move(listener);
    return id;
  }
  void RemoveListener(int64_t id) {
    absl::MutexLock lock(&mu_);
    listeners_.erase(id);
  }

 private:
  mutable absl::Mutex mu_;
  int64_t latest_ ABSL_GUARDED_BY(mu_);
  int64_t next_listener_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<int64_t, Listener> listeners_ ABSL_GUARDED_BY(mu_);
};

class RegistryStore {
 public:
  virtual ~RegistryStore() = default;

  // Tenants. Policies' keys are secrets.
  virtual absl::StatusOr<v1::Tenant> CreateTenant(const v1::Tenant& tenant) = 0;
  virtual absl::StatusOr<v1::Tenant> GetTenant(absl::string_view tenant_id, Secrets secrets) = 0;
  // Replaces every stored field of the tenant with `tenant`'s.
  virtual absl::StatusOr<v1::Tenant> UpdateTenant(const v1::Tenant& tenant,
                                                  absl::string_view expected_etag) = 0;
  // FAILED_PRECONDITION (TENANT_NOT_EMPTY) while it owns any resource.
  virtual absl::Status DeleteTenant(absl::string_view tenant_id,
                                    absl::string_view expected_etag) = 0;
  // Without secrets.
  virtual absl::StatusOr<Page<v1::Tenant>> ListTenants(const PageRequest& page) = 0;

  // Products. The product key is unique in the deployment; the product secret is a
  // secret.
  virtual absl::StatusOr<v1::Product> CreateProduct(const v1::Product& product) = 0;
  virtual absl::StatusOr<v1::Product> GetProduct(absl::string_view tenant_id,
                                                 absl::string_view product_key,
                                                 Secrets secrets) = 0;
  // Lookup by product key alone (device-triple connects name no tenant).
  virtual absl::StatusOr<v1::Product> FindProduct(absl::string_view product_key,
                                                  Secrets secrets) = 0;
  virtual absl::StatusOr<v1::Product> UpdateProduct(const v1::Product& product,
                                                    absl::string_view expected_etag) = 0;
  // FAILED_PRECONDITION (PRODUCT_IN_USE) while devices, groups or CAs name it.
  virtual absl::Status DeleteProduct(absl::string_view tenant_id, absl::string_view product_key,
                                     absl::string_view expected_etag) = 0;
  virtual absl::StatusOr<Page<v1::Product>> ListProducts(absl::string_view tenant_id,
                                                         const PageRequest& page) = 0;

  // Devices. The symmetric keys are secrets. The product must exist in the tenant
  // (FAILED_PRECONDITION, reason UNKNOWN_PRODUCT).
  virtual absl::StatusOr<v1::Device> CreateDevice(const v1::Device& device) = 0;
  virtual absl::StatusOr<v1::Device> GetDevice(absl::string_view tenant_id,
                                               absl::string_view device_id, Secrets secrets) = 0;
  // The change event's type is derived from what changed: DISABLED, ENABLED,
  // CREDENTIALS_CHANGED or UPDATED.
  virtual absl::StatusOr<v1::Device> UpdateDevice(const v1::Device& device,
                                                  absl::string_view expected_etag) = 0;
  virtual absl::Status DeleteDevice(absl::string_view tenant_id, absl::string_view device_id,
                                    absl::string_view expected_etag) = 0;
  // Ordered by device id. kInclude is for export.
  virtual absl::StatusOr<Page<v1::Device>> ListDevices(absl::string_view tenant_id,
                                                       const DeviceFilter& filter,
                                                       const PageRequest& page,
                                                       Secrets secrets) = 0;
  // Inserts `devices` (all of `tenant_id`) in one transaction. Items that fail
  // (duplicate id, also within the batch; unknown product) are reported and
  // skipped; the others commit together. A non-OK return means nothing committed.
  virtual absl::StatusOr<BatchResult> CreateDevices(absl::string_view tenant_id,
                                                    absl::Span<const v1::Device> devices) = 0;

  // Enrollment groups. The group key is a secret; the product must exist.
  virtual absl::StatusOr<v1::EnrollmentGroup> CreateEnrollmentGroup(
      const v1::EnrollmentGroup& group) = 0;
  virtual absl::StatusOr<v1::EnrollmentGroup> GetEnrollmentGroup(absl::string_view tenant_id,
                                                                 absl::string_view group_id,
                                                                 Secrets secrets) = 0;
  virtual absl::StatusOr<v1::EnrollmentGroup> UpdateEnrollmentGroup(
      const v1::EnrollmentGroup& group, absl::string_view expected_etag) = 0;
  virtual absl::Status DeleteEnrollmentGroup(absl::string_view tenant_id,
                                             absl::string_view group_id,
                                             absl::string_view expected_etag) = 0;
  virtual absl::StatusOr<Page<v1::EnrollmentGroup>> ListEnrollmentGroups(
      absl::string_view tenant_id, const PageRequest& page) = 0;

  // CA certificates (no secrets). The caller assigns `id`; the SHA-256
  // fingerprint is unique within a tenant (ALREADY_EXISTS).
  virtual absl::StatusOr<v1::CaCertificate> CreateCaCertificate(const v1::CaCertificate& ca) = 0;
  virtual absl::StatusOr<v1::CaCertificate> GetCaCertificate(absl::string_view tenant_id,
                                                             absl::string_view ca_id) = 0;
  virtual absl::StatusOr<v1::CaCertificate> UpdateCaCertificate(
      const v1::CaCertificate& ca, absl::string_view expected_etag) = 0;
  virtual absl::Status DeleteCaCertificate(absl::string_view tenant_id, absl::string_view ca_id,
                                           absl::string_view expected_etag) = 0;
  virtual absl::StatusOr<Page<v1::CaCertificate>> ListCaCertificates(absl::string_view tenant_id,
                                                                     const PageRequest& page) = 0;

  // Sets a CA's status and proof-of-possession code in one conditional write (the
  // certificate service's possession flow). `status` UNSPECIFIED keeps the stored
  // status. The change event is ENABLED when the CA becomes VERIFIED, DISABLED when
  // it becomes DISABLED, UPDATED otherwise.
  virtual absl::StatusOr<v1::CaCertificate> SetCaVerification(absl::string_view tenant_id,
                                                              absl::string_view ca_id,
                                                              v1::CaStatus status,
                                                              absl::string_view verification_code,
                                                              absl::string_view expected_etag) = 0;

  // Certificate revocations (no secrets). The caller assigns `id` (derived from
  // what is revoked, so revoking twice is ALREADY_EXISTS). The tenant must exist
  // (FAILED_PRECONDITION, UNKNOWN_TENANT). Change events: RESOURCE_TYPE_REVOCATION,
  // resource_id = the revocation id.
  virtual absl::StatusOr<v1::CertificateRevocation> CreateRevocation(
      const v1::CertificateRevocation& revocation) = 0;
  virtual absl::StatusOr<v1::CertificateRevocation> GetRevocation(
      absl::string_view tenant_id, absl::string_view revocation_id) = 0;
  virtual absl::Status DeleteRevocation(absl::string_view tenant_id,
                                        absl::string_view revocation_id,
                                        absl::string_view expected_etag) = 0;
  // Ordered by id.
  virtual absl::StatusOr<Page<v1::CertificateRevocation>> ListRevocations(
      absl::string_view tenant_id, const PageRequest& page) = 0;

  // CRLs: at most one per registered CA; PutCrl inserts or replaces it (change
  // event CREATED or UPDATED, RESOURCE_TYPE_CRL, resource_id = the CA id). The CA
  // must exist (FAILED_PRECONDITION, UNKNOWN_CA). A non-empty `expected_etag` must
  // match the stored CRL (ETAG_MISMATCH otherwise, also when none is stored); empty
  // means unconditional.
  // Deleting a CA deletes its CRL in the same transaction.
  virtual absl::StatusOr<v1::CertificateRevocationList> PutCrl(
      const v1::CertificateRevocationList& crl, absl::string_view expected_etag) = 0;
  virtual absl::StatusOr<v1::CertificateRevocationList> GetCrl(absl::string_view tenant_id,
                                                               absl::string_view ca_id) = 0;
  virtual absl::Status DeleteCrl(absl::string_view tenant_id, absl::string_view ca_id,
                                 absl::string_view expected_etag) = 0;
  // Ordered by CA id.
  virtual absl::StatusOr<Page<v1::CertificateRevocationList>> ListCrls(absl::string_view tenant_id,
                                                                       const PageRequest& page) = 0;

  // The tenant's issuing CA (one per tenant). `private_key_pem` is a secret,
  // sealed at rest with the row bound into the AAD. CreateIssuingCa inserts the
  // IssuingCa and its CaCertificate (`ca`, which must have `issuing` set and the
  // same id) in one transaction: two change events (CA_CERTIFICATE and ISSUING_CA,
  // resource_id = the CA id). ALREADY_EXISTS when the tenant has an issuing CA or
  // the CA id/fingerprint is taken. Deleting the CaCertificate deletes the issuing
  // CA (and its key) in the same transaction.
  virtual absl::StatusOr<v1::IssuingCa> CreateIssuingCa(const v1::IssuingCa& issuing,
                                                        const v1::CaCertificate& ca) = 0;
  virtual absl::StatusOr<v1::IssuingCa> GetIssuingCa(absl::string_view tenant_id,
                                                     Secrets secrets) = 0;

  // Change log: events with a cursor greater than `after_cursor`, oldest first, at
  // most `limit`; `tenant_id` empty means every tenant. `after_cursor` 0 means the
  // oldest retained event. OUT_OF_RANGE (reason CURSOR_EXPIRED) when events after
  // `after_cursor` have been pruned, or (reason CURSOR_UNKNOWN) when `after_cursor`
  // is past every cursor this log has issued (another database's): the reader must
  // resynchronise in full.
  virtual absl::StatusOr<ChangeBatch> ReadChanges(int64_t after_cursor, int32_t limit,
                                                  absl::string_view tenant_id) = 0;
  // Deletes change events older than `older_than` (retention). Returns how many.
  virtual absl::StatusOr<int64_t> PruneChanges(absl::Time older_than) = 0;
  // The cursor of the newest committed change (0 when none).
  virtual int64_t LatestCursor() = 0;
  // The time of the change at `cursor`, or nullopt when this log does not hold it
  // (pruned, or never issued). A follower resuming from a cursor names its change's
  // time so that another log's change at the same cursor (a database restored from a
  // backup, or replaced) is told apart.
  virtual absl::StatusOr<std::optional<absl::Time>> ChangeTime(int64_t cursor) = 0;
  // Wakes waiters after each commit (see ChangeNotifier).
  virtual ChangeNotifier& notifier() = 0;

  // Re-encrypts every secret under `new_box`'s primary key, in transactions of
  // `batch_size` rows, while the store keeps serving (`new_box` must also hold the
  // current key so reads of not-yet-rewrapped rows keep working; it becomes the
  // store's box at once). Idempotent: rows already under the new key are skipped,
  // so an interrupted run can be repeated. `progress` (may be empty) is called
  // after each batch.
  virtual absl::Status RewrapSecrets(
      std::shared_ptr<const SecretBox> new_box, int batch_size,
      const std::function<void(const RewrapProgress&)>& progress) = 0;
};

}  // namespace iotauth::registry
