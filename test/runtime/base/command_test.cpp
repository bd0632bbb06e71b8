#include "runtime/base/command.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "runtime/base/strings.h"

namespace sandboxlet {
namespace {

TEST(RunCommand, CapturesOutputAndExitCode) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(RunCommand, FeedsStdin) {
  CommandOptions opts;
  opts.stdin_data = std::string(200000, 'x');
  auto r = RunCommand({"wc", "-c"}, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(std::stoi(r->out), 200000);
}

TEST(RunCommand, MissingProgramIsNotFoundNamingIt) {
  auto r = RunCommand({"/nonexistent/sandboxlet-no-such-program"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(r.status().message()).find("/nonexistent/sandboxlet-no-such-program"),
            std::string::npos);
}

TEST(RunCommand, KillsAtDeadline) {
  CommandOptions opts;
  opts.timeout = std::chrono::milliseconds(200);
  auto r = RunCommand({"sleep", "30"}, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(RunCommand, EnvironmentOverride) {
  CommandOptions opts;
  opts.env = {"SBL_TEST_VALUE=42", "HOME=/sbl-home"};
  auto r = RunCommand({"sh", "-c", "echo $SBL_TEST_VALUE $HOME"}, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "42 /sbl-home\n");
}

TEST(RunCommand, ProgramInheritsOnlyItsStandardStreams) {
  int leaked = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaked, 3);
  auto r = RunCommand(
      {"sh", "-c", Cat("test -e /proc/self/fd/", leaked, " && echo open || echo closed")});
  ::close(leaked);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->out, "closed\n");
}

TEST(RunChecked, NonZeroExitIsErrorWithStderr) {
  auto r = RunChecked({"sh", "-c", "echo 'device busy' >&2; exit 1"});
  ASSERT_FALSE(r.ok());
  std::string msg(r.status().message());
  EXPECT_NE(msg.find("exit 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("device busy"), std::string::npos) << msg;
}

TEST(ShellJoin, QuotesWhereNeeded) {
  EXPECT_EQ(ShellJoin({"dmsetup", "create", "x", "--table", "0 8 snapshot a b P 8"}),
            "dmsetup create x --table '0 8 snapshot a b P 8'");
}

}  // namespace
}  // namespace sandboxlet
