// ch-sim's snapshot files and restore (CONTRACT §5): file modes, nulls per version, sparse vs
// dense memory-ranges, and restore failing where CH's would (missing/locked disk, missing tap,
// existing vsock socket, foreign or corrupt snapshot).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRam = 64ull << 20;

// Boots a VM on `sim`, pauses it and snapshots it into `<dir>/snap`.
void BootPauseSnapshot(Sim& sim, const Json& config, const std::string& snap) {
  ASSERT_EQ(::mkdir(snap.c_str(), 0700), 0);
  ASSERT_EQ(sim.Call("PUT", "vm.create", config.dump()).code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.pause").code, 204);
  Response r = sim.Call("PUT", "vm.snapshot", Json{{"destination_url", FileUrl(snap)}}.dump());
  ASSERT_EQ(r.code, 204) << r.body;
}

std::string Restore(const std::string& snap, Json extra = Json::object()) {
  extra["source_url"] = FileUrl(snap);
  return extra.dump();
}

// Up to v52 a leftover socket makes the next VMM fail (CONTRACT §2): remove it, as the runtime
// must before spawning.
void RemoveStaleSocket(const TempDir& dir) { ::unlink((dir / "api.sock").c_str()); }

struct stat Stat(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st;
}

class ChsimSnapshot : public ::testing::TestWithParam<int> {
 protected:
  int version() const { return GetParam(); }
  SimSpec Spec() const { return SimSpec{.version = GetParam()}; }
  TempDir dir_;
};

INSTANTIATE_TEST_SUITE_P(Versions, ChsimSnapshot, ::testing::Values(48, 52, 53),
                         [](const auto& info) { return Cat("v", info.param); });

TEST_P(ChsimSnapshot, SnapshotNeedsPausedVmAndEmptyDirectory) {
  VmFiles files = MakeVmFiles(dir_);
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  ASSERT_EQ(sim.Call("PUT", "vm.create", MinimalConfig(files).dump()).code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 204);
  const std::string snap = dir_ / "snap";
  ASSERT_EQ(::mkdir(snap.c_str(), 0700), 0);
  Response running =
      sim.Call("PUT", "vm.snapshot", Json{{"destination_url", FileUrl(snap)}}.dump());
  EXPECT_EQ(running.code, 500);
  EXPECT_THAT(running.body, HasSubstr("Trying to snapshot while VM is running"));
  ASSERT_EQ(sim.Call("PUT", "vm.pause").code, 204);
  EXPECT_EQ(sim.Call("PUT", "vm.snapshot", Json{{"destination_url", "/no/scheme"}}.dump()).code,
            500);
  EXPECT_EQ(
      sim.Call("PUT", "vm.snapshot", Json{{"destination_url", FileUrl(dir_ / "missing")}}.dump())
          .code,
      500);
  EXPECT_EQ(sim.Call("PUT", "vm.snapshot", "{}").code, 400);
  ASSERT_TRUE(WriteFileAtomic(snap + "/leftover", "x").ok());
  EXPECT_EQ(sim.Call("PUT", "vm.snapshot", Json{{"destination_url", FileUrl(snap)}}.dump()).code,
            500);
  EXPECT_FALSE(PathExists(snap + "/config.json"));
}

TEST_P(ChsimSnapshot, FilesModesNullsAndMemoryLayout) {
  VmFiles files = MakeVmFiles(dir_);
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  const std::string snap = dir_ / "snap";
  BootPauseSnapshot(sim, MinimalConfig(files, kRam), snap);
  EXPECT_EQ(sim.Call("GET", "vm.info").json()["state"], "Paused");  // stays Paused

  for (const char* name : {"config.json", "state.json", "memory-ranges"}) {
    EXPECT_EQ(Stat(snap + "/" + name).st_mode & 0777, 0600u) << name;
  }
  std::string config_text = ReadFile(snap + "/config.json").value_or("");
  Json config = Json::parse(config_text, nullptr, false);
  ASSERT_FALSE(config.is_discarded());
  EXPECT_EQ(config["disks"][0]["id"], "_disk0");
  EXPECT_EQ(config_text.find("null") != std::string::npos, version() <= 52) << config_text;

  Json state = Json::parse(ReadFile(snap + "/state.json").value_or(""), nullptr, false);
  ASSERT_TRUE(state.is_object());
  EXPECT_TRUE(state["snapshots"].contains("cpu-manager"));
  EXPECT_TRUE(state["snapshots"].contains("memory-manager"));
  EXPECT_TRUE(state["snapshots"].contains("device-manager"));
  EXPECT_EQ(state["snapshot_data"]["vmm_version"], Cat(version(), ".0.0"));

  // Apparent size = guest RAM; allocated blocks: dense up to v51, sparse from v52.
  struct stat mem = Stat(snap + "/memory-ranges");
  EXPECT_EQ(static_cast<uint64_t>(mem.st_size), kRam);
  const uint64_t allocated = static_cast<uint64_t>(mem.st_blocks) * 512;
  if (version() >= 52) {
    EXPECT_GT(allocated, 0u);
    EXPECT_LT(allocated, kRam / 8);
  } else {
    EXPECT_GE(allocated, kRam);
  }
}

TEST_P(ChsimSnapshot, RestoreIsPausedAndKeepsDeviceIds) {
  VmFiles files = MakeVmFiles(dir_);
  const std::string snap = dir_ / "snap";
  {
    Sim first(dir_.path(), Spec());
    ASSERT_TRUE(first.WaitReady());
    BootPauseSnapshot(first, MinimalConfig(files, kRam), snap);
    ASSERT_EQ(first.Call("PUT", "vmm.shutdown").code, 200);
    ASSERT_EQ(first.WaitExit(), 0);
  }
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  // resume:true is a v52 field; older versions ignore it.
  Response r = sim.Call("PUT", "vm.restore", Restore(snap, {{"resume", true}}));
  ASSERT_EQ(r.code, 204) << r.body;
  Json info = sim.Call("GET", "vm.info").json();
  EXPECT_EQ(info["state"], version() >= 52 ? "Running" : "Paused");
  EXPECT_EQ(info["config"]["disks"][0]["id"], "_disk0");
  EXPECT_FALSE(LockFile(files.disk).valid());  // re-opened and re-locked
  // A second restore in the same VMM fails: a config is present.
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  ASSERT_EQ(sim.Call("PUT", "vm.shutdown").code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.delete").code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 204);
  EXPECT_EQ(sim.Call("GET", "vm.info").json()["state"], "Paused");
  EXPECT_EQ(sim.Call("PUT", "vm.resume").code, 204);
}

TEST_P(ChsimSnapshot, RestoreFailsOnMissingOrLockedDiskAndCanBeRetried) {
  VmFiles files = MakeVmFiles(dir_);
  const std::string snap = dir_ / "snap";
  {
    Sim first(dir_.path(), Spec());
    ASSERT_TRUE(first.WaitReady());
    BootPauseSnapshot(first, MinimalConfig(files, kRam), snap);
  }
  const std::string moved = files.disk + ".moved";
  ASSERT_EQ(::rename(files.disk.c_str(), moved.c_str()), 0);
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  Response missing = sim.Call("PUT", "vm.restore", Restore(snap));
  EXPECT_EQ(missing.code, 500);
  EXPECT_THAT(missing.body, HasSubstr(files.disk));
  EXPECT_EQ(sim.Call("GET", "vm.info").code, version() >= 53 ? 404 : 500);  // nothing left

  ASSERT_EQ(::rename(moved.c_str(), files.disk.c_str()), 0);
  UniqueFd lock = LockFile(files.disk);
  ASSERT_TRUE(lock.valid());
  Response locked = sim.Call("PUT", "vm.restore", Restore(snap));
  EXPECT_EQ(locked.code, 500);
  EXPECT_THAT(locked.body, HasSubstr("locked"));
  lock.Reset();
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 204);
}

TEST_P(ChsimSnapshot, RestoreRejectsForeignOrDamagedSnapshots) {
  VmFiles files = MakeVmFiles(dir_);
  const std::string snap = dir_ / "snap";
  {
    Sim first(dir_.path(), Spec());
    ASSERT_TRUE(first.WaitReady());
    BootPauseSnapshot(first, MinimalConfig(files, kRam), snap);
  }
  // Another CH version cannot read state.json.
  {
    TempDir other;
    Sim sim(other.path(), {.version = version() == 53 ? 52 : 53});
    ASSERT_TRUE(sim.WaitReady());
    Response r = sim.Call("PUT", "vm.restore", Restore(snap));
    EXPECT_EQ(r.code, 500);
    EXPECT_THAT(r.body, HasSubstr("cannot restore"));
  }
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  // Guest RAM damaged: a page differs.
  {
    int fd = ::open((snap + "/memory-ranges").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "\xde\xad\xbe\xef", 4, 0), 4);
    ::close(fd);
  }
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  // Truncated memory-ranges.
  ASSERT_EQ(::truncate((snap + "/memory-ranges").c_str(), kRam / 2), 0);
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  // Corrupt and missing state.json.
  ASSERT_TRUE(WriteFileAtomic(snap + "/state.json", "{\"snapshots\":").ok());
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  ASSERT_EQ(::unlink((snap + "/state.json").c_str()), 0);
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  // RestoreConfig itself: source_url is required.
  EXPECT_EQ(sim.Call("PUT", "vm.restore", "{}").code, 400);
  EXPECT_TRUE(sim.Running());
}

