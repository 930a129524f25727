#include "services/gateway/session_table.h"

#include "gtest/gtest.h"

namespace iotauth::gateway {
namespace {

Session For(const std::string& device, absl::Time expires = absl::InfiniteFuture()) {
  Session s;
  s.identity.set_device_id(device);
  s.expires_at = expires;
  return s;
}

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

TEST(SessionTableTest, PutGetRemove) {
  SessionTable t(4);
  t.Put("n1", "c1", For("d1"));
  ASSERT_TRUE(t.Get("n1", "c1", kNow).has_value());
  EXPECT_EQ(t.Get("n1", "c1", kNow)->identity.device_id(), "d1");
  EXPECT_FALSE(t.Get("n2", "c1", kNow).has_value()) << "nodes are separate";
  t.Remove("n1", "c1");
  EXPECT_FALSE(t.Get("n1", "c1", kNow).has_value());
}

TEST(SessionTableTest, KeyIsUnambiguous) {
  SessionTable t(4);
  t.Put("a", "bc", For("x"));
  EXPECT_FALSE(t.Get("ab", "c", kNow).has_value());
}

TEST(SessionTableTest, KeyIsUnambiguousWithNul) {
  // ExHook's strings are protobuf strings, which may carry NUL: node "a\0b" with
  // client "c" is not node "a" with client "b\0c" (gateway_fuzzer's model caught the two
  // sharing one session when the key was node, NUL, client id).
  SessionTable t(4);
  const std::string node_with_nul("a\0b", 3);
  const std::string client_with_nul("b\0c", 3);
  t.Put(node_with_nul, "c", For("x"));
  EXPECT_FALSE(t.Get("a", client_with_nul, kNow).has_value());
  EXPECT_FALSE(t.RemoveIfConnection("a", client_with_nul, ""));
  EXPECT_TRUE(t.Get(node_with_nul, "c", kNow).has_value());
}

TEST(SessionTableTest, ExpiredSessionIsGone) {
  SessionTable t(4);
  t.Put("n", "c", For("d", kNow + absl::Seconds(10)));
  EXPECT_TRUE(t.Get("n", "c", kNow + absl::Seconds(9)).has_value());
  EXPECT_FALSE(t.Get("n", "c", kNow + absl::Seconds(10)).has_value());
  EXPECT_EQ(t.size(), 0u);
}

TEST(SessionTableTest, EvictsLeastRecentlyUsed) {
  SessionTable t(2);
  t.Put("n", "a", For("a"));
  t.Put("n", "b", For("b"));
  ASSERT_TRUE(t.Get("n", "a", kNow).has_value());  // b is now the oldest
  t.Put("n", "c", For("c"));
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(t.Get("n", "a", kNow).has_value());
  EXPECT_FALSE(t.Get("n", "b", kNow).has_value());
  EXPECT_TRUE(t.Get("n", "c", kNow).has_value());
  EXPECT_EQ(t.evicted(), 1u);
}

TEST(SessionTableTest, PutReplaces) {
  SessionTable t(2);
  t.Put("n", "a", For("old"));
  t.Put("n", "a", For("new"));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.Get("n", "a", kNow)->identity.device_id(), "new");
}

TEST(SessionTableTest, RemoveIfConnectionOnlyRemovesThatConnectionsSession) {
  SessionTable t(4);
  Session s = For("d");
  s.connection = "203.0.113.7:50001";
  t.Put("n", "c", s);
  EXPECT_FALSE(t.RemoveIfConnection("n", "c", "203.0.113.7:50000"));
  EXPECT_FALSE(t.RemoveIfConnection("n", "other", "203.0.113.7:50001"));
  EXPECT_TRUE(t.Get("n", "c", kNow).has_value());
  EXPECT_TRUE(t.RemoveIfConnection("n", "c", "203.0.113.7:50001"));
  EXPECT_FALSE(t.Get("n", "c", kNow).has_value());
  EXPECT_EQ(t.evicted(), 0u);
}

}  // namespace
}  // namespace iotauth::gateway
