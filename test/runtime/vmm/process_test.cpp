// Tests of runtime/vmm/process.cpp against the CH simulator (CHSIM_BIN, which takes CH's exact
// command line and fault rules in CHSIM_FAULTS) and real kernel namespaces.
#include "runtime/vmm/process.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/command.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/vmm/exit_watcher.h"
#include "test/runtime/vmm/raw_http_probe.h"
#include "test/runtime/vmm/vmm_test_support.h"

namespace sandboxlet::vmm {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::InodeOf;
using ::testing::Not;
using testing::RawHttpProbe;

constexpr milliseconds kReady{10000};

std::string Slurp(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::string raw = Slurp(Cat("/proc/", pid, "/cmdline"));
  std::vector<std::string> out = Split(raw, '\0');
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

class VmmProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = testing::MakeTempDir();
    vm_dir_ = Cat(tmp_, "/vms/0f9c");
    spec_.vmm_bin = CHSIM_BIN;
    spec_.vm_dir = vm_dir_;
    spec_.key = "default/x";
    probe_ = std::make_unique<RawHttpProbe>(VmmProcess::ApiSocketPath(vm_dir_));
  }
  void TearDown() override {
    for (auto& p : procs_) {
      if (p) (void)p->Stop(*probe_, milliseconds(100));
    }
    if (!netns_.empty()) (void)RunCommand({"ip", "netns", "del", netns_});
    (void)RemoveAll(tmp_);
  }

  absl::StatusOr<VmmProcess*> Spawn(milliseconds timeout = kReady) {
    auto p = VmmProcess::Spawn(spec_, *probe_, timeout);
    if (!p.ok()) return p.status();
    procs_.push_back(std::move(*p));
    return procs_.back().get();
  }

  // Creates a uniquely named network namespace; false if `ip netns` is unavailable.
  bool AddNetns() {
    std::random_device rd;
    netns_ = Cat("sblvmm-", ::getpid(), "-", rd() % 100000);
    auto r = RunCommand({"ip", "netns", "add", netns_});
    if (!r.ok() || !r->ok()) {
      netns_.clear();
      return false;
    }
    return true;
  }

  std::string tmp_, vm_dir_, netns_;
  VmmSpec spec_;
  std::unique_ptr<RawHttpProbe> probe_;
  std::vector<std::unique_ptr<VmmProcess>> procs_;
};

