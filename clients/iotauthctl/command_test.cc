#include "clients/iotauthctl/command.h"

#include <sstream>

#include "gtest/gtest.h"

namespace iotauth::cli {
namespace {

struct Tree {
  Command root{"tool", "A tool"};
  std::vector<std::string> seen_args;
  Tree() {
    root.Flag({"json", "", "JSON"})
        .Flag({"address", "HOST", "Address", "localhost:1", "T_ADDR"})
        .Flag({"insecure", "", "Plaintext", "", "T_INSECURE"});
    Command& dev = root.Sub("device", "Devices");
    dev.Sub("get", "Get")
        .Args("ID", 1, 1)
        .Flag({"show_keys", "", "Keys"})
        .Flag({"tag", "K=V", "Tag", "", "", true})
        .Flag({"timeout", "D", "Timeout", "10s"})
        .Run([](Invocation&) { return 0; });
    dev.Sub("list", "List").Run([](Invocation&) { return 0; });
  }
};

EnvLookup NoEnv() {
  return [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
}

TEST(ParseTest, DescendsAndParsesFlags) {
  Tree t;
  ParseResult r = Parse(t.root,
                        {"--json", "device", "get", "d1", "--show-keys", "--tag", "a=1",
                         "--tag=b=2", "--address=h:2"},
                        NoEnv());
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.command->Path(), "tool device get");
  EXPECT_EQ(r.args, std::vector<std::string>({"d1"}));
  EXPECT_TRUE(r.flags.IsSet("json"));
  EXPECT_TRUE(r.flags.IsSet("show_keys"));
  EXPECT_EQ(r.flags.GetAll("tag"), std::vector<std::string>({"a=1", "b=2"}));
  EXPECT_EQ(r.flags.Get("address"), "h:2");
  EXPECT_TRUE(r.flags.GivenOnCommandLine("address"));
}

TEST(ParseTest, DefaultsAndEnvironment) {
  Tree t;
  EnvLookup env = [](const std::string& n) -> std::optional<std::string> {
    if (n == "T_ADDR") return std::string("env:3");
    return std::nullopt;
  };
  ParseResult r = Parse(t.root, {"device", "get", "d1"}, env);
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.flags.Get("address"), "env:3");
  EXPECT_TRUE(r.flags.Has("address"));
  EXPECT_FALSE(r.flags.GivenOnCommandLine("address"));
  EXPECT_EQ(*r.flags.GetDuration("timeout"), absl::Seconds(10));
  EXPECT_FALSE(r.flags.IsSet("show_keys"));
  ParseResult r2 = Parse(t.root, {"device", "get", "d1"}, NoEnv());
  EXPECT_EQ(r2.flags.Get("address"), "localhost:1");
}

TEST(ParseTest, BoolValues) {
  Tree t;
  ParseResult r = Parse(t.root, {"device", "get", "d1", "--show_keys=false"}, NoEnv());
  ASSERT_TRUE(r.error.empty());
  EXPECT_FALSE(r.flags.IsSet("show_keys"));
  EXPECT_TRUE(r.flags.GivenOnCommandLine("show-keys"));
  ParseResult bad = Parse(t.root, {"device", "get", "d1", "--show_keys=maybe"}, NoEnv());
  EXPECT_NE(bad.error.find("not a boolean"), std::string::npos);
  // A bad value from the environment is refused too, not read as false.
  EnvLookup env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "T_INSECURE") return "ture";
    return std::nullopt;
  };
  ParseResult bad_env = Parse(t.root, {"device", "get", "d1"}, env);
  EXPECT_NE(bad_env.error.find("not a boolean"), std::string::npos) << bad_env.error;
}

TEST(ParseTest, DoubleDashEndsFlags) {
  Tree t;
  ParseResult r = Parse(t.root, {"device", "get", "--", "--weird-id"}, NoEnv());
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.args, std::vector<std::string>({"--weird-id"}));
}

TEST(ParseTest, Errors) {
  Tree t;
  struct Case {
    std::vector<std::string> argv;
    std::string want;
  };
  const Case kCases[] = {
      {{"device", "get", "d1", "--nope"}, "unknown flag --nope for 'tool device get'"},
      {{"--show_keys", "device", "get", "d1"}, "unknown flag --show_keys for 'tool'"},
      {{"device", "get", "d1", "--tag"}, "flag --tag needs a value"},
      {{"device", "get"}, "missing argument ID"},
      {{"device", "get", "a", "b"}, "too many arguments"},
      {{"device", "list", "x"}, "unexpected argument 'x'"},
      {{"device", "frob"}, "unknown command 'frob' for 'tool device'"},
      {{"device", "get", "d1", "-x"}, "unknown flag -x"},
  };
  for (const Case& c : kCases) {
    ParseResult r = Parse(t.root, c.argv, NoEnv());
    EXPECT_NE(r.error.find(c.want), std::string::npos) << "got: " << r.error << " want: " << c.want;
  }
}

TEST(ParseTest, HelpAnywhere) {
  Tree t;
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"--help"}, {"device", "-h"}, {"device", "get", "--help"}, {"help", "device", "get"}}) {
    ParseResult r = Parse(t.root, argv, NoEnv());
    EXPECT_TRUE(r.help);
    EXPECT_TRUE(r.error.empty()) << r.error;
  }
  // --help skips the arity check.
  ParseResult r = Parse(t.root, {"device", "get", "--help"}, NoEnv());
  EXPECT_EQ(r.command->Path(), "tool device get");
}

TEST(DispatchTest, ExitCodes) {
  Tree t;
  std::ostringstream out;
  std::ostringstream err;
  Io io{&out, &err, NoEnv(), false};
  EXPECT_EQ(Dispatch(t.root, {"device", "get", "d1"}, io, nullptr), kExitOk);
  EXPECT_EQ(Dispatch(t.root, {"device", "get", "--help"}, io, nullptr), kExitOk);
  EXPECT_NE(out.str().find("Usage: tool device get ID [flags]"), std::string::npos);
  EXPECT_NE(out.str().find("--tag K=V"), std::string::npos);
  EXPECT_NE(out.str().find("Global flags:"), std::string::npos);
  EXPECT_EQ(Dispatch(t.root, {"device", "get"}, io, nullptr), kExitUsage);
  EXPECT_NE(err.str().find("Run 'tool device get --help' for usage."), std::string::npos);
  // A group without a subcommand prints its help and is a usage error.
  EXPECT_EQ(Dispatch(t.root, {"device"}, io, nullptr), kExitUsage);
}

TEST(DurationTest, Forms) {
  EXPECT_EQ(*ParseDurationFlag("90s"), absl::Seconds(90));
  EXPECT_EQ(*ParseDurationFlag("1h30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseDurationFlag("3600"), absl::Hours(1));
  EXPECT_EQ(*ParseDurationFlag("2d"), absl::Hours(48));
  EXPECT_EQ(*ParseDurationFlag("500ms"), absl::Milliseconds(500));
  EXPECT_FALSE(ParseDurationFlag("").ok());
  EXPECT_FALSE(ParseDurationFlag("soon").ok());
  EXPECT_FALSE(ParseDurationFlag("inf").ok());
}

TEST(FlagsTest, TypedErrorsNameTheFlag) {
  Tree t;
  ParseResult r = Parse(t.root, {"device", "get", "d1", "--timeout", "x"}, NoEnv());
  auto d = r.flags.GetDuration("timeout");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("--timeout"), std::string::npos);
}

}  // namespace
}  // namespace iotauth::cli
