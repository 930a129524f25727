// DeviceRegistrar over the DeviceRegistry gRPC contract: registers devices on
// their first connect (enrollment groups) and activates EnOS devices, through the
// registry's own validation, audit and change log.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
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

  absl::Status MarkActivated(const ProductRecord& product, absl::string_view device_id) override;

  // Tag marking an EnOS device as activated (a second activation is refused).
  static constexpr const char* kActivatedTag = ::iotauth::identity::kActivatedTag;

 private:
  using Stub = iotauth::registry::v1::DeviceRegistry::Stub;
  // A unary method of the stub, e.g. &Stub::GetDevice.
  template <typename Request, typename Response>
  using Rpc = grpc::Status (Stub::*)(grpc::ClientContext*, const Request&, Response*);

  void Prepare(grpc::ClientContext* ctx) const;
  // Writes `current`'s tags plus kActivatedTag, conditional on `current`'s etag.
  absl::Status AddActivatedTag(const ProductRecord& product,
                               const iotauth::registry::v1::Device& current,
                               iotauth::registry::v1::Device* updated) const;
  // One unary call of `rpc` with a fresh context from Prepare; the gRPC status maps
  // code for code onto the result. `response` is filled when the result is OK.
  template <typename Request, typename Response>
  absl::Status Call(Rpc<Request, Response> rpc, const Request& request, Response* response) const;

  std::unique_ptr<Stub> stub_;
  std::string token_;
};

}  // namespace iotauth::identity