TEST_F(VmmProcessTest, SpawnWaitsForApiAndWritesRecord) {
  ::setenv("SBL_VMM_TEST_LEAK", "1", 1);
  // An fd the parent leaves inheritable must not reach the VMM.
  UniqueFd leaked(::open("/dev/zero", O_RDONLY));
  spec_.env = {"CHSIM_FAULTS=", "SBL_VMM_TEST_VAR=yes"};
  spec_.verbosity = 2;
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  VmmProcess& p = **proc;
  const std::string socket = Cat(vm_dir_, "/api.sock");

  EXPECT_TRUE(p.is_child());
  EXPECT_EQ(p.api_socket(), socket);
  EXPECT_TRUE(probe_->Ping(milliseconds(2000)).ok());
  EXPECT_EQ(::getsid(p.pid()), p.pid()) << "VMM must lead its own session";
  struct stat st;
  ASSERT_EQ(::stat(vm_dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  EXPECT_THAT(Cmdline(p.pid()),
              ::testing::ElementsAre(CHSIM_BIN, "--api-socket", Cat("path=", socket), "--log-file",
                                     Cat(vm_dir_, "/ch.log"), "--event-monitor",
                                     Cat("path=", vm_dir_, "/events.log"), "-v", "-v", "--seccomp",
                                     "true"));
  std::string environ = Slurp(Cat("/proc/", p.pid(), "/environ"));
  EXPECT_THAT(environ, HasSubstr("SBL_VMM_TEST_VAR=yes"));
  EXPECT_THAT(environ, HasSubstr("PATH="));
  EXPECT_THAT(environ, Not(HasSubstr("SBL_VMM_TEST_LEAK")));
  std::string dev_zero_fds;
  for (int fd = 0; fd < 64; ++fd) {
    char target[256] = {};
    if (::readlink(Cat("/proc/", p.pid(), "/fd/", fd).c_str(), target, sizeof(target) - 1) > 0 &&
        std::string(target) == "/dev/zero") {
      dev_zero_fds += Cat(fd, " ");
    }
  }
  EXPECT_EQ(dev_zero_fds, "") << "inherited fds were not closed";

  auto rec = VmmProcess::ReadRecord(vm_dir_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  auto stat = ReadProcStat(p.pid());
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(rec->pid, p.pid());
  EXPECT_EQ(rec->start_time, stat->start_time);
  EXPECT_EQ(rec->api_socket, socket);
  EXPECT_EQ(rec->vmm_bin, CHSIM_BIN);
  EXPECT_EQ(rec->key, "default/x");
  EXPECT_EQ(rec->netns, "");
  EXPECT_THAT(rec->spawned_at, ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T.*Z"));

  auto how = p.Stop(*probe_, milliseconds(5000));
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_EQ(*how, ExitKind::kGraceful);
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
  EXPECT_FALSE(PathExists(socket));
  auto exit = p.WaitExit(std::chrono::steady_clock::now());
  ASSERT_TRUE(exit.ok());
  EXPECT_TRUE(exit->status_known);
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_FALSE(testing::HaveZombieChild());
}

TEST_F(VmmProcessTest, RunsInGivenNetnsAndPrivateMountNamespace) {
  if (!AddNetns()) GTEST_SKIP() << "cannot create a network namespace with `ip netns add`";
  // A directory and a file, bound at targets that do not exist yet.
  const std::string src_dir = Cat(tmp_, "/src");
  ASSERT_TRUE(MakeDirs(src_dir).ok());
  ASSERT_TRUE(WriteFileAtomic(Cat(src_dir, "/marker"), "from-source").ok());
  ASSERT_TRUE(WriteFileAtomic(Cat(tmp_, "/disk.img"), "disk-bytes").ok());
  const std::string target_dir = Cat(tmp_, "/stable/config");
  const std::string target_file = Cat(tmp_, "/stable/rootfs.ext4");
  spec_.netns = netns_;
  spec_.binds = {{src_dir, target_dir}, {Cat(tmp_, "/disk.img"), target_file}};
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  pid_t pid = (*proc)->pid();

  ino_t vmm_net = InodeOf(Cat("/proc/", pid, "/ns/net"));
  EXPECT_EQ(vmm_net, InodeOf(Cat("/run/netns/", netns_)));
  EXPECT_NE(vmm_net, InodeOf("/proc/self/ns/net"));
  EXPECT_NE(InodeOf(Cat("/proc/", pid, "/ns/mnt")), InodeOf("/proc/self/ns/mnt"));

  // Visible to the VMM (through its root, which resolves in its mount namespace)...
  EXPECT_EQ(Slurp(Cat("/proc/", pid, "/root", target_dir, "/marker")), "from-source");
  EXPECT_EQ(Slurp(Cat("/proc/", pid, "/root", target_file)), "disk-bytes");
  EXPECT_THAT(Slurp(Cat("/proc/", pid, "/mountinfo")), HasSubstr(Cat(" ", target_dir, " ")));
  // ...but not to the host: the targets are empty mount points there.
  EXPECT_FALSE(PathExists(Cat(target_dir, "/marker")));
  EXPECT_EQ(Slurp(target_file), "");
  EXPECT_THAT(Slurp("/proc/self/mountinfo"), Not(HasSubstr(target_dir)));

  auto rec = VmmProcess::ReadRecord(vm_dir_);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->netns, netns_);
}

TEST_F(VmmProcessTest, MissingNetnsIsAClearError) {
  spec_.netns = "sblvmm-no-such-netns";
  auto proc = Spawn();
  ASSERT_FALSE(proc.ok());
  EXPECT_THAT(std::string(proc.status().message()),
              HasSubstr("vmm default/x: setns /run/netns/sblvmm-no-such-netns: No such file"));
}

TEST_F(VmmProcessTest, MissingBindSourceIsAClearError) {
  spec_.binds = {{Cat(tmp_, "/absent.img"), Cat(tmp_, "/t/rootfs.ext4")}};
  auto proc = Spawn();
  ASSERT_FALSE(proc.ok());
  EXPECT_THAT(std::string(proc.status().message()),
              HasSubstr(Cat("bind mount source ", tmp_, "/absent.img")));
}

TEST_F(VmmProcessTest, MissingBinaryReportsExecFailure) {
  spec_.vmm_bin = Cat(tmp_, "/no-such-cloud-hypervisor");
  auto proc = Spawn();
  ASSERT_FALSE(proc.ok());
  EXPECT_EQ(proc.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(proc.status().message()),
              HasSubstr(Cat("vmm default/x: exec ", spec_.vmm_bin, ": No such file")));
  EXPECT_FALSE(testing::HaveZombieChild());
}

TEST_F(VmmProcessTest, RemovesStaleSocketBeforeSpawn) {
  ASSERT_TRUE(MakeDirs(vm_dir_, 0700).ok());
  // A socket file left behind by a dead VMM: CH up to v52 cannot bind over it (CONTRACT §2);
  // v53 would remove it itself, so play v48.
  spec_.env = {"CHSIM_VERSION=48"};
  const std::string socket = VmmProcess::ApiSocketPath(vm_dir_);
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket.c_str());
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ino_t stale = InodeOf(socket);
  ASSERT_NE(stale, 0u);
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  EXPECT_NE(InodeOf(socket), stale);
  EXPECT_TRUE(probe_->Ping(milliseconds(2000)).ok());
}

TEST_F(VmmProcessTest, StartFailureCarriesTheVmmErrorChain) {
  spec_.env = {"CHSIM_FAULTS=fail-start"};
  auto proc = Spawn();
  ASSERT_FALSE(proc.ok());
  std::string msg(proc.status().message());
  EXPECT_THAT(msg, HasSubstr("vmm default/x: exited (exit code 1) before its API was ready"));
  EXPECT_THAT(msg, HasSubstr("Cloud Hypervisor exited with the following chain of errors"));
  EXPECT_THAT(msg, HasSubstr("0: "));
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
  EXPECT_FALSE(testing::HaveZombieChild());
}

TEST_F(VmmProcessTest, ApiThatNeverAnswersTimesOutAndKillsTheVmm) {
  spec_.env = {"CHSIM_FAULTS=hang vmm.ping"};
  auto proc = Spawn(milliseconds(300));
  ASSERT_FALSE(proc.ok());
  EXPECT_EQ(proc.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(proc.status().message()), HasSubstr("vmm.ping"));
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/api.sock")));
  // Killed and reaped: no child of ours remains at all.
  siginfo_t info = {};
  EXPECT_NE(::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT), 0);
}

TEST_F(VmmProcessTest, WatcherReportsKilledChildAndSharesTheReap) {
  testing::ExitRecorder recorder;
  auto watcher = ExitWatcher::Start([&](const VmmExit& e) { recorder.Record(e); });
  ASSERT_TRUE(watcher.ok());
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  ASSERT_TRUE((*watcher)->Watch("default/x", **proc).ok());
  ASSERT_EQ(::kill((*proc)->pid(), SIGKILL), 0);

  auto exits = recorder.WaitFor(1);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].key, "default/x");
  EXPECT_EQ(exits[0].pid, (*proc)->pid());
  EXPECT_TRUE(exits[0].status_known);
  EXPECT_EQ(exits[0].signal, SIGKILL);
  // WaitExit sees the same exit the watcher reaped; nothing is left to reap.
  auto again = (*proc)->WaitExit(std::chrono::steady_clock::now());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->signal, SIGKILL);
  EXPECT_FALSE(testing::HaveZombieChild());
  auto how = (*proc)->Stop(*probe_, milliseconds(100));
  ASSERT_TRUE(how.ok());
  EXPECT_EQ(*how, ExitKind::kAlreadyGone);
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
}

