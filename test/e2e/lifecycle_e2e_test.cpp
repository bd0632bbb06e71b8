// End-to-end lifecycle tests through the built `sandboxlet` daemon with the CH simulator as its
// VMM: a VMM killed behind the daemon's back is restarted per restartPolicy (or the sandbox fails
// with Never), hibernating and resuming keeps the disk content and the VM's size, and a snapshot
// that runs out of space fails cleanly without harming the sandbox or an earlier snapshot.
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/e2e/daemon_fixture.h"

namespace sandboxlet {
namespace {

using namespace e2e;  // NOLINT: the fixture's helpers
using ::testing::HasSubstr;

std::string SizedSandboxDoc(const std::string& name, const std::string& extra_spec, int vcpus = 1,
                            int memory_mib = 64) {
  return Cat("apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: ", name,
             "\nspec:\n  template: base\n  vcpus: ", vcpus, "\n  memoryMiB: ", memory_mib, "\n",
             extra_spec);
}

std::string SnapshotDoc(const std::string& name, const std::string& sandbox) {
  return Cat("apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\nmetadata:\n  name: ",
             name, "\nspec:\n  sandboxName: ", sandbox, "\n");
}

std::string Phase(const nlohmann::json& o) {
  if (!o.is_object() || !o.contains("status")) return "";
  return o["status"].value("phase", "");
}

int VmmPid(const nlohmann::json& o) {
  if (Phase(o).empty() || !o["status"].contains("vmm")) return 0;
  return o["status"]["vmm"].value("pid", 0);
}

// The simulator's vm.info through the VM's API socket; null on failure.
nlohmann::json VmInfo(const std::string& api_socket) {
  absl::StatusOr<CommandResult> r = RunCommand(
      {"curl", "-s", "-m", "5", "--unix-socket", api_socket, "http://localhost/api/v1/vm.info"},
      {.timeout = std::chrono::seconds(10)});
  if (!r.ok() || r->exit_code != 0) return nullptr;
  nlohmann::json j = nlohmann::json::parse(r->out, nullptr, false);
  return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

// Reads `n` bytes of `path` at `offset` (dd), "" on failure.
std::string ReadAt(const std::string& path, int64_t offset, int n) {
  absl::StatusOr<CommandResult> r = RunCommand(
      {"dd", "if=" + path, "bs=1", Cat("skip=", offset), Cat("count=", n), "status=none"});
  return r.ok() && r->exit_code == 0 ? r->out : "";
}

class LifecycleE2eTest : public DaemonE2eTest {
 protected:
  // The file under <state>/volumes that a VMM sees as `vm_path` in its private mount namespace
  // (machine.h: the disk is bind-mounted on a stable path); "" with a failure if none.
  std::string VolumeOf(int vmm_pid, const std::string& vm_path) {
    absl::StatusOr<CommandResult> r = RunCommand(
        {"find", state_ + "/volumes", "-samefile", Cat("/proc/", vmm_pid, "/root", vm_path)});
    std::string found = r.ok() ? std::string(Trim(r->out)) : "";
    EXPECT_TRUE(!found.empty() && found.find('\n') == std::string::npos)
        << "no single volume file under " << state_ << "/volumes is the VMM's " << vm_path << ": "
        << found;
    return found.find('\n') == std::string::npos ? found : "";
  }

  nlohmann::json WaitRunning(const std::string& name) {
    return WaitObject("sandboxes", name, [](const nlohmann::json& o) {
      return Phase(o) == "Running" && VmmPid(o) > 0;
    });
  }

  void DeleteAllAndStop(const std::vector<std::string>& sandboxes,
                        const std::vector<std::string>& snapshots = {}) {
    if (!snapshots.empty()) {
      std::vector<std::string> args = {"delete", "sandboxsnapshots"};
      args.insert(args.end(), snapshots.begin(), snapshots.end());
      ASSERT_EQ(Ctl(args).exit_code, 0);
    }
    std::vector<std::string> args = {"delete", "sandboxes"};
    args.insert(args.end(), sandboxes.begin(), sandboxes.end());
    ASSERT_EQ(Ctl(args).exit_code, 0);
    ASSERT_TRUE(WaitNoSandboxes());
    ExpectNothingLeft();
    EXPECT_EQ(StopDaemon(SIGTERM), 0);
  }
};

TEST_F(LifecycleE2eTest, KilledVmmIsRestartedOrFailsPerRestartPolicy) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("again", "  restartPolicy: Always\n")));
  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("once", "  restartPolicy: Never\n")));
  nlohmann::json again = WaitRunning("again");
  nlohmann::json once = WaitRunning("once");
  int again_pid = VmmPid(again), once_pid = VmmPid(once);
  ASSERT_GT(again_pid, 0);
  ASSERT_GT(once_pid, 0);

  ASSERT_EQ(::kill(again_pid, SIGKILL), 0);
  ASSERT_EQ(::kill(once_pid, SIGKILL), 0);

  again = WaitObject("sandboxes", "again", [&](const nlohmann::json& o) {
    return Phase(o) == "Running" && VmmPid(o) > 0 && VmmPid(o) != again_pid &&
           o["status"].value("restartCount", 0) == 1;
  });
  EXPECT_EQ(again["status"].value("restartCount", 0), 1) << again.dump(2);
  ASSERT_TRUE(again["status"].contains("lastExit")) << again.dump(2);
  EXPECT_EQ(again["status"]["lastExit"].value("reason", ""), "Killed");
  EXPECT_EQ(again["status"]["lastExit"].value("signal", 0), SIGKILL);
  EXPECT_NE(VmmPid(again), again_pid);
  EXPECT_TRUE(Alive(VmmPid(again)));
  EXPECT_FALSE(Alive(again_pid));

  // Never: a killed VMM is an abnormal exit, so the sandbox fails and is not restarted.
  once = WaitObject("sandboxes", "once", [](const nlohmann::json& o) {
    return Phase(o) == "Failed" || Phase(o) == "Stopped";
  });
  EXPECT_EQ(Phase(once), "Failed") << once.dump(2);
  EXPECT_EQ(once["status"].value("restartCount", 0), 0);
  ASSERT_TRUE(once["status"].contains("lastExit")) << once.dump(2);
  EXPECT_EQ(once["status"]["lastExit"].value("reason", ""), "Killed");
  // Only the restarted VMM runs.
  std::map<std::string, std::vector<int>> vmms = VmmProcesses(dir_);
  ASSERT_EQ(vmms.size(), 1u);
  EXPECT_EQ(vmms.begin()->second, std::vector<int>{VmmPid(again)});

  DeleteAllAndStop({"again", "once"});
}

