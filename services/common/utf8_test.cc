#include "services/common/utf8.h"

#include <string>

#include "google/protobuf/stubs/common.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

bool Valid(absl::string_view s) {
  return google::protobuf::internal::IsStructurallyValidUTF8(s.data(), static_cast<int>(s.size()));
}

TEST(TruncateUtf8Test, ShortStringsAreUntouched) {
  EXPECT_EQ(TruncateUtf8("abc", 3), "abc");
  EXPECT_EQ(TruncateUtf8("", 0), "");
}

TEST(TruncateUtf8Test, NeverCutsACharacterAtAnyLength) {
  // 1-, 2-, 3- and 4-byte characters.
  const std::string s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";  // a é € 😀 z
  ASSERT_TRUE(Valid(s));
  const size_t boundaries[] = {0, 1, 3, 6, 10, 11};
  for (size_t max = 0; max <= s.size(); ++max) {
    absl::string_view t = TruncateUtf8(s, max);
    EXPECT_TRUE(Valid(t)) << max;
    EXPECT_LE(t.size(), max);
    // The longest boundary that fits.
    size_t want = 0;
    for (size_t b : boundaries) {
      if (b <= max) want = b;
    }
    EXPECT_EQ(t.size(), want) << max;
  }
}

}  // namespace
}  // namespace iotauth
