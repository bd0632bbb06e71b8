// ch-sim's simulated guest agent (guest_agent.h): it answers at the guest address from the
// kernel cmdline, inside the simulator's network namespace, only while the VM is Running; its
// state travels with snapshots; agent-* fault rules.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kGuest[] = "169.254.0.21";
constexpr char kCmdline[] = "console=ttyS0 ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off";

struct AgentAnswer {
  std::string error;  // "" when an HTTP answer was read
  int code = 0;
  std::string body;
};

// One HTTP request to `address:port` from inside the netns `ns` (on a thread that enters it).
AgentAnswer AgentCall(const std::string& ns, const std::string& method, const std::string& path,
                      const std::string& body = "", const std::string& address = kGuest,
                      uint16_t port = 49983) {
  AgentAnswer out;
  std::thread t([&] {
    UniqueFd nsfd(::open(Cat("/run/netns/", ns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!nsfd.valid() || ::setns(nsfd.get(), CLONE_NEWNET) != 0) {
      out.error = "setns failed";
      return;
    }
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, address.c_str(), &a.sin_addr);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      out.error = Cat("connect: ", std::strerror(errno));
      return;
    }
    std::string req =
        Cat(method, " ", path, " HTTP/1.1\r\nHost: agent\r\nContent-Length: ", body.size(),
            "\r\n\r\n", body);
    if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(req.size())) {
      out.error = Cat("send: ", std::strerror(errno));
      return;
    }
    std::string resp;
    char buf[4096];
    while (true) {  // the agent closes after each answer
      ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
      if (n < 0) {
        out.error = Cat("recv: ", std::strerror(errno));
        return;
      }
      if (n == 0) break;
      resp.append(buf, static_cast<size_t>(n));
    }
    size_t head = resp.find("\r\n\r\n");
    if (resp.size() < 12 || head == std::string::npos) {
      out.error = Cat("bad answer \"", resp, "\"");
      return;
    }
    out.code = std::stoi(resp.substr(9, 3));
    out.body = resp.substr(head + 4);
  });
  t.join();
  return out;
}

Json BodyJson(const AgentAnswer& a) { return Json::parse(a.body, nullptr, false); }

class ChsimGuestAgent : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/net/tun", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/net/tun";
    }
    ns_ = std::make_unique<NetNs>();
    if (!ns_->ok()) GTEST_SKIP() << "cannot create a network namespace";
    files_ = MakeVmFiles(dir_);
  }
  Json Config(const std::string& cmdline = kCmdline, bool net = true) {
    Json config = MinimalConfig(files_, 64ull << 20);
    config["payload"]["cmdline"] = cmdline;
    if (net) config["net"] = Json::array({{{"tap", "tap0"}}});
    return config;
  }
  std::unique_ptr<Sim> StartIn(const NetNs& ns, std::vector<std::string> env = {}) {
    auto sim = std::make_unique<Sim>(dir_.path(), SimSpec{.env = env, .netns = ns.name()});
    EXPECT_TRUE(sim->WaitReady());
    return sim;
  }
  std::unique_ptr<Sim> Boot(std::vector<std::string> env = {}) {
    auto sim = StartIn(*ns_, env);
    EXPECT_EQ(sim->Call("PUT", "vm.create", Config().dump()).code, 204);
    EXPECT_EQ(sim->Call("PUT", "vm.boot").code, 204);
    return sim;
  }
  bool GuestAddressOnLo(const NetNs& ns) {
    auto r = RunCommand({"ip", "-n", ns.name(), "-4", "addr", "show", "dev", "lo"});
    return r.ok() && r->out.find(Cat(kGuest, "/32")) != std::string::npos;
  }

  TempDir dir_;
  VmFiles files_;
  std::unique_ptr<NetNs> ns_;
};

TEST_F(ChsimGuestAgent, AnswersOnlyWhileTheVmRuns) {
  auto sim = Boot();
  AgentAnswer a = AgentCall(ns_->name(), "GET", "/health");
  ASSERT_EQ(a.error, "");
  EXPECT_EQ(a.code, 200);
  EXPECT_EQ(BodyJson(a)["version"], "chsim-agent/1");
  EXPECT_TRUE(GuestAddressOnLo(*ns_));

  ASSERT_EQ(sim->Call("PUT", "vm.pause").code, 204);
  EXPECT_NE(AgentCall(ns_->name(), "GET", "/health").error, "");
  EXPECT_FALSE(GuestAddressOnLo(*ns_));

  ASSERT_EQ(sim->Call("PUT", "vm.resume").code, 204);
  EXPECT_EQ(AgentCall(ns_->name(), "GET", "/health").code, 200);

  ASSERT_EQ(sim->Call("PUT", "vm.shutdown").code, 204);
  EXPECT_NE(AgentCall(ns_->name(), "GET", "/health").error, "");
  EXPECT_FALSE(GuestAddressOnLo(*ns_));
}

TEST_F(ChsimGuestAgent, SigtermRemovesTheGuestAddress) {
  auto sim = Boot();
  EXPECT_TRUE(GuestAddressOnLo(*ns_));
  sim->Signal(SIGTERM);
  EXPECT_EQ(sim->WaitExit(), 0);
  EXPECT_FALSE(GuestAddressOnLo(*ns_));
}

