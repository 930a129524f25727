// RegistryService: the DeviceRegistry gRPC service (iotauth.registry.v1). Thin
// handlers over a RegistryStore: resolve the caller, check the role, validate,
// call the store, record an audit event, strip secrets. No SQL and no server
// wiring here; the lead registers the service on the server.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/audit/audit_gate.h"
#include "services/audit/sink_interface.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/common/stream_slots.h"
#include "services/registry/store.h"

namespace iotauth::registry {

// Response header of WatchChanges: the cursor the stream starts after, sent as
// soon as it is fixed (see WatchChangesRequest.cursor).
inline constexpr absl::string_view kChangeCursorHeader = "iotauth-change-cursor";

class RegistryService final : public v1::DeviceRegistry::Service {
 public:
  struct Options {
    // Required. Not owned; must outlive the service.
    RegistryStore* store = nullptr;
    // Required (audit event times).
    const Clock* clock = nullptr;
    // Required; use audit::NullAuditSink to disable auditing.
    audit::AuditSink* audit = nullptr;
    // Required; AllowAllCallerResolver when caller authentication is off.
    const CallerResolver* caller_resolver = nullptr;
    // Devices committed per transaction by ImportDevices.
    int import_batch_size = 1000;
    // Longest a WatchChanges stream waits between cancellation checks.
    absl::Duration watch_poll_interval = absl::Milliseconds(100);
    // Change events read per store call by WatchChanges.
    int32_t watch_batch_size = 500;
    // WatchChanges streams open at once; more are refused with RESOURCE_EXHAUSTED
    // (each holds a server thread while open; see stream_slots.h). Each identity
    // process in split mode keeps one.
    int max_watch_streams = 256;
    // The store's current SecretBox (new primary key plus previous keys), passed to
    // RegistryStore::RewrapSecrets. Optional: when null, RewrapSecrets answers
    // FAILED_PRECONDITION.
    std::shared_ptr<const SecretBox> secret_box;
    // Optional (audit.when_unwritable=refuse): while the audit log cannot record
    // them, mutations are UNAVAILABLE before they act. Reads are answered, reads of
    // secrets too (their events are lost, counted in the GAP): the identity mirror
    // reads a device's keys with every change to it, and refusing it would hold
    // back disables and key changes from Authenticate. Must outlive the service.
    const audit::AuditGate* audit_gate = nullptr;
  };

  // INVALID_ARGUMENT when a required option is missing.
  static absl::StatusOr<std::unique_ptr<RegistryService>> Create(Options options);

  grpc::Status CreateTenant(grpc::ServerContext* ctx, const v1::CreateTenantRequest* req,
                            v1::Tenant* resp) override;
  grpc::Status GetTenant(grpc::ServerContext* ctx, const v1::GetTenantRequest* req,
                         v1::Tenant* resp) override;
  grpc::Status UpdateTenant(grpc::ServerContext* ctx, const v1::UpdateTenantRequest* req,
                            v1::Tenant* resp) override;
  grpc::Status DeleteTenant(grpc::ServerContext* ctx, const v1::DeleteTenantRequest* req,
                            v1::DeleteResponse* resp) override;
  grpc::Status ListTenants(grpc::ServerContext* ctx, const v1::ListTenantsRequest* req,
                           v1::ListTenantsResponse* resp) override;

  grpc::Status CreateProduct(grpc::ServerContext* ctx, const v1::CreateProductRequest* req,
                             v1::Product* resp) override;
  grpc::Status GetProduct(grpc::ServerContext* ctx, const v1::GetProductRequest* req,
                          v1::Product* resp) override;
  grpc::Status UpdateProduct(grpc::ServerContext* ctx, const v1::UpdateProductRequest* req,
                             v1::Product* resp) override;
  grpc::Status DeleteProduct(grpc::ServerContext* ctx, const v1::DeleteProductRequest* req,
                             v1::DeleteResponse* resp) override;
  grpc::Status ListProducts(grpc::ServerContext* ctx, const v1::ListProductsRequest* req,
                            v1::ListProductsResponse* resp) override;

