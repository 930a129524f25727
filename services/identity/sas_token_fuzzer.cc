// libFuzzer target: the SAS token parser, audience parser, verifier and URL coding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/identity/sas_token.h"

using iotauth::identity::kMaxSasTokenSize;
using iotauth::identity::ParseSasAudience;
using iotauth::identity::ParseSasToken;
using iotauth::identity::UrlDecode;
using iotauth::identity::UrlEncode;
using iotauth::identity::VerifySas;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  auto token = ParseSasToken(in);
  if (token.ok()) {
    if (in.size() > kMaxSasTokenSize) std::abort();
    (void)ParseSasAudience(token->resource);
    auto v = VerifySas(*token, {"primary-key", "secondary-key"}, absl::FromUnixSeconds(0),
                       absl::Minutes(5));
    (void)v;
  }
  auto decoded = UrlDecode(in);
  if (decoded.ok()) {
    auto again = UrlDecode(UrlEncode(*decoded));
    if (!again.ok() || *again != *decoded) std::abort();
  }
  return 0;
}
