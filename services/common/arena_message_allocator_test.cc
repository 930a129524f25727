#include "services/common/arena_message_allocator.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/wrappers.pb.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

using google::protobuf::StringValue;
using google::protobuf::Struct;
using Allocator = ArenaMessageAllocator<StringValue, Struct, 1024>;

TEST(ArenaMessageAllocatorTest, MessagesLiveOnAnArenaAndHoldersAreReusedEmpty) {
  Allocator alloc;
  auto* h = alloc.AllocateMessages();
  ASSERT_NE(h->request(), nullptr);
  ASSERT_NE(h->response(), nullptr);
  EXPECT_NE(h->request()->GetArena(), nullptr);
  EXPECT_EQ(h->request()->GetArena(), h->response()->GetArena());
  h->request()->set_value(std::string(100, 'r'));
  // Far more than the first block: the arena grows, and Release frees the growth.
  for (int i = 0; i < 200; ++i) {
    (*h->response()->mutable_fields())["key-" + std::to_string(i)].set_string_value(
        std::string(64, 'v'));
  }
  auto* first = h;
  h->Release();
  EXPECT_EQ(alloc.pooled(), 1u);

  auto* again = alloc.AllocateMessages();
  EXPECT_EQ(again, first);  // the pooled holder
  EXPECT_EQ(alloc.pooled(), 0u);
  EXPECT_TRUE(again->request()->value().empty());
  EXPECT_TRUE(again->response()->fields().empty());
  again->request()->set_value("x");
  EXPECT_EQ(again->request()->value(), "x");
  again->Release();
}

TEST(ArenaMessageAllocatorTest, PoolIsBounded) {
  Allocator alloc(/*max_pooled=*/2);
  std::vector<grpc::MessageHolder<StringValue, Struct>*> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(alloc.AllocateMessages());
    held.back()->request()->set_value(std::string(50, static_cast<char>('a' + i)));
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(held[i]->request()->value(), std::string(50, static_cast<char>('a' + i)));
  }
  for (auto* h : held) h->Release();
  EXPECT_EQ(alloc.pooled(), 2u);  // the other three were freed
}

}  // namespace
}  // namespace iotauth
