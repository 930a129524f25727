// libFuzzer target: the device-triple client id, username and password parsers.
// Input: client id, '\n', username, '\n', password.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "services/identity/device_triple.h"

using iotauth::identity::MakeTripleConnect;
using iotauth::identity::ParseTripleClientId;
using iotauth::identity::ParseTriplePassword;
using iotauth::identity::ParseTripleUsername;
using iotauth::identity::TripleSignatureSize;
using iotauth::identity::VerifyTripleSignature;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t a = in.find('\n');
  const absl::string_view client_id = in.substr(0, a);
  absl::string_view rest = a == absl::string_view::npos ? absl::string_view() : in.substr(a + 1);
  const size_t b = rest.find('\n');
  const absl::string_view username = rest.substr(0, b);
  const absl::string_view password =
      b == absl::string_view::npos ? absl::string_view() : rest.substr(b + 1);

  auto cid = ParseTripleClientId(client_id);
  auto user = ParseTripleUsername(username);
  if (!cid.ok() || !user.ok()) return 0;
  auto sig = ParseTriplePassword(password, cid->sign_method);
  if (sig.ok() && sig->size() != TripleSignatureSize(cid->sign_method)) std::abort();
  // What parsed must regenerate into fields that parse back to the same values.
  auto made = MakeTripleConnect(user->product_key, user->device_name, "secret", cid->client_id,
                                cid->sign_method, cid->has_timestamp ? cid->timestamp_ms : -1,
                                cid->secure_mode);
  if (!made.ok()) std::abort();
  auto cid2 = ParseTripleClientId(made->client_id);
  auto user2 = ParseTripleUsername(made->username);
  if (!user2.ok() || user2->device_name != user->device_name ||
      user2->product_key != user->product_key) {
    std::abort();
  }
  // A long clientId may overflow the whole-field bound once re-wrapped; otherwise it
  // must round-trip.
  if (cid2.ok()) {
    if (cid2->client_id != cid->client_id || cid2->sign_method != cid->sign_method ||
        cid2->timestamp_ms != cid->timestamp_ms) {
      std::abort();
    }
    auto pw = ParseTriplePassword(made->password, cid2->sign_method);
    if (!pw.ok()) std::abort();
    if (!VerifyTripleSignature(
            cid2->sign_method, "secret",
            {cid2->client_id, user2->device_name, user2->product_key, cid2->timestamp_raw}, *pw)) {
      std::abort();
    }
  }
  return 0;
}