TEST_F(VmmProcessTest, StopSendsSigtermWhenShutdownHangs) {
  spec_.env = {"CHSIM_FAULTS=hang vmm.shutdown"};
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  auto how = (*proc)->Stop(*probe_, milliseconds(300));
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_EQ(*how, ExitKind::kTerminated);
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
}

TEST_F(VmmProcessTest, StopEscalatesToSigkillWhenSigtermIgnored) {
  spec_.env = {"CHSIM_FAULTS=ignore-sigterm;hang vmm.shutdown"};
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  auto how = (*proc)->Stop(*probe_, milliseconds(200));
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_EQ(*how, ExitKind::kKilled);
  auto exit = (*proc)->WaitExit(std::chrono::steady_clock::now());
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->signal, SIGKILL);
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/vmm.json")));
  EXPECT_FALSE(PathExists(Cat(vm_dir_, "/api.sock")));
}

TEST_F(VmmProcessTest, SpawnRefusesWhileRecordedVmmIsAlive) {
  auto first = Spawn();
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = VmmProcess::Spawn(spec_, *probe_, kReady);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("still running"));
  EXPECT_TRUE(probe_->Ping(milliseconds(2000)).ok()) << "the first VMM must be untouched";
}

TEST_F(VmmProcessTest, AdoptsVmmWhoseSpawnerExited) {
  // A helper process spawns the VMM and exits, as sandboxlet would on a restart. This test
  // process has no other threads here, so the forked helper may run ordinary code.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t helper = ::fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    ::close(ready[0]);
    auto p = VmmProcess::Spawn(spec_, *probe_, kReady);
    char ok = p.ok() ? 1 : 0;
    (void)!::write(ready[1], &ok, 1);
    ::_exit(0);
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(ok, 1) << "helper could not spawn the VMM";
  int status = 0;
  ASSERT_EQ(::waitpid(helper, &status, 0), helper);

  auto adopted = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(2000));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  VmmProcess& p = **adopted;
  EXPECT_FALSE(p.is_child());
  EXPECT_EQ(p.key(), "default/x");
  EXPECT_EQ(p.api_socket(), VmmProcess::ApiSocketPath(vm_dir_));

  testing::ExitRecorder recorder;
  auto watcher = ExitWatcher::Start([&](const VmmExit& e) { recorder.Record(e); });
  ASSERT_TRUE(watcher.ok());
  ASSERT_TRUE((*watcher)->Watch("default/x", p).ok());
  ASSERT_TRUE(p.Signal(SIGKILL).ok());
  auto exits = recorder.WaitFor(1);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].pid, p.pid());
  EXPECT_FALSE(exits[0].status_known);

  auto gone = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(500));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("vmm default/x: gone"));
  procs_.push_back(std::move(*adopted));  // TearDown removes its record
}

