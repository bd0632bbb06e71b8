// Tests runtime/ch/vm_config.cpp: JSON per CH version (no nulls, gated fields), validation and
// defensive parsing of CH's answers.
#include "runtime/ch/vm_config.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sandboxlet::ch {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// Every value anywhere in the document; CONTRACT §4 forbids null.
void ExpectNoNulls(const json& j, const std::string& where = "$") {
  ASSERT_FALSE(j.is_null()) << "null at " << where;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) ExpectNoNulls(*it, where + "." + it.key());
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i)
      ExpectNoNulls(j[i], where + "[" + std::to_string(i) + "]");
  }
}

VmConfig FullConfig() {
  VmConfig c;
  c.payload.kernel = "/var/lib/sandboxlet/vmlinux";
  c.payload.cmdline = "console=ttyS0 root=/dev/vda rw";
  c.cpus = {2, 4};
  c.memory.size = 1ull << 30;
  c.memory.shared = true;
  DiskConfig root;
  root.path = "/var/lib/sandboxlet/vms/x/rootfs.ext4";
  root.num_queues = 2;
  c.disks.push_back(root);
  DiskConfig data;
  data.path = "/dev/loop3";
  data.readonly = true;
  data.id = "data";
  c.disks.push_back(data);
  NetConfig net;
  net.tap = "tap0";
  net.ip = "10.0.0.1";
  net.mask = "255.255.255.252";
  net.mac = "02:00:0a:00:00:02";
  net.id = "net0";
  c.net.push_back(net);
  c.serial = {ConsoleMode::kFile, "/var/log/serial.log", std::nullopt};
  c.vsock = VsockConfig{3, "/run/x/vsock.sock", std::nullopt};
  return c;
}

TEST(VmConfigJson, NoNullsInAnyVersionAndFieldsAsCHNamesThem) {
  for (int major : {40, 48, 51, 52, 53}) {
    json j = ToJson(FullConfig(), ChVersion::Of(major));
    ExpectNoNulls(j);
    EXPECT_EQ(j["payload"]["kernel"], "/var/lib/sandboxlet/vmlinux");
    EXPECT_FALSE(j["payload"].contains("firmware"));
    EXPECT_FALSE(j["payload"].contains("initramfs"));
    EXPECT_EQ(j["cpus"], json({{"boot_vcpus", 2}, {"max_vcpus", 4}}));
    EXPECT_EQ(j["memory"]["size"], 1ull << 30);
    EXPECT_EQ(j["memory"]["shared"], true);
    EXPECT_EQ(j["memory"]["thp"], true);
    EXPECT_EQ(j["rng"]["src"], "/dev/urandom");
    EXPECT_EQ(j["serial"], json({{"mode", "File"}, {"file", "/var/log/serial.log"}}));
    EXPECT_EQ(j["console"], json({{"mode", "Off"}}));
    EXPECT_EQ(j["vsock"], json({{"cid", 3}, {"socket", "/run/x/vsock.sock"}}));
    EXPECT_FALSE(j["disks"][0].contains("id"));
    EXPECT_FALSE(j["disks"][0].contains("queue_size"));
    EXPECT_EQ(j["disks"][1]["readonly"], true);
    EXPECT_EQ(j["net"][0]["tap"], "tap0");
    EXPECT_FALSE(j["net"][0].contains("num_queues"));
  }
}

TEST(VmConfigJson, ImageTypeRawOnlyFromV51) {
  for (int major : {48, 50}) {
    json j = ToJson(FullConfig(), ChVersion::Of(major));
    EXPECT_FALSE(j["disks"][0].contains("image_type")) << "v" << major;
  }
  for (int major : {51, 52, 53}) {
    json j = ToJson(FullConfig(), ChVersion::Of(major));
    EXPECT_EQ(j["disks"][0]["image_type"], "Raw") << "v" << major;
    EXPECT_EQ(j["disks"][1]["image_type"], "Raw") << "v" << major;
  }
  DiskConfig q;
  q.path = "/x.qcow2";
  q.image_type = DiskImageType::kQcow2;
  EXPECT_EQ(ToJson(q, ChVersion::Of(53))["image_type"], "Qcow2");
}

