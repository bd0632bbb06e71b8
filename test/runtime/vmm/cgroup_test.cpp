// Tests of runtime/vmm/cgroup.cpp and of VmmProcess's cgroup joining: on this host's real cgroup
// file system (v1 here, v2 on most nodes) with the CH simulator (CHSIM_BIN), on a directory laid
// out like cgroup2, and on a cgroup2 file system mounted for the test.
//
// Every test works under a parent directory of its own (sbl-cgtest-<pid>-<n>) and removes it, so
// parallel test binaries never touch each other's cgroups.
#include "runtime/vmm/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/vmm/process.h"
#include "test/runtime/vmm/raw_http_probe.h"
#include "test/runtime/vmm/vmm_test_support.h"

namespace sandboxlet::vmm {
namespace {

using std::chrono::milliseconds;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RawHttpProbe;
using Steady = std::chrono::steady_clock;

constexpr milliseconds kReady{10000};

std::string UniqueParent() {
  std::random_device rd;
  return Cat("sbl-cgtest-", ::getpid(), "-", rd() % 1000000);
}

std::string Slurp(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

// The cgroup paths of a process, one per line of /proc/<pid>/cgroup ("<id>:<controllers>:<path>").
std::vector<std::string> CgroupPaths(pid_t pid) {
  std::vector<std::string> out;
  for (const auto& line : Split(Slurp(Cat("/proc/", pid, "/cgroup")), '\n')) {
    if (line.empty()) continue;
    size_t first = line.find(':');
    size_t second = line.find(':', first + 1);
    out.push_back(line.substr(second + 1));
  }
  return out;
}

bool Alive(pid_t pid) {
  auto stat = ReadProcStat(pid);
  return stat.ok() && stat->state != 'Z' && stat->state != 'X';
}

// Waits (bounded) for a process we hold a pidfd of to exit; true if it did.
bool WaitPidfd(int pidfd, milliseconds timeout) {
  struct pollfd pfd = {pidfd, POLLIN, 0};
  return ::poll(&pfd, 1, static_cast<int>(timeout.count())) == 1;
}

// Writes "0" (= the writer) to each cgroup.procs file; false on the first failure.
bool JoinSelf(const std::vector<std::string>& procs) {
  for (const auto& p : procs) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, "0", 1) == 1;
    ::close(fd);
    if (!ok) return false;
  }
  return true;
}

// Tests against this host's real cgroups, under a parent directory of their own.
class HostCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    options_.parent = UniqueParent();
    options_.remove_patience = milliseconds(2000);
    detection_ = VmmCgroups::Detect(options_);
    if (detection_.version == CgroupVersion::kNone) {
      GTEST_SKIP() << "no usable cgroups on this host: " << detection_.reason;
    }
    cgroups_ = VmmCgroups::Open(options_);
    ASSERT_TRUE(cgroups_->enabled()) << cgroups_->detection().reason;
    tmp_ = testing::MakeTempDir();
  }

  void TearDown() override {
    for (auto& [proc, probe] : procs_) {
      if (proc) (void)proc->Stop(*probe, milliseconds(200));
    }
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (cgroups_) {
      // Whatever a failed test left in our cgroups (a VMM it did not get to stop) goes too.
      if (auto left = ListAll(); left.ok()) {
        for (const auto& uid : *left) {
          for (const auto& h : detection_.hierarchies) {
            auto pids = ReadCgroupProcs(Cat(h, "/", options_.parent, "/vm-", uid, "/cgroup.procs"));
            if (pids.ok()) {
              for (int pid : *pids) ::kill(pid, SIGKILL);
            }
          }
          (void)cgroups_->Remove(uid);
        }
      }
      for (const auto& h : detection_.hierarchies) {
        std::string parent = Cat(h, "/", options_.parent);
        EXPECT_TRUE(::rmdir(parent.c_str()) == 0 || errno == ENOENT)
            << parent << ": " << std::strerror(errno);
      }
    }
    if (!tmp_.empty()) (void)RemoveAll(tmp_);
  }

  // Every vm-* cgroup under our parent, occupied or not.
  absl::StatusOr<std::vector<std::string>> ListAll() {
    std::set<std::string> uids;
    for (const auto& h : detection_.hierarchies) {
      std::string parent = Cat(h, "/", options_.parent);
      DIR* dir = ::opendir(parent.c_str());
      if (!dir) continue;
      while (struct dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        if (StartsWith(name, "vm-")) uids.insert(name.substr(3));
      }
      ::closedir(dir);
    }
    return std::vector<std::string>(uids.begin(), uids.end());
  }

  VmmSpec SpecFor(const std::string& name) {
    VmmSpec spec;
    spec.vmm_bin = CHSIM_BIN;
    spec.vm_dir = Cat(tmp_, "/vms/", name);
    spec.key = Cat("default/", name);
    return spec;
  }

  absl::StatusOr<VmmProcess*> Spawn(const VmmSpec& spec) {
    auto probe = std::make_unique<RawHttpProbe>(VmmProcess::ApiSocketPath(spec.vm_dir));
    auto p = VmmProcess::Spawn(spec, *probe, kReady);
    if (!p.ok()) return p.status();
    procs_.emplace_back(std::move(*p), std::move(probe));
    return procs_.back().first.get();
  }

  VmmCgroupOptions options_;
  CgroupDetection detection_;
  std::unique_ptr<VmmCgroups> cgroups_;
  std::string tmp_;
  std::vector<std::pair<std::unique_ptr<VmmProcess>, std::unique_ptr<RawHttpProbe>>> procs_;
  std::vector<pid_t> children_;
};

