// Keeps a local mirror of the registry exact through the DeviceRegistry gRPC
// contract: a full snapshot on start, then WatchChanges from the snapshot's
// cursor, re-reading each changed resource (with secrets; the caller needs the
// admin role). Works the same in-process (all-in-one) and across the network
// (split mode); the identity service never reads the registry's database.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"

namespace iotauth::identity {

// Receives the mirrored state. Called from the mirror's thread only.
class MirrorTarget {
 public:
  virtual ~MirrorTarget() = default;
  virtual void UpsertTenant(const iotauth::registry::v1::Tenant& tenant) = 0;
  virtual void RemoveTenant(const std::string& tenant_id) = 0;
  virtual void UpsertProduct(const iotauth::registry::v1::Product& product) = 0;
  virtual void RemoveProduct(const std::string& tenant_id, const std::string& product_key) = 0;
  virtual void UpsertDevice(const iotauth::registry::v1::Device& device) = 0;
  virtual void RemoveDevice(const std::string& tenant_id, const std::string& device_id) = 0;
  virtual void UpsertGroup(const iotauth::registry::v1::EnrollmentGroup& group) = 0;
  virtual void RemoveGroup(const std::string& tenant_id, const std::string& group_id) = 0;
  // Drops everything.
  virtual void Clear() = 0;
  // A full snapshot follows: every record it copies is upserted, then EndSnapshot()
  // (after a complete snapshot only) removes what it did not copy. A target should
  // keep serving its old records meanwhile; the default clears first.
  virtual void BeginSnapshot() { Clear(); }
  virtual void EndSnapshot() {}

  // X.509 trust: tenant CA certificates (any status), explicit revocations and
  // CRLs (one per CA). Ignored by default, for targets that keep no certificates.
  virtual void UpsertCa(const iotauth::registry::v1::CaCertificate& ca) {}
  virtual void RemoveCa(const std::string& tenant_id, const std::string& ca_id) {}
  virtual void UpsertRevocation(const iotauth::registry::v1::CertificateRevocation& revocation) {}
  virtual void RemoveRevocation(const std::string& tenant_id, const std::string& revocation_id) {}
  virtual void UpsertCrl(const iotauth::registry::v1::CertificateRevocationList& crl) {}
  virtual void RemoveCrl(const std::string& tenant_id, const std::string& ca_id) {}
  // The CA's CRL exists but could not be read: distrust the CA until it can be.
  virtual void MarkCrlUnusable(const std::string& tenant_id, const std::string& ca_id) {}
};

// Forwards every call to each of `targets` in order (for example the identity
// DirectoryCache's target and the X.509 CaDirectory's). Targets are not owned.
class FanoutMirrorTarget final : public MirrorTarget {
 public:
  explicit FanoutMirrorTarget(std::vector<MirrorTarget*> targets) : targets_(std::move(targets)) {}

