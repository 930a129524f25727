#include "services/common/thread_name.h"

#include <pthread.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

// The name a new thread has after calling SetCurrentThreadName(`name`).
std::string NameAfterSetting(const std::string& name) {
  std::string seen;
  std::thread t([&] {
    SetCurrentThreadName(name);
    char buf[32] = {};
    seen = pthread_getname_np(pthread_self(), buf, sizeof(buf)) == 0 ? buf : "<error>";
  });
  t.join();
  return seen;
}

TEST(ThreadNameTest, NamesTheCallingThread) {
  EXPECT_EQ(NameAfterSetting("audit-writer"), "audit-writer");
}

TEST(ThreadNameTest, CutsLongNamesToFifteenBytes) {
  EXPECT_EQ(NameAfterSetting("a-name-longer-than-fifteen-bytes"), "a-name-longer-t");
}

}  // namespace
}  // namespace iotauth
