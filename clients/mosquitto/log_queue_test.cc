#include "clients/mosquitto/log_queue.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth::mosquitto {
namespace {

using Lines = std::vector<std::pair<log::Level, std::string>>;

Lines DrainAll(LogQueue& q) {
  Lines out;
  q.Drain([&](log::Level level, absl::string_view line) { out.emplace_back(level, line); });
  return out;
}

TEST(LogQueueTest, DrainsInOrderOnce) {
  LogQueue q(8);
  EXPECT_TRUE(DrainAll(q).empty());
  q.Push(log::Level::kInfo, "first");
  q.Push(log::Level::kError, "second");
  const Lines got = DrainAll(q);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], std::make_pair(log::Level::kInfo, std::string("first")));
  EXPECT_EQ(got[1], std::make_pair(log::Level::kError, std::string("second")));
  EXPECT_TRUE(DrainAll(q).empty());
}

TEST(LogQueueTest, PastCapacityTheNewestAreCountedNotLost) {
  LogQueue q(2);
  for (int i = 0; i < 5; ++i) q.Push(log::Level::kInfo, std::to_string(i));
  const Lines got = DrainAll(q);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].second, "0");
  EXPECT_EQ(got[1].second, "1");
  EXPECT_EQ(got[2].first, log::Level::kWarn);
  EXPECT_EQ(got[2].second, "3 log lines were not written (the queue was full)");
  q.Push(log::Level::kInfo, "again");
  EXPECT_EQ(DrainAll(q).size(), 1u) << "the count was reported once";
}

TEST(LogQueueTest, PushedFromAnotherThread) {
  LogQueue q(1000);
  std::thread t([&] {
    for (int i = 0; i < 500; ++i) q.Push(log::Level::kInfo, "x");
  });
  size_t drained = 0;
  while (drained < 500) drained += DrainAll(q).size();
  t.join();
  EXPECT_EQ(drained, 500u);
}

}  // namespace
}  // namespace iotauth::mosquitto
