// Test helper: two unrelated development PKIs ("a" and "b"), each a CA and a
// server certificate for localhost with its key, made once per test binary under
// $TEST_TMPDIR with EnsureDevPki. For tests that swap one server identity for
// another.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/dev_pki.h"

namespace iotauth::test_pki {

struct ServerPki {
  std::string ca, cert, key;  // PEM contents
};

// The PKI named `name`, made on first use.
inline ServerPki MakeServerPki(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/server-pki-", name);
  std::filesystem::remove_all(dir);
  if (!EnsureDevPki(dir, absl::Now()).ok()) return {};
  DevPkiPaths p = DevPkiLayout(dir);
  absl::StatusOr<std::string> ca = ReadTextFile(p.ca_cert);
  absl::StatusOr<std::string> cert = ReadTextFile(p.server_cert);
  absl::StatusOr<std::string> key = ReadTextFile(p.server_key);
  if (!ca.ok() || !cert.ok() || !key.ok()) return {};
  return {*ca, *cert, *key};
}

inline const ServerPki& PkiA() {
  static const ServerPki* pki = new ServerPki(MakeServerPki("a"));
  return *pki;
}
inline const ServerPki& PkiB() {
  static const ServerPki* pki = new ServerPki(MakeServerPki("b"));
  return *pki;
}

}  // namespace iotauth::test_pki
