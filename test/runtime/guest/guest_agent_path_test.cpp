// The guest agent end to end: NodeRuntime with real networking (netns, veth, nftables DNAT) and
// the CH simulator's agent. Every request goes host → slot address → DNAT in the sandbox's netns
// → the guest address, where the simulated guest answers only while its VM runs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/base/command.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/guest/agent_client.h"
#include "runtime/node/node_runtime.h"

namespace sandboxlet::runtime {
namespace {

using std::chrono::milliseconds;

const char* const kUids[] = {"g-a", "g-b", "g-c", "g-r"};
// ctest runs this binary's tests side by side: each test gets its own network names and range
// ("gst<i>", 10.232.<i>.0/24) from its place in this list.
const char* const kTests[] = {
    "ReadyOnlyOnceTheAgentAnswersThroughTheSlotAddress",
    "PausedGuestDoesNotAnswerAndAnswersAgainAfterResume",
    "RestoredSandboxIsReinitialisedWithItsOwnIdentity",
    "SilentAgentEndsInAClearDeadlineWhileOthersAnswer",
    "DisabledAgentIsAClearPrecondition",
};

// GET `path` from the agent at `ip` (the simulator's debug endpoints; the client has no such
// call). Returns the code and body, or code 0 if nothing answered.
std::pair<int, std::string> DebugGet(const std::string& ip, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(guest::kDefaultAgentPort);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return {0, ""};
  std::string req = Cat("GET ", path, " HTTP/1.1\r\nHost: ", ip, "\r\n\r\n");
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) < 0) return {0, ""};
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof(buf), 0)) > 0;) {
    resp.append(buf, static_cast<size_t>(n));
  }
  size_t head = resp.find("\r\n\r\n");
  if (resp.size() < 12 || head == std::string::npos) return {0, resp};
  return {std::stoi(resp.substr(9, 3)), resp.substr(head + 4)};
}

class GuestAgentPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network and mount namespaces";
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    int index = -1;
    for (size_t i = 0; i < std::size(kTests); ++i) {
      if (test == kTests[i]) index = static_cast<int>(i);
    }
    ASSERT_GE(index, 0) << "add " << test << " to kTests";
    prefix_ = Cat("gst", index);
    cidr_ = Cat("10.232.", index, ".0/24");
    char tmpl[] = "/tmp/sbl-guest-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    opts_.state_dir = dir_ + "/state";
    opts_.run_dir = dir_ + "/run";
    opts_.vmm_bin = CHSIM_BIN;
    opts_.kernel = dir_ + "/vmlinux";
    opts_.templates_dir = dir_ + "/templates";
    opts_.volume_backend = "file";
    opts_.network.name_prefix = prefix_;  // our own names and addresses: parallel-safe
    opts_.network.cidr = cidr_;
    opts_.stop_grace = milliseconds(1000);
    opts_.guest_agent.enabled = true;
    opts_.guest_agent.ready_timeout = milliseconds(10000);
    opts_.guest_agent.poll_interval = milliseconds(20);
    opts_.guest_agent.request_timeout = milliseconds(500);
    opts_.guest_agent.prepare_timeout = milliseconds(300);
    ASSERT_TRUE(MakeDirs(opts_.templates_dir + "/base").ok());
    ASSERT_TRUE(WriteFileAtomic(opts_.kernel, "kernel stand-in").ok());
    std::string image = opts_.templates_dir + "/base/rootfs.ext4";
    ASSERT_TRUE(WriteFileAtomic(image, "base image").ok());
    ASSERT_EQ(::truncate(image.c_str(), 32 << 20), 0);
    auto rt = NodeRuntime::Open(opts_);
    ASSERT_TRUE(rt.ok()) << rt.status();
    rt_ = std::move(*rt);
  }

  void TearDown() override {
    if (rt_) {
      for (const char* uid : kUids) EXPECT_TRUE(rt_->Destroy(uid).ok()) << uid;
      for (const char* uid : kUids) {
        EXPECT_FALSE(PathExists(Cat("/run/netns/", prefix_, "-", uid))) << uid;
      }
      network::NetworkConfig cfg;
      cfg.state_dir = opts_.state_dir;
      cfg.cidr = cidr_;
      cfg.name_prefix = prefix_;
      cfg.install_host_rules = false;
      if (auto net = network::SandboxNetwork::Open(cfg); net.ok()) {
        EXPECT_TRUE((*net)->RemoveHostRules().ok());
      }
    }
    rt_.reset();
    if (!dir_.empty()) {
      EXPECT_TRUE(RemoveAll(dir_).ok());
    }
  }

  SandboxRuntimeSpec Spec(const std::string& uid) {
    SandboxRuntimeSpec s;
    s.uid = uid;
    s.key = "default/" + uid;
    s.template_name = "base";
    s.memory_mib = 64;
    s.env = {{"LANG", "C.UTF-8"}};
    return s;
  }
  guest::InitRequest InitFor(const SandboxRuntimeSpec& s) {
    guest::InitRequest r;
    r.sandbox_id = s.uid;
    r.sandbox_namespace = "default";
    r.name = s.uid;
    r.template_name = s.template_name;
    r.env = s.env;
    r.wall_clock = std::chrono::system_clock::now();
    return r;
  }
  std::string FaultsFile(const std::string& uid) {
    return rt_->Observe(uid).api_socket + ".faults";
  }
  guest::AgentClient ClientAt(const std::string& uid, milliseconds timeout) {
    guest::AgentClientOptions o;
    o.address = rt_->Observe(uid).ip;
    o.sandbox = "default/" + uid;
    o.timeout = timeout;
    return guest::AgentClient(o);
  }
  nlohmann::json DebugInit(const std::string& uid) {
    auto [code, body] = DebugGet(rt_->Observe(uid).ip, "/debug/init");
    EXPECT_EQ(code, 200) << body;
    return nlohmann::json::parse(body, nullptr, false);
  }

  std::string prefix_, cidr_;
  std::string dir_;
  NodeRuntimeOptions opts_;
  std::unique_ptr<NodeRuntime> rt_;
};