TEST_P(ChsimSnapshot, RestoreFailsWhenVsockSocketExists) {
  VmFiles files = MakeVmFiles(dir_);
  const std::string snap = dir_ / "snap";
  Json config = MinimalConfig(files, kRam);
  config["vsock"] = {{"cid", 3}, {"socket", dir_ / "vsock.sock"}};
  {
    Sim first(dir_.path(), Spec());
    ASSERT_TRUE(first.WaitReady());
    BootPauseSnapshot(first, config, snap);
  }
  ASSERT_TRUE(PathExists(dir_ / "vsock.sock"));  // left behind, as CH does
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 500);
  ASSERT_EQ(::unlink((dir_ / "vsock.sock").c_str()), 0);
  EXPECT_EQ(sim.Call("PUT", "vm.restore", Restore(snap)).code, 204);
}

TEST_P(ChsimSnapshot, NetFdCountMismatchIs400) {
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(), Spec());
  ASSERT_TRUE(sim.WaitReady());
  Response r = sim.Call("PUT", "vm.restore",
                        Restore(dir_ / "snap", {{"net_fds", {{{"id", "_net1"}, {"num_fds", 2}}}}}));
  EXPECT_EQ(r.code, 400);
}

TEST_P(ChsimSnapshot, RestoreFromCommandLine) {
  VmFiles files = MakeVmFiles(dir_);
  const std::string snap = dir_ / "snap";
  {
    Sim first(dir_.path(), Spec());
    ASSERT_TRUE(first.WaitReady());
    BootPauseSnapshot(first, MinimalConfig(files, kRam), snap);
  }
  RemoveStaleSocket(dir_);
  Sim sim(dir_.path(),
          {.version = version(), .args = {"--restore", "source_url=" + FileUrl(snap)}});
  ASSERT_TRUE(sim.WaitReady());
  EXPECT_EQ(sim.Call("GET", "vm.info").json()["state"], "Paused");
}