  grpc::Status CreateDevice(grpc::ServerContext* ctx, const v1::CreateDeviceRequest* req,
                            v1::Device* resp) override;
  grpc::Status GetDevice(grpc::ServerContext* ctx, const v1::GetDeviceRequest* req,
                         v1::Device* resp) override;
  grpc::Status UpdateDevice(grpc::ServerContext* ctx, const v1::UpdateDeviceRequest* req,
                            v1::Device* resp) override;
  grpc::Status DeleteDevice(grpc::ServerContext* ctx, const v1::DeleteDeviceRequest* req,
                            v1::DeleteResponse* resp) override;
  grpc::Status ListDevices(grpc::ServerContext* ctx, const v1::ListDevicesRequest* req,
                           v1::ListDevicesResponse* resp) override;
  grpc::Status BatchGetDevices(grpc::ServerContext* ctx, const v1::BatchGetDevicesRequest* req,
                               v1::BatchGetDevicesResponse* resp) override;

  grpc::Status RegenerateDeviceKey(grpc::ServerContext* ctx,
                                   const v1::RegenerateDeviceKeyRequest* req,
                                   v1::Device* resp) override;
  grpc::Status SetDeviceThumbprints(grpc::ServerContext* ctx,
                                    const v1::SetDeviceThumbprintsRequest* req,
                                    v1::Device* resp) override;
  grpc::Status SetDeviceStatus(grpc::ServerContext* ctx, const v1::SetDeviceStatusRequest* req,
                               v1::Device* resp) override;

  grpc::Status CreateEnrollmentGroup(grpc::ServerContext* ctx,
                                     const v1::CreateEnrollmentGroupRequest* req,
                                     v1::EnrollmentGroup* resp) override;
  grpc::Status GetEnrollmentGroup(grpc::ServerContext* ctx,
                                  const v1::GetEnrollmentGroupRequest* req,
                                  v1::EnrollmentGroup* resp) override;
  grpc::Status UpdateEnrollmentGroup(grpc::ServerContext* ctx,
                                     const v1::UpdateEnrollmentGroupRequest* req,
                                     v1::EnrollmentGroup* resp) override;
  grpc::Status DeleteEnrollmentGroup(grpc::ServerContext* ctx,
                                     const v1::DeleteEnrollmentGroupRequest* req,
                                     v1::DeleteResponse* resp) override;
  grpc::Status ListEnrollmentGroups(grpc::ServerContext* ctx,
                                    const v1::ListEnrollmentGroupsRequest* req,
                                    v1::ListEnrollmentGroupsResponse* resp) override;

  grpc::Status CreateCaCertificate(grpc::ServerContext* ctx,
                                   const v1::CreateCaCertificateRequest* req,
                                   v1::CaCertificate* resp) override;
  grpc::Status GetCaCertificate(grpc::ServerContext* ctx, const v1::GetCaCertificateRequest* req,
                                v1::CaCertificate* resp) override;
  grpc::Status ListCaCertificates(grpc::ServerContext* ctx,
                                  const v1::ListCaCertificatesRequest* req,
                                  v1::ListCaCertificatesResponse* resp) override;
  grpc::Status UpdateCaCertificate(grpc::ServerContext* ctx,
                                   const v1::UpdateCaCertificateRequest* req,
                                   v1::CaCertificate* resp) override;
  grpc::Status DeleteCaCertificate(grpc::ServerContext* ctx,
                                   const v1::DeleteCaCertificateRequest* req,
                                   v1::DeleteResponse* resp) override;

  grpc::Status GetRevocation(grpc::ServerContext* ctx, const v1::GetRevocationRequest* req,
                             v1::CertificateRevocation* resp) override;
  grpc::Status ListRevocations(grpc::ServerContext* ctx, const v1::ListRevocationsRequest* req,
                               v1::ListRevocationsResponse* resp) override;
  grpc::Status GetCrl(grpc::ServerContext* ctx, const v1::GetCrlRequest* req,
                      v1::CertificateRevocationList* resp) override;
  grpc::Status ListCrls(grpc::ServerContext* ctx, const v1::ListCrlsRequest* req,
                        v1::ListCrlsResponse* resp) override;

  grpc::Status ImportDevices(grpc::ServerContext* ctx,
                             grpc::ServerReader<v1::ImportDevicesRequest>* reader,
                             v1::ImportDevicesResponse* resp) override;
  grpc::Status ExportDevices(grpc::ServerContext* ctx, const v1::ExportDevicesRequest* req,
                             grpc::ServerWriter<v1::Device>* writer) override;
  grpc::Status ExportDeviceBatches(grpc::ServerContext* ctx, const v1::ExportDevicesRequest* req,
                                   grpc::ServerWriter<v1::DeviceBatch>* writer) override;
  grpc::Status WatchChanges(grpc::ServerContext* ctx, const v1::WatchChangesRequest* req,
                            grpc::ServerWriter<v1::ChangeEvent>* writer) override;
  grpc::Status GetChangeCursor(grpc::ServerContext* ctx, const v1::GetChangeCursorRequest* req,
                               v1::GetChangeCursorResponse* resp) override;
  grpc::Status RewrapSecrets(grpc::ServerContext* ctx, const v1::RewrapSecretsRequest* req,
                             grpc::ServerWriter<v1::RewrapSecretsProgress>* writer) override;