TEST_F(GuestAgentPathTest, ReadyOnlyOnceTheAgentAnswersThroughTheSlotAddress) {
  ASSERT_TRUE(rt_->Start(Spec("g-a")).ok());
  // The agent is not up yet: Start did not wait for it, and health fails until it is.
  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-a"), "agent-never-ready\n").ok());
  auto h = rt_->GuestHealth("g-a");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  const std::string ip = rt_->Observe("g-a").ip;
  EXPECT_NE(std::string(h.status().message())
                .find(Cat("guest agent of default/g-a at ", ip, ":49983: GET /health: ")),
            std::string::npos)
      << h.status();

  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-a"), "").ok());
  h = rt_->GuestWaitReady("g-a");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "chsim-agent/1");
  // It answered at the host-routable slot address; the guest address lives only in the netns.
  EXPECT_TRUE(StartsWith(ip, cidr_.substr(0, cidr_.size() - 4))) << ip << " in " << cidr_;
  auto lo = RunCommand({"ip", "-n", Cat(prefix_, "-g-a"), "-4", "addr", "show", "dev", "lo"});
  ASSERT_TRUE(lo.ok() && lo->ok());
  EXPECT_NE(lo->out.find("169.254.0.21/32"), std::string::npos) << lo->out;
  auto host_lo = RunCommand({"ip", "-4", "addr", "show", "dev", "lo"});
  ASSERT_TRUE(host_lo.ok() && host_lo->ok());
  EXPECT_EQ(host_lo->out.find("169.254.0.21"), std::string::npos);

  ASSERT_TRUE(rt_->GuestInit("g-a", InitFor(Spec("g-a"))).ok());
  nlohmann::json init = DebugInit("g-a");
  EXPECT_EQ(init["sandboxId"], "g-a");
  EXPECT_EQ(init["envVars"]["LANG"], "C.UTF-8");
}

TEST_F(GuestAgentPathTest, PausedGuestDoesNotAnswerAndAnswersAgainAfterResume) {
  ASSERT_TRUE(rt_->Start(Spec("g-a")).ok());
  ASSERT_TRUE(rt_->GuestWaitReady("g-a").ok());
  ASSERT_TRUE(rt_->Pause("g-a").ok());
  // The runtime does not even ask a paused guest ...
  auto h = rt_->GuestHealth("g-a");
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition) << h.status();
  EXPECT_NE(std::string(h.status().message()).find("Paused"), std::string::npos) << h.status();
  // ... and asking anyway, over the network, gets no answer.
  h = ClientAt("g-a", milliseconds(300)).Health();
  EXPECT_FALSE(h.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(h.status()) || absl::IsUnavailable(h.status()))
      << h.status();

  ASSERT_TRUE(rt_->Resume("g-a").ok());
  h = rt_->GuestWaitReady("g-a");
  ASSERT_TRUE(h.ok()) << h.status();
}

