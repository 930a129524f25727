// Test helper: reads one row of a DecisionCounters snapshot.
#pragma once

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "services/identity/decision_counters.h"

namespace iotauth::identity::testing {

// The count of the row with these labels; a failure unless exactly one row has them.
inline uint64_t CountOf(const DecisionCounters& c, const std::string& decision,
                        const std::string& reason, const std::string& type) {
  int found = 0;
  uint64_t count = 0;
  for (const auto& row : c.Snapshot()) {
    if (row.decision == decision && row.reason == reason && row.credential_type == type) {
      ++found;
      count = row.count;
    }
  }
  EXPECT_EQ(found, 1) << decision << "/" << reason << "/" << type;
  return count;
}

}  // namespace iotauth::identity::testing