TEST(VmConfigJson, MinimalConfigHasNoEmptyDeviceLists) {
  VmConfig c;
  c.payload.firmware = "/fw/hypervisor-fw";
  json j = ToJson(c, ChVersion::Of(53));
  ExpectNoNulls(j);
  EXPECT_FALSE(j.contains("disks"));
  EXPECT_FALSE(j.contains("net"));
  EXPECT_FALSE(j.contains("vsock"));
  EXPECT_EQ(j["serial"]["mode"], "Null");
  EXPECT_EQ(j["rng"]["src"], "/dev/urandom");
}

TEST(RestoreConfigJson, GatedFieldsDroppedOnOlderCH) {
  RestoreConfig r;
  r.source_url = "file:///snap/a";
  r.prefault = false;
  r.memory_restore_mode = MemoryRestoreMode::kOnDemand;
  r.resume = true;
  r.net_fds.push_back({"net0", {5, 6}});

  json v39 = ToJson(r, ChVersion::Of(39));
  EXPECT_EQ(v39, json({{"source_url", "file:///snap/a"}, {"prefault", false}}));
  json v48 = ToJson(r, ChVersion::Of(48));
  ExpectNoNulls(v48);
  EXPECT_FALSE(v48.contains("resume"));
  EXPECT_FALSE(v48.contains("memory_restore_mode"));
  EXPECT_EQ(v48["net_fds"], json::parse(R"([{"id":"net0","num_fds":2}])"));
  json v52 = ToJson(r, ChVersion::Of(52));
  ExpectNoNulls(v52);
  EXPECT_EQ(v52["resume"], true);
  EXPECT_EQ(v52["memory_restore_mode"], "OnDemand");

  RestoreConfig bare;
  bare.source_url = "file:///snap/b";
  EXPECT_EQ(ToJson(bare, ChVersion::Of(53)), json({{"source_url", "file:///snap/b"}}));
}

TEST(ResizeJson, OnlySetFields) {
  ResizeRequest r;
  r.desired_ram = 2ll << 30;
  EXPECT_EQ(ToJson(r), json({{"desired_ram", 2ll << 30}}));
}

