// kill -9 durability: a child process writes devices and reports each
// acknowledged id over a pipe; the parent SIGKILLs it mid-stream, reopens the
// store and checks every acknowledged write is present (and the file is sound).
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/registry/sqlite_store.h"

namespace iotauth::registry {
namespace {

std::shared_ptr<const SecretBox> Box() {
  return std::shared_ptr<const SecretBox>(*SecretBox::Create(std::string(32, 'k')));
}

absl::StatusOr<std::unique_ptr<SqliteStore>> OpenStore(const std::string& path) {
  SqliteStore::Options o;
  o.path = path;
  o.secret_box = Box();
  o.clock = &RealClock::Get();
  return SqliteStore::Open(o);
}

// Child: never returns. Singles, then batches, forever, reporting each commit.
[[noreturn]] void WriterChild(const std::string& path, int fd) {
  auto store = OpenStore(path);
  if (!store.ok()) _exit(2);
  auto report = [fd](const std::string& line) {
    std::string l = line + "\n";
    if (write(fd, l.data(), l.size()) != static_cast<ssize_t>(l.size())) _exit(3);
  };
  for (int i = 0;; ++i) {
    if (i % 2 == 0) {
      v1::Device d;
      d.set_tenant_id("t");
      d.set_product_key("p");
      d.set_device_id(absl::StrCat("single-", i));
      d.mutable_credentials()->mutable_symmetric_key()->set_primary_key("AAAAAAAAAAAAAAAAAAAAAA==");
      d.mutable_credentials()->mutable_symmetric_key()->set_secondary_key(
          "BBBBBBBBBBBBBBBBBBBBBB==");
      if ((*store)->CreateDevice(d).ok()) report(d.device_id());
    } else {
      std::vector<v1::Device> batch;
      for (int j = 0; j < 50; ++j) {
        v1::Device d;
        d.set_product_key("p");
        d.set_device_id(absl::StrCat("batch-", i, "-", j));
        batch.push_back(d);
      }
      auto r = (*store)->CreateDevices("t", batch);
      if (r.ok()) {
        for (const auto& d : batch) report(d.device_id());
      }
    }
  }
}

TEST(SqliteDurabilityTest, AcknowledgedWritesSurviveKill9) {
  std::string path = absl::StrCat(::testing::TempDir(), "/durability.db");
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());
  {
    auto store = OpenStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    v1::Tenant t;
    t.set_id("t");
    ASSERT_TRUE((*store)->CreateTenant(t).ok());
    v1::Product p;
    p.set_tenant_id("t");
    p.set_product_key("p");
    ASSERT_TRUE((*store)->CreateProduct(p).ok());
  }

  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      WriterChild(path, fds[1]);
    }
    close(fds[1]);
    FILE* in = fdopen(fds[0], "r");
    ASSERT_NE(in, nullptr);
    std::set<std::string> acked;
    char line[256];
    // Kill after a varying number of acknowledgements, mid-stream.
    const size_t kill_after = 300 + 170 * round;
    while (acked.size() < kill_after && fgets(line, sizeof(line), in) != nullptr) {
      std::string id(line);
      if (!id.empty() && id.back() == '\n') id.pop_back();
      acked.insert(id);
    }
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    // Whatever the child acknowledged before dying counts too.
    while (fgets(line, sizeof(line), in) != nullptr) {
      std::string id(line);
      if (!id.empty() && id.back() == '\n') {
        id.pop_back();
        acked.insert(id);
      }
    }
    fclose(in);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited early with " << WEXITSTATUS(wstatus);
    ASSERT_GE(acked.size(), kill_after);

    auto store = OpenStore(path);
    ASSERT_TRUE(store.ok()) << store.status();
    size_t missing = 0;
    for (const std::string& id : acked) {
      if (!(*store)->GetDevice("t", id, Secrets::kOmit).ok()) ++missing;
    }
    EXPECT_EQ(missing, 0u) << "round " << round << ": acknowledged writes lost";
    // The change log kept up with the devices.
    auto changes = (*store)->ReadChanges(0, 1000000, "t");
    ASSERT_TRUE(changes.ok());
    EXPECT_GE(changes->events.size(), acked.size());
    // The single-device keys still decrypt.
    auto d = (*store)->GetDevice("t", "single-0", Secrets::kInclude);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->credentials().symmetric_key().primary_key(), "AAAAAAAAAAAAAAAAAAAAAA==");
  }
}

}  // namespace
}  // namespace iotauth::registry
