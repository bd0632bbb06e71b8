// Machine and the snapshot/restore flows, run for real: the CH simulator as VMM (in a private
// mount namespace, as production), the file volume backend, the snapshot store.
#include "runtime/vm/machine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/snapshot/store.h"
#include "runtime/vm/snapshot_flow.h"
#include "runtime/volume/volume.h"

namespace sandboxlet::vm {
namespace {

std::string ReadAt(const std::string& path, off_t offset, size_t n) {
  std::string out(n, '\0');
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(::pread(fd, out.data(), n, offset), static_cast<ssize_t>(n));
  ::close(fd);
  return out;
}

void WriteAt(const std::string& path, off_t offset, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), offset), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

class MachineTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-vm-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    env_.vmm_bin = Cat(CHSIM_DIR, "/ch-sim-v", GetParam());
    auto version = ch::DetectChVersion(env_.vmm_bin);
    ASSERT_TRUE(version.ok()) << version.status();
    env_.version = *version;
    env_.vms_dir = dir_ + "/vms";
    env_.stable_root = dir_ + "/run/vmroot";
    env_.kernel = dir_ + "/vmlinux";
    env_.api_timeout = std::chrono::milliseconds(5000);
    ASSERT_TRUE(WriteFileAtomic(env_.kernel, "kernel stand-in").ok());
    // A 64 MiB sparse base image with some content.
    base_ = dir_ + "/base.ext4";
    ASSERT_TRUE(WriteFileAtomic(base_, "").ok());
    ASSERT_EQ(::truncate(base_.c_str(), 64 << 20), 0);
    WriteAt(base_, 0, "base image header");
    VolumeOptions vopts;
    vopts.state_dir = dir_ + "/state";
    vopts.backend = "file";
    auto volumes = MakeVolumeBackend(vopts);
    ASSERT_TRUE(volumes.ok()) << volumes.status();
    volumes_ = std::move(*volumes);
    auto store = SnapshotStore::Open({dir_ + "/snapshots", nullptr});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void TearDown() override {
    for (auto& m : machines_) {
      if (m) (void)m->Stop();
    }
    machines_.clear();
    ASSERT_TRUE(RemoveAll(dir_).ok());
  }

  // Creates a volume and boots a sandbox on it.
  Machine* BootSandbox(const std::string& id, Volume* volume_out) {
    auto volume = volumes_->Create({id, "default/" + id, base_, 0});
    EXPECT_TRUE(volume.ok()) << volume.status();
    if (!volume.ok()) return nullptr;
    *volume_out = *volume;
    MachineSpec spec;
    spec.id = id;
    spec.key = "default/" + id;
    spec.memory_mib = 64;
    spec.disk_path = volume->device_path;
    auto m = Machine::Boot(env_, spec);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    machines_.push_back(std::move(*m));
    return machines_.back().get();
  }

  ch::VmState State(Machine* m) {
    auto info = m->Info();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->state : ch::VmState::kUnknown;
  }

  void SetFaults(Machine* m, const std::string& rules) {
    ASSERT_TRUE(WriteFileAtomic(Cat(m->vm_dir(), "/api.sock.faults"), rules).ok());
  }

  std::string dir_, base_;
  MachineEnv env_;
  std::unique_ptr<VolumeBackend> volumes_;
  std::unique_ptr<SnapshotStore> store_;
  std::vector<std::unique_ptr<Machine>> machines_;
};

TEST_P(MachineTest, BootPauseResumeStop) {
  Volume vol;
  Machine* m = BootSandbox("a1", &vol);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(State(m), ch::VmState::kRunning);
  auto info = m->Info();
  ASSERT_TRUE(info.ok());
  // CH sees the stable paths, not the sandbox's own (machine.h).
  EXPECT_EQ(info->config["disks"][0]["path"], Machine::StableDiskPath(env_));
  EXPECT_EQ(info->config["serial"]["file"], Machine::StableSerialPath(env_));
  ASSERT_TRUE(m->Pause().ok());
  EXPECT_EQ(State(m), ch::VmState::kPaused);
  ASSERT_TRUE(m->Resume().ok());
  EXPECT_EQ(State(m), ch::VmState::kRunning);
  // The serial console reached the sandbox's own file through the bind mount.
  auto serial = ReadFile(m->serial_log_path());
  ASSERT_TRUE(serial.ok());
  EXPECT_FALSE(serial->empty());
  auto how = m->Stop();
  ASSERT_TRUE(how.ok()) << how.status();
  EXPECT_EQ(*how, vmm::ExitKind::kGraceful);
  machines_.clear();
}

TEST_P(MachineTest, MissingKernelFailsBootAndLeavesNothing) {
  env_.kernel = dir_ + "/no-such-kernel";
  auto volume = volumes_->Create({"k1", "default/k1", base_, 0});
  ASSERT_TRUE(volume.ok());
  MachineSpec spec{"k1", "default/k1", 1, 64, volume->device_path, "", std::nullopt};
  auto m = Machine::Boot(env_, spec);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(std::string(m.status().message()).find("vm.boot"), std::string::npos) << m.status();
  EXPECT_FALSE(PathExists(env_.vms_dir + "/k1"));
}

