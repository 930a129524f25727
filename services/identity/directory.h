// The identity service's view of the registry: what Authenticate needs to know about
// tenants, products, devices and enrollment groups, with keys already decoded. The
// hot path reads it through `Directory`; whoever follows the registry (the adapter over
// DeviceRegistry.WatchChanges, or the embedded store) writes it through
// `DirectoryWriter`. `DeviceRegistrar` is how a connect registers a device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/iotauth/registry/v1/types.pb.h"
#include "services/common/error_info.h"
#include "services/identity/hmac.h"

namespace iotauth::identity {

// What Authenticate and Authorize answer while the directory is still loading.
inline absl::Status DirectoryLoadingError() {
  return WithErrorReason(
      absl::UnavailableError(
          "identity: the device directory is still loading from the registry; retry shortly"),
      "DIRECTORY_LOADING");
}

namespace registry = ::iotauth::registry::v1;

struct TenantRecord {
  struct Policy {
    std::string name;
    // SECRET: the decoded keys, HMAC-scheduled; no key when unset or invalid.
    PrecomputedHmacSha256 primary_key;
    PrecomputedHmacSha256 secondary_key;
  };
  std::string id;
  std::string hub_host;  // lowercased
  std::vector<Policy> policies;

  const Policy* FindPolicy(absl::string_view name) const;
};

struct ProductRecord {
  std::string tenant_id;
  std::string product_key;
  std::string product_secret;  // SECRET, as stored (EnOS dynamic activation)
  bool dynamic_activation = false;
  bool allow_weak_sign_methods = false;
  uint32_t allowed_types_mask = 0;  // bit (1 << CredentialType)
  std::vector<registry::AccessRule> default_rules;

  bool Allows(registry::CredentialType t) const {
    return t > 0 && t < 32 && (allowed_types_mask & (1u << t)) != 0;
  }
};

// Device tag marking an EnOS device as activated: set by its dynamic activation, or by
// its first successful connect in a product that allows dynamic activation. A device
// with it is never activated (re-keyed) by the product secret again.
inline constexpr char kActivatedTag[] = "iotauth.activated";

struct DeviceRecord {
  std::string tenant_id;
  std::string device_id;
  std::string product_key;
  registry::DeviceStatus status = registry::DEVICE_STATUS_UNSPECIFIED;
  // SECRET: the decoded SAS keys, HMAC-scheduled (hmac.h); no key when unset or
  // invalid.
  PrecomputedHmacSha256 primary_key;
  PrecomputedHmacSha256 secondary_key;
  std::string triple_secret;  // SECRET, the primary key's text (device-triple secret)
  // SECRET, the secondary key's text: a triple signed with it is accepted too, so
  // that a device's secret can be rotated without downtime (as for SAS).
  std::string triple_secret_secondary;
  // SECRET: the two triple secrets HMAC-scheduled for hmacsha256, the default sign
  // method (the others use the text); no key when the text is empty.
  PrecomputedHmacSha256 triple_key;
  PrecomputedHmacSha256 triple_key_secondary;
  std::vector<registry::AccessRule> rules;
  std::string enrollment_group_id;
  std::string primary_thumbprint;  // X.509 self-signed (later issue)
  std::string secondary_thumbprint;
  bool ca_signed_allowed = false;
  // EnOS: the device carries kActivatedTag (activated, or connected once): the product
  // secret can no longer activate it.
  bool activated = false;
  // The registry's version of the device (its etag, a change-log cursor; 0 when
  // unknown): orders a registrar's direct write against the change stream.
  int64_t version = 0;

