#include "runtime/network/sandbox_network.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/base/command.h"
#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/network/netns.h"
#include "runtime/network/rtnetlink.h"
#include "test/runtime/network/network_test_env.h"

namespace sandboxlet::network {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Listens on ip:port (0 = any port) in the calling thread's namespace.
UniqueFd Listen(const std::string& ip, uint16_t port, uint16_t* bound_port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      ::listen(fd.get(), 16) != 0) {
    return UniqueFd();
  }
  socklen_t len = sizeof(sa);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  if (bound_port != nullptr) *bound_port = ntohs(sa.sin_port);
  return fd;
}

// Connects (5 s deadline) from the calling thread's namespace; OK or errno text.
absl::StatusOr<UniqueFd> Connect(const std::string& ip, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    return absl::UnavailableError(Cat("connect ", ip, ":", port, ": ", std::strerror(errno)));
  }
  return fd;
}

// Accepts one connection within 5 s; returns the local and peer addresses as "ip:port" / "ip".
bool AcceptOne(int listen_fd, std::string* local, std::string* peer) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return false;
  UniqueFd conn(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) return false;
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  ::getsockname(conn.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  *local = FormatIpv4(ntohl(sa.sin_addr.s_addr));
  len = sizeof(sa);
  ::getpeername(conn.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  *peer = FormatIpv4(ntohl(sa.sin_addr.s_addr));
  return true;
}

class SandboxNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = testing::NetnsUnavailableReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    prefix_ = testing::ProcessPrefix();
    // A host service sandboxes may reach: listening on every host address.
    allowed_listener_ = Listen("0.0.0.0", 0, &allowed_port_);
    ASSERT_TRUE(allowed_listener_.valid());
    OpenNetwork();
  }
  void TearDown() override {
    if (net_ != nullptr) {
      for (const Slot& s : net_->slots().List()) (void)net_->Remove(s.id);
      (void)net_->RemoveHostRules();
    }
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

  void OpenNetwork() {
    NetworkConfig config;
    config.state_dir = dir_;
    config.cidr = testing::ProcessCidr();
    config.name_prefix = prefix_;
    config.host_tcp_ports = {allowed_port_};
    config.fault_injector = [this](SetupStep step) {
      return fail_at_ && *fail_at_ == step
                 ? absl::InternalError(Cat("injected failure at ", SetupStepName(step)))
                 : absl::OkStatus();
    };
    auto net = SandboxNetwork::Open(config);
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = std::move(*net);
  }

  // Checks with `ip` and the file system (not our own listing code) that nothing of ours is left.
  void ExpectNothingLeft() {
    auto names = ListNamedNetns(kDefaultNetnsDir);
    ASSERT_TRUE(names.ok());
    for (const std::string& n : *names) EXPECT_FALSE(StartsWith(n, prefix_ + "-")) << n;
    auto links = RunChecked({"ip", "-o", "link", "show"});
    ASSERT_TRUE(links.ok()) << links.status();
    EXPECT_THAT(links->out, Not(HasSubstr(": " + prefix_ + "v")));
    auto reopened = SlotAllocator::Open(testing::ProcessCidr(), dir_ + "/network/slots.json");
    ASSERT_TRUE(reopened.ok());
    EXPECT_TRUE((*reopened)->List().empty());
  }

  // Adds the guest address to lo inside the sandbox's netns and listens there: with no VMM on
  // tap0, this stands in for the guest so the DNAT path slot_ip → guest_ip is exercised.
  UniqueFd ListenAsGuest(const NetworkInfo& info, uint16_t* port) {
    auto ns = OpenNamedNetns(kDefaultNetnsDir, info.netns_name);
    EXPECT_TRUE(ns.ok()) << ns.status();
    if (!ns.ok()) return UniqueFd();
    UniqueFd listener;
    absl::Status st = RunInNetns(ns->get(), [&]() -> absl::Status {
      SBL_ASSIGN_OR_RETURN(RtNetlink nl, RtNetlink::Open());
      SBL_ASSIGN_OR_RETURN(int lo, nl.LinkIndex("lo"));
      SBL_ASSIGN_OR_RETURN(uint32_t guest, ParseIpv4(info.guest_ip));
      SBL_RETURN_IF_ERROR(nl.AddAddress(lo, guest, 32));
      listener = Listen(info.guest_ip, 0, port);
      return listener.valid() ? absl::OkStatus() : absl::InternalError("listen as guest");
    });
    EXPECT_TRUE(st.ok()) << st;
    return listener;
  }

  absl::StatusOr<UniqueFd> ConnectFromNetns(const NetworkInfo& from, const std::string& ip,
                                            uint16_t port) {
    SBL_ASSIGN_OR_RETURN(UniqueFd ns, OpenNamedNetns(kDefaultNetnsDir, from.netns_name));
    absl::StatusOr<UniqueFd> conn = absl::UnknownError("not run");
    SBL_RETURN_IF_ERROR(RunInNetns(ns.get(), [&] {
      conn = Connect(ip, port);
      return absl::OkStatus();
    }));
    return conn;
  }

  std::string dir_;
  std::string prefix_;
  UniqueFd allowed_listener_;
  uint16_t allowed_port_ = 0;
  std::optional<SetupStep> fail_at_;
  std::unique_ptr<SandboxNetwork> net_;
};

