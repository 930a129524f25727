// Manual benchmark: X509CertificateVerifier cold (parse + verify on every call) and
// warm (result cache) against raw OpenSSL (d2i_X509 of leaf and intermediate +
// X509_verify_cert with a prepared store) in the same run, for EC P-256 and RSA-2048.
//   bazel run -c opt //services/identity/x509:x509_bench
#include <openssl/x509.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "services/identity/directory_cache.h"
#include "services/identity/x509/ca_directory.h"
#include "services/identity/x509/test_pki.h"
#include "services/identity/x509/x509_certificate_verifier.h"

namespace x = iotauth::identity::x509;
namespace t = iotauth::identity::x509::testing;
namespace reg = iotauth::registry::v1;

namespace {

template <typename F>
double UsPerOp(int n, F f) {
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f(i);
  auto end = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(end - start).count() / n;
}

void Run(const char* label, t::KeyType type) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  auto root_key = t::Key(type);
  auto inter_key = t::Key(type);
  auto leaf_key = t::Key(type);
  x::X509Ptr root = t::MakeCert({.cn = "root", .ca = true}, root_key.get(), nullptr, nullptr);
  x::X509Ptr inter = t::MakeCert({.cn = "inter", .ca = true, .path_len = 0}, inter_key.get(),
                                 root.get(), root_key.get());
  constexpr int kChains = 64;
  std::vector<std::vector<std::string>> chains;
  for (int i = 0; i < kChains; ++i) {
    x::X509Ptr leaf = t::MakeCert({.cn = "device-" + std::to_string(i), .eku = "clientAuth"},
                                  leaf_key.get(), inter.get(), inter_key.get());
    chains.push_back({t::Der(leaf.get()), t::Der(inter.get())});
  }
  // Raw OpenSSL.
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, root.get());
  auto raw = [&](int i, bool parse, X509* pl, X509* pi) {
    const auto& c = chains[static_cast<size_t>(i) % kChains];
    X509* leaf = pl;
    X509* in = pi;
    if (parse) {
      const auto* p = reinterpret_cast<const unsigned char*>(c[0].data());
      leaf = d2i_X509(nullptr, &p, static_cast<long>(c[0].size()));
      p = reinterpret_cast<const unsigned char*>(c[1].data());
      in = d2i_X509(nullptr, &p, static_cast<long>(c[1].size()));
    }
    STACK_OF(X509)* un = sk_X509_new_null();
    sk_X509_push(un, in);
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, un);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), absl::ToTimeT(now));
    if (X509_verify_cert(ctx) != 1) std::abort();
    X509_STORE_CTX_free(ctx);
    sk_X509_free(un);
    if (parse) {
      X509_free(leaf);
      X509_free(in);
    }
  };
  const int n = type == t::KeyType::kRsa2048 ? 4000 : 2000;
  double raw_parse = UsPerOp(n, [&](int i) { raw(i, true, nullptr, nullptr); });
  std::vector<x::CertPtr> leaves;
  std::vector<x::CertPtr> inters;
  {
    auto p = x::ParsedCertificate::FromDer(chains[0][0]);
    auto q = x::ParsedCertificate::FromDer(chains[0][1]);
    leaves.push_back(*p);
    inters.push_back(*q);
  }
  double raw_verify = UsPerOp(n, [&](int) { raw(0, false, leaves[0]->x509(), inters[0]->x509()); });

  // The verifier.
  x::CaDirectory cas;
  reg::CaCertificate ca;
  ca.set_tenant_id("t1");
  ca.set_id("root");
  ca.set_certificate_pem(t::Pem(root.get()));
  ca.set_status(reg::CA_STATUS_VERIFIED);
  if (!cas.UpsertCa(ca).ok()) std::abort();
  iotauth::identity::DirectoryCache dir(iotauth::identity::DirectoryCache::Options{});
  for (int i = 0; i < kChains; ++i) {
    reg::Device d;
    d.set_tenant_id("t1");
    d.set_device_id("device-" + std::to_string(i));
    d.set_status(reg::DEVICE_STATUS_ENABLED);
    d.mutable_credentials()->set_ca_signed_allowed(true);
    dir.UpsertDevice(d).IgnoreError();
  }
  auto make = [&](size_t cap) {
    x::X509CertificateVerifier::Options o;
    o.cas = &cas;
    o.directory = &dir;
    o.config.parsed_cache_capacity = cap;
    o.config.result_cache_capacity = cap;
    return *x::X509CertificateVerifier::Create(o);
  };
  auto verify = [&](const x::X509CertificateVerifier& v, int i) {
    const auto& c = chains[static_cast<size_t>(i) % kChains];
    absl::string_view views[2] = {c[0], c[1]};
    auto r = v.Verify(views, "t1", now);
    if (!r.verdict.ok()) {
      std::fprintf(stderr, "deny: %s\n", r.verdict.detail.c_str());
      std::abort();
    }
  };
  // Cold: caches of one entry per shard, 64 chains cycled (stats show the miss rate).
  auto cold_v = make(0);
  double cold = UsPerOp(n, [&](int i) { verify(*cold_v, i * 7); });
  auto cs = cold_v->stats();
  auto warm_v = make(65536);
  for (int i = 0; i < kChains; ++i) verify(*warm_v, i);
  double warm = UsPerOp(n * 20, [&](int i) { verify(*warm_v, i); });
  std::printf(
      "%-9s raw d2i+verify %7.1f us | raw verify (parsed) %7.1f us | iotauth cold %7.1f us "
      "(result misses %llu/%llu) | iotauth warm %6.2f us\n",
      label, raw_parse, raw_verify, cold, static_cast<unsigned long long>(cs.result_misses),
      static_cast<unsigned long long>(cs.result_misses) +
          static_cast<unsigned long long>(cs.result_hits),
      warm);
  X509_STORE_free(store);
}

}  // namespace

int main() {
  Run("P-256", t::KeyType::kP256);
  Run("RSA-2048", t::KeyType::kRsa2048);
  return 0;
}
