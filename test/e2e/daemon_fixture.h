// Shared fixture of the end-to-end tests: runs the built `sandboxlet` daemon with the CH simulator
// as its VMM on a temporary state directory, its own network prefix/CIDR and cgroup parent, and
// drives it through `sandboxlet ctl` and the gRPC API. TearDown kills whatever the test started
// (daemon, VMMs) and removes its netns, veths, nft table and cgroups.
// Not thread-safe: one fixture per test, used from the test's thread.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "sandboxlet/v1alpha1/sandbox.grpc.pb.h"

#include <nlohmann/json.hpp>

extern char** environ;

namespace sandboxlet {
namespace e2e {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

inline constexpr auto kConvergeDeadline = std::chrono::seconds(90);
inline constexpr auto kPoll = std::chrono::milliseconds(100);

inline std::string RandomSuffix(int n) {
  static std::mt19937 rng(std::random_device{}());
  const char* chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (int i = 0; i < n; ++i) s += chars[rng() % 36];
  return s;
}

// Reads /proc/<pid>/cmdline as its arguments.
inline std::vector<std::string> Cmdline(int pid) {
  absl::StatusOr<std::string> raw = ReadFile(Cat("/proc/", pid, "/cmdline"));
  std::vector<std::string> args;
  if (!raw.ok()) return args;
  std::string cur;
  for (char c : *raw) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return args;
}

inline bool Alive(int pid) {
  absl::StatusOr<std::string> stat = ReadFile(Cat("/proc/", pid, "/stat"));
  if (!stat.ok()) return false;
  size_t close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] != 'Z';
}

// Live ch-sim processes whose API socket lies under `dir`: api-socket path → pids.
inline std::map<std::string, std::vector<int>> VmmProcesses(const std::string& dir) {
  std::map<std::string, std::vector<int>> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0 || !Alive(pid)) continue;
    std::vector<std::string> args = Cmdline(pid);
    if (args.empty() || args[0].find("ch-sim") == std::string::npos) continue;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      std::string value;
      if (args[i] == "--api-socket") value = args[i + 1];
      if (StartsWith(args[i], "--api-socket=")) value = args[i].substr(13);
      if (value.empty()) continue;
      if (StartsWith(value, "path=")) value = value.substr(5);
      if (value.find(dir) != std::string::npos) out[value].push_back(pid);
    }
  }
  ::closedir(d);
  return out;
}

inline std::string SandboxDoc(const std::string& name) {
  return Cat("apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: ", name,
             "\nspec:\n  template: base\n  vcpus: 1\n  memoryMiB: 64\n");
}