TEST(CgroupDetectTest, DetectsThisHostsCgroupVersion) {
  struct statfs fs;
  ASSERT_EQ(::statfs("/sys/fs/cgroup", &fs), 0);
  VmmCgroupOptions options;
  options.parent = UniqueParent();  // Detect creates nothing; the name only needs to be valid
  CgroupDetection d = VmmCgroups::Detect(options);
  if (fs.f_type == CGROUP2_SUPER_MAGIC) {
    EXPECT_EQ(d.version, CgroupVersion::kV2) << d.reason;
    EXPECT_THAT(d.hierarchies, ElementsAre("/sys/fs/cgroup"));
    return;
  }
  // A v1 (or hybrid) host like this one: every hierarchy mounted under /sys/fs/cgroup is joined.
  std::vector<std::string> expected;
  bool unified = false;
  for (const auto& line : Split(Slurp("/proc/self/mounts"), '\n')) {
    std::vector<std::string> f = Split(line, ' ');
    if (f.size() < 3 || Dirname(f[1]) != "/sys/fs/cgroup") continue;
    if (f[2] == "cgroup") expected.push_back(f[1]);
    if (f[2] == "cgroup2") unified = true;
  }
  if (expected.empty()) GTEST_SKIP() << "no cgroup v1 hierarchy under /sys/fs/cgroup";
  EXPECT_EQ(d.version, CgroupVersion::kV1) << d.reason;
  EXPECT_EQ(CgroupVersionName(d.version), "v1");
  for (const auto& h : expected) EXPECT_THAT(d.hierarchies, Contains(h));
  EXPECT_EQ(d.hierarchies.size(), expected.size() + (unified ? 1 : 0));
  if (unified) {
    EXPECT_THAT(d.reason, HasSubstr("hybrid"));
  }
  for (const char* needed : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"}) {
    if (PathExists(needed)) {
      EXPECT_THAT(d.hierarchies, Contains(needed));
    }
  }
}

TEST_F(HostCgroupTest, SpawnedVmmRunsInItsOwnCgroupWhichStopRemoves) {
  auto procs = cgroups_->Prepare("u1");
  ASSERT_TRUE(procs.ok()) << procs.status();
  ASSERT_EQ(procs->size(), detection_.hierarchies.size());
  auto dirs = cgroups_->Dirs("u1");
  ASSERT_TRUE(dirs.ok());
  for (const auto& d : *dirs) EXPECT_TRUE(PathExists(d)) << d;

  VmmSpec spec = SpecFor("u1");
  spec.cgroup_procs = *procs;
  auto vmm = Spawn(spec);
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  pid_t pid = (*vmm)->pid();

  const std::string own = Cat("/", options_.parent, "/vm-u1");
  std::vector<std::string> mine = CgroupPaths(::getpid()), its = CgroupPaths(pid);
  ASSERT_FALSE(its.empty());
  ASSERT_EQ(its.size(), mine.size());
  for (size_t i = 0; i < its.size(); ++i) {
    EXPECT_EQ(its[i], own) << "line " << i << " of /proc/" << pid << "/cgroup";
    EXPECT_NE(its[i], mine[i]) << "the VMM shares a cgroup with its spawner";
  }
  for (const auto& p : *procs) {
    auto members = ReadCgroupProcs(p);
    ASSERT_TRUE(members.ok()) << members.status();
    EXPECT_THAT(*members, ElementsAre(pid)) << p;
  }
  auto rec = VmmProcess::ReadRecord(spec.vm_dir);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->cgroups, *dirs);

  // A VMM that is running is not a leftover.
  auto left = cgroups_->ListLeftovers();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_THAT(*left, Not(Contains("u1")));

  auto& [proc, probe] = procs_.back();
  auto stopped = proc->Stop(*probe, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  for (const auto& d : *dirs) EXPECT_FALSE(PathExists(d)) << d << " outlived its VMM";
}

