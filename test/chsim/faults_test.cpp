// ch-sim's fault injection rules (README.md): from CHSIM_FAULTS at startup and from
// "<api-socket>.faults", re-read before each request.
#include <signal.h>
#include <sys/stat.h>

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class ChsimFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = MakeVmFiles(dir_);
    sim_ = std::make_unique<Sim>(dir_.path(), SimSpec{});
    ASSERT_TRUE(sim_->WaitReady());
  }
  void SetFaults(const std::string& rules) {
    ASSERT_TRUE(WriteFileAtomic(sim_->sock() + ".faults", rules).ok());
  }
  void BootAndPause() {
    ASSERT_EQ(sim_->Call("PUT", "vm.create", MinimalConfig(files_, 64ull << 20).dump()).code, 204);
    ASSERT_EQ(sim_->Call("PUT", "vm.boot").code, 204);
    ASSERT_EQ(sim_->Call("PUT", "vm.pause").code, 204);
  }

  TempDir dir_;
  VmFiles files_;
  std::unique_ptr<Sim> sim_;
};

TEST_F(ChsimFaults, CrashKillsTheVmmWithoutAnswering) {
  SetFaults("# the next boot dies\ncrash vm.boot\n");
  EXPECT_EQ(sim_->Call("GET", "vmm.ping").code, 200);  // other endpoints are unaffected
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(Req("PUT", "vm.boot")));
  bool eof = false;
  EXPECT_EQ(c.ReadUntilEof(10000, &eof), "");
  EXPECT_TRUE(eof);
  EXPECT_EQ(sim_->WaitExit(), 128 + SIGKILL);
}

TEST_F(ChsimFaults, HangStallsEverythingUntilTerminated) {
  SetFaults("hang vm.info");
  Conn hung(sim_->sock());
  ASSERT_TRUE(hung.Send(Req("GET", "vm.info")));
  Conn ping(sim_->sock());
  ASSERT_TRUE(ping.Send(Req("GET", "vmm.ping")));
  EXPECT_TRUE(ping.Silent(300));  // one request at a time: the ping waits behind the hang
  EXPECT_TRUE(hung.Silent(0));
  EXPECT_TRUE(sim_->Running());
  sim_->Signal(SIGTERM);
  EXPECT_EQ(sim_->WaitExit(), 0);
}

TEST_F(ChsimFaults, FailAnswersInjectedCodeWithoutActing) {
  SetFaults("fail vm.create 507");
  Response r = sim_->Call("PUT", "vm.create", MinimalConfig(files_).dump());
  EXPECT_EQ(r.code, 507);
  EXPECT_EQ(r.body, R"(["Error from API","Injected failure"])");
  SetFaults("");
  EXPECT_EQ(sim_->Call("GET", "vm.info").code, 404);  // nothing was created
}

TEST_F(ChsimFaults, WildcardMatchesEveryEndpoint) {
  SetFaults("fail * 503");
  EXPECT_EQ(sim_->Call("GET", "vmm.ping").code, 503);
  EXPECT_EQ(sim_->Call("PUT", "vm.boot").code, 503);
  ASSERT_EQ(::unlink((sim_->sock() + ".faults").c_str()), 0);
  EXPECT_EQ(sim_->Call("GET", "vmm.ping").code, 200);  // re-read before each request
}

TEST_F(ChsimFaults, EnospcLeavesPartialSnapshotFiles) {
  BootAndPause();
  SetFaults("enospc vm.snapshot");
  const std::string snap = dir_ / "snap";
  ASSERT_EQ(::mkdir(snap.c_str(), 0700), 0);
  Response r = sim_->Call("PUT", "vm.snapshot", Json{{"destination_url", FileUrl(snap)}}.dump());
  EXPECT_EQ(r.code, 500);
  Json chain = r.json();
  ASSERT_TRUE(chain.is_array());
  EXPECT_EQ(chain.back(), "No space left on device (os error 28)");
  EXPECT_TRUE(PathExists(snap + "/config.json"));
  EXPECT_TRUE(PathExists(snap + "/memory-ranges"));
  EXPECT_FALSE(PathExists(snap + "/state.json"));
  struct stat st {};
  ASSERT_EQ(::stat((snap + "/memory-ranges").c_str(), &st), 0);
  EXPECT_GT(st.st_blocks, 0);
  EXPECT_EQ(sim_->Call("GET", "vm.info").json()["state"], "Paused");
}

