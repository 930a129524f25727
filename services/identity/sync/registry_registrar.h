// DeviceRegistrar over the DeviceRegistry gRPC contract: registers devices on
// their first connect (enrollment groups) and activates EnOS devices, through the
// registry's own validation, audit and change log.
#pragma once

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/identity/directory.h"

namespace iotauth::identity {

class RegistryRegistrar final : public DeviceRegistrar {
 public:
  // `bearer_token` (admin) is sent with every call when set.
  RegistryRegistrar(std::shared_ptr<grpc::Channel> channel, std::string bearer_token);

  absl::StatusOr<iotauth::registry::v1::Device> RegisterFromEnrollmentGroup(
      const EnrollmentGroupRecord& group, absl::string_view device_id,
      absl::string_view derived_key_base64) override;

  absl::StatusOr<Activation> ActivateDevice(const ProductRecord& product,
                                            absl::string_view device_name) override;

  // Tag marking an EnOS device as activated (a second activation is refused).
  static constexpr char kActivatedTag[] = "iotauth.activated";

 private:
  void Prepare(grpc::ClientContext* ctx) const;
  std::unique_ptr<iotauth::registry::v1::DeviceRegistry::Stub> stub_;
  std::string token_;
};

}  // namespace iotauth::identity