  // Heap and inline bytes this record holds (for the memory-per-device report).
  size_t ApproximateBytes() const;
};

struct EnrollmentGroupRecord {
  std::string tenant_id;
  std::string id;
  // SECRET: the decoded group key, scheduled for HMAC-SHA256 once, when the record is
  // built (no key when it is empty or not valid base64: the group never derives).
  PrecomputedHmacSha256 group_key;
  std::string product_key;
  std::vector<registry::AccessRule> initial_rules;
  bool enabled = false;
};
using EnrollmentGroupList = std::vector<std::shared_ptr<const EnrollmentGroupRecord>>;

// Record builders. A key that is not valid base64 leaves its slot empty (it can then
// never verify) and is reported as INVALID_ARGUMENT naming the field, never its value;
// `*out` is filled either way.
absl::Status MakeTenantRecord(const registry::Tenant& t, TenantRecord* out);
absl::Status MakeProductRecord(const registry::Product& p, ProductRecord* out);
absl::Status MakeDeviceRecord(const registry::Device& d, DeviceRecord* out);
absl::Status MakeEnrollmentGroupRecord(const registry::EnrollmentGroup& g,
                                       EnrollmentGroupRecord* out);

// Read side. Implementations are thread-safe; lookups are on the hot path and must
// not block on writers for long nor allocate beyond the returned reference. A null
// result means "not known".
class Directory {
 public:
  virtual ~Directory() = default;
  virtual std::shared_ptr<const TenantRecord> FindTenant(absl::string_view tenant_id) const = 0;
  // `host` is matched case-insensitively.
  virtual std::shared_ptr<const TenantRecord> FindTenantByHubHost(absl::string_view host) const = 0;
  // Product keys are unique in the deployment.
  virtual std::shared_ptr<const ProductRecord> FindProduct(absl::string_view product_key) const = 0;
  virtual std::shared_ptr<const DeviceRecord> FindDevice(absl::string_view tenant_id,
                                                         absl::string_view device_id) const = 0;
  // Enabled enrollment groups of `tenant_id` that `registration_id` may belong to, in a
  // stable order; the caller tries each (derives the key and verifies). Never null.
  virtual std::shared_ptr<const EnrollmentGroupList> FindEnrollmentGroups(
      absl::string_view tenant_id, absl::string_view registration_id) const = 0;
};

// Write side, fed from the registry (initial snapshot, then the change stream).
// Upserts replace the whole record. Thread-safe. Upserts return INVALID_ARGUMENT for a
// malformed record (see Make*Record) after storing what could be stored.
class DirectoryWriter {
 public:
  virtual ~DirectoryWriter() = default;
  virtual absl::Status UpsertTenant(const registry::Tenant& tenant) = 0;
  virtual void RemoveTenant(absl::string_view tenant_id) = 0;
  virtual absl::Status UpsertProduct(const registry::Product& product) = 0;
  virtual void RemoveProduct(absl::string_view product_key) = 0;
  virtual absl::Status UpsertDevice(const registry::Device& device) = 0;
  virtual void RemoveDevice(absl::string_view tenant_id, absl::string_view device_id) = 0;
  // A device a registrar has just created or changed (first connect, activation,
  // JIT), written ahead of the change stream so the next connect finds it. Unlike
  // UpsertDevice (the change stream, which is ordered and always wins) it must never
  // undo what the stream already applied: FAILED_PRECONDITION, and nothing written,
  // when the writer holds a newer version of the device (a disable or key change
  // that overtook the write) or removed it moments ago (a delete). The default
  // writes through.
  virtual absl::Status UpsertRegisteredDevice(const registry::Device& device) {
    return UpsertDevice(device);
  }
  virtual absl::Status UpsertEnrollmentGroup(const registry::EnrollmentGroup& group) = 0;
  virtual void RemoveEnrollmentGroup(absl::string_view tenant_id, absl::string_view group_id) = 0;
  // Drops everything.
  virtual void Clear() = 0;
  // A full resync that never leaves a record missing: after BeginSnapshot(), Upsert
  // everything the registry has, then EndSnapshot() removes every record that was
  // not upserted since (deleted while the writer was not following). Records stay
  // readable throughout. The defaults clear first (a window with nothing cached).
  virtual void BeginSnapshot() { Clear(); }
  virtual void EndSnapshot() {}
};

// Registers devices on their first connect. Implemented over the registry by the lead.
// Called synchronously from Authenticate (rarely: only for unknown devices whose
// credential verified), so implementations should answer within a few milliseconds.
class DeviceRegistrar {
 public:
  virtual ~DeviceRegistrar() = default;

  // Enrollment-group first connect: creates `device_id` in the group's tenant and
  // product, enabled, with the group's initial rules as its rules, `enrollment_group_id`
  // set, and `derived_key_base64` (SECRET) as its primary symmetric key. Idempotent:
  // if the device already exists through this group, returns it. Returns the stored
  // device (credentials may be omitted).
  virtual absl::StatusOr<registry::Device> RegisterFromEnrollmentGroup(
      const EnrollmentGroupRecord& group, absl::string_view device_id,
      absl::string_view derived_key_base64) = 0;

  struct Activation {
    registry::Device device;
    std::string device_secret;  // SECRET: delivered to the device once
  };
  // EnOS dynamic activation: the device authenticated with the product secret. Create
  // the device if the product allows it (or take the pre-registered one), generate and
  // store a new device secret, enable it, and return both. NOT_FOUND when the device
  // must be pre-registered and is not; FAILED_PRECONDITION when it is already activated;
  // PERMISSION_DENIED when it is disabled.
  virtual absl::StatusOr<Activation> ActivateDevice(const ProductRecord& product,
                                                    absl::string_view device_name) = 0;

  // EnOS: `device_id` of `product` (which allows dynamic activation) authenticated with
  // its own credential: tag it kActivatedTag, so that the product secret, which every
  // device of the product holds, cannot activate it later and take its identity over.
  // OK when the tag is already there. FAILED_PRECONDITION when the device is not in
  // `product`.
  virtual absl::Status MarkActivated(const ProductRecord& product, absl::string_view device_id) = 0;
};

}  // namespace iotauth::identity
