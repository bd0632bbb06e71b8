// End-to-end tests of the built `sandboxlet` binary: the daemon runs with the CH simulator as its
// VMM binary on a temporary state directory, driven through `sandboxlet ctl` and the gRPC API.
// They check what an operator relies on: sandboxes converge to Running, a daemon killed in the
// middle of creating them converges after a restart without duplicating or losing a VMM, SIGTERM
// leaves VMs running for the next start to adopt (same pids), deleting everything leaves nothing
// behind, and startup refuses clearly (a second daemon, a corrupt store, a missing VMM binary).
//
// Needs root (network namespaces, nftables). Each test uses its own state dir, network prefix and
// CIDR, and kills whatever it started on the way out.
#include "test/e2e/daemon_fixture.h"

namespace sandboxlet {
namespace {

using namespace e2e;  // NOLINT: the fixture's helpers
using ::testing::HasSubstr;

TEST_F(DaemonE2eTest, FiftySandboxesConvergeAcrossAKillDuringCreation) {
  // Boots take 100 ms each (the simulator's fault injection, through a wrapper because the VMM
  // gets a minimal environment), so that the kill below lands in the middle of creation.
  std::string wrapper = dir_ + "/ch-sim-slow-boot";
  ASSERT_TRUE(WriteFileAtomic(
                  wrapper,
                  Cat("#!/bin/sh\nCHSIM_FAULTS='delay vm.boot 100' exec ", CHSIM_BIN, " \"$@\"\n"),
                  0755)
                  .ok());
  vmm_bin_ = wrapper;
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  std::string manifest;
  for (int i = 0; i < 50; ++i) manifest += Cat(i ? "---\n" : "", SandboxDoc(Cat("sbx-", i)));
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/fifty.yaml", manifest).ok());
  CommandResult applied = Ctl({"apply", "-f", dir_ + "/fifty.yaml"});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_THAT(applied.out, HasSubstr("sandbox.sandboxlet.dev/sbx-49 created"));

  // Kill the daemon while it is creating them: some are up, others are not yet.
  auto deadline = Clock::now() + kConvergeDeadline;
  while (VmmProcesses(dir_).size() < 5 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(VmmProcesses(dir_).size(), 5u);
  size_t running = 0;
  for (const auto& sbx : Sandboxes()) {
    running += sbx.status().phase() == v1alpha1::SandboxStatus::Running ? 1 : 0;
  }
  StopDaemon(SIGKILL);
  ASSERT_LT(running, 50u) << "creation was over before the kill; the test proves nothing";

  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_TRUE(WaitAllRunning(50)) << "not all 50 sandboxes reached Running after the restart";
  ExpectOneVmmPerSandbox(50);

  CommandResult table = Ctl({"get", "sandboxes"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("NAME"));
  EXPECT_THAT(table.out, HasSubstr("sbx-0 "));
  EXPECT_THAT(table.out, HasSubstr("Running"));

  CommandResult deleted = Ctl({"delete", "-f", dir_ + "/fifty.yaml"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

TEST_F(DaemonE2eTest, SigtermLeavesVmsRunningAndTheNextStartAdoptsThem) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  std::string manifest = SandboxDoc("a") + "---\n" + SandboxDoc("b") + "---\n" + SandboxDoc("c");
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/three.yaml", manifest).ok());
  ASSERT_EQ(Ctl({"apply", "-f", dir_ + "/three.yaml"}).exit_code, 0);
  ASSERT_TRUE(WaitAllRunning(3));
  std::map<std::string, int> pids;
  for (const auto& s : Sandboxes()) pids[s.metadata().name()] = s.status().vmm().pid();

  int status = StopDaemon(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (const auto& [name, pid] : pids) EXPECT_TRUE(Alive(pid)) << name << " pid " << pid;
  EXPECT_FALSE(PathExists(socket_));

  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_TRUE(WaitAllRunning(3));
  for (const auto& s : Sandboxes()) {
    EXPECT_EQ(s.status().vmm().pid(), pids[s.metadata().name()]) << s.metadata().name();
  }
  ExpectOneVmmPerSandbox(3);

  ASSERT_EQ(Ctl({"delete", "sandboxes", "a", "b", "c"}).exit_code, 0);
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

TEST_F(DaemonE2eTest, StartupRefusesClearly) {
  // A second daemon on the same directories.
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  absl::StatusOr<CommandResult> second =
      RunCommand(DaemonArgs(), {.timeout = std::chrono::seconds(30)});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_THAT(second->err, HasSubstr("another sandboxlet"));
  EXPECT_EQ(StopDaemon(SIGTERM), 0);

  // A missing VMM binary says how to fix it.
  absl::StatusOr<CommandResult> no_vmm = RunCommand(DaemonArgs("/nonexistent/cloud-hypervisor"),
                                                    {.timeout = std::chrono::seconds(30)});
  ASSERT_TRUE(no_vmm.ok());
  EXPECT_EQ(no_vmm->exit_code, 1);
  EXPECT_THAT(no_vmm->err, HasSubstr("install cloud-hypervisor"));
  EXPECT_THAT(no_vmm->err, HasSubstr("--vmm-bin"));

  // A corrupt store is named and never reset.
  std::string db = state_ + "/store.db";
  ASSERT_TRUE(RemoveAll(db + "-wal").ok());
  ASSERT_TRUE(RemoveAll(db + "-shm").ok());
  ASSERT_TRUE(WriteFileAtomic(db, std::string(8192, 'x')).ok());
  absl::StatusOr<CommandResult> corrupt =
      RunCommand(DaemonArgs(), {.timeout = std::chrono::seconds(30)});
  ASSERT_TRUE(corrupt.ok());
  EXPECT_EQ(corrupt->exit_code, 1);
  EXPECT_THAT(corrupt->err, HasSubstr(db));
  EXPECT_EQ(*ReadFile(db), std::string(8192, 'x'));
}

}  // namespace
}  // namespace sandboxlet