class DaemonE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, nftables)";
    char tmpl[] = "/tmp/sbl-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    state_ = dir_ + "/state";
    run_ = dir_ + "/run";
    socket_ = run_ + "/sandboxlet.sock";
    prefix_ = "e" + RandomSuffix(5);
    // A /24 (128 sandboxes) chosen by pid: test processes running side by side never share
    // addresses, which a random pick could not promise.
    unsigned k = static_cast<unsigned>(::getpid()) % (128 * 256);
    cidr_ = Cat("10.", 64 + k / 256, ".", k % 256, ".0/24");
    // A template (any file serves the simulator as a raw disk) and a kernel stand-in.
    ASSERT_TRUE(MakeDirs(state_ + "/templates/base").ok());
    ASSERT_TRUE(MakeDirs(state_ + "/kernel").ok());
    {
      std::ofstream disk(state_ + "/templates/base/rootfs.ext4");
      disk << std::string(1 << 20, '\0');
    }
    std::ofstream(state_ + "/kernel/vmlinux") << "not a kernel: the CH simulator boots none\n";
  }

  void TearDown() override {
    if (dir_.empty()) return;
    if (daemon_pid_ > 0) {
      ::kill(daemon_pid_, SIGKILL);
      ::waitpid(daemon_pid_, nullptr, 0);
    }
    for (const auto& [socket, pids] : VmmProcesses(dir_)) {
      for (int pid : pids) ::kill(pid, SIGKILL);
    }
    // Network and cgroup leftovers of this test's prefix (only when a test failed midway).
    const std::string p = prefix_;
    std::string script =
        Cat("for n in $(ip netns list | awk '{print $1}' | grep '^", p,
            "-'); do ip netns delete $n; done;",
            "for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^", p,
            "v');", " do ip link delete $l; done;", "nft delete table ip ", p, " 2>/dev/null;",
            "for d in /sys/fs/cgroup/sandboxlet-", p, " /sys/fs/cgroup/*/sandboxlet-", p, ";",
            " do [ -d $d ] && rmdir $d/* $d 2>/dev/null; done; true");
    (void)RunCommand({"sh", "-c", script});
    if (HasFailure()) {
      absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log");
      if (log.ok()) {
        std::string tail = log->size() > 6000 ? log->substr(log->size() - 6000) : *log;
        std::cerr << "--- daemon log (tail) ---\n" << tail << "\n";
      }
    }
    (void)RemoveAll(dir_);
  }

  std::vector<std::string> DaemonArgs(const std::string& vmm_bin = "") {
    std::vector<std::string> args = {SANDBOXLET_BIN,
                                     "run",
                                     "--state-dir=" + state_,
                                     "--run-dir=" + run_,
                                     "--vmm-bin=" + (vmm_bin.empty() ? vmm_bin_ : vmm_bin),
                                     "--api-listen=",
                                     "--metrics-listen=127.0.0.1:0",
                                     "--network-prefix=" + prefix_,
                                     "--vmm-cgroup-parent=sandboxlet-" + prefix_,
                                     "--network-cidr=" + cidr_,
                                     "--workers=4"};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    return args;
  }

  // Starts the daemon with its output appended to daemon.log and waits for its socket.
  void StartDaemon() {
    std::vector<std::string> args = DaemonArgs();
    daemon_pid_ = Spawn(args, dir_ + "/daemon.log");
    ASSERT_GT(daemon_pid_, 0);
    ASSERT_NO_FATAL_FAILURE(WaitSocket());
  }

  // Waits until the running daemon answers on its gRPC socket.
  void WaitSocket() {
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (true) {
      if (PathExists(socket_)) {
        stub_ = v1alpha1::SandboxService::NewStub(
            grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
        grpc::ClientContext ctx;
        v1alpha1::ListRequest request;
        request.set_kind("Sandbox");
        v1alpha1::ListResponse response;
        if (stub_->List(&ctx, request, &response).ok()) return;
      }
      int status = 0;
      ASSERT_EQ(::waitpid(daemon_pid_, &status, WNOHANG), 0) << "the daemon exited at startup";
      ASSERT_LT(Clock::now(), deadline) << "the daemon's socket did not appear";
      std::this_thread::sleep_for(kPoll);
    }
  }

  int Spawn(const std::vector<std::string>& args, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    return rc == 0 ? pid : -1;
  }

  // Sends `sig` and waits for the daemon to exit; returns its exit status.
  int StopDaemon(int sig) {
    ::kill(daemon_pid_, sig);
    int status = 0;
    ::waitpid(daemon_pid_, &status, 0);
    daemon_pid_ = -1;
    stub_.reset();
    return status;
  }

  // `sandboxlet ctl ...` against this test's daemon.
  CommandResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {SANDBOXLET_BIN, "ctl"});
    args.push_back("--socket=" + socket_);
    absl::StatusOr<CommandResult> r = RunCommand(args, {.timeout = std::chrono::seconds(60)});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  }

  std::vector<v1alpha1::Sandbox> Sandboxes() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1alpha1::ListRequest request;
    request.set_kind("Sandbox");
    v1alpha1::ListResponse response;
    grpc::Status s = stub_->List(&ctx, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<v1alpha1::Sandbox> out;
    for (const auto& o : response.items()) out.push_back(o.sandbox());
    return out;
  }

  // Waits until `n` sandboxes exist and all are Running with a VMM pid.
  bool WaitAllRunning(size_t n) {
    auto deadline = Clock::now() + kConvergeDeadline;
    while (Clock::now() < deadline) {
      std::vector<v1alpha1::Sandbox> all = Sandboxes();
      size_t running = 0;
      for (const auto& s : all) {
        if (s.status().phase() == v1alpha1::SandboxStatus::Running && s.status().vmm().pid() > 0) {
          ++running;
        }
      }
      if (all.size() == n && running == n) return true;
      std::this_thread::sleep_for(kPoll);
    }
    return false;
  }

  bool WaitNoSandboxes() {
    auto deadline = Clock::now() + kConvergeDeadline;
    while (Clock::now() < deadline) {
      if (Sandboxes().empty()) return true;
      std::this_thread::sleep_for(kPoll);
    }
    return false;
  }

  // Every Sandbox has exactly one VMM process, the one its status names, and no other VMM runs.
  void ExpectOneVmmPerSandbox(size_t n) {
    std::map<std::string, std::vector<int>> vmms = VmmProcesses(dir_);
    EXPECT_EQ(vmms.size(), n);
    for (const auto& [socket, pids] : vmms) {
      EXPECT_EQ(pids.size(), 1u) << socket;
    }
    std::set<int> live;
    for (const auto& [socket, pids] : vmms) live.insert(pids.begin(), pids.end());
    for (const auto& s : Sandboxes()) {
      EXPECT_TRUE(live.contains(s.status().vmm().pid()))
          << s.metadata().name() << " pid " << s.status().vmm().pid();
    }
  }

  void ExpectNothingLeft() {
    EXPECT_THAT(VmmProcesses(dir_), ::testing::IsEmpty());
    std::vector<std::string> vms;
    if (DIR* d = ::opendir((state_ + "/vms").c_str()); d != nullptr) {
      while (dirent* e = ::readdir(d)) {
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") {
          vms.push_back(e->d_name);
        }
      }
      ::closedir(d);
    }
    EXPECT_THAT(vms, ::testing::IsEmpty());
    absl::StatusOr<CommandResult> netns = RunCommand({"ip", "netns", "list"});
    ASSERT_TRUE(netns.ok());
    EXPECT_THAT(netns->out, ::testing::Not(HasSubstr(prefix_ + "-")));
  }

  // The port of the daemon's /metrics listener, from the last "metrics serving" line of its log.
  int MetricsPort() {
    absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log");
    if (!log.ok()) return -1;
    size_t at = log->rfind("msg=\"metrics serving\"");
    if (at == std::string::npos) return -1;
    size_t port = log->find(" port=", at);
    if (port == std::string::npos) return -1;
    return std::atoi(log->c_str() + port + 6);
  }

  // GET http://127.0.0.1:<metrics port><path>: {HTTP status (0 if none), body}.
  std::pair<int, std::string> HttpGet(int port, const std::string& path) {
    absl::StatusOr<CommandResult> r =
        RunCommand({"curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
                    Cat("http://127.0.0.1:", port, path)},
                   {.timeout = std::chrono::seconds(15)});
    if (!r.ok()) return {0, ""};
    size_t nl = r->out.rfind('\n');
    if (nl == std::string::npos) return {0, r->out};
    return {std::atoi(r->out.c_str() + nl + 1), r->out.substr(0, nl)};
  }

  // `ctl get <kind> <name> -o json`; a null json when the object is absent or unreadable.
  nlohmann::json GetJson(const std::string& kind, const std::string& name) {
    CommandResult r = Ctl({"get", kind, name, "-o", "json"});
    if (r.exit_code != 0) return nullptr;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
  }

  // Applies `doc` (YAML) through `ctl apply`.
  void Apply(const std::string& doc) {
    std::string file = Cat(dir_, "/apply-", RandomSuffix(6), ".yaml");
    ASSERT_TRUE(WriteFileAtomic(file, doc).ok());
    CommandResult r = Ctl({"apply", "-f", file});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Polls `ctl get -o json` of one object until `pred` holds; returns the last object read.
  template <typename Pred>
  nlohmann::json WaitObject(const std::string& kind, const std::string& name, Pred pred,
                            std::chrono::seconds timeout = std::chrono::seconds(60)) {
    auto deadline = Clock::now() + timeout;
    nlohmann::json j;
    while (Clock::now() < deadline) {
      j = GetJson(kind, name);
      if (pred(j)) return j;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ADD_FAILURE() << kind << "/" << name << " did not reach the expected state; last:\n"
                  << j.dump(2);
    return j;
  }

  std::string dir_, state_, run_, socket_, prefix_, cidr_;
  std::vector<std::string> extra_args_;
  std::string vmm_bin_ = CHSIM_BIN;
  int daemon_pid_ = -1;
  std::unique_ptr<v1alpha1::SandboxService::Stub> stub_;
};

}  // namespace e2e
}  // namespace sandboxlet