  // The streaming RPCs' logic over small interfaces, so tests (and benchmarks)
  // can drive them without a server. Each returns the RPC's status.
  class DeviceSource {
   public:
    virtual ~DeviceSource() = default;
    // False at end of stream.
    virtual bool Next(v1::ImportDevicesRequest* msg) = 0;
  };
  template <typename T>
  class Sink {
   public:
    virtual ~Sink() = default;
    // False when the client is gone.
    virtual bool Write(const T& msg) = 0;
    virtual bool Cancelled() = 0;
    // WatchChanges calls this once its starting cursor is fixed: every change
    // committed afterwards will be written.
    virtual void Started(absl::string_view /*cursor*/) {}
  };
  // `tenant_out` (optional) receives the stream's tenant for the audit record.
  absl::Status DoImportDevices(const Caller& caller, DeviceSource& source,
                               v1::ImportDevicesResponse* resp,
                               std::string* tenant_out = nullptr) const;
  // `unreadable_out` (optional) receives the ids of the devices exported with
  // keys_unreadable set (their keys did not open), for the audit record.
  absl::Status DoExportDevices(const Caller& caller, const v1::ExportDevicesRequest& req,
                               Sink<v1::Device>& sink,
                               std::vector<std::string>* unreadable_out = nullptr) const;
  // The same export in DeviceBatch messages (up to kExportBatchDevices devices and
  // about kExportBatchBytes each).
  absl::Status DoExportDeviceBatches(const Caller& caller, const v1::ExportDevicesRequest& req,
                                     Sink<v1::DeviceBatch>& sink,
                                     std::vector<std::string>* unreadable_out = nullptr) const;
  static constexpr int kExportBatchDevices = 500;
  static constexpr size_t kExportBatchBytes = 1 << 20;
  // BatchGetDevices: every id read in order, each with its own status, until the
  // answer passes kBatchGetBytes. Fails whole only for the role or more than
  // kBatchGetMaxIds ids. Audits nothing (the handler does).
  absl::Status DoBatchGetDevices(const Caller& caller, const v1::BatchGetDevicesRequest& req,
                                 v1::BatchGetDevicesResponse* resp) const;
  static constexpr int kBatchGetMaxIds = 1000;
  static constexpr size_t kBatchGetBytes = 1 << 20;
  absl::Status DoWatchChanges(const Caller& caller, const v1::WatchChangesRequest& req,
                              Sink<v1::ChangeEvent>& sink) const;
  // Admin. Streams a progress message after each batch and a last one with
  // done=true. A client that goes away does not stop the run (it is idempotent
  // and cheap to repeat); `final_progress` (optional) receives the last counts.
  absl::Status DoRewrapSecrets(const Caller& caller, const v1::RewrapSecretsRequest& req,
                               Sink<v1::RewrapSecretsProgress>& sink,
                               v1::RewrapSecretsProgress* final_progress = nullptr) const;

 private:
  explicit RegistryService(Options options)
      : options_(std::move(options)), watch_slots_(options_.max_watch_streams) {}

  Caller ResolveCaller(grpc::ServerContext* ctx) const;
  // RequireRole for a mutation, then the audit gate. An internal caller passes the
  // gate: its call comes from one that was admitted (a device registered by its
  // first connect, through an Authenticate the gate let in).
  absl::Status RequireRoleAudited(const Caller& caller, Role role) const;
  // The audit record of an export with secrets (none without).
  void AuditExport(const Caller& caller, const v1::ExportDevicesRequest& req, const absl::Status& s,
                   const std::vector<std::string>& unreadable) const;
  // Records an ADMIN_MUTATION event (never a secret).
  void Audit(const Caller& caller, absl::string_view method, absl::string_view tenant_id,
             absl::string_view product_key, absl::string_view device_id,
             absl::string_view resource_id, const absl::Status& outcome,
             std::initializer_list<std::pair<const char*, std::string>> extra = {}) const;

  Options options_;
  mutable StreamSlots watch_slots_;  // taken by DoWatchChanges
};

}  // namespace iotauth::registry