TEST_F(LifecycleE2eTest, HibernateAndResumeKeepDiskContentAndVmSize) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("sleeper", "  power: Running\n", 2, 128)));
  nlohmann::json s = WaitRunning("sleeper");
  std::string api = s["status"]["vmm"].value("apiSocket", "");
  nlohmann::json info = VmInfo(api);
  ASSERT_TRUE(info.is_object()) << "vm.info through " << api;
  ASSERT_TRUE(info["config"]["disks"].is_array() && !info["config"]["disks"].empty()) << info;
  std::string disk = VolumeOf(VmmPid(s), info["config"]["disks"][0].value("path", ""));
  ASSERT_FALSE(disk.empty());

  // A marker in the middle of the disk, as a guest write would leave it.
  const std::string marker = Cat("sandboxlet-marker-", RandomSuffix(12));
  const int64_t offset = 300 * 1024 + 7;
  absl::StatusOr<CommandResult> wrote =
      RunCommand({"sh", "-c",
                  Cat("printf '%s' ", marker, " | dd of=", disk, " bs=1 seek=", offset,
                      " conv=notrunc status=none")});
  ASSERT_TRUE(wrote.ok() && wrote->exit_code == 0);
  ASSERT_EQ(ReadAt(disk, offset, marker.size()), marker);

  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("sleeper", "  power: Hibernated\n", 2, 128)));
  s = WaitObject("sandboxes", "sleeper",
                 [](const nlohmann::json& o) { return Phase(o) == "Hibernated"; });
  ASSERT_EQ(Phase(s), "Hibernated");
  EXPECT_THAT(VmmProcesses(dir_), ::testing::IsEmpty());

  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("sleeper", "  power: Running\n", 2, 128)));
  s = WaitRunning("sleeper");
  ASSERT_EQ(Phase(s), "Running");
  std::string api2 = s["status"]["vmm"].value("apiSocket", "");
  nlohmann::json info2 = VmInfo(api2);
  ASSERT_TRUE(info2.is_object()) << "vm.info through " << api2;
  EXPECT_EQ(info2.value("state", ""), "Running") << info2;
  EXPECT_EQ(info2["config"]["cpus"].value("boot_vcpus", 0), 2) << info2;
  EXPECT_EQ(info2["config"]["memory"].value("size", int64_t{0}), int64_t{128} << 20) << info2;
  std::string disk2 = VolumeOf(VmmPid(s), info2["config"]["disks"][0].value("path", ""));
  ASSERT_FALSE(disk2.empty());
  EXPECT_EQ(ReadAt(disk2, offset, marker.size()), marker) << "disk " << disk2;

  DeleteAllAndStop({"sleeper"});
}

