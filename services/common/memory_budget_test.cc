#include "services/common/memory_budget.h"

#include <optional>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(MemoryBudgetTest, ParsesCgroupLimits) {
  EXPECT_EQ(ParseCgroupMemoryLimit("536870912\n"), std::optional<uint64_t>(512 * kMiB));
  EXPECT_EQ(ParseCgroupMemoryLimit("max\n"), std::nullopt);                // v2, no limit
  EXPECT_EQ(ParseCgroupMemoryLimit("9223372036854771712"), std::nullopt);  // v1, no limit
  EXPECT_EQ(ParseCgroupMemoryLimit(""), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("0"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("12abc"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("-5"), std::nullopt);
}

TEST(MemoryBudgetTest, AnEighthOfTheSmallerOfTheLimitAndTheMachine) {
  TransportMemoryBudget pod = TransportMemoryFrom(1 * kGiB, 24 * kGiB);
  EXPECT_EQ(pod.bytes, 128 * kMiB);
  EXPECT_EQ(pod.source, "an eighth of the cgroup memory limit, 1024 MiB");
  TransportMemoryBudget host = TransportMemoryFrom(std::nullopt, 24 * kGiB);
  EXPECT_EQ(host.bytes, 3 * kGiB);
  EXPECT_EQ(host.source, "an eighth of the machine's 24576 MiB");
  // A limit above the machine's memory limits nothing.
  EXPECT_EQ(TransportMemoryFrom(64 * kGiB, 8 * kGiB).bytes, 1 * kGiB);
  // Never under 32 MiB, and a machine size that could not be read leaves the limit.
  EXPECT_EQ(TransportMemoryFrom(128 * kMiB, 8 * kGiB).bytes, 32 * kMiB);
  EXPECT_EQ(TransportMemoryFrom(1 * kGiB, 0).bytes, 128 * kMiB);
  EXPECT_EQ(TransportMemoryFrom(std::nullopt, 0).bytes, 32 * kMiB);
}

TEST(MemoryBudgetTest, DetectsSomethingOnThisMachine) {
  const TransportMemoryBudget b = DetectTransportMemory();
  EXPECT_GE(b.bytes, 32 * kMiB);
  EXPECT_FALSE(b.source.empty());
}

}  // namespace
}  // namespace iotauth