// What the cgroups are for: systemd stopping sandboxlet's unit, or a container runtime stopping
// its pod, kills every process of sandboxlet's cgroup. Here a helper process stands in for
// sandboxlet: it moves itself into a scratch cgroup and spawns two VMMs, one with cgroups of
// its own and one without; then every process of the scratch cgroup is killed.
TEST_F(HostCgroupTest, VmmOutlivesTheKillingOfItsSpawnersCgroup) {
  auto scratch = cgroups_->Prepare("spawner");
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  auto kept_procs = cgroups_->Prepare("kept");
  ASSERT_TRUE(kept_procs.ok()) << kept_procs.status();
  VmmSpec kept = SpecFor("kept"), plain = SpecFor("plain");
  kept.cgroup_procs = *kept_procs;

  int report[2], hold[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(hold, O_CLOEXEC), 0);
  pid_t helper = ::fork();
  ASSERT_GE(helper, 0);
  if (helper == 0) {
    // The helper ("sandboxlet"): single-threaded, so the library calls are safe after fork.
    ::close(report[0]);
    ::close(hold[1]);
    pid_t pids[2] = {-1, -1};
    if (JoinSelf(*scratch)) {
      for (int i = 0; i < 2; ++i) {
        const VmmSpec& spec = i == 0 ? kept : plain;
        RawHttpProbe probe(VmmProcess::ApiSocketPath(spec.vm_dir));
        auto p = VmmProcess::Spawn(spec, probe, kReady);
        if (p.ok()) pids[i] = (*p)->pid();
      }
    }
    (void)!::write(report[1], pids, sizeof(pids));
    char c;
    (void)!::read(hold[0], &c, 1);  // until killed
    ::_exit(0);
  }
  children_.push_back(helper);
  ::close(report[1]);
  ::close(hold[0]);
  UniqueFd report_r(report[0]), hold_w(hold[1]);

  pid_t pids[2] = {-1, -1};
  struct pollfd pfd = {report_r.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 30000), 1) << "helper did not report";
  ASSERT_EQ(::read(report_r.get(), pids, sizeof(pids)), static_cast<ssize_t>(sizeof(pids)));
  ASSERT_GT(pids[0], 0) << "helper could not spawn the VMM with cgroups";
  ASSERT_GT(pids[1], 0) << "helper could not spawn the VMM without cgroups";
  UniqueFd kept_fd(static_cast<int>(::syscall(SYS_pidfd_open, pids[0], 0)));
  UniqueFd plain_fd(static_cast<int>(::syscall(SYS_pidfd_open, pids[1], 0)));
  ASSERT_TRUE(kept_fd.valid() && plain_fd.valid());

  // Kill the scratch cgroup the way systemd does with KillMode=control-group: every process
  // listed in it, until it is empty.
  std::set<int> seen;
  bool helper_reaped = false;
  const auto deadline = Steady::now() + std::chrono::seconds(10);
  while (true) {
    std::set<int> members;
    for (const auto& p : *scratch) {
      auto pids_in = ReadCgroupProcs(p);
      ASSERT_TRUE(pids_in.ok()) << pids_in.status();
      members.insert(pids_in->begin(), pids_in->end());
    }
    if (members.empty()) break;
    ASSERT_LT(Steady::now(), deadline) << "scratch cgroup did not empty";
    for (int pid : members) {
      seen.insert(pid);
      ::kill(pid, SIGKILL);
    }
    if (!helper_reaped) helper_reaped = ::waitpid(helper, nullptr, WNOHANG) == helper;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_THAT(seen, Contains(helper));
  EXPECT_THAT(seen, Contains(pids[1]));
  EXPECT_THAT(seen, Not(Contains(pids[0])));
  if (!helper_reaped) {
    ASSERT_EQ(::waitpid(helper, nullptr, 0), helper);
  }
  children_.clear();

  // The VMM without cgroups died with its spawner; the one with cgroups runs on and answers.
  EXPECT_TRUE(WaitPidfd(plain_fd.get(), milliseconds(10000)));
  EXPECT_FALSE(WaitPidfd(kept_fd.get(), milliseconds(0)));
  EXPECT_TRUE(Alive(pids[0]));
  RawHttpProbe kept_probe(VmmProcess::ApiSocketPath(kept.vm_dir));
  EXPECT_TRUE(kept_probe.Ping(milliseconds(2000)).ok());

  // A restarted sandboxlet adopts it and, on stop, removes its cgroups.
  auto adopted = VmmProcess::Adopt(kept.vm_dir, kept_probe, milliseconds(2000));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_FALSE((*adopted)->is_child());
  auto stopped = (*adopted)->Stop(kept_probe, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  auto dirs = cgroups_->Dirs("kept");
  ASSERT_TRUE(dirs.ok());
  for (const auto& d : *dirs) EXPECT_FALSE(PathExists(d)) << d;
  EXPECT_TRUE(cgroups_->Remove("spawner").ok());
}

TEST_F(HostCgroupTest, LeftoversAreListedAndRemoved) {
  auto idle = cgroups_->Prepare("idle");
  ASSERT_TRUE(idle.ok()) << idle.status();
  auto busy = cgroups_->Prepare("busy");
  ASSERT_TRUE(busy.ok()) << busy.status();
  // Preparing again reuses the directories.
  auto again = cgroups_->Prepare("idle");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *idle);

  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char ok = JoinSelf(*busy) ? 1 : 0;
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  children_.push_back(child);
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(ok, 1) << "child could not join the busy cgroup";

  auto left = cgroups_->ListLeftovers();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_THAT(*left, ElementsAre("idle"));

  // A cgroup with a process in it is not removed, and the error says who is in it.
  VmmCgroupOptions impatient = options_;
  impatient.remove_patience = milliseconds(50);
  auto quick = VmmCgroups::Open(impatient);
  absl::Status busy_rm = quick->Remove("busy");
  EXPECT_FALSE(busy_rm.ok());
  EXPECT_THAT(std::string(busy_rm.message()), HasSubstr(Cat("still holds pids ", child)));

  ASSERT_TRUE(cgroups_->Remove("idle").ok());
  ::kill(child, SIGKILL);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  children_.clear();
  left = cgroups_->ListLeftovers();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_THAT(*left, ElementsAre("busy"));
  ASSERT_TRUE(cgroups_->Remove("busy").ok());
  for (const char* uid : {"idle", "busy"}) {
    auto dirs = cgroups_->Dirs(uid);
    ASSERT_TRUE(dirs.ok());
    for (const auto& d : *dirs) EXPECT_FALSE(PathExists(d)) << d;
  }
  left = cgroups_->ListLeftovers();
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());
  // Removing what is already gone is fine.
  EXPECT_TRUE(cgroups_->Remove("idle").ok());
}