TEST_F(GuestAgentPathTest, RestoredSandboxIsReinitialisedWithItsOwnIdentity) {
  ASSERT_TRUE(rt_->Start(Spec("g-a")).ok());
  ASSERT_TRUE(rt_->GuestWaitReady("g-a").ok());
  ASSERT_TRUE(rt_->GuestInit("g-a", InitFor(Spec("g-a"))).ok());
  auto snap = rt_->Snapshot("g-a", "gs1");
  ASSERT_TRUE(snap.ok()) << snap.status();
  // The runtime asked the guest to quiesce before pausing it.
  auto [code, body] = DebugGet(rt_->Observe("g-a").ip, "/debug/prepare");
  EXPECT_EQ(code, 200);
  EXPECT_EQ(nlohmann::json::parse(body, nullptr, false)["count"], 1) << body;

  SandboxRuntimeSpec r = Spec("g-r");
  r.env = {{"LANG", "C.UTF-8"}, {"ROLE", "restored"}};
  ASSERT_TRUE(rt_->RestoreFrom(r, "gs1").ok());
  ASSERT_TRUE(rt_->GuestWaitReady("g-r").ok());
  EXPECT_NE(rt_->Observe("g-r").ip, rt_->Observe("g-a").ip);
  // The restored guest still believes it is g-a (its memory says so) until re-initialised.
  EXPECT_EQ(DebugInit("g-r")["sandboxId"], "g-a");
  ASSERT_TRUE(rt_->GuestInit("g-r", InitFor(r)).ok());
  nlohmann::json init = DebugInit("g-r");
  EXPECT_EQ(init["sandboxId"], "g-r");
  EXPECT_EQ(init["name"], "g-r");
  EXPECT_EQ(init["envVars"]["ROLE"], "restored");
  EXPECT_EQ(DebugInit("g-a")["sandboxId"], "g-a");  // the source is untouched
  ASSERT_TRUE(rt_->DeleteSnapshot("gs1").ok());
}

TEST_F(GuestAgentPathTest, SilentAgentEndsInAClearDeadlineWhileOthersAnswer) {
  ASSERT_TRUE(rt_->Start(Spec("g-b")).ok());
  ASSERT_TRUE(rt_->Start(Spec("g-c")).ok());
  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-b"), "agent-never-ready\n").ok());
  const std::string ip_b = rt_->Observe("g-b").ip;

  absl::StatusOr<guest::AgentHealth> silent;
  std::thread waiter([&] {
    silent = ClientAt("g-b", milliseconds(200))
                 .WaitReady(milliseconds(1500), milliseconds(50), milliseconds(200));
  });
  auto other = rt_->GuestWaitReady("g-c");
  waiter.join();
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_FALSE(silent.ok());
  EXPECT_EQ(silent.status().code(), absl::StatusCode::kDeadlineExceeded) << silent.status();
  EXPECT_TRUE(StartsWith(
      std::string(silent.status().message()),
      Cat("guest agent of default/g-b at ", ip_b, ":49983 did not answer within 1.5s: ")))
      << silent.status();

  // A guest that fails its health check is not ready either, with the agent's answer shown.
  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-b"), "agent-fail 500\n").ok());
  auto h = rt_->GuestHealth("g-b");
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  EXPECT_NE(std::string(h.status().message()).find("HTTP 500"), std::string::npos) << h.status();
  // A guest slower than the per-request timeout is not ready.
  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-b"), "agent-slow 600\n").ok());
  h = rt_->GuestHealth("g-b");
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDeadlineExceeded) << h.status();
  // A snapshot does not wait on a guest that does not prepare: it is asked, briefly.
  ASSERT_TRUE(WriteFileAtomic(FaultsFile("g-b"), "agent-slow 60000\n").ok());
  auto snap = rt_->Snapshot("g-b", "gs2");
  EXPECT_TRUE(snap.ok()) << snap.status();
  ASSERT_TRUE(rt_->DeleteSnapshot("gs2").ok());
}

TEST_F(GuestAgentPathTest, DisabledAgentIsAClearPrecondition) {
  rt_.reset();
  opts_.guest_agent.enabled = false;
  auto rt = NodeRuntime::Open(opts_);
  ASSERT_TRUE(rt.ok()) << rt.status();
  rt_ = std::move(*rt);
  ASSERT_TRUE(rt_->Start(Spec("g-a")).ok());
  auto h = rt_->GuestHealth("g-a");
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition) << h.status();
  EXPECT_NE(std::string(h.status().message()).find("disabled"), std::string::npos) << h.status();
  EXPECT_EQ(rt_->GuestHealth("nope").status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace sandboxlet::runtime