  void UpsertTenant(const iotauth::registry::v1::Tenant& tenant) override {
    for (MirrorTarget* t : targets_) t->UpsertTenant(tenant);
  }
  void RemoveTenant(const std::string& tenant_id) override {
    for (MirrorTarget* t : targets_) t->RemoveTenant(tenant_id);
  }
  void UpsertProduct(const iotauth::registry::v1::Product& product) override {
    for (MirrorTarget* t : targets_) t->UpsertProduct(product);
  }
  void RemoveProduct(const std::string& tenant_id, const std::string& product_key) override {
    for (MirrorTarget* t : targets_) t->RemoveProduct(tenant_id, product_key);
  }
  void UpsertDevice(const iotauth::registry::v1::Device& device) override {
    for (MirrorTarget* t : targets_) t->UpsertDevice(device);
  }
  void RemoveDevice(const std::string& tenant_id, const std::string& device_id) override {
    for (MirrorTarget* t : targets_) t->RemoveDevice(tenant_id, device_id);
  }
  void UpsertGroup(const iotauth::registry::v1::EnrollmentGroup& group) override {
    for (MirrorTarget* t : targets_) t->UpsertGroup(group);
  }
  void RemoveGroup(const std::string& tenant_id, const std::string& group_id) override {
    for (MirrorTarget* t : targets_) t->RemoveGroup(tenant_id, group_id);
  }
  void Clear() override {
    for (MirrorTarget* t : targets_) t->Clear();
  }
  void BeginSnapshot() override {
    for (MirrorTarget* t : targets_) t->BeginSnapshot();
  }
  void EndSnapshot() override {
    for (MirrorTarget* t : targets_) t->EndSnapshot();
  }
  void UpsertCa(const iotauth::registry::v1::CaCertificate& ca) override {
    for (MirrorTarget* t : targets_) t->UpsertCa(ca);
  }
  void RemoveCa(const std::string& tenant_id, const std::string& ca_id) override {
    for (MirrorTarget* t : targets_) t->RemoveCa(tenant_id, ca_id);
  }
  void UpsertRevocation(const iotauth::registry::v1::CertificateRevocation& revocation) override {
    for (MirrorTarget* t : targets_) t->UpsertRevocation(revocation);
  }
  void RemoveRevocation(const std::string& tenant_id, const std::string& revocation_id) override {
    for (MirrorTarget* t : targets_) t->RemoveRevocation(tenant_id, revocation_id);
  }
  void UpsertCrl(const iotauth::registry::v1::CertificateRevocationList& crl) override {
    for (MirrorTarget* t : targets_) t->UpsertCrl(crl);
  }
  void RemoveCrl(const std::string& tenant_id, const std::string& ca_id) override {
    for (MirrorTarget* t : targets_) t->RemoveCrl(tenant_id, ca_id);
  }
  void MarkCrlUnusable(const std::string& tenant_id, const std::string& ca_id) override {
    for (MirrorTarget* t : targets_) t->MarkCrlUnusable(tenant_id, ca_id);
  }

 private:
  std::vector<MirrorTarget*> targets_;
};

struct RegistryMirrorOptions {
  std::shared_ptr<grpc::Channel> channel;
  // Sent as `authorization: Bearer <token>` (an admin token), if set.
  std::string bearer_token;
  MirrorTarget* target = nullptr;
  absl::Duration max_backoff = absl::Seconds(5);
  // Also mirror CA certificates, revocations and CRLs (snapshot lists them per
  // tenant; their change events re-read them). Off: those events are skipped.
  bool mirror_certificates = true;
  // The registry is asked for a heartbeat whenever it has sent nothing for this
  // long; a change stream silent for `silent_heartbeats` of them is dead (a peer
  // gone without a word, a dropped flow) and is cancelled and reconnected.
  absl::Duration heartbeat_interval = absl::Milliseconds(250);
  int silent_heartbeats = 4;
  // Optional: set false once nothing has been heard from the registry for
  // `max_silence` (> 0), true again when it is heard from (after the first sync).
  // The identity front-ends then answer UNAVAILABLE meanwhile (fail closed).
  std::atomic<bool>* fresh = nullptr;
  absl::Duration max_silence = absl::ZeroDuration();
};

class RegistryMirror {
 public:
  explicit RegistryMirror(RegistryMirrorOptions options);
  ~RegistryMirror();

  // Starts the background thread.
  void Start();
  // Blocks until the first full snapshot is applied or `timeout` passes.
  bool WaitForInitialSync(absl::Duration timeout);
  void Stop();

  // True once Stop() began (for tests).
  bool stop_requested() const { return stopping_.load(); }
  // Number of change events applied (for tests and metrics).
  int64_t applied_changes() const { return applied_.load(); }
  // Change streams found dead (no heartbeat) and reconnected (for tests and metrics).
  int64_t silent_streams() const { return silent_streams_.load(); }
  // Changes whose resource could not be read (not a transient error), and devices
  // whose keys the registry could not open, dropped from the target instead (for
  // tests and metrics).
  int64_t failed_closed_changes() const { return failed_closed_.load(); }

