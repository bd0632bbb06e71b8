// NodeRuntime for real: CH simulator VMMs in their own network and mount namespaces, file
// volumes, nftables NAT, snapshots, hibernation, crash detection, adoption and reclaim.
#include "runtime/node/node_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>

#include <gtest/gtest.h>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/runtime/network/network_test_env.h"

namespace sandboxlet::runtime {
namespace {

#define ASSERT_OK(expr)           \
  do {                            \
    absl::Status st_ = (expr);    \
    ASSERT_TRUE(st_.ok()) << st_; \
  } while (0)

// Per-process names and addresses (ctest runs test cases as parallel processes).
const std::string kPrefix = network::testing::ProcessPrefix('r');

bool NetnsExists(const std::string& uid) { return PathExists("/run/netns/" + kPrefix + "-" + uid); }

class NodeRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network and mount namespaces";
    char tmpl[] = "/tmp/sbl-node-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    opts_.state_dir = dir_ + "/state";
    opts_.run_dir = dir_ + "/run";
    opts_.vmm_bin = CHSIM_BIN;
    opts_.kernel = dir_ + "/vmlinux";
    opts_.templates_dir = dir_ + "/templates";
    opts_.volume_backend = "file";
    // Names and addresses of our own, so parallel test processes never collide.
    opts_.network.name_prefix = kPrefix;
    opts_.network.cidr = network::testing::ProcessCidr();
    opts_.stop_grace = std::chrono::milliseconds(1000);
    ASSERT_TRUE(MakeDirs(opts_.templates_dir + "/base").ok());
    ASSERT_TRUE(WriteFileAtomic(opts_.kernel, "kernel stand-in").ok());
    std::string image = opts_.templates_dir + "/base/rootfs.ext4";
    ASSERT_TRUE(WriteFileAtomic(image, "base image").ok());
    ASSERT_EQ(::truncate(image.c_str(), 32 << 20), 0);
    Open();
  }

  void TearDown() override {
    if (rt_) {
      for (const auto& uid : {"u-a", "u-b", "u-c", "u-r"}) (void)rt_->Destroy(uid);
      network::NetworkConfig cfg;
      cfg.state_dir = opts_.state_dir;
      cfg.cidr = opts_.network.cidr;
      cfg.name_prefix = kPrefix;
      cfg.install_host_rules = false;
      auto net = network::SandboxNetwork::Open(cfg);
      if (net.ok()) {
        (void)(*net)->RemoveHostRules();
      }
    }
    rt_.reset();
    if (!dir_.empty()) {
      ASSERT_TRUE(RemoveAll(dir_).ok());
    }
  }

  void Open() {
    auto rt = NodeRuntime::Open(opts_);
    ASSERT_TRUE(rt.ok()) << rt.status();
    rt_ = std::move(*rt);
    rt_->SetExitHandler([this](const std::string& uid, const VmExitInfo& exit) {
      std::lock_guard<std::mutex> lock(mu_);
      exits_.emplace_back(uid, exit);
      cv_.notify_all();
    });
  }

  SandboxRuntimeSpec Spec(const std::string& uid) {
    SandboxRuntimeSpec s;
    s.uid = uid;
    s.key = "default/" + uid;
    s.template_name = "base";
    s.memory_mib = 64;
    return s;
  }

  std::string dir_;
  NodeRuntimeOptions opts_;
  std::unique_ptr<NodeRuntime> rt_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, VmExitInfo>> exits_;
};

TEST_F(NodeRuntimeTest, StartPauseSnapshotHibernateRestoreDestroy) {
  ASSERT_OK(rt_->Start(Spec("u-a")));
  VmObservation obs = rt_->Observe("u-a");
  EXPECT_EQ(obs.phase, VmPhase::kRunning);
  EXPECT_GT(obs.pid, 0);
  EXPECT_FALSE(obs.ip.empty());
  EXPECT_TRUE(NetnsExists("u-a"));
  EXPECT_TRUE(PathExists(obs.serial_log));
  // The VMM runs inside the sandbox's network namespace.
  struct stat vmm_ns, sbx_ns;
  ASSERT_EQ(::stat(Cat("/proc/", obs.pid, "/ns/net").c_str(), &vmm_ns), 0);
  ASSERT_EQ(::stat(("/run/netns/" + kPrefix + "-u-a").c_str(), &sbx_ns), 0);
  EXPECT_EQ(vmm_ns.st_ino, sbx_ns.st_ino);

  ASSERT_TRUE(rt_->Pause("u-a").ok());
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kPaused);
  ASSERT_TRUE(rt_->Resume("u-a").ok());

  auto snap = rt_->Snapshot("u-a", "s1");
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_GT(snap->size_bytes, 0);
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kRunning);

  auto hib = rt_->Hibernate("u-a", "hibernate-u-a");
  ASSERT_TRUE(hib.ok()) << hib.status();
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kAbsent);
  EXPECT_FALSE(NetnsExists("u-a"));
  EXPECT_EQ(::kill(obs.pid, 0), -1);

  SandboxRuntimeSpec spec = Spec("u-a");
  ASSERT_OK(rt_->RestoreFrom(spec, "hibernate-u-a"));
  obs = rt_->Observe("u-a");
  EXPECT_EQ(obs.phase, VmPhase::kRunning);
  EXPECT_TRUE(NetnsExists("u-a"));
  ASSERT_TRUE(rt_->DeleteSnapshot("hibernate-u-a").ok());

  // A second sandbox restored from the first's snapshot, in its own netns with the same tap0.
  ASSERT_OK(rt_->RestoreFrom(Spec("u-r"), "s1"));
  EXPECT_EQ(rt_->Observe("u-r").phase, VmPhase::kRunning);

  ASSERT_TRUE(rt_->Destroy("u-a").ok());
  ASSERT_TRUE(rt_->Destroy("u-r").ok());
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kAbsent);
  EXPECT_FALSE(NetnsExists("u-a"));
  EXPECT_FALSE(PathExists(opts_.state_dir + "/vms/u-a"));
  EXPECT_FALSE(PathExists(opts_.state_dir + "/volumes/u-a"));
  auto ids = rt_->ListSnapshots();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"s1"});  // snapshots outlive their sandbox
}