TEST_F(VmmProcessTest, AdoptRefusesRecordWhosePidWasReused) {
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  const std::string path = Cat(vm_dir_, "/vmm.json");
  std::string original = Slurp(path);
  nlohmann::json j = nlohmann::json::parse(original);
  j["start_time"] = j["start_time"].get<uint64_t>() + 1;
  ASSERT_TRUE(WriteFileAtomic(path, j.dump()).ok());

  auto adopted = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(2000));
  ASSERT_FALSE(adopted.ok());
  EXPECT_EQ(adopted.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(adopted.status().message()),
              HasSubstr(Cat("pid ", (*proc)->pid(), " now belongs to another process")));
  ASSERT_TRUE(WriteFileAtomic(path, original).ok());
}

TEST_F(VmmProcessTest, AdoptRejectsCorruptRecordNamingTheFile) {
  ASSERT_TRUE(MakeDirs(vm_dir_, 0700).ok());
  const std::string path = Cat(vm_dir_, "/vmm.json");
  for (const char* text : {"{\"pid\": 12", "[]", "{\"pid\":\"12\",\"start_time\":5}",
                           "{\"pid\":4242,\"start_time\":-3,\"api_socket\":\"/x\",\"key\":\"a/b\"}",
                           "{\"pid\":4242,\"start_time\":3,\"key\":\"a/b\"}", ""}) {
    ASSERT_TRUE(WriteFileAtomic(path, text).ok());
    auto adopted = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(500));
    ASSERT_FALSE(adopted.ok()) << text;
    EXPECT_EQ(adopted.status().code(), absl::StatusCode::kDataLoss) << text;
    EXPECT_THAT(std::string(adopted.status().message()),
                HasSubstr(Cat("vmm record ", path, ": corrupt")))
        << text;
  }
  ASSERT_EQ(::unlink(path.c_str()), 0);
  auto missing = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(500));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(path));
}

TEST_F(VmmProcessTest, AdoptOfHungVmmIsFailedPreconditionAndStopKillsIt) {
  auto proc = Spawn();
  ASSERT_TRUE(proc.ok()) << proc.status();
  ASSERT_TRUE((*proc)->Signal(SIGSTOP).ok());  // alive, but its API cannot answer

  auto adopted = VmmProcess::Adopt(vm_dir_, *probe_, milliseconds(200));
  ASSERT_FALSE(adopted.ok());
  EXPECT_EQ(adopted.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(adopted.status().message()), HasSubstr("does not answer"));

  auto attached = VmmProcess::Attach(vm_dir_);
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_EQ((*attached)->pid(), (*proc)->pid());
  auto how = (*attached)->Stop(*probe_, milliseconds(200));
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_EQ(*how, ExitKind::kKilled);
}

TEST(ProcStatTest, ParsesFieldsAfterAnAwkwardCommandName) {
  std::string text = "4242 (cloud hyper) (v)) S 17";
  for (int field = 5; field <= 21; ++field) text += Cat(" ", field);
  text += " 987654 23 24\n";
  auto stat = ParseProcStat(text);
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(stat->state, 'S');
  EXPECT_EQ(stat->ppid, 17);
  EXPECT_EQ(stat->start_time, 987654u);

  EXPECT_FALSE(ParseProcStat("4242 (x) S 1 2 3").ok());
  EXPECT_FALSE(ParseProcStat("garbage").ok());
}

TEST(VmmSpecTest, RejectsPathsChCannotParse) {
  testing::RawHttpProbe probe("/nonexistent");
  VmmSpec spec;
  spec.vmm_bin = "/bin/true";
  spec.key = "default/x";
  spec.vm_dir = "/tmp/a,b=c";
  auto p = VmmProcess::Spawn(spec, probe, milliseconds(100));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("contains ',' or '='"));
  spec.vm_dir = "relative/dir";
  EXPECT_FALSE(VmmProcess::Spawn(spec, probe, milliseconds(100)).ok());
  spec.vm_dir = "/tmp/ok";
  spec.netns = "../evil";
  EXPECT_FALSE(VmmProcess::Spawn(spec, probe, milliseconds(100)).ok());
}

}  // namespace
}  // namespace sandboxlet::vmm