TEST_F(SandboxNetworkTest, CreateBuildsNetnsVethAndTapWithPortableGuestSide) {
  auto a = net_->Create({.id = "sandbox-a"});
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = net_->Create({.id = "sandbox-b"});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->netns_name, prefix_ + "-sandbox-a");
  EXPECT_EQ(a->host_veth, prefix_ + "v0");
  EXPECT_EQ(b->host_veth, prefix_ + "v1");
  EXPECT_NE(a->slot_ip, b->slot_ip);
  // The guest side is identical in every netns, so a snapshot restores anywhere.
  EXPECT_EQ(a->tap, b->tap);
  EXPECT_EQ(a->guest_ip, b->guest_ip);
  EXPECT_EQ(a->gateway_ip, b->gateway_ip);
  EXPECT_EQ(a->guest_mac, b->guest_mac);

  auto host = RunChecked({"ip", "-o", "-4", "addr", "show", "dev", b->host_veth});
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_THAT(host->out, HasSubstr(b->host_ip + "/31"));
  auto inside = RunChecked({"ip", "-n", b->netns_name, "-o", "-4", "addr", "show"});
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_THAT(inside->out, HasSubstr("tap0    inet 169.254.0.22/30"));
  EXPECT_THAT(inside->out, HasSubstr("veth0    inet " + b->slot_ip + "/31"));
  auto tap = RunChecked({"ip", "-n", b->netns_name, "-d", "link", "show", "tap0"});
  ASSERT_TRUE(tap.ok());
  EXPECT_THAT(tap->out, HasSubstr("tap"));
  auto route = RunChecked({"ip", "-n", b->netns_name, "route", "show", "default"});
  ASSERT_TRUE(route.ok());
  EXPECT_THAT(route->out, HasSubstr("via " + b->host_ip + " dev veth0"));

  auto looked_up = net_->Lookup("sandbox-b");
  ASSERT_TRUE(looked_up.ok()) << looked_up.status();
  EXPECT_EQ(looked_up->slot_ip, b->slot_ip);
}

TEST_F(SandboxNetworkTest, CreatingAnExistingNetworkIsAClearErrorThatKeepsIt) {
  auto a = net_->Create({.id = "dup"});
  ASSERT_TRUE(a.ok()) << a.status();
  auto again = net_->Create({.id = "dup"});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("sandbox dup"));
  EXPECT_THAT(again.status().message(), HasSubstr("create-netns"));
  // The first network is untouched.
  EXPECT_TRUE(net_->Lookup("dup").ok());
  EXPECT_TRUE(RunChecked({"ip", "link", "show", a->host_veth}).ok());
}