TEST_F(ChsimGuestAgent, InitIsKeptAndRestoredWithTheSnapshot) {
  ASSERT_TRUE(ns_->Run({"tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"}));
  auto sim = Boot();
  EXPECT_EQ(AgentCall(ns_->name(), "GET", "/debug/init").code, 404);  // not initialised yet
  EXPECT_EQ(AgentCall(ns_->name(), "POST", "/init", "[1,2]").code, 400);
  const std::string init = R"({"sandboxId":"uid-1","name":"first"})";
  EXPECT_EQ(AgentCall(ns_->name(), "POST", "/init", init).code, 204);
  EXPECT_EQ(AgentCall(ns_->name(), "POST", "/snapshot/prepare").code, 204);
  AgentAnswer got = AgentCall(ns_->name(), "GET", "/debug/init");
  EXPECT_EQ(got.code, 200);
  EXPECT_EQ(BodyJson(got), Json::parse(init));

  const std::string snap = dir_ / "snap";
  ASSERT_TRUE(MakeDirs(snap, 0700).ok());
  ASSERT_EQ(sim->Call("PUT", "vm.pause").code, 204);
  ASSERT_EQ(sim->Call("PUT", "vm.snapshot", Json({{"destination_url", FileUrl(snap)}}).dump()).code,
            204);
  sim.reset();

  NetNs other;
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other.Run({"tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"}));
  TempDir dir2;
  auto restored = std::make_unique<Sim>(dir2.path(), SimSpec{.netns = other.name()});
  ASSERT_TRUE(restored->WaitReady());
  ASSERT_EQ(restored->Call("PUT", "vm.restore", Json({{"source_url", FileUrl(snap)}}).dump()).code,
            204);
  EXPECT_NE(AgentCall(other.name(), "GET", "/health").error, "");  // restored Paused
  ASSERT_EQ(restored->Call("PUT", "vm.resume").code, 204);
  got = AgentCall(other.name(), "GET", "/debug/init");
  EXPECT_EQ(got.code, 200);
  EXPECT_EQ(BodyJson(got), Json::parse(init));  // until re-initialised
  EXPECT_EQ(BodyJson(AgentCall(other.name(), "GET", "/debug/prepare"))["count"], 1);

  // A reboot is a fresh guest: the agent forgets.
  ASSERT_EQ(restored->Call("PUT", "vm.reboot").code, 204);
  EXPECT_EQ(AgentCall(other.name(), "GET", "/debug/init").code, 404);
}

TEST_F(ChsimGuestAgent, FaultRulesShapeTheAgentsAnswers) {
  auto sim = Boot();
  const std::string faults = sim->sock() + ".faults";
  ASSERT_TRUE(WriteFileAtomic(faults, "agent-never-ready\n").ok());
  AgentAnswer a = AgentCall(ns_->name(), "GET", "/health");
  EXPECT_THAT(a.error, HasSubstr("reset")) << a.code;

  ASSERT_TRUE(WriteFileAtomic(faults, "agent-fail 503\n").ok());
  a = AgentCall(ns_->name(), "GET", "/health");
  EXPECT_EQ(a.code, 503);
  EXPECT_THAT(a.body, HasSubstr("agent-fail"));
  EXPECT_EQ(AgentCall(ns_->name(), "GET", "/debug/prepare").code, 200);  // debug is exempt

  ASSERT_TRUE(WriteFileAtomic(faults, "agent-slow 50\n").ok());
  EXPECT_EQ(AgentCall(ns_->name(), "GET", "/health").code, 200);
  EXPECT_EQ(sim->Call("GET", "vmm.ping").code, 200);  // the VMM's API is not the guest's

  ASSERT_TRUE(WriteFileAtomic(faults, "agent-fail 99\n").ok());
  EXPECT_EQ(sim->Call("GET", "vmm.ping").code, 200);  // a bad rule is logged, not applied
  EXPECT_EQ(AgentCall(ns_->name(), "GET", "/health").code, 200);
}

TEST_F(ChsimGuestAgent, NoAgentWithoutANicOrAStaticAddress) {
  for (const auto& [cmdline, net] : std::vector<std::pair<std::string, bool>>{
           {kCmdline, false}, {"console=ttyS0 ip=dhcp", true}, {"console=ttyS0", true}}) {
    auto sim = StartIn(*ns_);
    ASSERT_EQ(sim->Call("PUT", "vm.create", Config(cmdline, net).dump()).code, 204);
    ASSERT_EQ(sim->Call("PUT", "vm.boot").code, 204);
    EXPECT_FALSE(GuestAddressOnLo(*ns_)) << cmdline;
    ASSERT_EQ(sim->Call("PUT", "vm.shutdown").code, 204);
  }
}

TEST_F(ChsimGuestAgent, EnvironmentChoosesAddressAndPortOrTurnsItOff) {
  {
    auto sim = Boot({"CHSIM_GUEST_AGENT=169.254.7.7:8080"});
    EXPECT_EQ(AgentCall(ns_->name(), "GET", "/health", "", "169.254.7.7", 8080).code, 200);
    EXPECT_FALSE(GuestAddressOnLo(*ns_));
  }
  {
    auto sim = Boot({"CHSIM_GUEST_AGENT=off"});
    EXPECT_FALSE(GuestAddressOnLo(*ns_));
  }
  RunResult r = RunSim(dir_.path(), SimSpec{.env = {"CHSIM_GUEST_AGENT=nope:x"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("CHSIM_GUEST_AGENT"));
}

TEST_F(ChsimGuestAgent, AgentRulesNeedTheirValue) {
  RunResult r = RunSim(dir_.path(), SimSpec{.env = {"CHSIM_FAULTS=agent-slow"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("agent-slow takes 1 argument(s)"));
  r = RunSim(dir_.path(), SimSpec{.env = {"CHSIM_FAULTS=agent-fail 42"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, HasSubstr("is not an HTTP status code"));
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
