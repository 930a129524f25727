#include "services/registry/change_log_pruner.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/registry/sqlite_store.h"
#include "services/registry/test_store.h"

namespace iotauth::registry {
namespace {

class ChangeLogPrunerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = testing::OpenTestStore(&clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  void CreateTenant(const std::string& id) {
    v1::Tenant t;
    t.set_id(id);
    ASSERT_TRUE(store_->CreateTenant(t).ok());
  }

  std::unique_ptr<ChangeLogPruner> NewPruner(absl::Duration interval = absl::Hours(1)) {
    ChangeLogPruner::Options o;
    o.store = store_.get();
    o.clock = &clock_;
    o.retention = absl::Hours(24 * 7);
    o.interval = interval;
    auto p = ChangeLogPruner::Create(o);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  FakeClock clock_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(ChangeLogPrunerTest, CreateValidates) {
  ChangeLogPruner::Options o;
  EXPECT_EQ(ChangeLogPruner::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.store = store_.get();
  o.retention = absl::ZeroDuration();
  EXPECT_EQ(ChangeLogPruner::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.retention = absl::Hours(1);
  o.interval = absl::ZeroDuration();
  EXPECT_EQ(ChangeLogPruner::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChangeLogPrunerTest, PrunesOnlyChangesOlderThanTheRetention) {
  CreateTenant("old1");
  CreateTenant("old2");
  const int64_t old_cursor = store_->LatestCursor();
  clock_.Advance(absl::Hours(24 * 6));
  CreateTenant("recent");  // 6 days old at the pass below
  clock_.Advance(absl::Hours(24 * 2));
  auto pruner = NewPruner();
  auto pruned = pruner->RunOnce();
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 2);
  EXPECT_EQ(pruner->passes(), 1);
  auto kept = store_->ReadChanges(0, 10, "");
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->events.size(), 1u);
  EXPECT_EQ(kept->events[0].resource_id(), "recent");
  // A mirror that last saw a pruned change must resync.
  EXPECT_EQ(store_->ReadChanges(old_cursor - 1, 10, "").status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*pruner->RunOnce(), 0);  // nothing more is old enough
}

TEST_F(ChangeLogPrunerTest, RunsInTheBackgroundUntilStopped) {
  CreateTenant("old");
  clock_.Advance(absl::Hours(24 * 8));
  auto pruner = NewPruner(absl::Hours(1));
  pruner->Start();  // a pass at once, then hourly
  for (int i = 0; i < 1000 && pruner->passes() == 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_GE(pruner->passes(), 1);
  pruner->Stop();  // returns without waiting for the next hourly pass
  EXPECT_TRUE(store_->ReadChanges(0, 10, "")->events.empty());
  pruner->Stop();  // idempotent
}

}  // namespace
}  // namespace iotauth::registry
