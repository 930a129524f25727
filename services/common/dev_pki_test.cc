#include "services/common/dev_pki.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

X509* ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return x;
}

// True when `leaf_path` was signed by the CA in `ca_path`.
bool SignedBy(const std::string& leaf_path, const std::string& ca_path) {
  X509* ca = ReadCert(ca_path);
  X509* leaf = ReadCert(leaf_path);
  bool ok = false;
  if (ca != nullptr && leaf != nullptr) {
    EVP_PKEY* key = X509_get0_pubkey(ca);
    ok = key != nullptr && X509_verify(leaf, key) == 1;
  }
  X509_free(ca);
  X509_free(leaf);
  return ok;
}

// Split-mode processes started together on one data directory: one PKI comes out,
// every certificate signed by the ca.pem beside it.
TEST(DevPkiTest, CallersTogetherMakeOnePki) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/pki-together");
  std::filesystem::remove_all(dir);
  constexpr int kCallers = 4;
  std::vector<absl::StatusOr<bool>> made(kCallers, false);
  std::vector<std::thread> callers;
  callers.reserve(kCallers);
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&made, &dir, i] { made[i] = EnsureDevPki(dir, absl::Now()); });
  }
  for (std::thread& t : callers) t.join();
  int created = 0;
  for (const auto& m : made) {
    ASSERT_TRUE(m.ok()) << m.status();
    created += *m ? 1 : 0;
  }
  EXPECT_EQ(created, 1);
  const DevPkiPaths p = DevPkiLayout(dir);
  for (const std::string& leaf : {p.server_cert, p.admin_cert, p.gateway_cert, p.reader_cert}) {
    EXPECT_TRUE(SignedBy(leaf, p.ca_cert)) << leaf;
  }
  // Once made, it is reused.
  auto again = EnsureDevPki(dir, absl::Now());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(*again);
}

}  // namespace
}  // namespace iotauth