TEST_F(ChsimFaults, BrokenResponses) {
  SetFaults("garbage vm.info\ntruncate vm.counters\nclose vm.boot\n");
  {
    Conn c(sim_->sock());
    ASSERT_TRUE(c.Send(Req("GET", "vm.info")));
    bool eof = false;
    std::string got = c.ReadUntilEof(10000, &eof);
    EXPECT_TRUE(eof);
    EXPECT_FALSE(got.empty());
    EXPECT_NE(got.substr(0, 5), "HTTP/");
  }
  {
    Conn c(sim_->sock());
    ASSERT_TRUE(c.Send(Req("GET", "vm.counters")));
    Response r = c.Read(10000);
    EXPECT_FALSE(r.ok);  // the body never completes
    EXPECT_THAT(r.head, StartsWith("HTTP/1.1 200 \r\n"));
    ASSERT_TRUE(r.content_length.has_value());
    bool eof = false;
    c.ReadUntilEof(10000, &eof);
    EXPECT_TRUE(eof);
  }
  {
    Conn c(sim_->sock());
    ASSERT_TRUE(c.Send(Req("PUT", "vm.boot")));
    bool eof = false;
    EXPECT_EQ(c.ReadUntilEof(10000, &eof), "");
    EXPECT_TRUE(eof);
  }
  EXPECT_EQ(sim_->Call("GET", "vmm.ping").code, 200);
}

TEST_F(ChsimFaults, OversizeSendsFiveMebibytesOfValidJson) {
  SetFaults("oversize vm.info");
  Response r = sim_->Call("GET", "vm.info");
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.body.size(), 5u << 20);
  EXPECT_TRUE(r.json().is_object());
}

TEST_F(ChsimFaults, RecordAppendsRequestsExactlyAsReceived) {
  const std::string record = dir_ / "record";
  SetFaults("record " + record);
  const std::string create = Req("PUT", "vm.create", MinimalConfig(files_).dump());
  const std::string info = Req("GET", "vm.info");
  Conn c(sim_->sock());
  ASSERT_TRUE(c.Send(create + info));
  ASSERT_EQ(c.Read().code, 204);
  ASSERT_EQ(c.Read().code, 200);
  // Request numbers count every request received since start (WaitReady sent pings before).
  std::string text = ReadFile(record).value_or("");
  size_t first = text.find("--- request ");
  ASSERT_NE(first, std::string::npos);
  int n = std::atoi(text.c_str() + first + 12);
  EXPECT_EQ(text, Cat("--- request ", n, " ", create.size(), "\n", create, "\n", "--- request ",
                      n + 1, " ", info.size(), "\n", info, "\n"));
}

TEST_F(ChsimFaults, DelayOnlySlowsTheRequest) {
  SetFaults("delay vm.create 50");
  EXPECT_EQ(sim_->Call("PUT", "vm.create", MinimalConfig(files_).dump()).code, 204);
  EXPECT_EQ(sim_->Call("GET", "vm.info").json()["state"], "Created");
}

TEST(ChsimStartupFaults, FailStartExitsWithErrorChain) {
  TempDir dir;
  RunResult r = RunSim(dir.path(), {.env = {"CHSIM_FAULTS=fail-start"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(
      r.err,
      StartsWith("Error: Cloud Hypervisor exited with the following chain of errors:\n  0: "));
}

TEST(ChsimStartupFaults, BadRuleIsReported) {
  TempDir dir;
  RunResult r = RunSim(dir.path(), {.env = {"CHSIM_FAULTS=explode vm.boot"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("unknown rule \"explode\""));
}

TEST(ChsimStartupFaults, IgnoreSigtermNeedsSigkill) {
  TempDir dir;
  Sim sim(dir.path(), {.env = {"CHSIM_FAULTS=ignore-sigterm"}});
  ASSERT_TRUE(sim.WaitReady());
  sim.Signal(SIGTERM);
  sim.Signal(SIGINT);
  EXPECT_EQ(sim.Call("GET", "vmm.ping").code, 200);  // still serving after both signals
  EXPECT_FALSE(sim.WaitExit(200).has_value());
  sim.Signal(SIGKILL);
  EXPECT_EQ(sim.WaitExit(), 128 + SIGKILL);
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