TEST_F(LifecycleE2eTest, SnapshotOutOfSpaceFailsAndLeavesEarlierSnapshotIntact) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(Apply(SizedSandboxDoc("full", "")));
  nlohmann::json s = WaitRunning("full");
  const std::string uid = s["metadata"].value("uid", "");
  const int pid = VmmPid(s);

  ASSERT_NO_FATAL_FAILURE(Apply(SnapshotDoc("before", "full")));
  nlohmann::json before = WaitObject("sandboxsnapshots", "before", [](const nlohmann::json& o) {
    return Phase(o) == "Ready" || Phase(o) == "Failed";
  });
  ASSERT_EQ(Phase(before), "Ready") << before.dump(2);
  const std::string before_uid = before["metadata"].value("uid", "");
  absl::StatusOr<CommandResult> found = RunCommand(
      {"find", state_ + "/snapshots", "-maxdepth", "3", "-type", "d", "-name", before_uid});
  ASSERT_TRUE(found.ok());
  const std::string before_dir = std::string(Trim(found->out));
  ASSERT_FALSE(before_dir.empty()) << "no directory for snapshot " << before_uid;
  // Content digest of every file of the earlier snapshot.
  auto digest = [&] {
    absl::StatusOr<CommandResult> r = RunCommand(
        {"sh", "-c", Cat("cd ", before_dir, " && find . -type f | sort | xargs sha256sum")});
    return r.ok() && r->exit_code == 0 ? r->out : std::string();
  };
  const std::string before_digest = digest();
  ASSERT_FALSE(before_digest.empty());

  ASSERT_TRUE(
      WriteFileAtomic(Cat(state_, "/vms/", uid, "/api.sock.faults"), "enospc vm.snapshot\n").ok());
  ASSERT_NO_FATAL_FAILURE(Apply(SnapshotDoc("after", "full")));
  nlohmann::json after = WaitObject("sandboxsnapshots", "after", [](const nlohmann::json& o) {
    return Phase(o) == "Ready" || Phase(o) == "Failed";
  });
  EXPECT_EQ(Phase(after), "Failed") << after.dump(2);
  EXPECT_THAT(after["status"].value("message", ""), HasSubstr("No space left on device"))
      << after.dump(2);

  s = GetJson("sandboxes", "full");
  EXPECT_EQ(Phase(s), "Running") << s.dump(2);
  EXPECT_EQ(VmmPid(s), pid);
  nlohmann::json info = VmInfo(s["status"]["vmm"].value("apiSocket", ""));
  EXPECT_EQ(info.is_object() ? info.value("state", "") : "", "Running") << info;
  EXPECT_EQ(Phase(GetJson("sandboxsnapshots", "before")), "Ready");
  EXPECT_EQ(digest(), before_digest);

  ASSERT_TRUE(RemoveAll(Cat(state_, "/vms/", uid, "/api.sock.faults")).ok());
  DeleteAllAndStop({"full"}, {"before", "after"});
}

}  // namespace
}  // namespace sandboxlet
