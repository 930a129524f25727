#include "services/common/enum_name.h"

#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"

namespace iotauth {
namespace {

using google::protobuf::FieldDescriptorProto;

TEST(EnumNameTest, MatchesTheGeneratedNameForEveryValue) {
  const google::protobuf::EnumDescriptor* d = FieldDescriptorProto::Type_descriptor();
  ASSERT_GT(d->value_count(), 10);
  for (int i = 0; i < d->value_count(); ++i) {
    const auto v = static_cast<FieldDescriptorProto::Type>(d->value(i)->number());
    EXPECT_EQ(EnumName(v), FieldDescriptorProto::Type_Name(v));
    EXPECT_EQ(EnumName(v), d->value(i)->name());
  }
  EXPECT_EQ(EnumName(FieldDescriptorProto::LABEL_REPEATED), "LABEL_REPEATED");
}

TEST(EnumNameTest, UnknownNumbersHaveTheEmptyName) {
  // Open enums carry numbers no value declares: inside the table, below zero and
  // above the tabled range.
  for (int n : {0, 19, 1000, 1023, 1024, 100000, -1, -100000}) {
    const auto v = static_cast<FieldDescriptorProto::Type>(n);
    EXPECT_EQ(EnumName(v), "") << n;
    EXPECT_EQ(EnumName(v), FieldDescriptorProto::Type_Name(v)) << n;
  }
}

}  // namespace
}  // namespace iotauth