TEST_P(MachineTest, SnapshotRestoresUnderAnotherSandboxWithDiskContent) {
  Volume vol_a;
  Machine* a = BootSandbox("src", &vol_a);
  ASSERT_NE(a, nullptr);
  // The guest wrote a marker into its disk.
  WriteAt(vol_a.device_path, 4 << 20, "marker-before-snapshot");
  SnapshotRequest req{"snap1", "base", 1, 64, false};
  auto snap = TakeSnapshot(*a, vol_a, *volumes_, *store_, req);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_GT(snap->size_bytes, 0);
  EXPECT_EQ(State(a), ch::VmState::kRunning);  // resumed after the snapshot
  // Files of the seed's layout are all there.
  for (const char* f :
       {"config.json", "state.json", "memory-ranges", "rootfs.ext4", "rootfs.meta"}) {
    EXPECT_TRUE(PathExists(snap->dir + "/" + f)) << f;
  }
  auto meta = store_->ReadMeta("snap1");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->base_digest, vol_a.base_digest);
  // The source keeps running and writing; the snapshot must not see that.
  WriteAt(vol_a.device_path, 4 << 20, "changed-after-snapshot");

  MachineSpec spec_b{"dst", "default/dst", 1, 64, "", "", std::nullopt};
  auto restored = RestoreSnapshot(env_, spec_b, *volumes_, *store_, "snap1", base_);
  ASSERT_TRUE(restored.ok()) << restored.status();
  machines_.push_back(std::move(restored->machine));
  Machine* b = machines_.back().get();
  EXPECT_EQ(State(b), ch::VmState::kRunning);
  EXPECT_NE(b->vm_dir(), a->vm_dir());
  EXPECT_EQ(ReadAt(restored->volume.device_path, 4 << 20, 22), "marker-before-snapshot");
  auto info = b->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->config["memory"]["size"], 64 << 20);
  // Staging links are gone once the VM is restored (copy mode).
  EXPECT_FALSE(PathExists(b->vm_dir() + "/restore"));
}

TEST_P(MachineTest, FailedSnapshotKeepsVmRunningAndEarlierSnapshot) {
  Volume vol;
  Machine* m = BootSandbox("f1", &vol);
  ASSERT_NE(m, nullptr);
  SnapshotRequest req{"keep", "base", 1, 64, false};
  auto first = TakeSnapshot(*m, vol, *volumes_, *store_, req);
  ASSERT_TRUE(first.ok()) << first.status();
  auto before = ReadFile(first->dir + "/state.json");
  ASSERT_TRUE(before.ok());

  SetFaults(m, "enospc vm.snapshot\n");
  auto second = TakeSnapshot(*m, vol, *volumes_, *store_, req);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(std::string(second.status().message()).find("vm.snapshot"), std::string::npos);
  SetFaults(m, "");
  EXPECT_EQ(State(m), ch::VmState::kRunning);
  auto after = ReadFile(first->dir + "/state.json");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);
  auto ids = store_->List();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"keep"});
  // No partial directory is left in the store.
  auto leftovers = store_->RecoverAtStartup();
  ASSERT_TRUE(leftovers.ok());
  EXPECT_EQ(*leftovers, 0);
}

TEST_P(MachineTest, VmmCrashDuringSnapshotLeavesEarlierSnapshot) {
  Volume vol;
  Machine* m = BootSandbox("c1", &vol);
  ASSERT_NE(m, nullptr);
  SnapshotRequest req{"crash", "base", 1, 64, false};
  ASSERT_TRUE(TakeSnapshot(*m, vol, *volumes_, *store_, req).ok());
  SetFaults(m, "crash vm.snapshot\n");
  auto r = TakeSnapshot(*m, vol, *volumes_, *store_, req);
  ASSERT_FALSE(r.ok());
  auto exists = store_->Exists("crash");
  ASSERT_TRUE(exists.ok());
  EXPECT_TRUE(*exists);
  auto exit = m->process().WaitExit(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, SIGKILL);
}

TEST_P(MachineTest, HungVmmHitsTheDeadline) {
  env_.api_timeout = std::chrono::milliseconds(300);
  Volume vol;
  Machine* m = BootSandbox("h1", &vol);
  ASSERT_NE(m, nullptr);
  SetFaults(m, "hang vm.pause\n");
  absl::Status st = m->Pause();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_NE(std::string(st.message()).find("default/h1"), std::string::npos) << st;
  // Stop still gets rid of it (escalating past the hung API).
  auto how = m->Stop();
  ASSERT_TRUE(how.ok()) << how.status();
  machines_.clear();
}

TEST_P(MachineTest, AdoptAfterTheOwnerLetGo) {
  Volume vol;
  Machine* m = BootSandbox("ad", &vol);
  ASSERT_NE(m, nullptr);
  pid_t pid = m->process().pid();
  machines_.clear();  // drops the Machine; the VMM keeps running (it must outlive sandboxlet)
  ASSERT_EQ(::kill(pid, 0), 0);
  auto adopted = Machine::Adopt(env_, "ad", "default/ad");
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ((*adopted)->process().pid(), pid);
  EXPECT_EQ(State(adopted->get()), ch::VmState::kRunning);
  machines_.push_back(std::move(*adopted));
}

TEST_P(MachineTest, IdThatEscapesIsRefused) {
  MachineSpec spec{"../evil", "default/evil", 1, 64, base_, "", std::nullopt};
  auto m = Machine::Boot(env_, spec);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(ChVersions, MachineTest, ::testing::Values(48, 52, 53),
                         [](const auto& info) { return Cat("v", info.param); });

}  // namespace
}  // namespace sandboxlet::vm