TEST_F(NodeRuntimeTest, CrashIsReportedAndStartRestartsOnTheSameDisk) {
  ASSERT_OK(rt_->Start(Spec("u-b")));
  int pid = rt_->Observe("u-b").pid;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !exits_.empty(); }));
    EXPECT_EQ(exits_[0].first, "u-b");
    EXPECT_EQ(exits_[0].second.signal, SIGKILL);
    EXPECT_EQ(exits_[0].second.reason, "Killed");
  }
  VmObservation obs = rt_->Observe("u-b");
  EXPECT_EQ(obs.phase, VmPhase::kExited);
  ASSERT_TRUE(obs.last_exit.has_value());
  ASSERT_OK(rt_->Start(Spec("u-b")));
  EXPECT_EQ(rt_->Observe("u-b").phase, VmPhase::kRunning);
  EXPECT_NE(rt_->Observe("u-b").pid, pid);
  // Stop is not a crash: no exit is reported for it.
  ASSERT_TRUE(rt_->Stop("u-b").ok());
  EXPECT_EQ(rt_->Observe("u-b").phase, VmPhase::kStopped);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(exits_.size(), 1u);
}

TEST_F(NodeRuntimeTest, MissingTemplateIsAClearErrorAndLeavesNothing) {
  SandboxRuntimeSpec spec = Spec("u-c");
  spec.template_name = "nope";
  absl::Status st = rt_->Start(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(st.message()).find("template \"nope\""), std::string::npos) << st;
  EXPECT_FALSE(NetnsExists("u-c"));
}

TEST_F(NodeRuntimeTest, RestartAdoptsClaimedAndReclaimsTheRest) {
  ASSERT_OK(rt_->Start(Spec("u-a")));
  ASSERT_OK(rt_->Start(Spec("u-b")));
  ASSERT_OK(rt_->Start(Spec("u-c")));
  int pid_a = rt_->Observe("u-a").pid;
  int pid_b = rt_->Observe("u-b").pid;
  int pid_c = rt_->Observe("u-c").pid;
  ASSERT_TRUE(rt_->Pause("u-b").ok());
  rt_.reset();  // sandboxlet goes away; its VMMs keep running
  EXPECT_EQ(::kill(pid_a, 0), 0);

  Open();
  auto report = rt_->AdoptAndReclaim({{"u-a", "default/u-a"}, {"u-b", "default/u-b"}});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->adopted.size(), 2u);
  EXPECT_TRUE(report->lost.empty());
  EXPECT_EQ(rt_->Observe("u-a").pid, pid_a);  // the same VMM, not a new one
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kRunning);
  EXPECT_EQ(rt_->Observe("u-b").phase, VmPhase::kPaused);
  EXPECT_EQ(rt_->Observe("u-b").pid, pid_b);
  // u-c was claimed by nobody: its VMM, netns, volume and directory are gone.
  EXPECT_EQ(report->reclaimed["vmm"], 1);
  for (int i = 0; i < 200 && ::kill(pid_c, 0) == 0; ++i) ::usleep(10000);
  EXPECT_NE(::kill(pid_c, 0), 0);
  EXPECT_FALSE(NetnsExists("u-c"));
  EXPECT_FALSE(PathExists(opts_.state_dir + "/vms/u-c"));
  EXPECT_FALSE(PathExists(opts_.state_dir + "/volumes/u-c"));
  // An adopted VMM's crash is still detected (status unknown: not our child).
  ASSERT_EQ(::kill(pid_a, SIGKILL), 0);
  std::unique_lock<std::mutex> lock(mu_);
  ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !exits_.empty(); }));
  EXPECT_EQ(exits_[0].first, "u-a");
}

TEST_F(NodeRuntimeTest, VmmThatDiedWhileDownIsReportedExited) {
  ASSERT_OK(rt_->Start(Spec("u-a")));
  ASSERT_OK(rt_->Start(Spec("u-b")));
  ASSERT_TRUE(rt_->Stop("u-b").ok());
  int pid = rt_->Observe("u-a").pid;
  rt_.reset();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 200 && ::kill(pid, 0) == 0; ++i) ::usleep(10000);
  Open();
  auto report = rt_->AdoptAndReclaim({{"u-a", "default/u-a"}, {"u-b", "default/u-b"}});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kExited);
  EXPECT_EQ(report->lost.count("u-a"), 1u);
  EXPECT_EQ(rt_->Observe("u-b").phase, VmPhase::kStopped);  // stopped on purpose, not lost
  // Start brings it back on its volume and network.
  ASSERT_OK(rt_->Start(Spec("u-a")));
  EXPECT_EQ(rt_->Observe("u-a").phase, VmPhase::kRunning);
}

}  // namespace
}  // namespace sandboxlet::runtime