TEST_F(SandboxNetworkTest, LeftoverVethIsNamedInTheError) {
  // Someone else's (or a crashed run's) interface with the name slot 0 will use.
  auto added = RunChecked(
      {"ip", "link", "add", prefix_ + "v0", "type", "veth", "peer", "name", prefix_ + "p0"});
  ASSERT_TRUE(added.ok()) << added.status();
  auto a = net_->Create({.id = "victim"});
  EXPECT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(a.status().message(), HasSubstr("sandbox victim"));
  EXPECT_THAT(a.status().message(), HasSubstr("create-veth"));
  EXPECT_THAT(a.status().message(), HasSubstr(prefix_ + "v0"));
  ASSERT_TRUE(RunChecked({"ip", "link", "del", prefix_ + "v0"}).ok());
  ExpectNothingLeft();
}

TEST_F(SandboxNetworkTest, FailureAtEveryStepUnwindsEverything) {
  for (int i = 0; i < kSetupStepCount; ++i) {
    SetupStep step = static_cast<SetupStep>(i);
    SCOPED_TRACE(SetupStepName(step));
    fail_at_ = step;
    auto info = net_->Create({.id = "unwind"});
    ASSERT_FALSE(info.ok());
    EXPECT_THAT(info.status().message(), HasSubstr("sandbox unwind"));
    EXPECT_THAT(info.status().message(), HasSubstr(std::string(SetupStepName(step))));
    ExpectNothingLeft();
  }
  fail_at_.reset();
  EXPECT_TRUE(net_->Create({.id = "unwind"}).ok());  // and nothing blocks a clean retry
}