 private:
  void Run();
  // Copies the whole registry into the target and sets `cursor` to the change log's
  // head from before the copy; on failure `cursor` is left empty.
  absl::Status Snapshot(std::string* cursor);
  absl::Status SnapshotFrom(std::string* cursor);
  absl::Status SnapshotCertificates(const std::string& tenant);
  // Streams the tenant's devices with their keys into the target.
  absl::Status ExportDevices(const std::string& tenant);
  // One export call read to its end: `begin(ctx, reactor)` starts it, `each` takes
  // every message (up to `max_queued` wait in memory). CANCELLED once stopping;
  // otherwise the call's own status.
  template <typename Message, typename BeginCall, typename OnMessage>
  absl::StatusOr<grpc::Status> ReadExport(size_t max_queued, BeginCall begin, OnMessage each);
  absl::Status Follow(const std::string& cursor, std::string* last_cursor);
  absl::Status Apply(const iotauth::registry::v1::ChangeEvent& event);
  // A device change, given the registry's answer to reading the device.
  absl::Status ApplyDevice(const iotauth::registry::v1::ChangeEvent& event,
                           const grpc::Status& read,
                           const iotauth::registry::v1::Device& device) const;
  // Events applied together; their devices are read together (FetchDevices).
  static constexpr size_t kPrefetchBatch = 500;
  // GetDevice calls in flight at once, on a registry without BatchGetDevices.
  static constexpr size_t kFetchConcurrency = 64;
  struct DeviceFetch {
    bool fetched = false;  // false: Apply reads it itself
    grpc::Status status;
    iotauth::registry::v1::Device device;
  };
  // Reads the devices `batch`'s device changes name, all at once (one entry per
  // event; when fewer than two, none is read here): through BatchGetDevices, or
  // kFetchConcurrency GetDevice calls at a time on a registry without it.
  std::vector<DeviceFetch> FetchDevices(
      const std::vector<iotauth::registry::v1::ChangeEvent>& batch);
  // The BatchGetDevices path: fills `out` for `wanted` (indices into `batch`) and
  // returns how many of `wanted` it settled (fewer only when the registry answered
  // UNIMPLEMENTED: the rest are for GetDevice).
  size_t BatchFetch(const std::vector<iotauth::registry::v1::ChangeEvent>& batch,
                    const std::vector<size_t>& wanted, std::vector<DeviceFetch>* out);
  // After applying `event`: OK goes on; an error that FailClosed settles is logged
  // and counted and goes on (*status becomes OK); false when the stream must stop
  // (the error stays in *status).
  bool Settle(const iotauth::registry::v1::ChangeEvent& event, absl::Status* status);
  // Removes `event`'s resource from the target, when that is the safe answer to a
  // change that cannot be read (false for revocations: they must not be dropped).
  bool FailClosed(const iotauth::registry::v1::ChangeEvent& event) const;
  // Upserts `device` into the target; one the registry marks keys_unreadable is
  // removed instead (fail closed), logged and counted with failed_closed_changes.
  void MirrorDevice(const iotauth::registry::v1::Device& device) const;
  void Prepare(grpc::ClientContext* ctx, absl::Duration timeout) const;
  // Records that the registry was heard from now, and updates `fresh`.
  void Heard();
  // Sets `fresh` from how long the registry has been silent (max_silence > 0).
  void UpdateFreshness();
  // Makes `ctx` (a long-lived stream: device export or change stream) the call
  // Stop() cancels; false if stopping already. DetachStream() after its Finish().
  bool AttachStream(grpc::ClientContext* ctx);
  void DetachStream();

  RegistryMirrorOptions options_;
  std::unique_ptr<iotauth::registry::v1::DeviceRegistry::Stub> stub_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  // False once the registry answered ExportDeviceBatches UNIMPLEMENTED.
  std::atomic<bool> batched_export_{true};
  // False once the registry answered BatchGetDevices UNIMPLEMENTED (mirror thread).
  bool batched_get_ = true;
  absl::Notification synced_;
  std::atomic<int64_t> applied_{0};
  mutable std::atomic<int64_t> failed_closed_{0};  // MirrorDevice is const
  std::atomic<int64_t> silent_streams_{0};
  // The time of the change at the cursor the mirror resumes from (mirror thread
  // only): WatchChangesRequest.cursor_time.
  google::protobuf::Timestamp cursor_time_;
  bool has_cursor_time_ = false;
  // When the registry last answered (any message or call result), in Unix nanos.
  std::atomic<int64_t> last_heard_ns_{0};
  absl::Mutex mu_;
  // The long-lived call in progress (device export or change stream), for Stop().
  grpc::ClientContext* stream_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace iotauth::identity
