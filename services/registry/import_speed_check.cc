// Bulk import timing without a network (not the benchmark harness; see tools/bench
// for the RPC benchmark). Usage:
//   import_speed_check [devices] [batch] [db path] [store|service]
// `store` (default) calls SqliteStore::CreateDevices directly after validating
// and generating keys as the service does; `service` drives
// RegistryService::DoImportDevices with messages of `batch` devices (the
// ImportDevices logic minus gRPC). Prints devices/s and peak RSS.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/audit/sink_interface.h"
#include "services/common/caller.h"
#include "services/common/clock.h"
#include "services/common/crypto.h"
#include "services/registry/registry_service.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/validation.h"

using namespace iotauth::registry;  // NOLINT: a small tool

namespace {

// Generates `n` devices without keys, `per_message` to a message.
class GeneratedSource final : public RegistryService::DeviceSource {
 public:
  GeneratedSource(int64_t n, int per_message) : n_(n), per_message_(per_message) {}
  bool Next(v1::ImportDevicesRequest* msg) override {
    if (next_ >= n_) return false;
    msg->Clear();
    msg->set_tenant_id("bench");
    msg->set_generate_keys(true);
    for (int i = 0; i < per_message_ && next_ < n_; ++i, ++next_) {
      v1::Device* d = msg->add_devices();
      d->set_device_id(absl::StrCat("device-", next_));
      d->set_product_key("bench-product");
      (*d->mutable_tags())["fleet"] = absl::StrCat("f", next_ % 16);
    }
    return true;
  }

 private:
  int64_t n_;
  int per_message_;
  int64_t next_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 1000000;
  int batch_size = 1000;
  if ((argc > 1 && !absl::SimpleAtoi(argv[1], &n)) ||
      (argc > 2 && !absl::SimpleAtoi(argv[2], &batch_size))) {
    std::fprintf(stderr, "usage: import_speed_check [devices [batch_size [db path]]]\n");
    return 2;
  }
  std::string path = argc > 3 ? argv[3] : "/tmp/iotauth_import_speed_check.db";
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());

  auto box = SecretBox::Create(std::string(32, 'k'));
  if (!box.ok()) return 1;
  SqliteStore::Options o;
  o.path = path;
  o.secret_box = std::shared_ptr<const SecretBox>(std::move(*box));
  o.clock = &iotauth::RealClock::Get();
  auto store = SqliteStore::Open(o);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  v1::Tenant t;
  t.set_id("bench");
  v1::Product p;
  p.set_tenant_id("bench");
  p.set_product_key("bench-product");
  if (!(*store)->CreateTenant(t).ok() || !(*store)->CreateProduct(p).ok()) return 1;

  absl::Time start = absl::Now();
  int64_t inserted = 0;
  if (argc > 4 && std::string(argv[4]) == "service") {
    iotauth::audit::NullAuditSink audit;
    iotauth::AllowAllCallerResolver resolver;
    RegistryService::Options so;
    so.store = store->get();
    so.clock = &iotauth::RealClock::Get();
    so.audit = &audit;
    so.caller_resolver = &resolver;
    so.import_batch_size = batch_size;
    auto svc = RegistryService::Create(so);
    if (!svc.ok()) return 1;
    iotauth::Caller admin;
    admin.authenticated = true;
    admin.roles = static_cast<uint32_t>(iotauth::Role::kAdmin);
    GeneratedSource source(n, batch_size);
    v1::ImportDevicesResponse resp;
    absl::Status s = (*svc)->DoImportDevices(admin, source, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "import: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    inserted = resp.imported();
    n = inserted + resp.rejected();
  } else {
    std::vector<v1::Device> batch;
    batch.reserve(batch_size);
    for (int64_t i = 0; i < n; ++i) {
      v1::Device d;
      d.set_tenant_id("bench");
      d.set_device_id(absl::StrCat("device-", i));
      d.set_product_key("bench-product");
      (*d.mutable_tags())["fleet"] = absl::StrCat("f", i % 16);
      // What the service does per item: validate and generate a key pair.
      auto* k = d.mutable_credentials()->mutable_symmetric_key();
      k->set_primary_key(iotauth::crypto::Base64Encode(*iotauth::crypto::RandomBytes(32)));
      k->set_secondary_key(iotauth::crypto::Base64Encode(*iotauth::crypto::RandomBytes(32)));
      if (!ValidateDevice(d).ok()) return 1;
      batch.push_back(std::move(d));
      if (static_cast<int>(batch.size()) == batch_size || i + 1 == n) {
        auto r = (*store)->CreateDevices("bench", batch);
        if (!r.ok()) {
          std::fprintf(stderr, "batch: %s\n", std::string(r.status().message()).c_str());
          return 1;
        }
        inserted += r->inserted;
        batch.clear();
      }
    }
  }
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("imported %lld devices in %.2f s (%.0f devices/s), batch %d, peak RSS %ld MiB\n",
              static_cast<long long>(inserted), secs, inserted / secs, batch_size,
              ru.ru_maxrss / 1024);
  absl::Time q = absl::Now();
  auto got = (*store)->GetDevice("bench", absl::StrCat("device-", n / 2), Secrets::kInclude);
  std::printf("get after import: %s in %lld us\n", got.ok() ? "ok" : "FAILED",
              static_cast<long long>(absl::ToInt64Microseconds(absl::Now() - q)));
  return inserted == n && got.ok() ? 0 : 1;
}