TEST_F(HostCgroupTest, FailureToJoinIsReportedWithThePath) {
  VmmSpec spec = SpecFor("nojoin");
  // Not prepared: the cgroup does not exist.
  std::string missing =
      Cat(detection_.hierarchies[0], "/", options_.parent, "/vm-nojoin/cgroup.procs");
  spec.cgroup_procs = {missing};
  auto vmm = Spawn(spec);
  ASSERT_FALSE(vmm.ok());
  EXPECT_THAT(std::string(vmm.status().message()), HasSubstr(Cat("join cgroup ", missing)));

  spec.cgroup_procs = {"relative/cgroup.procs"};
  vmm = Spawn(spec);
  ASSERT_FALSE(vmm.ok());
  EXPECT_EQ(vmm.status().code(), absl::StatusCode::kInvalidArgument);

  // A v1 cpuset cgroup with no cpus cannot be joined (ENOSPC): the child's write fails after
  // fork, and the error comes back through the report pipe.
  std::string cpuset;
  for (const auto& h : detection_.hierarchies) {
    if (PathExists(Cat(h, "/cpuset.cpus")) && !PathExists(Cat(h, "/cgroup.controllers")))
      cpuset = h;
  }
  if (cpuset.empty()) return;
  std::string raw = Cat(cpuset, "/", options_.parent, "/vm-raw");
  ASSERT_EQ(::mkdir(raw.c_str(), 0755), 0) << raw << ": " << std::strerror(errno);
  spec.cgroup_procs = {Cat(raw, "/cgroup.procs")};
  vmm = Spawn(spec);
  ASSERT_FALSE(vmm.ok());
  EXPECT_THAT(std::string(vmm.status().message()),
              HasSubstr(Cat("join cgroup ", raw, "/cgroup.procs")));
  EXPECT_FALSE(PathExists(Cat(spec.vm_dir, "/vmm.json")));
  EXPECT_FALSE(PathExists(raw)) << "a failed spawn removes the cgroups it was given";
}