void ExpectInvalid(const VmConfig& c, const std::string& field) {
  absl::Status s = ValidateVmConfig(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(std::string(s.message()), HasSubstr(field));
}

TEST(ValidateVmConfig, CatchesObviousMistakesNamingTheField) {
  EXPECT_TRUE(ValidateVmConfig(FullConfig()).ok()) << ValidateVmConfig(FullConfig());

  VmConfig c = FullConfig();
  c.payload.firmware = "/fw";
  ExpectInvalid(c, "payload");
  c = FullConfig();
  c.payload.kernel.reset();
  ExpectInvalid(c, "payload");
  c = FullConfig();
  c.net[0].mask.reset();
  ExpectInvalid(c, "net[0].mask");
  c = FullConfig();
  c.net[0].ip.reset();
  ExpectInvalid(c, "net[0].ip");
  c = FullConfig();
  c.net[0].ip = "10.0.0.300";
  ExpectInvalid(c, "net[0].ip");
  c = FullConfig();
  c.net[0].mac = "02:00:0a";
  ExpectInvalid(c, "net[0].mac");
  c = FullConfig();
  c.disks[0].num_queues = 3;  // boot_vcpus is 2
  ExpectInvalid(c, "disks[0].num_queues");
  c = FullConfig();
  c.disks[1].queue_size = 100;
  ExpectInvalid(c, "disks[1].queue_size");
  c = FullConfig();
  c.disks[1].path.clear();
  ExpectInvalid(c, "disks[1].path");
  c = FullConfig();
  c.net[0].id = "data";
  ExpectInvalid(c, "net[0].id");
  c = FullConfig();
  c.cpus = {4, 2};
  ExpectInvalid(c, "cpus.max_vcpus");
  c = FullConfig();
  c.cpus.boot_vcpus = 0;
  ExpectInvalid(c, "cpus.boot_vcpus");
  c = FullConfig();
  c.memory.size = 0;
  ExpectInvalid(c, "memory.size");
  c = FullConfig();
  c.serial = {ConsoleMode::kFile, std::nullopt, std::nullopt};
  ExpectInvalid(c, "serial.file");
  c = FullConfig();
  c.console = {ConsoleMode::kNull, "/x", std::nullopt};
  ExpectInvalid(c, "console.file");
  c = FullConfig();
  c.vsock->cid = 2;
  ExpectInvalid(c, "vsock.cid");
  c = FullConfig();
  c.vsock->socket = "relative.sock";
  ExpectInvalid(c, "vsock.socket");
}

TEST(ValidateRestoreConfig, RejectsBadUrlsAndCombinations) {
  RestoreConfig r;
  r.source_url = "/snap/a";
  EXPECT_EQ(ValidateRestoreConfig(r).code(), absl::StatusCode::kInvalidArgument);
  r.source_url = "file://relative";
  EXPECT_EQ(ValidateRestoreConfig(r).code(), absl::StatusCode::kInvalidArgument);
  r.source_url = "file:///snap/a";
  EXPECT_TRUE(ValidateRestoreConfig(r).ok());
  r.prefault = true;
  r.memory_restore_mode = MemoryRestoreMode::kOnDemand;
  EXPECT_THAT(std::string(ValidateRestoreConfig(r).message()), HasSubstr("prefault"));
  r.prefault.reset();
  r.net_fds.push_back({"net0", {}});
  EXPECT_THAT(std::string(ValidateRestoreConfig(r).message()), HasSubstr("net_fds[0]"));
}

TEST(ValidateResizeRequest, NeedsSomethingToChange) {
  EXPECT_EQ(ValidateResizeRequest({}).code(), absl::StatusCode::kInvalidArgument);
  ResizeRequest r;
  r.desired_vcpus = 0;
  EXPECT_THAT(std::string(ValidateResizeRequest(r).message()), HasSubstr("desired_vcpus"));
  r.desired_vcpus = 2;
  EXPECT_TRUE(ValidateResizeRequest(r).ok());
}

TEST(FileUrl, AbsoluteOnly) {
  EXPECT_EQ(*FileUrl("/var/lib/snap"), "file:///var/lib/snap");
  EXPECT_EQ(FileUrl("snap").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FileUrl("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseVmInfo, StatesAndDefensiveParsing) {
  absl::StatusOr<VmInfo> info = ParseVmInfo(
      R"({"config":{"cpus":{"boot_vcpus":1,"max_vcpus":1},"serial":null},"state":"Paused",)"
      R"("memory_actual_size":536870912,"device_tree":{}})");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, VmState::kPaused);
  EXPECT_EQ(info->memory_actual_size, 536870912);
  EXPECT_EQ(info->config["cpus"]["boot_vcpus"], 1);

  EXPECT_EQ(ParseVmInfo(R"({"state":"Created","config":{}})")->state, VmState::kCreated);
  EXPECT_EQ(ParseVmInfo(R"({"state":"Running","config":{}})")->state, VmState::kRunning);
  EXPECT_EQ(ParseVmInfo(R"({"state":"BreakPoint","config":{}})")->state, VmState::kBreakPoint);
  absl::StatusOr<VmInfo> odd = ParseVmInfo(R"({"state":"Shutdown"})");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->state, VmState::kUnknown);
  EXPECT_EQ(odd->state_text, "Shutdown");

  for (const char* bad : {"", "[]", "not json", R"({"config":{}})", R"({"state":3})",
                          R"({"state":"Running","config":[]})",
                          R"({"state":"Running","memory_actual_size":"big"})", "{\"state\":"}) {
    EXPECT_EQ(ParseVmInfo(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParsePingInfo, OldAndNewForms) {
  absl::StatusOr<PingInfo> p = ParsePingInfo(
      R"({"build_version":"v53.0","version":"53.0.0","pid":42,"features":["kvm","io_uring"]})");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->version, "53.0.0");
  EXPECT_EQ(p->build_version, "v53.0");
  EXPECT_EQ(p->pid, 42);
  EXPECT_THAT(p->features, ::testing::ElementsAre("kvm", "io_uring"));
  p = ParsePingInfo(R"({"version":"31.0.0"})");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->build_version);
  EXPECT_FALSE(p->pid);
  EXPECT_EQ(ParsePingInfo(R"({"pid":1})").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseDeviceInfo, NeedsIdAndBdf) {
  absl::StatusOr<DeviceInfo> d = ParseDeviceInfo(R"({"id":"_disk2","bdf":"0000:00:06.0"})");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->id, "_disk2");
  EXPECT_EQ(d->bdf, "0000:00:06.0");
  EXPECT_FALSE(ParseDeviceInfo(R"({"id":"_disk2"})").ok());
}

}  // namespace
}  // namespace sandboxlet::ch
