#include "runtime/ch/vm_config.h"

#include <arpa/inet.h>

#include <cctype>
#include <set>

#include "runtime/base/strings.h"

namespace sandboxlet::ch {
namespace {

using nlohmann::json;

absl::Status Invalid(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(Cat(field, ": ", why));
}

bool PowerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool IsMac(std::string_view s) {
  if (s.size() != 17) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i % 3 == 2) {
      if (s[i] != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

absl::Status CheckQueues(std::string_view field, const std::optional<int>& num_queues,
                         const std::optional<int>& queue_size) {
  if (num_queues && *num_queues < 1) {
    return Invalid(Cat(field, ".num_queues"), Cat("must be at least 1, got ", *num_queues));
  }
  if (queue_size && !PowerOfTwo(*queue_size)) {
    return Invalid(Cat(field, ".queue_size"),
                   Cat("must be a power of two (virtio), got ", *queue_size));
  }
  return absl::OkStatus();
}

absl::Status CheckConsole(std::string_view field, const ConsoleConfig& c) {
  if (c.mode == ConsoleMode::kFile && (!c.file || c.file->empty())) {
    return Invalid(Cat(field, ".file"), "mode File needs a file path");
  }
  if (c.mode == ConsoleMode::kSocket && (!c.socket || c.socket->empty())) {
    return Invalid(Cat(field, ".socket"), "mode Socket needs a socket path");
  }
  if (c.file && c.mode != ConsoleMode::kFile) {
    return Invalid(Cat(field, ".file"),
                   Cat("set but mode is ", ConsoleModeName(c.mode), ", not File"));
  }
  if (c.socket && c.mode != ConsoleMode::kSocket) {
    return Invalid(Cat(field, ".socket"),
                   Cat("set but mode is ", ConsoleModeName(c.mode), ", not Socket"));
  }
  return absl::OkStatus();
}

void PutIf(json& j, const char* key, const std::optional<std::string>& v) {
  if (v) j[key] = *v;
}
template <typename T>
void PutIf(json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

json ConsoleJson(const ConsoleConfig& c) {
  json j = json::object();
  j["mode"] = ConsoleModeName(c.mode);
  PutIf(j, "file", c.file);
  PutIf(j, "socket", c.socket);
  return j;
}

json NetJson(const NetConfig& n) {
  json j = json::object();
  PutIf(j, "tap", n.tap);
  PutIf(j, "ip", n.ip);
  PutIf(j, "mask", n.mask);
  PutIf(j, "mac", n.mac);
  PutIf(j, "num_queues", n.num_queues);
  PutIf(j, "queue_size", n.queue_size);
  PutIf(j, "id", n.id);
  return j;
}

absl::StatusOr<json> ParseObject(std::string_view body, std::string_view what) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(Cat(what, ": response is not JSON"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(Cat(what, ": response is not a JSON object"));
  }
  return j;
}

absl::StatusOr<std::string> RequiredString(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(Cat(what, ": field \"", key, "\" missing or not a string"));
  }
  return it->get<std::string>();
}

}  // namespace

std::string_view ConsoleModeName(ConsoleMode mode) {
  switch (mode) {
    case ConsoleMode::kOff:
      return "Off";
    case ConsoleMode::kNull:
      return "Null";
    case ConsoleMode::kTty:
      return "Tty";
    case ConsoleMode::kPty:
      return "Pty";
    case ConsoleMode::kFile:
      return "File";
    case ConsoleMode::kSocket:
      return "Socket";
  }
  return "Off";
}

std::string_view DiskImageTypeName(DiskImageType type) {
  switch (type) {
    case DiskImageType::kRaw:
      return "Raw";
    case DiskImageType::kQcow2:
      return "Qcow2";
    case DiskImageType::kVhdx:
      return "Vhdx";
    case DiskImageType::kFixedVhd:
      return "FixedVhd";
  }
  return "Raw";
}

std::string_view MemoryRestoreModeName(MemoryRestoreMode mode) {
  return mode == MemoryRestoreMode::kOnDemand ? "OnDemand" : "Copy";
}

std::string_view VmStateName(VmState state) {
  switch (state) {
    case VmState::kCreated:
      return "Created";
    case VmState::kRunning:
      return "Running";
    case VmState::kPaused:
      return "Paused";
    case VmState::kBreakPoint:
      return "BreakPoint";
    case VmState::kUnknown:
      return "Unknown";
  }
  return "Unknown";
}

absl::StatusOr<std::string> FileUrl(std::string_view dir) {
  if (dir.empty() || dir.front() != '/') {
    return absl::InvalidArgumentError(
        Cat("snapshot directory \"", dir, "\": must be an absolute path"));
  }
  if (dir.find_first_of(std::string_view("\0\n\r", 3)) != std::string_view::npos) {
    return absl::InvalidArgumentError(
        Cat("snapshot directory \"", dir, "\": contains a control character"));
  }
  return Cat("file://", dir);
}

absl::Status ValidateDiskConfig(const DiskConfig& disk, std::string_view field) {
  if (disk.path.empty()) return Invalid(Cat(field, ".path"), "empty");
  return CheckQueues(field, disk.num_queues, disk.queue_size);
}

absl::Status ValidateVmConfig(const VmConfig& c) {
  // CONTRACT §6: kernel (+cmdline, +initramfs) or firmware, not both.
  const PayloadConfig& p = c.payload;
  if (p.kernel && p.firmware) {
    return Invalid("payload", "kernel and firmware are mutually exclusive");
  }
  if (!p.kernel && !p.firmware) return Invalid("payload", "kernel or firmware is required");
  if (p.kernel && p.kernel->empty()) return Invalid("payload.kernel", "empty path");
  if (p.firmware && p.firmware->empty()) return Invalid("payload.firmware", "empty path");
  if (p.initramfs && p.initramfs->empty()) return Invalid("payload.initramfs", "empty path");

  if (c.cpus.boot_vcpus < 1) {
    return Invalid("cpus.boot_vcpus", Cat("must be at least 1, got ", c.cpus.boot_vcpus));
  }
  if (c.cpus.max_vcpus < c.cpus.boot_vcpus) {
    return Invalid("cpus.max_vcpus",
                   Cat(c.cpus.max_vcpus, " is below boot_vcpus ", c.cpus.boot_vcpus));
  }
  if (c.memory.size == 0) return Invalid("memory.size", "must be positive");

  std::set<std::string> ids;
  auto check_id = [&](const std::optional<std::string>& id,
                      const std::string& field) -> absl::Status {
    if (!id) return absl::OkStatus();
    if (id->empty()) return Invalid(field, "empty id");
    if (!ids.insert(*id).second) return Invalid(field, Cat("duplicate device id \"", *id, "\""));
    return absl::OkStatus();
  };
  for (std::size_t i = 0; i < c.disks.size(); ++i) {
    const DiskConfig& d = c.disks[i];
    std::string field = Cat("disks[", i, "]");
    if (absl::Status s = ValidateDiskConfig(d, field); !s.ok()) return s;
    // CONTRACT §6: num_queues ≤ boot_vcpus.
    if (d.num_queues && *d.num_queues > c.cpus.boot_vcpus) {
      return Invalid(Cat(field, ".num_queues"),
                     Cat(*d.num_queues, " exceeds cpus.boot_vcpus ", c.cpus.boot_vcpus));
    }
    if (absl::Status s = check_id(d.id, Cat(field, ".id")); !s.ok()) return s;
  }
  for (std::size_t i = 0; i < c.net.size(); ++i) {
    const NetConfig& n = c.net[i];
    std::string field = Cat("net[", i, "]");
    // CONTRACT §6: ip and mask together (no default since v49).
    if (n.ip && !n.mask) return Invalid(Cat(field, ".mask"), "ip is set without mask");
    if (n.mask && !n.ip) return Invalid(Cat(field, ".ip"), "mask is set without ip");
    if (n.ip && !IsIpAddress(*n.ip)) {
      return Invalid(Cat(field, ".ip"), Cat("\"", *n.ip, "\" is not an IP address"));
    }
    if (n.mask && !IsIpAddress(*n.mask)) {
      return Invalid(Cat(field, ".mask"), Cat("\"", *n.mask, "\" is not a netmask"));
    }
    if (n.mac && !IsMac(*n.mac)) {
      return Invalid(Cat(field, ".mac"), Cat("\"", *n.mac, "\" is not a MAC address"));
    }
    if (n.tap && n.tap->empty()) return Invalid(Cat(field, ".tap"), "empty name");
    if (absl::Status s = CheckQueues(field, n.num_queues, n.queue_size); !s.ok()) return s;
    if (absl::Status s = check_id(n.id, Cat(field, ".id")); !s.ok()) return s;
  }
  if (c.rng.src.empty()) return Invalid("rng.src", "empty path");
  if (absl::Status s = CheckConsole("serial", c.serial); !s.ok()) return s;
  if (absl::Status s = CheckConsole("console", c.console); !s.ok()) return s;
  if (c.vsock) {
    if (c.vsock->cid <= 2) {
      return Invalid("vsock.cid", Cat("must be greater than 2, got ", c.vsock->cid));
    }
    if (c.vsock->socket.empty() || c.vsock->socket.front() != '/') {
      return Invalid("vsock.socket", "must be an absolute path");
    }
    if (absl::Status s = check_id(c.vsock->id, "vsock.id"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateRestoreConfig(const RestoreConfig& c) {
  if (!StartsWith(c.source_url, "file:///")) {
    return Invalid("restore.source_url",
                   Cat("\"", c.source_url, "\" is not a file:// URL of an absolute directory"));
  }
  // CONTRACT §5: OnDemand (userfaultfd) does not go with prefault.
  if (c.memory_restore_mode == MemoryRestoreMode::kOnDemand && c.prefault.value_or(false)) {
    return Invalid("restore.prefault", "cannot be combined with memory_restore_mode OnDemand");
  }
  std::set<std::string> ids;
  for (std::size_t i = 0; i < c.net_fds.size(); ++i) {
    const RestoreNetFds& n = c.net_fds[i];
    std::string field = Cat("restore.net_fds[", i, "]");
    if (n.id.empty()) return Invalid(Cat(field, ".id"), "empty");
    if (!ids.insert(n.id).second)
      return Invalid(Cat(field, ".id"), Cat("duplicate \"", n.id, "\""));
    if (n.fds.empty()) return Invalid(Cat(field, ".fds"), "no fds");
    for (int fd : n.fds) {
      if (fd < 0) return Invalid(Cat(field, ".fds"), Cat("invalid fd ", fd));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateResizeRequest(const ResizeRequest& r) {
  if (!r.desired_vcpus && !r.desired_ram && !r.desired_balloon) {
    return Invalid("resize",
                   "nothing to change: set desired_vcpus, desired_ram or desired_balloon");
  }
  if (r.desired_vcpus && *r.desired_vcpus < 1) {
    return Invalid("resize.desired_vcpus", Cat("must be at least 1, got ", *r.desired_vcpus));
  }
  if (r.desired_ram && *r.desired_ram <= 0) {
    return Invalid("resize.desired_ram", Cat("must be positive, got ", *r.desired_ram));
  }
  if (r.desired_balloon && *r.desired_balloon < 0) {
    return Invalid("resize.desired_balloon", Cat("must not be negative, got ", *r.desired_balloon));
  }
  return absl::OkStatus();
}

json ToJson(const DiskConfig& d, const ChVersion& version) {
  json j = json::object();
  j["path"] = d.path;
  j["readonly"] = d.readonly;
  j["direct"] = d.direct;
  PutIf(j, "num_queues", d.num_queues);
  PutIf(j, "queue_size", d.queue_size);
  PutIf(j, "id", d.id);
  // CONTRACT §6, §7: image_type exists from v51; send Raw explicitly there.
  if (version.ImageTypeField()) j["image_type"] = DiskImageTypeName(d.image_type);
  return j;
}

json ToJson(const VmConfig& c, const ChVersion& version) {
  json j = json::object();
  json payload = json::object();
  PutIf(payload, "kernel", c.payload.kernel);
  PutIf(payload, "cmdline", c.payload.cmdline);
  PutIf(payload, "initramfs", c.payload.initramfs);
  PutIf(payload, "firmware", c.payload.firmware);
  j["payload"] = std::move(payload);
  j["cpus"] = {{"boot_vcpus", c.cpus.boot_vcpus}, {"max_vcpus", c.cpus.max_vcpus}};
  j["memory"] = {{"size", c.memory.size},           {"shared", c.memory.shared},
                 {"hugepages", c.memory.hugepages}, {"mergeable", c.memory.mergeable},
                 {"prefault", c.memory.prefault},   {"thp", c.memory.thp}};
  if (!c.disks.empty()) {
    json disks = json::array();
    for (const DiskConfig& d : c.disks) disks.push_back(ToJson(d, version));
    j["disks"] = std::move(disks);
  }
  if (!c.net.empty()) {
    json net = json::array();
    for (const NetConfig& n : c.net) net.push_back(NetJson(n));
    j["net"] = std::move(net);
  }
  j["rng"] = {{"src", c.rng.src}};
  j["serial"] = ConsoleJson(c.serial);
  j["console"] = ConsoleJson(c.console);
  if (c.vsock) {
    json v = {{"cid", c.vsock->cid}, {"socket", c.vsock->socket}};
    PutIf(v, "id", c.vsock->id);
    j["vsock"] = std::move(v);
  }
  return j;
}

json ToJson(const RestoreConfig& c, const ChVersion& version) {
  json j = json::object();
  j["source_url"] = c.source_url;
  PutIf(j, "prefault", c.prefault);
  // CONTRACT §5, §7: memory_restore_mode and resume from v52, net_fds from v40.
  if (c.memory_restore_mode && version.MemoryRestoreMode()) {
    j["memory_restore_mode"] = MemoryRestoreModeName(*c.memory_restore_mode);
  }
  if (c.resume && version.RestoreResume()) j["resume"] = *c.resume;
  if (!c.net_fds.empty() && version.RestoreNetFds()) {
    json fds = json::array();
    for (const RestoreNetFds& n : c.net_fds) {
      fds.push_back({{"id", n.id}, {"num_fds", n.fds.size()}});
    }
    j["net_fds"] = std::move(fds);
  }
  return j;
}

json ToJson(const ResizeRequest& r) {
  json j = json::object();
  PutIf(j, "desired_vcpus", r.desired_vcpus);
  PutIf(j, "desired_ram", r.desired_ram);
  PutIf(j, "desired_balloon", r.desired_balloon);
  return j;
}

absl::StatusOr<VmInfo> ParseVmInfo(std::string_view body) {
  absl::StatusOr<json> j = ParseObject(body, "vm.info");
  if (!j.ok()) return j.status();
  absl::StatusOr<std::string> state = RequiredString(*j, "state", "vm.info");
  if (!state.ok()) return state.status();
  VmInfo info;
  info.state_text = *state;
  if (*state == "Created") {
    info.state = VmState::kCreated;
  } else if (*state == "Running") {
    info.state = VmState::kRunning;
  } else if (*state == "Paused") {
    info.state = VmState::kPaused;
  } else if (*state == "BreakPoint") {
    info.state = VmState::kBreakPoint;
  } else {
    info.state = VmState::kUnknown;
  }
  if (auto it = j->find("config"); it != j->end()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError("vm.info: field \"config\" is not an object");
    }
    info.config = *it;
  } else {
    info.config = json::object();
  }
  if (auto it = j->find("memory_actual_size"); it != j->end() && !it->is_null()) {
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError("vm.info: field \"memory_actual_size\" is not an integer");
    }
    info.memory_actual_size = it->get<std::int64_t>();
  }
  return info;
}

absl::StatusOr<PingInfo> ParsePingInfo(std::string_view body) {
  absl::StatusOr<json> j = ParseObject(body, "vmm.ping");
  if (!j.ok()) return j.status();
  PingInfo info;
  absl::StatusOr<std::string> version = RequiredString(*j, "version", "vmm.ping");
  if (!version.ok()) return version.status();
  info.version = *version;
  if (auto it = j->find("build_version"); it != j->end() && it->is_string()) {
    info.build_version = it->get<std::string>();
  }
  if (auto it = j->find("pid"); it != j->end() && it->is_number_integer()) {
    info.pid = it->get<std::int64_t>();
  }
  if (auto it = j->find("features"); it != j->end() && it->is_array()) {
    for (const json& f : *it) {
      if (f.is_string()) info.features.push_back(f.get<std::string>());
    }
  }
  return info;
}

absl::StatusOr<DeviceInfo> ParseDeviceInfo(std::string_view body) {
  absl::StatusOr<json> j = ParseObject(body, "device");
  if (!j.ok()) return j.status();
  DeviceInfo info;
  absl::StatusOr<std::string> id = RequiredString(*j, "id", "device");
  if (!id.ok()) return id.status();
  absl::StatusOr<std::string> bdf = RequiredString(*j, "bdf", "device");
  if (!bdf.ok()) return bdf.status();
  info.id = *id;
  info.bdf = *bdf;
  return info;
}

}  // namespace sandboxlet::ch