// The v2 path and directory logic on a directory laid out like a cgroup2 root.
class FakeV2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir();
    ASSERT_TRUE(WriteFileAtomic(Cat(root_, "/cgroup.controllers"), "cpu memory pids\n").ok());
    ASSERT_TRUE(WriteFileAtomic(Cat(root_, "/cgroup.subtree_control"), "").ok());
    ASSERT_TRUE(WriteFileAtomic(Cat(root_, "/cgroup.procs"), "1\n").ok());
    options_.root = root_ + "/";
    options_.parent = "sandboxlet";
    options_.verify_join = false;  // nothing can join a plain directory
  }
  void TearDown() override {
    if (!mount_.empty()) {
      ::umount2(mount_.c_str(), MNT_DETACH);
      ::rmdir(mount_.c_str());
    }
    (void)RemoveAll(root_);
  }
  std::string root_, mount_;
  VmmCgroupOptions options_;
};

TEST_F(FakeV2Test, PreparesListsAndRemovesCgroupsUnderTheParent) {
  CgroupDetection d = VmmCgroups::Detect(options_);
  ASSERT_EQ(d.version, CgroupVersion::kV2) << d.reason;
  EXPECT_THAT(d.hierarchies, ElementsAre(root_));
  EXPECT_THAT(d.reason, HasSubstr("cgroup.controllers"));

  auto cg = VmmCgroups::Open(options_);
  ASSERT_TRUE(cg->enabled());
  EXPECT_TRUE(PathExists(Cat(root_, "/sandboxlet")));
  auto procs = cg->Prepare("u1");
  ASSERT_TRUE(procs.ok()) << procs.status();
  EXPECT_THAT(*procs, ElementsAre(Cat(root_, "/sandboxlet/vm-u1/cgroup.procs")));
  EXPECT_TRUE(PathExists(Cat(root_, "/sandboxlet/vm-u1")));
  // Membership only: no controller is enabled anywhere.
  EXPECT_EQ(Slurp(Cat(root_, "/cgroup.subtree_control")), "");
  EXPECT_FALSE(PathExists(Cat(root_, "/sandboxlet/cgroup.subtree_control")));

  for (const char* bad : {"../x", "a/b", "", ".."}) {
    auto p = cg->Prepare(bad);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(PathExists(Cat(root_, "/x")));

  // The test plays the kernel: vm-u2 lists a member, vm-u1 none; other names are not ours.
  ASSERT_TRUE(MakeDirs(Cat(root_, "/sandboxlet/vm-u2")).ok());
  ASSERT_TRUE(WriteFileAtomic(Cat(root_, "/sandboxlet/vm-u2/cgroup.procs"), "4242\n").ok());
  ASSERT_TRUE(MakeDirs(Cat(root_, "/sandboxlet/other")).ok());
  auto left = cg->ListLeftovers();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_THAT(*left, ElementsAre("u1"));

  ASSERT_TRUE(cg->Remove("u1").ok());
  EXPECT_FALSE(PathExists(Cat(root_, "/sandboxlet/vm-u1")));
  EXPECT_TRUE(cg->Remove("never-made").ok());
  EXPECT_TRUE(PathExists(Cat(root_, "/sandboxlet"))) << "the parent stays";
}

TEST_F(FakeV2Test, NoCgroupsOrReadOnlyCgroupsDisableWithAReason) {
  std::string empty = Cat(root_, "/empty");
  ASSERT_TRUE(MakeDirs(empty).ok());
  VmmCgroupOptions o = options_;
  o.root = empty;
  CgroupDetection d = VmmCgroups::Detect(o);
  EXPECT_EQ(d.version, CgroupVersion::kNone);
  EXPECT_THAT(d.reason, HasSubstr(empty));

  o.root = Cat(root_, "/missing");
  auto off = VmmCgroups::Open(o);
  EXPECT_FALSE(off->enabled());
  EXPECT_THAT(off->detection().reason, HasSubstr("missing"));
  // Disabled: every call is a no-op that succeeds.
  auto procs = off->Prepare("u1");
  ASSERT_TRUE(procs.ok());
  EXPECT_TRUE(procs->empty());
  EXPECT_TRUE(off->Remove("u1").ok());
  EXPECT_TRUE(off->ListLeftovers().ok());
  EXPECT_FALSE(VmmCgroups::Disabled("vmm_cgroups=off")->enabled());

  // A read-only cgroup file system, as in an unprivileged container.
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount";
  mount_ = testing::MakeTempDir();
  if (::mount(root_.c_str(), mount_.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
      ::mount(nullptr, mount_.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    GTEST_SKIP() << "cannot make a read-only bind mount: " << std::strerror(errno);
  }
  o.root = mount_;
  auto ro = VmmCgroups::Open(o);
  EXPECT_FALSE(ro->enabled());
  EXPECT_THAT(ro->detection().reason, HasSubstr("not writable"));
  EXPECT_THAT(ro->detection().reason, HasSubstr("Read-only"));
}

// A real cgroup2 file system mounted for the test (on a v1/hybrid host this is the unified
// hierarchy; on a v2 host, the host's own).
TEST(RealCgroup2Test, SpawnedVmmJoinsItsCgroup2) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount cgroup2";
  std::string tmp = testing::MakeTempDir();
  std::string root = Cat(tmp, "/cg2");
  ASSERT_TRUE(MakeDirs(root).ok());
  if (::mount("none", root.c_str(), "cgroup2", 0, nullptr) != 0) {
    int err = errno;
    (void)RemoveAll(tmp);
    GTEST_SKIP() << "cannot mount cgroup2: " << std::strerror(err);
  }
  VmmCgroupOptions o;
  o.root = root;
  o.parent = UniqueParent();
  CgroupDetection d = VmmCgroups::Detect(o);
  EXPECT_EQ(d.version, CgroupVersion::kV2) << d.reason;
  EXPECT_THAT(d.reason, HasSubstr("cgroup2 mounted at"));
  auto cg = VmmCgroups::Open(o);
  ASSERT_TRUE(cg->enabled()) << cg->detection().reason;

  auto procs = cg->Prepare("u2");
  ASSERT_TRUE(procs.ok()) << procs.status();
  VmmSpec spec;
  spec.vmm_bin = CHSIM_BIN;
  spec.vm_dir = Cat(tmp, "/vms/u2");
  spec.key = "default/u2";
  spec.cgroup_procs = *procs;
  RawHttpProbe probe(VmmProcess::ApiSocketPath(spec.vm_dir));
  auto vmm = VmmProcess::Spawn(spec, probe, kReady);
  ASSERT_TRUE(vmm.ok()) << vmm.status();
  std::string self = Slurp("/proc/self/cgroup");
  std::string its = Slurp(Cat("/proc/", (*vmm)->pid(), "/cgroup"));
  // Paths are relative to our cgroup namespace root, which is this hierarchy's root here.
  EXPECT_THAT(its, HasSubstr(Cat("0::/", o.parent, "/vm-u2\n")));
  EXPECT_THAT(self, Not(HasSubstr(Cat("/", o.parent, "/"))));
  auto members = ReadCgroupProcs(procs->front());
  ASSERT_TRUE(members.ok());
  EXPECT_THAT(*members, ElementsAre((*vmm)->pid()));

  auto stopped = (*vmm)->Stop(probe, milliseconds(2000));
  EXPECT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_FALSE(PathExists(Cat(root, "/", o.parent, "/vm-u2")));
  EXPECT_EQ(::rmdir(Cat(root, "/", o.parent).c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(::umount2(root.c_str(), MNT_DETACH), 0);
  (void)RemoveAll(tmp);
}

}  // namespace
}  // namespace sandboxlet::vmm
