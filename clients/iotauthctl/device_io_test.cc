#include "clients/iotauthctl/device_io.h"

#include <sstream>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace iotauth::cli {
namespace {

namespace rv1 = ::iotauth::registry::v1;

struct Read {
  std::vector<rv1::Device> devices;
  std::vector<int64_t> device_lines;
  std::vector<RowError> errors;
  absl::Status fatal;
};

Read ReadAll(const std::string& text, DeviceFileFormat format, const std::string& tenant = "t1") {
  std::istringstream in(text);
  DeviceReader reader(&in, format, tenant);
  Read out;
  while (true) {
    rv1::Device d;
    RowError e;
    auto r = reader.Next(&d, &e);
    if (!r.ok()) {
      out.fatal = r.status();
      return out;
    }
    if (*r == DeviceReader::Result::kEof) return out;
    if (*r == DeviceReader::Result::kRowError) {
      out.errors.push_back(e);
    } else {
      out.devices.push_back(d);
      out.device_lines.push_back(reader.line());
    }
  }
}

TEST(CsvReaderTest, QuotedFields) {
  std::istringstream in(
      "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
      "\n"
      "\"multi\nline\",,x\n"
      "last,\"\",\n");
  CsvReader r(&in);
  std::vector<std::string> f;
  std::string err;
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kRecord);
  EXPECT_EQ(f, std::vector<std::string>({"a", "b,c", "say \"hi\""}));
  EXPECT_EQ(r.record_line(), 1);
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kRecord);
  EXPECT_EQ(f, std::vector<std::string>({"multi\nline", "", "x"}));
  EXPECT_EQ(r.record_line(), 3);
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kRecord);
  EXPECT_EQ(f, std::vector<std::string>({"last", "", ""}));
  EXPECT_EQ(r.record_line(), 5);
  EXPECT_EQ(r.Next(&f, &err), CsvReader::Result::kEof);
}

TEST(CsvReaderTest, MalformedRecordsAndRecovery) {
  std::istringstream in("a\"b,c\n\"x\"y,z\nok,1\n\"open,2\n");
  CsvReader r(&in);
  std::vector<std::string> f;
  std::string err;
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kError);
  EXPECT_EQ(r.record_line(), 1);
  EXPECT_NE(err.find("unexpected quote"), std::string::npos);
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kError);
  EXPECT_EQ(r.record_line(), 2);
  EXPECT_NE(err.find("after closing quote"), std::string::npos);
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kRecord);
  EXPECT_EQ(f, std::vector<std::string>({"ok", "1"}));
  ASSERT_EQ(r.Next(&f, &err), CsvReader::Result::kError);
  EXPECT_EQ(r.record_line(), 4);
  EXPECT_EQ(err, "unterminated quoted field");
}

// "CSV UTF-8" from a spreadsheet starts with a byte order mark and ends lines with
// CRLF: the header still names device_id, and JSON Lines read the same way.
TEST(DeviceCsvTest, AByteOrderMarkIsNotPartOfTheHeader) {
  Read csv = ReadAll(
      "\xEF\xBB\xBF"
      "device_id,product_key\r\nb1,pk\r\nb2,pk\r\n",
      DeviceFileFormat::kCsv);
  ASSERT_TRUE(csv.fatal.ok()) << csv.fatal;
  ASSERT_EQ(csv.devices.size(), 2u);
  EXPECT_EQ(csv.devices[0].device_id(), "b1");
  EXPECT_EQ(csv.devices[1].product_key(), "pk");
  EXPECT_TRUE(csv.errors.empty());
  Read jsonl = ReadAll("\xEF\xBB\xBF{\"deviceId\":\"j1\"}\n{\"deviceId\":\"j2\"}\n",
                       DeviceFileFormat::kJsonl);
  ASSERT_TRUE(jsonl.fatal.ok()) << jsonl.fatal;
  ASSERT_EQ(jsonl.devices.size(), 2u);
  EXPECT_EQ(jsonl.devices[0].device_id(), "j1");
  // Only at the very start: elsewhere it is data (and no valid column name).
  Read later = ReadAll("device_id,\xEF\xBB\xBFproduct_key\nb1,pk\n", DeviceFileFormat::kCsv);
  EXPECT_FALSE(later.fatal.ok());
}

