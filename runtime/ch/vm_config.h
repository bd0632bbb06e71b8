// Typed request and response bodies of the Cloud Hypervisor API (VmConfig for vm.create,
// RestoreConfig, ResizeRequest, VmInfo, ...) and their JSON form for a given CH version.
//
// Rules followed (CONTRACT §4, §6): optional fields are std::optional and omitted when unset —
// null is never emitted; enum values are PascalCase; fields a CH release does not know are gated
// on the detected version (CONTRACT §1.5, §7). A gated field sent to an older CH would be silently
// ignored by CH, so ToJson drops it instead, and the caller compensates where behaviour differs:
//   - DiskConfig.image_type: v51+ only (older CH auto-detects the format);
//   - RestoreConfig.memory_restore_mode: v52+ only (older CH always copies);
//   - RestoreConfig.resume: v52+ only (older CH leaves the VM Paused: call vm.resume yourself,
//     check ChVersion::RestoreResume());
//   - RestoreConfig.net_fds: v40+ only (the fds are then not sent either).
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/ch/version.h"

namespace sandboxlet::ch {

// What the guest boots: a kernel (+cmdline, +initramfs) or a firmware, never both (CONTRACT §6).
struct PayloadConfig {
  std::optional<std::string> kernel;
  std::optional<std::string> cmdline;
  std::optional<std::string> initramfs;
  std::optional<std::string> firmware;
};

// Both fields are always sent: CH requires both once the object is present (CONTRACT §6).
struct CpusConfig {
  int boot_vcpus = 1;
  int max_vcpus = 1;
};

struct MemoryConfig {
  std::uint64_t size = 512ull << 20;  // bytes
  bool shared = false;                // needed for vhost-user, virtio-fs and local migration
  bool hugepages = false;
  bool mergeable = false;
  bool prefault = false;
  bool thp = true;
};

enum class DiskImageType { kRaw, kQcow2, kVhdx, kFixedVhd };

struct DiskConfig {
  std::string path;
  bool readonly = false;
  bool direct = false;
  std::optional<int> num_queues;  // ≤ boot_vcpus
  std::optional<int> queue_size;  // power of two; CH's default 128
  std::optional<std::string> id;
  // Sent on v51+ only; Raw explicitly, because an auto-detected raw image blocks guest writes to
  // sector 0 (CONTRACT §6).
  DiskImageType image_type = DiskImageType::kRaw;
};

struct NetConfig {
  std::optional<std::string> tap;  // a pre-created tap; CH creates vmtapN if absent
  std::optional<std::string> ip;   // ip and mask go together (no default since v49)
  std::optional<std::string> mask;
  std::optional<std::string> mac;  // random if absent
  std::optional<int> num_queues;   // CH's default 2
  std::optional<int> queue_size;   // CH's default 256
  std::optional<std::string> id;
};

// Always present in the config (CONTRACT §6).
struct RngConfig {
  std::string src = "/dev/urandom";
};

enum class ConsoleMode { kOff, kNull, kTty, kPty, kFile, kSocket };

struct ConsoleConfig {
  ConsoleMode mode = ConsoleMode::kOff;
  std::optional<std::string> file;    // with mode File
  std::optional<std::string> socket;  // with mode Socket
};

struct VsockConfig {
  std::uint32_t cid = 3;  // > 2
  std::string socket;     // host-side Unix socket CH listens on
  std::optional<std::string> id;
};

struct VmConfig {
  PayloadConfig payload;
  CpusConfig cpus;
  MemoryConfig memory;
  std::vector<DiskConfig> disks;
  std::vector<NetConfig> net;
  RngConfig rng;
  // A daemon's defaults (CONTRACT §6): serial Null unless the caller captures it, console Off
  // (CH's own console default, Tty, would tie the guest to sandboxlet's terminal).
  ConsoleConfig serial{ConsoleMode::kNull};
  ConsoleConfig console{ConsoleMode::kOff};
  std::optional<VsockConfig> vsock;
};

enum class MemoryRestoreMode { kCopy, kOnDemand };

// Tap fds handed to a restored VM for the net device `id` (CONTRACT §5; v40+). The client
// passes the fds with the request (SCM_RIGHTS) and sends {"id":..,"num_fds":fds.size()}.
// The fds stay owned by the caller.
struct RestoreNetFds {
  std::string id;
  std::vector<int> fds;
};

struct RestoreConfig {
  std::string source_url;  // "file:///dir" — see FileUrl()
  std::optional<bool> prefault;
  std::optional<MemoryRestoreMode> memory_restore_mode;  // v52+; OnDemand not with prefault
  std::optional<bool> resume;                            // v52+; else the VM stays Paused
  std::vector<RestoreNetFds> net_fds;                    // v40+
};

struct ResizeRequest {
  std::optional<int> desired_vcpus;
  std::optional<std::int64_t> desired_ram;      // bytes
  std::optional<std::int64_t> desired_balloon;  // bytes
};

// CONTRACT §1.3: observable states are Created, Running, Paused and BreakPoint; anything else
// (a newer CH, the spec's never-seen "Shutdown") is Unknown, with the text kept in state_text.
enum class VmState { kCreated, kRunning, kPaused, kBreakPoint, kUnknown };

struct VmInfo {
  VmState state = VmState::kUnknown;
  std::string state_text;
  nlohmann::json config;  // as CH reports it (v52-: with nulls)
  std::optional<std::int64_t> memory_actual_size;
};

// vmm.ping (CONTRACT §3): build_version and pid from v32, features from v36.
struct PingInfo {
  std::string version;
  std::optional<std::string> build_version;
  std::optional<std::int64_t> pid;
  std::vector<std::string> features;
};

// A hot-plugged device as CH reports it after boot.
struct DeviceInfo {
  std::string id;
  std::string bdf;
};

std::string_view ConsoleModeName(ConsoleMode mode);
std::string_view DiskImageTypeName(DiskImageType type);
std::string_view MemoryRestoreModeName(MemoryRestoreMode mode);
std::string_view VmStateName(VmState state);

// "file:///abs/dir" for an absolute directory; InvalidArgument for a relative or empty one.
absl::StatusOr<std::string> FileUrl(std::string_view dir);

// Obvious mistakes caught before CH sees them; InvalidArgument naming the field, e.g.
// "net[0].mask: ip is set without mask".
absl::Status ValidateVmConfig(const VmConfig& config);
absl::Status ValidateDiskConfig(const DiskConfig& disk, std::string_view field = "disk");
absl::Status ValidateRestoreConfig(const RestoreConfig& config);
absl::Status ValidateResizeRequest(const ResizeRequest& request);

// JSON bodies for the given CH version (gated fields dropped, never null).
nlohmann::json ToJson(const VmConfig& config, const ChVersion& version);
nlohmann::json ToJson(const DiskConfig& disk, const ChVersion& version);
nlohmann::json ToJson(const RestoreConfig& config, const ChVersion& version);
nlohmann::json ToJson(const ResizeRequest& request);

// Parses response bodies defensively: wrong types or missing required fields are
// InvalidArgument naming the field; unknown fields are ignored.
absl::StatusOr<VmInfo> ParseVmInfo(std::string_view body);
absl::StatusOr<PingInfo> ParsePingInfo(std::string_view body);
absl::StatusOr<DeviceInfo> ParseDeviceInfo(std::string_view body);

}  // namespace sandboxlet::ch
