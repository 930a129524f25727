// Development PKI for the embedded default: a CA, a server certificate for
// localhost, and admin / gateway / reader client certificates whose OU names the
// role. Created once under `<data_dir>/pki` and reused. Development only.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iotauth {

struct DevPkiPaths {
  std::string dir;
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string admin_cert, admin_key;
  std::string gateway_cert, gateway_key;
  std::string reader_cert, reader_key;
};

DevPkiPaths DevPkiLayout(const std::string& dir);

// Creates the PKI if `dir/ca.pem` does not exist yet. Keys are written 0600.
// Returns whether anything was created. Processes (or threads) calling it together
// on one `dir` make one PKI: the first holds `dir`.lock while it writes.
absl::StatusOr<bool> EnsureDevPki(const std::string& dir, absl::Time now);

// Reads a whole file (for PEM material).
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace iotauth
