#include "services/common/thread_name.h"

#include <pthread.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

std::string NameOf(pthread_t thread) {
  char buf[32] = {};
  if (pthread_getname_np(thread, buf, sizeof(buf)) != 0) return "<error>";
  return buf;
}

TEST(ThreadNameTest, NamesTheCallingThread) {
  std::string seen;
  std::thread t([&] {
    SetCurrentThreadName("audit-writer");
    seen = NameOf(pthread_self());
  });
  t.join();
  EXPECT_EQ(seen, "audit-writer");
}

TEST(ThreadNameTest, CutsLongNamesToFifteenBytes) {
  std::string seen;
  std::thread t([&] {
    SetCurrentThreadName("a-name-longer-than-fifteen-bytes");
    seen = NameOf(pthread_self());
  });
  t.join();
  EXPECT_EQ(seen, "a-name-longer-t");
}

}  // namespace
}  // namespace iotauth