TEST(CsvEscapeTest, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(CsvEscape("plain"), "plain");
  EXPECT_EQ(CsvEscape("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvEscape("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvEscape("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvLine({"a", "b,c", ""}), "a,\"b,c\",\n");
}

TEST(DeviceCsvTest, ParsesRowsAndReportsBadOnesWithLineNumbers) {
  const std::string csv =
      "device_id,product_key,status,tags,primary_key,tag:room,ca_signed_allowed\n"
      "dev-1,p1,enabled,site=berlin;floor=3,UFJJTUFSWQ==,r1,true\n"
      "dev-2,p1,,,,,\n"
      "dev-3,p1,sleeping,,,,\n"  // line 4: bad status
      "dev-4,p1\n"               // line 5: wrong field count
      ",p1,,,,,\n"               // line 6: no device id
      "\"dev,5\",p1,disabled,\"{\"\"a=b\"\":\"\"c;d\"\"}\",,,no\n"
      "dev-6,p1,,novalue,,,\n"  // line 8: bad tags
      "dev-7,p1,,,,,maybe\n";   // line 9: bad bool
  Read r = ReadAll(csv, DeviceFileFormat::kCsv);
  ASSERT_TRUE(r.fatal.ok()) << r.fatal;
  ASSERT_EQ(r.devices.size(), 3u);
  const rv1::Device& d1 = r.devices[0];
  EXPECT_EQ(d1.tenant_id(), "t1");
  EXPECT_EQ(d1.device_id(), "dev-1");
  EXPECT_EQ(d1.status(), rv1::DEVICE_STATUS_ENABLED);
  EXPECT_EQ(d1.tags().at("site"), "berlin");
  EXPECT_EQ(d1.tags().at("floor"), "3");
  EXPECT_EQ(d1.tags().at("room"), "r1");
  EXPECT_EQ(d1.credentials().symmetric_key().primary_key(), "UFJJTUFSWQ==");
  EXPECT_TRUE(d1.credentials().ca_signed_allowed());
  EXPECT_FALSE(r.devices[1].has_credentials());
  EXPECT_EQ(r.devices[2].device_id(), "dev,5");
  EXPECT_EQ(r.devices[2].tags().at("a=b"), "c;d");
  EXPECT_EQ(r.device_lines, std::vector<int64_t>({2, 3, 7}));
  ASSERT_EQ(r.errors.size(), 5u);
  EXPECT_EQ(r.errors[0].line, 4);
  EXPECT_NE(r.errors[0].message.find("status"), std::string::npos);
  EXPECT_EQ(r.errors[1].line, 5);
  EXPECT_EQ(r.errors[1].message, "expected 7 fields, found 2");
  EXPECT_EQ(r.errors[2].line, 6);
  EXPECT_EQ(r.errors[2].message, "device_id is empty");
  EXPECT_EQ(r.errors[3].line, 8);
  EXPECT_EQ(r.errors[4].line, 9);
}

TEST(DeviceCsvTest, HeaderProblemsAreFatal) {
  EXPECT_EQ(ReadAll("device_id,colour\nd,red\n", DeviceFileFormat::kCsv).fatal.code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadAll("product_key\np\n", DeviceFileFormat::kCsv).fatal.code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadAll("device_id,device_id\nd,d\n", DeviceFileFormat::kCsv).fatal.code(),
            absl::StatusCode::kInvalidArgument);
  Read empty = ReadAll("", DeviceFileFormat::kCsv);
  EXPECT_TRUE(empty.fatal.ok());
  EXPECT_TRUE(empty.devices.empty());
}

TEST(DeviceCsvTest, ExportRowRoundTrips) {
  rv1::Device d;
  d.set_tenant_id("t1");
  d.set_device_id("dev \"q\"");
  d.set_product_key("p");
  d.set_status(rv1::DEVICE_STATUS_DISABLED);
  (*d.mutable_tags())["k"] = "v";
  (*d.mutable_tags())["odd;key"] = "x=y";
  d.mutable_credentials()->set_secondary_thumbprint("ff");
  d.mutable_credentials()->set_ca_signed_allowed(true);
  d.set_enrollment_group_id("g1");
  std::string csv = CsvLine(DeviceCsvColumns()) + CsvLine(DeviceCsvRow(d));
  Read r = ReadAll(csv, DeviceFileFormat::kCsv);
  ASSERT_TRUE(r.fatal.ok()) << r.fatal;
  ASSERT_EQ(r.devices.size(), 1u) << (r.errors.empty() ? "" : r.errors[0].message);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r.devices[0], d))
      << r.devices[0].DebugString();
}

