#include "services/common/big_endian.h"

#include <string>

#include "gtest/gtest.h"

namespace iotauth::big_endian {
namespace {

TEST(BigEndianTest, AppendsMostSignificantByteFirst) {
  std::string out;
  AppendU32(0x01020304U, &out);
  AppendU64(0xA1B2C3D4E5F60718ULL, &out);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\xA1\xB2\xC3\xD4\xE5\xF6\x07\x18", 12));
}

TEST(BigEndianTest, LoadsWhatItStoresIncludingHighBits) {
  for (uint64_t v :
       {uint64_t{0}, uint64_t{1}, uint64_t{0x80}, uint64_t{0xFFFFFFFF},
        uint64_t{0x8000000000000000ULL}, ~uint64_t{0}, uint64_t{0x0123456789ABCDEFULL}}) {
    char b[8];
    StoreU64(v, b);
    EXPECT_EQ(LoadU64(b), v);
    StoreU32(static_cast<uint32_t>(v), b);
    EXPECT_EQ(LoadU32(b), static_cast<uint32_t>(v));
  }
}

}  // namespace
}  // namespace iotauth::big_endian