// Taps need root and /dev/net/tun; each test runs the simulator in its own network namespace.
class ChsimTap : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/net/tun", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/net/tun";
    }
    ns_ = std::make_unique<NetNs>();
    if (!ns_->ok()) GTEST_SKIP() << "cannot create a network namespace";
    files_ = MakeVmFiles(dir_);
  }
  Json NetConfig(const std::string& tap) {
    Json config = MinimalConfig(files_, kRam);
    config["net"] = Json::array({{{"tap", tap}}});
    return config;
  }
  std::unique_ptr<Sim> StartInNs() {
    auto sim = std::make_unique<Sim>(dir_.path(), SimSpec{.netns = ns_->name()});
    EXPECT_TRUE(sim->WaitReady());
    return sim;
  }

  TempDir dir_;
  VmFiles files_;
  std::unique_ptr<NetNs> ns_;
};

TEST_F(ChsimTap, BootCreatesAnAbsentNamedTapForTheVmLifetime) {
  auto sim = StartInNs();
  ASSERT_EQ(sim->Call("PUT", "vm.create", NetConfig("chsimtap0").dump()).code, 204);
  ASSERT_EQ(sim->Call("PUT", "vm.boot").code, 204);
  EXPECT_TRUE(ns_->HasLink("chsimtap0"));
  EXPECT_EQ(sim->Call("GET", "vm.info").json()["config"]["net"][0]["id"], "_net1");
  ASSERT_EQ(sim->Call("PUT", "vm.shutdown").code, 204);
  EXPECT_FALSE(ns_->HasLink("chsimtap0"));  // CH's own non-persistent tap goes with the VM
}

TEST_F(ChsimTap, RestoreNeedsTheTapAndTakesTheMacFromStateJson) {
  ASSERT_TRUE(ns_->Run({"tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"}));
  const std::string snap = dir_ / "snap";
  std::string mac;
  {
    auto sim = StartInNs();
    BootPauseSnapshot(*sim, NetConfig("tap0"), snap);
    mac = sim->Call("GET", "vm.info").json()["config"]["net"][0]["mac"].get<std::string>();
  }
  // Editing config.json's MAC does not change the guest's: it comes from state.json.
  Json config = Json::parse(ReadFile(snap + "/config.json").value_or(""), nullptr, false);
  config["net"][0]["mac"] = "02:00:00:00:00:01";
  ASSERT_TRUE(WriteFileAtomic(snap + "/config.json", config.dump(), 0600).ok());
  {
    auto sim = StartInNs();
    ASSERT_EQ(sim->Call("PUT", "vm.restore", Restore(snap)).code, 204);
    Json info = sim->Call("GET", "vm.info").json();
    EXPECT_EQ(info["state"], "Paused");
    EXPECT_EQ(info["config"]["net"][0]["mac"], mac);
  }
  ASSERT_TRUE(ns_->Run({"link", "delete", "tap0"}));
  auto sim = StartInNs();
  Response r = sim->Call("PUT", "vm.restore", Restore(snap));
  EXPECT_EQ(r.code, 500);
  EXPECT_THAT(r.body, HasSubstr("tap0"));
  EXPECT_FALSE(ns_->HasLink("tap0"));  // restore does not create it
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
