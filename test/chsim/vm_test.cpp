// ch-sim's VM state machine and endpoints, with the per-version codes of CONTRACT §1, §3, §7.
#include <signal.h>

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ChsimVm : public ::testing::TestWithParam<int> {
 protected:
  void Start(std::vector<std::string> args = {}) {
    files_ = MakeVmFiles(dir_);
    sim_ = std::make_unique<Sim>(dir_.path(), SimSpec{.version = GetParam(), .args = args});
    ASSERT_TRUE(sim_->WaitReady());
  }
  int version() const { return GetParam(); }
  Response Put(std::string_view endpoint, std::optional<std::string> body = std::nullopt) {
    return sim_->Call("PUT", endpoint, body);
  }
  std::string State() { return sim_->Call("GET", "vm.info").json()["state"].get<std::string>(); }

  TempDir dir_;
  VmFiles files_;
  std::unique_ptr<Sim> sim_;
};

INSTANTIATE_TEST_SUITE_P(Versions, ChsimVm, ::testing::Values(48, 52, 53),
                         [](const auto& info) { return Cat("v", info.param); });

TEST_P(ChsimVm, MissingVmIs404OnV53And500Before) {
  Start();
  const int not_created = version() >= 53 ? 404 : 500;
  for (auto [method, endpoint] : std::vector<std::pair<const char*, const char*>>{
           {"PUT", "vm.boot"}, {"GET", "vm.info"}, {"PUT", "vm.reboot"}}) {
    Response r = sim_->Call(method, endpoint);
    EXPECT_EQ(r.code, not_created) << endpoint;
    Json body = r.json();
    ASSERT_TRUE(body.is_array()) << r.body;
    EXPECT_EQ(body[0], "Error from API");
    EXPECT_THAT(r.head, HasSubstr("Content-Type: application/json"));
  }
  // Errors that are not "VM not created" stay 500 on every version.
  EXPECT_EQ(Put("vm.pause").code, 500);
  EXPECT_EQ(Put("vm.shutdown").code, 500);
  EXPECT_EQ(Put("vm.power-button").code, 500);
  EXPECT_EQ(sim_->Call("GET", "vm.counters").code, 500);
  EXPECT_EQ(Put("vm.delete").code, 204);  // idempotent
}

TEST_P(ChsimVm, LifecycleStatesAndWrongStateErrors) {
  Start();
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  EXPECT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 500);  // config exists
  EXPECT_EQ(State(), "Created");
  EXPECT_EQ(Put("vm.pause").code, 500);
  ASSERT_EQ(Put("vm.boot").code, 204);
  EXPECT_EQ(State(), "Running");
  EXPECT_EQ(Put("vm.resume").code, 500);
  ASSERT_EQ(Put("vm.pause").code, 204);
  EXPECT_EQ(State(), "Paused");
  EXPECT_EQ(Put("vm.pause").code, 500);
  ASSERT_EQ(Put("vm.resume").code, 204);
  EXPECT_EQ(Put("vm.reboot").code, 204);
  EXPECT_EQ(State(), "Running");
  // vm.shutdown destroys the VM object: Created, never Shutdown.
  ASSERT_EQ(Put("vm.shutdown").code, 204);
  EXPECT_EQ(State(), "Created");
  EXPECT_EQ(Put("vm.shutdown").code, 500);
  ASSERT_EQ(Put("vm.boot").code, 204);
  ASSERT_EQ(Put("vm.delete").code, 204);
  EXPECT_EQ(sim_->Call("GET", "vm.info").code, version() >= 53 ? 404 : 500);
  EXPECT_TRUE(LockFile(files_.disk).valid());  // the deleted VM let go of its disk
}

TEST_P(ChsimVm, BootOfPausedVmResumesItUpToV52Only) {
  Start();
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  ASSERT_EQ(Put("vm.boot").code, 204);
  ASSERT_EQ(Put("vm.pause").code, 204);
  if (version() >= 53) {
    EXPECT_EQ(Put("vm.boot").code, 500);
    EXPECT_EQ(State(), "Paused");
  } else {
    EXPECT_EQ(Put("vm.boot").code, 204);
    EXPECT_EQ(State(), "Running");
  }
  EXPECT_EQ(Put("vm.boot").code, 500);  // already running
}

