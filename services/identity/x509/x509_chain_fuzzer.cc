// libFuzzer target for the device chain parser (PEM and DER) and the path validator.
// Input: entries separated by the byte sequence "\n--8<--\n"; each is parsed as a
// chain entry, then the chain is validated against a fixed empty-ish trust store.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/identity/x509/certificate.h"
#include "services/identity/x509/chain_verifier.h"

namespace x509 = iotauth::identity::x509;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> entries = absl::StrSplit(in, "\n--8<--\n");
  x509::ParseLimits limits;
  auto chain = x509::ParseChain(entries, limits);
  if (!chain.ok() || chain->empty()) return 0;
  // Trust the last certificate, so path building and policy checks run too.
  static const absl::Time kNow = absl::FromUnixSeconds(1700000000);
  auto trust = x509::TrustStore::Create({chain->back()}, {}, {});
  if (!trust.ok()) return 0;
  std::vector<x509::CertPtr> rest(chain->begin() + 1, chain->end());
  x509::ChainResult r = x509::VerifyChain(**trust, (*chain)[0], rest, kNow, x509::ChainPolicy{});
  (void)r;
  return 0;
}
