// libFuzzer target for device CSRs: the bounded PEM/DER parser, then the key and
// digest policy and the self-signature check (X509_REQ_verify).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "services/identity/x509/csr.h"

namespace x509 = iotauth::identity::x509;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  auto req = x509::ParseCsr(in, size_t{16} * 1024);
  if (!req.ok()) return 0;
  auto cn = x509::VerifyCsr(req->get(), x509::AlgorithmPolicy{});
  (void)cn;
  return 0;
}