TEST(DeviceJsonlTest, ParsesAndReportsBadLines) {
  const std::string jsonl =
      R"({"deviceId":"d1","productKey":"p","tags":{"a":"b"}})"
      "\n"
      "\n"
      R"({"device_id":"d2","status":"DEVICE_STATUS_DISABLED"})"
      "\n"
      R"({"deviceId":"d3","credentials":{"symmetricKey":{"primaryKey":"SECRETKEY"}}, oops})"
      "\n"
      R"({"deviceId":"d4","colour":"red"})"
      "\n"
      R"({"tenantId":"other","deviceId":"d5"})"
      "\n"
      R"({"tenantId":"t1","deviceId":"d6"})"
      "\n";
  Read r = ReadAll(jsonl, DeviceFileFormat::kJsonl);
  ASSERT_TRUE(r.fatal.ok());
  ASSERT_EQ(r.devices.size(), 3u);
  EXPECT_EQ(r.devices[0].tags().at("a"), "b");
  EXPECT_EQ(r.devices[0].tenant_id(), "t1");
  EXPECT_EQ(r.devices[1].status(), rv1::DEVICE_STATUS_DISABLED);
  EXPECT_EQ(r.device_lines, std::vector<int64_t>({1, 3, 7}));
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].line, 4);
  // A parse error never echoes the row (it may hold a key).
  EXPECT_EQ(r.errors[0].message.find("SECRETKEY"), std::string::npos);
  EXPECT_EQ(r.errors[1].line, 5);
  EXPECT_EQ(r.errors[2].line, 6);
  EXPECT_NE(r.errors[2].message.find("differs from --tenant"), std::string::npos);
}

TEST(FormatTest, FromExtensionOrFlag) {
  EXPECT_EQ(*DeviceFileFormatFor("a/devices.CSV", ""), DeviceFileFormat::kCsv);
  EXPECT_EQ(*DeviceFileFormatFor("devices.jsonl", ""), DeviceFileFormat::kJsonl);
  EXPECT_EQ(*DeviceFileFormatFor("-", "csv"), DeviceFileFormat::kCsv);
  EXPECT_EQ(*DeviceFileFormatFor("devices.csv", "jsonl"), DeviceFileFormat::kJsonl);
  EXPECT_FALSE(DeviceFileFormatFor("devices.txt", "").ok());
  EXPECT_FALSE(DeviceFileFormatFor("devices.csv", "xml").ok());
}

TEST(TagsCellTest, Forms) {
  EXPECT_EQ(ParseTagsCell(" a = 1 ; b=2 ")->at("a"), "1");
  EXPECT_EQ(ParseTagsCell(R"({"x":"y"})")->at("x"), "y");
  EXPECT_FALSE(ParseTagsCell(R"({"x":1})").ok());
  EXPECT_FALSE(ParseTagsCell("{not json").ok());
  EXPECT_TRUE(ParseTagsCell("")->empty());
}

}  // namespace
}  // namespace iotauth::cli