TEST_P(ChsimVm, CreateValidatesLikeSerde) {
  Start();
  Json config = MinimalConfig(files_);
  EXPECT_EQ(Put("vm.create", "{not json").code, 400);
  Json no_size = config;
  no_size["memory"] = Json::object();
  Response r = Put("vm.create", no_size.dump());
  EXPECT_EQ(r.code, 400);
  EXPECT_THAT(r.body, HasSubstr("missing field `size`"));
  Json half_cpus = config;
  half_cpus["cpus"] = {{"boot_vcpus", 1}};
  EXPECT_EQ(Put("vm.create", half_cpus.dump()).code, 400);
  Json lower_case = config;
  lower_case["console"]["mode"] = "off";  // enums are case-sensitive
  EXPECT_EQ(Put("vm.create", lower_case.dump()).code, 400);
  Json no_mode = config;
  no_mode["serial"] = Json::object();
  EXPECT_EQ(Put("vm.create", no_mode.dump()).code, 400);
  Json negative = config;
  negative["memory"]["size"] = -1;
  EXPECT_EQ(Put("vm.create", negative.dump()).code, 400);
  // Unknown fields are silently ignored.
  Json unknown = config;
  unknown["future_field"] = {{"x", 1}};
  ASSERT_EQ(Put("vm.create", unknown.dump()).code, 204);
  EXPECT_FALSE(sim_->Call("GET", "vm.info").json()["config"].contains("future_field"));
}

TEST_P(ChsimVm, InfoFillsDefaultsAndAssignsIdsAtBoot) {
  Start();
  Json config = MinimalConfig(files_);
  VmFiles second = MakeVmFiles(dir_, "data.img");
  config["disks"].push_back({{"path", second.disk}, {"readonly", true}});
  ASSERT_EQ(Put("vm.create", config.dump()).code, 204);
  Json before = sim_->Call("GET", "vm.info").json();
  EXPECT_FALSE(before["config"]["disks"][0].contains("id") &&
               !before["config"]["disks"][0]["id"].is_null());
  ASSERT_EQ(Put("vm.boot").code, 204);
  Json info = sim_->Call("GET", "vm.info").json();
  const Json& c = info["config"];
  EXPECT_EQ(c["disks"][0]["id"], "_disk0");
  EXPECT_EQ(c["disks"][1]["id"], "_disk1");
  EXPECT_EQ(c["disks"][0]["queue_size"], 128);
  EXPECT_EQ(c["rng"]["src"], "/dev/urandom");
  EXPECT_EQ(c["serial"]["mode"], "Null");
  EXPECT_EQ(c["memory"]["thp"], true);
  EXPECT_EQ(info["memory_actual_size"], 16 << 20);
  EXPECT_TRUE(info["device_tree"].contains("_disk0"));
  // v52-: unset optionals are null; v53: omitted. image_type is detected from v51.
  EXPECT_EQ(c["payload"].contains("initramfs"), version() <= 52);
  if (version() <= 52) {
    EXPECT_TRUE(c["payload"]["initramfs"].is_null());
  }
  EXPECT_EQ(c["disks"][0].contains("image_type"), version() >= 52);
  if (version() >= 52) {
    EXPECT_EQ(c["disks"][0]["image_type"], "Raw");
  }
  // The booted VM holds a write lock on its writable disk.
  EXPECT_FALSE(LockFile(files_.disk).valid());
}

TEST_P(ChsimVm, BootFailuresLeaveTheConfigCreated) {
  Start();
  Json config = MinimalConfig(files_);
  config["payload"]["kernel"] = dir_ / "no-such-kernel";
  ASSERT_EQ(Put("vm.create", config.dump()).code, 204);
  Response r = Put("vm.boot");
  EXPECT_EQ(r.code, 500);
  EXPECT_THAT(r.body, HasSubstr("No such file or directory (os error 2)"));
  EXPECT_EQ(State(), "Created");
  ASSERT_EQ(Put("vm.delete").code, 204);

  // A disk locked elsewhere cannot be opened for writing (LockingError).
  UniqueFd lock = LockFile(files_.disk);
  ASSERT_TRUE(lock.valid());
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  r = Put("vm.boot");
  EXPECT_EQ(r.code, 500);
  EXPECT_THAT(r.body, HasSubstr("locked"));
  lock.Reset();
  EXPECT_EQ(Put("vm.boot").code, 204);
}