TEST_F(SandboxNetworkTest, ProcessInNetnsReachesAllowedHostPortOnly) {
  auto a = net_->Create({.id = "client"});
  ASSERT_TRUE(a.ok()) << a.status();
  auto conn = ConnectFromNetns(*a, a->host_ip, allowed_port_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  std::string local, peer;
  ASSERT_TRUE(AcceptOne(allowed_listener_.get(), &local, &peer));
  EXPECT_EQ(local, a->host_ip);
  EXPECT_EQ(peer, a->slot_ip);

  // Any other host service is closed to sandboxes.
  uint16_t other_port = 0;
  UniqueFd other = Listen("0.0.0.0", 0, &other_port);
  ASSERT_TRUE(other.valid());
  EXPECT_FALSE(ConnectFromNetns(*a, a->host_ip, other_port).ok());
}

TEST_F(SandboxNetworkTest, HostReachesGuestThroughSlotAddress) {
  auto a = net_->Create({.id = "server"});
  ASSERT_TRUE(a.ok()) << a.status();
  uint16_t port = 0;
  UniqueFd listener = ListenAsGuest(*a, &port);
  ASSERT_TRUE(listener.valid());
  auto conn = Connect(a->slot_ip, port);
  ASSERT_TRUE(conn.ok()) << conn.status();
  std::string local, peer;
  ASSERT_TRUE(AcceptOne(listener.get(), &local, &peer));
  EXPECT_EQ(local, a->guest_ip);  // DNAT slot_ip → guest_ip
  EXPECT_EQ(peer, a->host_ip);
}

TEST_F(SandboxNetworkTest, SandboxCannotReachAnotherSandbox) {
  auto a = net_->Create({.id = "iso-a"});
  auto b = net_->Create({.id = "iso-b"});
  ASSERT_TRUE(a.ok() && b.ok());
  uint16_t port = 0;
  UniqueFd listener = ListenAsGuest(*b, &port);
  ASSERT_TRUE(listener.valid());
  // Positive control: B's guest service is up and reachable from the host.
  ASSERT_TRUE(Connect(b->slot_ip, port).ok());
  std::string local, peer;
  ASSERT_TRUE(AcceptOne(listener.get(), &local, &peer));
  // From A's namespace neither B's slot address nor B's host-side veth address answers.
  auto to_b = ConnectFromNetns(*a, b->slot_ip, port);
  EXPECT_FALSE(to_b.ok());
  EXPECT_FALSE(ConnectFromNetns(*a, b->host_ip, port).ok());
}

TEST_F(SandboxNetworkTest, EgressOffRestrictsGuestToHostEnd) {
  auto open = net_->Create({.id = "open"});
  auto closed = net_->Create({.id = "closed", .egress = false});
  ASSERT_TRUE(open.ok() && closed.ok());
  auto closed_rules = RunChecked(
      {"ip", "netns", "exec", closed->netns_name, "nft", "list", "table", "ip", "sandboxlet"});
  ASSERT_TRUE(closed_rules.ok()) << closed_rules.status();
  EXPECT_THAT(closed_rules->out, HasSubstr("ip daddr != " + closed->host_ip + " reject"));
  auto open_rules = RunChecked(
      {"ip", "netns", "exec", open->netns_name, "nft", "list", "table", "ip", "sandboxlet"});
  ASSERT_TRUE(open_rules.ok());
  EXPECT_THAT(open_rules->out, Not(HasSubstr("reject")));
  EXPECT_THAT(open_rules->out, HasSubstr("dnat to 169.254.0.21"));
  EXPECT_THAT(open_rules->out, HasSubstr("snat to " + open->slot_ip));
}

TEST_F(SandboxNetworkTest, RemoveIsCompleteAndIdempotent) {
  ASSERT_TRUE(net_->Create({.id = "gone"}).ok());
  ASSERT_TRUE(net_->Remove("gone").ok());
  ASSERT_TRUE(net_->Remove("gone").ok());
  EXPECT_EQ(net_->Lookup("gone").status().code(), absl::StatusCode::kNotFound);
  ExpectNothingLeft();
}

TEST_F(SandboxNetworkTest, BadIdsAreRejected) {
  for (const char* id : {"", "../x", "UPPER", "a/b", "x y"}) {
    auto info = net_->Create({.id = id});
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << id;
  }
  ExpectNothingLeft();
}

TEST_F(SandboxNetworkTest, ManyCreateDestroyCyclesLeaveNothing) {
  constexpr int kCycles = 200;
  for (int i = 0; i < kCycles; ++i) {
    auto info = net_->Create({.id = Cat("cycle-", i % 3), .egress = i % 2 == 0});
    ASSERT_TRUE(info.ok()) << i << ": " << info.status();
    ASSERT_TRUE(net_->Remove(info->id).ok()) << i;
  }
  ExpectNothingLeft();
}

// Largest slot: a prefix of 8 and a /13 (262144 slots) gives "<8 chars>v262143", 15 chars.
TEST(SandboxNetworkNames, LargestSlotVethNameFitsIfnamsiz) {
  std::string reason = testing::NetnsUnavailableReason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  std::string dir = testing::MakeTempDir();
  std::string prefix = testing::ProcessPrefix('w');
  prefix.resize(8, 'z');
  const std::string cidr = "100.120.0.0/13";
  // Occupy every slot but the last, as if 262143 sandboxes were running.
  nlohmann::json slots = nlohmann::json::object();
  for (uint32_t i = 0; i + 1 < 262144; ++i) slots[Cat("f", i)] = i;
  ASSERT_TRUE(MakeDirs(dir + "/network").ok());
  ASSERT_TRUE(
      WriteFileAtomic(dir + "/network/slots.json",
                      nlohmann::json{{"version", 1}, {"cidr", cidr}, {"slots", slots}}.dump())
          .ok());
  NetworkConfig config{.state_dir = dir, .cidr = cidr, .name_prefix = prefix};
  config.install_host_rules = false;
  auto net = SandboxNetwork::Open(config);
  ASSERT_TRUE(net.ok()) << net.status();
  auto info = (*net)->Create({.id = "last"});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_veth, prefix + "v262143");
  EXPECT_EQ(info->host_veth.size(), 15u);
  EXPECT_EQ(info->slot_ip, "100.127.255.255");
  EXPECT_TRUE(RunChecked({"ip", "link", "show", info->host_veth}).ok());
  EXPECT_TRUE((*net)->Remove("last").ok());
  (void)RemoveAll(dir);

  // One more digit (a /11: "v1048575") would overflow IFNAMSIZ: refused up front.
  std::string dir2 = testing::MakeTempDir();
  NetworkConfig too_big{.state_dir = dir2, .cidr = "100.96.0.0/11", .name_prefix = prefix};
  too_big.install_host_rules = false;
  auto refused = SandboxNetwork::Open(too_big);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr(prefix + "v1048575"));
  (void)RemoveAll(dir2);
}

}  // namespace
}  // namespace sandboxlet::network
