#include "services/common/stream_slots.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

TEST(StreamSlotsTest, HoldsAtMostCapacityAndFreesOnRelease) {
  StreamSlots slots(2);
  auto a = std::make_unique<StreamSlots::Slot>(&slots);
  StreamSlots::Slot b(&slots);
  EXPECT_TRUE(a->ok());
  EXPECT_TRUE(b.ok());
  {
    StreamSlots::Slot refused(&slots);
    EXPECT_FALSE(refused.ok());
    EXPECT_EQ(slots.open(), 2);
  }
  EXPECT_EQ(slots.open(), 2) << "a refused slot gives nothing back";
  a.reset();
  EXPECT_EQ(slots.open(), 1);
  StreamSlots::Slot c(&slots);
  EXPECT_TRUE(c.ok());
}

TEST(StreamSlotsTest, ZeroCapacityRefusesEverything) {
  StreamSlots slots(0);
  StreamSlots::Slot s(&slots);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(slots.open(), 0);
}

}  // namespace
}  // namespace iotauth