TEST_P(ChsimVm, HotplugDiskAndRemoveDevice) {
  Start();
  VmFiles extra = MakeVmFiles(dir_, "extra.img");
  const std::string disk = Json{{"path", extra.disk}}.dump();
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  EXPECT_EQ(Put("vm.add-disk", disk).code, 204);  // before boot: config only
  ASSERT_EQ(Put("vm.boot").code, 204);
  VmFiles hot = MakeVmFiles(dir_, "hot.img");
  Response added = Put("vm.add-disk", Json{{"path", hot.disk}}.dump());
  ASSERT_EQ(added.code, 200);
  EXPECT_EQ(added.json()["id"], "_disk2");
  EXPECT_THAT(added.json()["bdf"].get<std::string>(),
              ::testing::MatchesRegex("0000:00:[0-9a-f]{2}\\.0"));
  EXPECT_FALSE(LockFile(hot.disk).valid());
  EXPECT_EQ(Put("vm.remove-device", R"({"id":"_disk2"})").code, 204);
  EXPECT_TRUE(LockFile(hot.disk).valid());
  EXPECT_EQ(Put("vm.remove-device", R"({"id":"_disk9"})").code, 500);
  EXPECT_EQ(Put("vm.remove-device").code, 400);
  EXPECT_EQ(sim_->Call("GET", "vm.info").json()["config"]["disks"].size(), 2u);
}

TEST_P(ChsimVm, CountersOnlyForABootedVm) {
  Start();
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  EXPECT_EQ(sim_->Call("GET", "vm.counters").code, 500);
  ASSERT_EQ(Put("vm.boot").code, 204);
  Response r = sim_->Call("GET", "vm.counters");
  ASSERT_EQ(r.code, 200);
  EXPECT_TRUE(r.json()["_disk0"]["read_bytes"].is_number_unsigned());
}

TEST_P(ChsimVm, ResizeWithinLimits) {
  Start();
  Json config = MinimalConfig(files_);
  config["memory"]["hotplug_size"] = 16 << 20;
  ASSERT_EQ(Put("vm.create", config.dump()).code, 204);
  ASSERT_EQ(Put("vm.boot").code, 204);
  EXPECT_EQ(Put("vm.resize", R"({"desired_vcpus":3})").code, 500);  // max_vcpus is 2
  EXPECT_EQ(Put("vm.resize", Cat(R"({"desired_vcpus":2,"desired_ram":)", 32 << 20, "}")).code, 204);
  Json info = sim_->Call("GET", "vm.info").json();
  EXPECT_EQ(info["config"]["cpus"]["boot_vcpus"], 2);
  EXPECT_EQ(info["memory_actual_size"], 32 << 20);
  EXPECT_EQ(Put("vm.resize", Cat(R"({"desired_ram":)", 64 << 20, "}")).code, 500);
}

TEST_P(ChsimVm, SerialFileGetsBootLines) {
  Start();
  Json config = MinimalConfig(files_);
  config["serial"] = {{"mode", "File"}, {"file", dir_ / "serial.log"}};
  config["payload"]["cmdline"] = "console=ttyS0 marker=42";
  ASSERT_EQ(Put("vm.create", config.dump()).code, 204);
  ASSERT_EQ(Put("vm.boot").code, 204);
  EXPECT_THAT(ReadFile(dir_ / "serial.log").value_or(""), HasSubstr("marker=42"));
}

TEST_P(ChsimVm, PowerButtonEndsTheVmm) {
  Start();
  ASSERT_EQ(Put("vm.create", MinimalConfig(files_).dump()).code, 204);
  ASSERT_EQ(Put("vm.boot").code, 204);
  EXPECT_EQ(Put("vm.power-button").code, 204);
  EXPECT_EQ(sim_->WaitExit(), 0);
}

TEST(ChsimVmNoShutdown, PowerButtonKeepsVmmWithNoShutdown) {
  TempDir dir;
  VmFiles files = MakeVmFiles(dir);
  Sim sim(dir.path(), {.version = 52, .args = {"--no-shutdown"}});
  ASSERT_TRUE(sim.WaitReady());
  ASSERT_EQ(sim.Call("PUT", "vm.create", MinimalConfig(files).dump()).code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 204);
  EXPECT_EQ(sim.Call("PUT", "vm.power-button").code, 204);
  EXPECT_EQ(sim.Call("GET", "vm.info").json()["state"], "Created");
  EXPECT_TRUE(sim.Running());
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
