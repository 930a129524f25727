// CertificateDeviceRegistrar over the DeviceRegistry gRPC contract: just-in-time
// registration of a device on its first valid connect with a certificate from a
// CA that enables it (AWS JITR/JITP style), through the registry's own validation,
// audit and change log.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "proto/iotauth/registry/v1/registry.grpc.pb.h"
#include "services/identity/x509/x509_certificate_verifier.h"

namespace iotauth::identity {

class RegistryCertificateRegistrar final : public x509::CertificateDeviceRegistrar {
 public:
  // `bearer_token` (admin) is sent with every call when set. `timeout` bounds each
  // registry call (this runs on the Authenticate path).
  RegistryCertificateRegistrar(std::shared_ptr<grpc::Channel> channel, std::string bearer_token,
                               absl::Duration timeout = absl::Seconds(2));

  // Creates `device_id` in `ca.tenant_id` under `ca.jit_product_key`, ENABLED when
  // `ca.jit_auto_enable` else PENDING_APPROVAL, with CA-signed certificates allowed
  // and tags naming the CA and the certificate fingerprint. Idempotent: when the
  // device already exists (a concurrent first connect) the stored device is
  // returned. FAILED_PRECONDITION when the CA names no JIT product.
  absl::StatusOr<iotauth::registry::v1::Device> RegisterFromCertificate(
      const x509::CaInfo& ca, absl::string_view device_id, absl::string_view fingerprint) override;

  // Tags set on a JIT-registered device.
  static constexpr char kJitCaTag[] = "iotauth.jit_ca";
  static constexpr char kJitFingerprintTag[] = "iotauth.jit_fingerprint";

 private:
  void Prepare(grpc::ClientContext* ctx) const;
  std::unique_ptr<iotauth::registry::v1::DeviceRegistry::Stub> stub_;
  std::string token_;
  absl::Duration timeout_;
};

}  // namespace iotauth::identity
