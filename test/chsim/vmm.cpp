#include "test/chsim/vmm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"
#include "test/chsim/chain.h"
#include "test/chsim/vm_config.h"

namespace sandboxlet::chsim {
namespace {

constexpr char kApiPrefix[] = "/api/v1/";

ApiResponse NoContent() { return ApiResponse{204, "", false}; }
ApiResponse JsonOk(const Json& j) { return ApiResponse{200, j.dump(), false}; }
ApiResponse ErrorBody(int code, std::vector<std::string> chain) {
  return ApiResponse{code, Json(chain).dump(), false};
}

// serde errors in the HTTP layer: 400, chain without "Error from API". An empty message means
// "no body" and gives an empty 400 (CONTRACT §3, vm.create).
absl::Status Deserialize(const absl::Status& st) {
  return absl::InvalidArgumentError(Cat("Could not deserialize JSON\n", st.message()));
}

absl::StatusOr<Json> ParseBody(const HttpRequest& req) {
  if (!req.has_body) return absl::InvalidArgumentError("");
  Json j = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("Could not deserialize JSON\ninvalid JSON syntax");
  }
  return j;
}

// A required string field of a small request body ({"destination_url":..}, {"id":..}).
absl::StatusOr<std::string> StringField(const Json& body, const char* name) {
  if (!body.is_object())
    return Deserialize(absl::InvalidArgumentError("invalid type, expected struct"));
  auto it = body.find(name);
  if (it == body.end())
    return Deserialize(absl::InvalidArgumentError(Cat("missing field `", name, "`")));
  if (!it->is_string()) {
    return Deserialize(absl::InvalidArgumentError(Cat(name, ": invalid type, expected a string")));
  }
  return it->get<std::string>();
}

std::string Str(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t Uint(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

absl::Status CheckReadable(const std::string& path, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return OsChain(errno, {Cat("Cannot open ", what, " \"", path, "\"")});
  return absl::OkStatus();
}

void ForEachDeviceConfig(Json& config, const std::function<void(Json&)>& fn) {
  for (const char* list : {"disks", "net"}) {
    if (config[list].is_array()) {
      for (Json& d : config[list]) fn(d);
    }
  }
  if (config["vsock"].is_object()) fn(config["vsock"]);
}

}  // namespace

Vmm::Vmm(ChVersion version, bool no_shutdown, EventMonitor* events, Logger* log)
    : version_(version), no_shutdown_(no_shutdown), events_(events), log_(log) {}

Vmm::~Vmm() = default;

ApiResponse Vmm::Handle(HttpRequest& req, bool inject_enospc) {
  struct Route {
    const char* name;
    const char* method;
    bool takes_body;
    Endpoint fn;
  };
  static const Route kRoutes[] = {
      {"vmm.ping", "GET", false, &Vmm::Ping},
      {"vmm.shutdown", "PUT", false, &Vmm::VmmShutdown},
      {"vm.create", "PUT", true, &Vmm::Create},
      {"vm.boot", "PUT", false, &Vmm::Boot},
      {"vm.pause", "PUT", false, &Vmm::Pause},
      {"vm.resume", "PUT", false, &Vmm::Resume},
      {"vm.shutdown", "PUT", false, &Vmm::Shutdown},
      {"vm.reboot", "PUT", false, &Vmm::Reboot},
      {"vm.power-button", "PUT", false, &Vmm::PowerButton},
      {"vm.delete", "PUT", false, &Vmm::Delete},
      {"vm.nmi", "PUT", false, &Vmm::Nmi},
      {"vm.info", "GET", false, &Vmm::Info},
      {"vm.counters", "GET", false, &Vmm::Counters},
      {"vm.snapshot", "PUT", true, &Vmm::Snapshot},
      {"vm.restore", "PUT", true, &Vmm::Restore},
      {"vm.add-disk", "PUT", true, &Vmm::AddDisk},
      {"vm.add-net", "PUT", true, &Vmm::AddNet},
      {"vm.remove-device", "PUT", true, &Vmm::RemoveDevice},
      {"vm.resize", "PUT", true, &Vmm::Resize},
      // Real endpoints the simulator does not model: a clear 500 rather than a fake success.
      {"vm.add-fs", "PUT", true, &Vmm::NotSimulated},
      {"vm.add-pmem", "PUT", true, &Vmm::NotSimulated},
      {"vm.add-vsock", "PUT", true, &Vmm::NotSimulated},
      {"vm.add-device", "PUT", true, &Vmm::NotSimulated},
      {"vm.add-vdpa", "PUT", true, &Vmm::NotSimulated},
      {"vm.add-user-device", "PUT", true, &Vmm::NotSimulated},
      {"vm.resize-zone", "PUT", true, &Vmm::NotSimulated},
      {"vm.resize-disk", "PUT", true, &Vmm::NotSimulated},
      {"vm.coredump", "PUT", true, &Vmm::NotSimulated},
      {"vm.send-migration", "PUT", true, &Vmm::NotSimulated},
      {"vm.receive-migration", "PUT", true, &Vmm::NotSimulated},
  };
  const Route* route = nullptr;
  if (StartsWith(req.target, kApiPrefix)) {
    std::string name = req.target.substr(sizeof(kApiPrefix) - 1);
    for (const Route& r : kRoutes) {
      if (name == r.name) route = &r;
    }
  }
  if (route == nullptr) return ErrorBody(404, {"Not Found"});
  if (req.method != route->method) return ErrorBody(400, {"Bad Request"});
  if (!route->takes_body && req.has_body) return ApiResponse{400, "", false};

  log_->Info(Cat("API request event: ", route->name));
  inject_enospc_ = inject_enospc;
  absl::StatusOr<ApiResponse> result = (this->*route->fn)(req);
  inject_enospc_ = false;
  if (result.ok()) return *std::move(result);

  const absl::Status& st = result.status();
  log_->Warn(Cat(route->name, " failed: ", Join(ChainOf(st), ": ")));
  if (st.code() == absl::StatusCode::kInvalidArgument) {
    if (st.message().empty()) return ApiResponse{400, "", false};
    return ErrorBody(400, ChainOf(st));
  }
  std::vector<std::string> chain = {"Error from API"};
  for (std::string& link : ChainOf(st)) chain.push_back(std::move(link));
  // v53 answers 404 when the root cause is a missing VM config (CONTRACT §1.2).
  int code = st.code() == absl::StatusCode::kFailedPrecondition && version_.AtLeast(53) ? 404 : 500;
  return ErrorBody(code, std::move(chain));
}

absl::StatusOr<ApiResponse> Vmm::Ping(HttpRequest&) {
  Json j;
  j["build_version"] = version_.BuildVersion();
  j["version"] = version_.CrateVersion();
  j["pid"] = static_cast<int64_t>(::getpid());
  j["features"] = Json::array({"kvm"});
  return JsonOk(j);
}

absl::StatusOr<ApiResponse> Vmm::VmmShutdown(HttpRequest&) {
  if (vm_) DestroyVm("shutdown");
  return ApiResponse{200, "", true};  // CONTRACT §1.1: 200 with an empty body
}

absl::StatusOr<ApiResponse> Vmm::Create(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  absl::StatusOr<Json> config = NormalizeVmConfig(body, version_);
  if (!config.ok()) return Deserialize(config.status());
  if (config_) return ChainError({"The VM could not be created", "VM is already created"});
  config_ = *std::move(config);
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Boot(HttpRequest&) {
  if (!config_) return NotCreated("The VM could not boot");
  if (vm_) {
    if (vm_->paused && !version_.AtLeast(53)) {  // v52-: booting a Paused VM resumes it
      SetPaused(false);
      return NoContent();
    }
    return ChainError({"The VM could not boot", "VM is already booted"});
  }
  events_->Emit("vm", "booting");
  Json config = *config_;
  absl::StatusOr<std::unique_ptr<Vm>> vm = BuildVm(config, BuildOptions());
  if (!vm.ok()) return Wrap(vm.status(), "The VM could not boot");
  config_ = std::move(config);
  vm_ = *std::move(vm);
  vm_->running_since = std::chrono::steady_clock::now();
  BootMessages();
  if (agent_) agent_->Forget();  // a fresh guest
  SyncGuestAgent();
  events_->Emit("vm", "booted");
  for (const Device& d : vm_->devices) events_->Emit("virtio-device", "activated", {{"id", d.id}});
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Pause(HttpRequest&) {
  if (!vm_) return ChainError({"The VM could not be paused", "VM is not running"});
  if (vm_->paused) {
    return ChainError(
        {"The VM could not be paused", "Invalid state transition from Paused to Paused"});
  }
  SetPaused(true);
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Resume(HttpRequest&) {
  if (!vm_) return ChainError({"The VM could not be resumed", "VM is not running"});
  if (!vm_->paused) {
    return ChainError(
        {"The VM could not be resumed", "Invalid state transition from Running to Running"});
  }
  SetPaused(false);
  if (vm_->power_off_pending) {  // the guest sees the power button press now
    PowerOff();
    return ApiResponse{204, "", !no_shutdown_};
  }
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Shutdown(HttpRequest&) {
  if (!vm_) return ChainError({"The VM could not shut down", "VM is not running"});
  DestroyVm("shutdown");
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Reboot(HttpRequest&) {
  if (!vm_) return NotCreated("The VM could not reboot");
  events_->Emit("vm", "rebooting");
  if (vm_->paused) SetPaused(false);
  BootMessages();
  if (agent_) {  // the guest's agent starts over
    agent_->Stop();
    agent_->Forget();
    SyncGuestAgent();
  }
  events_->Emit("vm", "rebooted");
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::PowerButton(HttpRequest&) {
  if (!vm_) return ChainError({"Error triggering power button", "VM is not running"});
  if (vm_->paused) {  // a paused guest reacts once resumed
    vm_->power_off_pending = true;
    return NoContent();
  }
  PowerOff();
  return ApiResponse{204, "", !no_shutdown_};
}

absl::StatusOr<ApiResponse> Vmm::Delete(HttpRequest&) {
  if (vm_) DestroyVm("shutdown");
  if (config_) {
    config_.reset();
    events_->Emit("vm", "deleted");
  }
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Nmi(HttpRequest&) {
  if (!vm_) return ChainError({"Error triggering NMI", "VM is not running"});
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Info(HttpRequest&) {
  if (!config_) return NotCreated("The VM information could not be retrieved");
  Json info;
  info["config"] = SerializeVmConfig(*config_, version_);
  info["state"] = !vm_ ? "Created" : vm_->paused ? "Paused" : "Running";
  uint64_t balloon = (*config_)["balloon"].is_object() ? Uint((*config_)["balloon"], "size") : 0;
  info["memory_actual_size"] = MemorySize() - std::min(balloon, MemorySize());
  info["device_tree"] = DeviceTree();
  return JsonOk(info);
}

absl::StatusOr<ApiResponse> Vmm::Counters(HttpRequest&) {
  if (!vm_) return ChainError({"The VM counters could not be retrieved", "VM is not running"});
  auto ran = vm_->ran;
  if (!vm_->paused) {
    ran += std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 vm_->running_since);
  }
  const uint64_t ticks = static_cast<uint64_t>(ran.count()) + 1;
  Json counters = Json::object();
  for (const Device& d : vm_->devices) {
    if (d.type == "disk") {
      counters[d.id] = {{"read_bytes", ticks * 4096},
                        {"read_ops", ticks},
                        {"write_bytes", ticks / 2 * 4096},
                        {"write_ops", ticks / 2}};
    } else if (d.type == "net") {
      counters[d.id] = {{"rx_bytes", ticks * 1500},
                        {"rx_frames", ticks},
                        {"tx_bytes", ticks * 900},
                        {"tx_frames", ticks}};
    }
  }
  return JsonOk(counters);
}

absl::StatusOr<ApiResponse> Vmm::Snapshot(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  SBL_ASSIGN_OR_RETURN(std::string url, StringField(body, "destination_url"));
  const std::string what = "The VM could not be snapshotted";
  if (!vm_) return ChainError({what, "VM is not running"});
  if (!vm_->paused) {
    return ChainError(
        {what, "Error snapshotting the VM", "Trying to snapshot while VM is running"});
  }
  absl::StatusOr<std::string> dir = DirFromUrl(url);
  if (!dir.ok()) return Wrap(dir.status(), what);
  events_->Emit("vm", "snapshotting");

  Json devices = Json::array();
  for (const Device& d : vm_->devices) {
    Json dev = {{"id", d.id}, {"type", d.type}, {"pci_bdf", d.bdf}};
    if (d.type == "net") {
      for (const Json& net : (*config_)["net"]) {
        if (Str(net, "id") == d.id) dev["mac"] = net["mac"];
      }
    }
    devices.push_back(dev);
  }
  Json vcpus = Json::array();
  for (uint64_t i = 0; i < Uint((*config_)["cpus"], "boot_vcpus"); ++i) {
    vcpus.push_back({{"id", i}, {"state", "paused"}});
  }
  SnapshotWrite w;
  w.dir = *dir;
  w.config = SerializeVmConfig(*config_, version_);
  w.state["snapshots"] = {
      {"cpu-manager", {{"vcpus", vcpus}}},
      {"memory-manager", vm_->memory.ToJson()},
      {"device-manager", {{"device_id_cnt", device_counter_}, {"devices", devices}}}};
  // The agent's memory is guest memory: it travels with the snapshot.
  if (agent_) w.state["snapshots"]["guest-agent"] = agent_->State();
  w.state["snapshot_data"] = {{"vmm_version", version_.CrateVersion()},
                              {"build_version", version_.BuildVersion()}};
  w.memory = vm_->memory;
  w.sparse = version_.AtLeast(52);  // CONTRACT §5: v52+ leaves holes, v51- writes densely
  w.inject_enospc = inject_enospc_;
  absl::Status st = WriteSnapshot(w);
  if (!st.ok()) return Wrap(Wrap(st, "Error sending the VM snapshot"), what);
  events_->Emit("vm", "snapshotted");
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Restore(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  absl::StatusOr<Json> cfg = NormalizeRestoreConfig(body, version_);
  if (!cfg.ok()) return Deserialize(cfg.status());
  SBL_RETURN_IF_ERROR(DoRestore(*cfg, std::move(req.fds)));
  return NoContent();
}

absl::Status Vmm::RestoreFromCommandLine(const RestoreSpec& spec) {
  Json cfg = {{"source_url", spec.source_url}, {"prefault", spec.prefault}};
  if (version_.AtLeast(52)) {
    cfg["memory_restore_mode"] = spec.memory_restore_mode;
    cfg["resume"] = spec.resume;
  }
  std::vector<UniqueFd> fds;
  if (!spec.net_fds.empty()) {
    cfg["net_fds"] = Json::array();
    for (const NetFds& nf : spec.net_fds) {
      cfg["net_fds"].push_back({{"id", nf.id}, {"num_fds", nf.fds.size()}});
      for (int fd : nf.fds) {
        UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (!dup.valid())
          return OsChain(errno, {"Error parsing --restore", Cat("net_fds fd ", fd)});
        fds.push_back(std::move(dup));
      }
    }
  }
  return DoRestore(cfg, std::move(fds));
}

absl::Status Vmm::DoRestore(const Json& rc, std::vector<UniqueFd> fds) {
  const std::string what = "The VM could not be restored";
  uint64_t expected_fds = 0;
  if (rc["net_fds"].is_array()) {
    for (const Json& nf : rc["net_fds"]) expected_fds += Uint(nf, "num_fds");
  }
  if (expected_fds != fds.size()) {  // checked by the HTTP layer: 400 (CONTRACT §3)
    return absl::InvalidArgumentError(
        Cat("Number of FDs passed does not match the RestoreConfig\nexpected ", expected_fds,
            ", received ", fds.size()));
  }
  if (config_) return ChainError({what, "VM is already created"});
  const bool on_demand = Str(rc, "memory_restore_mode") == "OnDemand";
  if (on_demand && rc["prefault"] == true) {
    return ChainError({what, "prefault cannot be combined with memory_restore_mode OnDemand"});
  }
  absl::StatusOr<std::string> dir = DirFromUrl(Str(rc, "source_url"));
  if (!dir.ok()) return Wrap(dir.status(), what);
  events_->Emit("vm", "restoring");
  absl::StatusOr<SnapshotRead> snap = ReadSnapshot(*dir, version_);
  if (!snap.ok()) return Wrap(snap.status(), what);
  absl::StatusOr<Json> config = NormalizeVmConfig(snap->config, version_);
  if (!config.ok()) {
    return ChainError(
        {what, Cat("Invalid \"", *dir, "/config.json\""), std::string(config.status().message())});
  }
  BuildOptions options;
  options.restoring = true;
  options.memory = snap->memory;
  const Json& dm = snap->state["snapshots"].contains("device-manager")
                       ? snap->state["snapshots"]["device-manager"]
                       : Json();
  if (dm.is_object() && dm["devices"].is_array()) {
    for (const Json& d : dm["devices"]) {
      if (d.contains("mac") && d["mac"].is_string()) options.macs[Str(d, "id")] = Str(d, "mac");
    }
  }
  size_t next_fd = 0;
  if (rc["net_fds"].is_array()) {
    for (const Json& nf : rc["net_fds"]) {
      std::vector<UniqueFd>& list = options.tap_fds[Str(nf, "id")];
      for (uint64_t i = 0; i < Uint(nf, "num_fds"); ++i) list.push_back(std::move(fds[next_fd++]));
    }
  }
  absl::StatusOr<std::unique_ptr<Vm>> vm = BuildVm(*config, std::move(options));
  if (!vm.ok()) return Wrap(vm.status(), what);  // the half-built VM is released here
  if (on_demand) {
    (*vm)->memory_source.Reset(::open((*dir + "/memory-ranges").c_str(), O_RDONLY | O_CLOEXEC));
  }
  device_counter_ = dm.is_object() ? static_cast<unsigned>(Uint(dm, "device_id_cnt")) : 0;
  config_ = *std::move(config);
  vm_ = *std::move(vm);
  vm_->paused = true;  // CONTRACT §5: a restored VM is Paused unless asked to resume
  if (agent_) {
    const Json& snaps = snap->state["snapshots"];
    agent_->LoadState(snaps.contains("guest-agent") ? snaps["guest-agent"] : Json());
  }
  WriteConsole("[  restore] guest state restored from snapshot\n");
  events_->Emit("vm", "restored");
  if (rc["resume"] == true) SetPaused(false);
  return absl::OkStatus();
}

absl::StatusOr<ApiResponse> Vmm::AddDisk(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  absl::StatusOr<Json> disk = NormalizeDiskConfig(body, version_);
  if (!disk.ok()) return Deserialize(disk.status());
  const std::string what = "The disk could not be added to the VM";
  if (!config_) return NotCreated(what);
  Json config = *config_;
  if (!config["disks"].is_array()) config["disks"] = Json::array();
  if (!vm_) {
    config["disks"].push_back(*disk);
    config_ = std::move(config);
    return NoContent();
  }
  SBL_RETURN_IF_ERROR(Wrap(OpenDiskDevice(*vm_, *disk, config), what));
  config["disks"].push_back(*disk);
  config_ = std::move(config);
  events_->Emit("virtio-device", "activated", {{"id", vm_->devices.back().id}});
  return JsonOk({{"id", vm_->devices.back().id}, {"bdf", vm_->devices.back().bdf}});
}

absl::StatusOr<ApiResponse> Vmm::AddNet(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  absl::StatusOr<Json> net = NormalizeNetConfig(body, version_);
  if (!net.ok()) return Deserialize(net.status());
  const std::string what = "The network device could not be added to the VM";
  if (!config_) return NotCreated(what);
  Json config = *config_;
  if (!config["net"].is_array()) config["net"] = Json::array();
  if (!vm_) {
    config["net"].push_back(*net);
    config_ = std::move(config);
    return NoContent();
  }
  BuildOptions options;
  if ((*net)["id"].is_null()) (*net)["id"] = NextDeviceId(config, "_net");
  if (!req.fds.empty()) options.tap_fds[Str(*net, "id")] = std::move(req.fds);
  SBL_RETURN_IF_ERROR(Wrap(OpenNetDevice(*vm_, *net, options), what));
  config["net"].push_back(*net);
  config_ = std::move(config);
  events_->Emit("virtio-device", "activated", {{"id", vm_->devices.back().id}});
  return JsonOk({{"id", vm_->devices.back().id}, {"bdf", vm_->devices.back().bdf}});
}

absl::StatusOr<ApiResponse> Vmm::RemoveDevice(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  SBL_ASSIGN_OR_RETURN(std::string id, StringField(body, "id"));
  const std::string what = "The device could not be removed from the VM";
  if (!config_) return NotCreated(what);
  Json config = *config_;
  bool in_config = false;
  for (const char* list : {"disks", "net"}) {
    if (!config[list].is_array()) continue;
    for (size_t i = 0; i < config[list].size(); ++i) {
      if (Str(config[list][i], "id") == id) {
        config[list].erase(i);
        in_config = true;
        break;
      }
    }
  }
  if (config["vsock"].is_object() && Str(config["vsock"], "id") == id) {
    config["vsock"] = nullptr;
    in_config = true;
  }
  if (vm_) {
    auto it = std::find_if(vm_->devices.begin(), vm_->devices.end(),
                           [&](const Device& d) { return d.id == id; });
    if (it == vm_->devices.end()) return ChainError({what, Cat("Unknown device id \"", id, "\"")});
    vm_->devices.erase(it);  // closes the disk (releasing its lock) or the tap
  } else if (!in_config) {
    return ChainError({what, Cat("Unknown device id \"", id, "\"")});
  }
  config_ = std::move(config);
  if (vm_) events_->Emit("vm", "device-removed", {{"id", id}});
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::Resize(HttpRequest& req) {
  SBL_ASSIGN_OR_RETURN(Json body, ParseBody(req));
  if (!body.is_object())
    return Deserialize(absl::InvalidArgumentError("invalid type, expected struct"));
  for (const char* f : {"desired_vcpus", "desired_ram", "desired_balloon"}) {
    if (body.contains(f) && !body[f].is_null() && !body[f].is_number_unsigned()) {
      return Deserialize(absl::InvalidArgumentError(Cat(f, ": invalid type, expected u64")));
    }
  }
  const std::string what = "The VM could not be resized";
  if (!config_) return NotCreated(what);
  Json config = *config_;
  if (body.contains("desired_vcpus") && !body["desired_vcpus"].is_null()) {
    uint64_t n = body["desired_vcpus"].get<uint64_t>();
    if (n < 1 || n > Uint(config["cpus"], "max_vcpus")) {
      return ChainError({what, Cat("Desired vCPUs ", n, " outside 1..max_vcpus")});
    }
    config["cpus"]["boot_vcpus"] = n;
  }
  if (body.contains("desired_ram") && !body["desired_ram"].is_null()) {
    uint64_t ram = body["desired_ram"].get<uint64_t>();
    uint64_t base = Uint(config["memory"], "size");
    uint64_t hotplug = Uint(config["memory"], "hotplug_size");
    if (ram < base || ram - base > hotplug) {
      return ChainError({what, Cat("Desired RAM ", ram, " outside ", base, "..", base + hotplug,
                                   " (memory.size..memory.size+hotplug_size)")});
    }
    config["memory"]["hotplugged_size"] = ram == base ? Json(nullptr) : Json(ram - base);
  }
  if (body.contains("desired_balloon") && !body["desired_balloon"].is_null()) {
    if (!config["balloon"].is_object()) return ChainError({what, "No balloon device"});
    config["balloon"]["size"] = body["desired_balloon"];
  }
  if (vm_) events_->Emit("vm", "resizing");
  config_ = std::move(config);
  if (vm_) {
    vm_->memory = GuestMemory(MemorySize(), vm_->memory.ToJson()["content_seed"].get<uint64_t>());
    events_->Emit("vm", "resized");
  }
  return NoContent();
}

absl::StatusOr<ApiResponse> Vmm::NotSimulated(HttpRequest& req) {
  return ChainError(
      {Cat(req.target.substr(sizeof(kApiPrefix) - 1), " is not simulated by ch-sim")});
}

absl::StatusOr<std::unique_ptr<Vmm::Vm>> Vmm::BuildVm(Json& config, BuildOptions options) {
  const std::string what = "Error creating VM";
  auto vm = std::make_unique<Vm>();
  device_counter_ = 0;

  const Json& payload = config["payload"];
  const std::string kernel = payload.is_object() ? Str(payload, "kernel") : "";
  const std::string firmware = payload.is_object() ? Str(payload, "firmware") : "";
  if (kernel.empty() == firmware.empty()) {
    return ChainError({what, "Payload must have exactly one of kernel and firmware"});
  }
  if (!options.restoring) {
    SBL_RETURN_IF_ERROR(Wrap(CheckReadable(kernel.empty() ? firmware : kernel, "payload"), what));
  }
  if (const std::string initramfs = Str(payload, "initramfs"); !initramfs.empty()) {
    SBL_RETURN_IF_ERROR(Wrap(CheckReadable(initramfs, "initramfs"), what));
  }
  const uint64_t boot_vcpus = Uint(config["cpus"], "boot_vcpus");
  if (boot_vcpus < 1 || boot_vcpus > Uint(config["cpus"], "max_vcpus")) {
    return ChainError({what, "cpus: boot_vcpus must be between 1 and max_vcpus"});
  }
  const uint64_t ram = Uint(config["memory"], "size") + Uint(config["memory"], "hotplugged_size");
  if (Uint(config["memory"], "size") < GuestMemory::kPageSize) {
    return ChainError({what, "memory: size must be at least one page"});
  }
  vm->memory = options.memory ? *options.memory : GuestMemory::Fresh(ram);
  SBL_RETURN_IF_ERROR(Wrap(CheckReadable(Str(config["rng"], "src"), "entropy source"), what));

  for (const char* name : {"serial", "console"}) {
    Json& c = config[name];
    absl::StatusOr<ConsoleSink> sink =
        OpenConsole(Str(c, "mode"), Str(c, "file"), Str(c, "socket"));
    if (!sink.ok()) return Wrap(sink.status(), what);
    if (!sink->pty_path.empty()) c["file"] = sink->pty_path;
    (std::string(name) == "serial" ? vm->serial : vm->console) = *std::move(sink);
  }
  if (Str(config["console"], "mode") != "Off") ++vm->next_slot;  // virtio-console

  if (config["disks"].is_array()) {
    for (Json& disk : config["disks"])
      SBL_RETURN_IF_ERROR(Wrap(OpenDiskDevice(*vm, disk, config), what));
  }
  if (config["net"].is_array()) {
    for (Json& net : config["net"]) {
      if (net["id"].is_null()) net["id"] = NextDeviceId(config, "_net");
      SBL_RETURN_IF_ERROR(Wrap(OpenNetDevice(*vm, net, options), what));
    }
  }
  ++vm->next_slot;  // virtio-rng
  // The guest learns its address from the kernel command line; without a NIC it has none.
  if (agent_ && config["net"].is_array() && !config["net"].empty()) {
    vm->agent_address = !agent_->config().address.empty()
                            ? agent_->config().address
                            : GuestAddressFromCmdline(Str(payload, "cmdline"));
  }
  if (Json& vsock = config["vsock"]; vsock.is_object()) {
    if (Uint(vsock, "cid") < 3) return ChainError({what, "vsock: cid must be 3 or more"});
    absl::StatusOr<UniqueFd> listener = BindUnixSocket(Str(vsock, "socket"));
    if (!listener.ok())
      return Wrap(Wrap(listener.status(), "Cannot create virtio-vsock device"), what);
    if (vsock["id"].is_null()) vsock["id"] = NextDeviceId(config, "_vsock");
    Device d{Str(vsock, "id"), "vsock", NextBdf(*vm), {}};
    d.fds.push_back(*std::move(listener));
    vm->devices.push_back(std::move(d));
  }
  return vm;
}

absl::Status Vmm::OpenDiskDevice(Vm& vm, Json& disk, const Json& config) {
  const std::string path = Str(disk, "path");
  if (disk["vhost_user"] == true) return ChainError({"vhost-user disks are not simulated"});
  if (path.empty()) return ChainError({"Cannot create virtio-blk device", "disk has no path"});
  if (Uint(disk, "num_queues") > Uint(config["cpus"], "boot_vcpus")) {
    return ChainError({"Cannot create virtio-blk device",
                       Cat("num_queues ", Uint(disk, "num_queues"), " exceeds boot_vcpus")});
  }
  absl::StatusOr<UniqueFd> fd = OpenDisk(path, disk["readonly"] == true);
  if (!fd.ok()) return Wrap(fd.status(), "Cannot create virtio-blk device");
  if (version_.AtLeast(51)) {  // CONTRACT §6: image_type is detected when not given
    std::string detected = DetectImageType(fd->get());
    if (disk["image_type"].is_null()) {
      disk["image_type"] = detected;
      if (detected == "Raw") {
        log_->Warn(
            Cat("Autodetected raw image type for \"", path, "\": writes to sector 0 are disabled"));
      }
    } else if (disk["image_type"] != detected) {
      return ChainError(
          {"Cannot create virtio-blk device", Cat("image \"", path, "\" is ", detected, ", not ",
                                                  disk["image_type"].get<std::string>())});
    }
  }
  if (disk["id"].is_null()) disk["id"] = NextDeviceId(config, "_disk");
  Device d{Str(disk, "id"), "disk", NextBdf(vm), {}};
  d.fds.push_back(*std::move(fd));
  vm.devices.push_back(std::move(d));
  return absl::OkStatus();
}

absl::Status Vmm::OpenNetDevice(Vm& vm, Json& net, BuildOptions& options) {
  const std::string what = "Cannot create virtio-net device";
  if (net["vhost_user"] == true) return ChainError({"vhost-user net devices are not simulated"});
  if (version_.AtLeast(49) && net["ip"].is_null() != net["mask"].is_null()) {
    return ChainError({what, "ip and mask must be given together"});
  }
  const std::string id = Str(net, "id");
  Device d{id, "net", "", {}};
  if (auto it = options.tap_fds.find(id); it != options.tap_fds.end()) {
    d.fds = std::move(it->second);  // taps opened by the caller (SCM_RIGHTS / net_fds)
  } else {
    std::string actual;
    int pairs = static_cast<int>(std::max<uint64_t>(Uint(net, "num_queues") / 2, 1));
    absl::StatusOr<std::vector<UniqueFd>> fds =
        OpenTap(Str(net, "tap"), pairs, options.restoring, &actual);
    if (!fds.ok()) return Wrap(fds.status(), what);
    d.fds = *std::move(fds);
  }
  if (auto it = options.macs.find(id); it != options.macs.end()) net["mac"] = it->second;
  d.bdf = NextBdf(vm);
  vm.devices.push_back(std::move(d));
  return absl::OkStatus();
}

std::string Vmm::NextBdf(Vm& vm) {
  char bdf[16];
  std::snprintf(bdf, sizeof(bdf), "0000:00:%02x.0", vm.next_slot++);
  return bdf;
}

std::string Vmm::NextDeviceId(const Json& config, const std::string& prefix) {
  Json copy = config;
  while (true) {
    std::string id = Cat(prefix, device_counter_++);
    bool used = false;
    ForEachDeviceConfig(copy, [&](Json& d) { used = used || Str(d, "id") == id; });
    if (!used) return id;
  }
}

void Vmm::WriteConsole(const std::string& text) {
  if (!vm_) return;
  for (ConsoleSink* sink : {&vm_->serial, &vm_->console}) {
    if (sink->fd.valid()) {
      ssize_t n = ::write(sink->fd.get(), text.data(), text.size());
      (void)n;  // guest output is best effort, as a full console drops it
    }
  }
}

void Vmm::BootMessages() {
  const Json& c = *config_;
  std::string text =
      Cat("[    0.000000] Linux version 6.1.0-chsim (simulated guest on cloud-hypervisor ",
          version_.BuildVersion(), ")\n");
  text += Cat("[    0.000000] Command line: ", Str(c["payload"], "cmdline"), "\n");
  text += Cat("[    0.000000] Memory: ", MemorySize() >> 20, "M, ", Uint(c["cpus"], "boot_vcpus"),
              " vCPU(s)\n");
  int eth = 0;
  if (c["net"].is_array()) {
    for (const Json& net : c["net"]) {
      text += Cat("[    0.210000] virtio_net eth", eth++, ": MAC ", Str(net, "mac"), "\n");
    }
  }
  text += "[    0.500000] Run /sbin/init as init process\n";
  WriteConsole(text);
}

void Vmm::SetPaused(bool paused) {
  if (paused) {
    events_->Emit("vm", "pausing");
    vm_->ran += std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - vm_->running_since);
    vm_->paused = true;
    SyncGuestAgent();
    events_->Emit("vm", "paused");
  } else {
    events_->Emit("vm", "resuming");
    vm_->running_since = std::chrono::steady_clock::now();
    vm_->paused = false;
    SyncGuestAgent();
    events_->Emit("vm", "resumed");
  }
}

void Vmm::PowerOff() {
  log_->Info("guest powered off");
  WriteConsole("[   10.000000] reboot: Power down\n");
  DestroyVm("shutdown");
}

void Vmm::DestroyVm(const char* event) {
  vm_.reset();  // closes disks (releasing locks), taps and sockets
  if (agent_) {
    agent_->Stop();
    agent_->Forget();
  }
  events_->Emit("vm", event);
}

void Vmm::EnableGuestAgent(GuestAgentConfig config) {
  agent_ = std::make_unique<GuestAgent>(std::move(config), log_);
}

void Vmm::SyncGuestAgent() {
  if (!agent_) return;
  if (!vm_ || vm_->paused || vm_->agent_address.empty()) {
    agent_->Stop();
    return;
  }
  // A guest whose agent cannot start is still a running guest: the failure is only logged.
  if (absl::Status st = agent_->Start(vm_->agent_address); !st.ok()) {
    log_->Error(Join(ChainOf(st), ": "));
  }
}

void Vmm::ShutdownForExit() {
  if (vm_) DestroyVm("shutdown");
}

uint64_t Vmm::MemorySize() const {
  if (!config_) return 0;
  const Json& m = (*config_)["memory"];
  return Uint(m, "size") + Uint(m, "hotplugged_size");
}

Json Vmm::DeviceTree() const {
  Json tree = Json::object();
  if (!vm_) return tree;
  for (const Device& d : vm_->devices) {
    tree[d.id] = {{"id", d.id},
                  {"resources", Json::array()},
                  {"children", Json::array()},
                  {"pci_bdf", d.bdf}};
  }
  return tree;
}

std::vector<int> Vmm::ListenerFds() const {
  std::vector<int> fds;
  if (!vm_) return fds;
  for (const Device& d : vm_->devices) {
    if (d.type == "vsock" && !d.fds.empty()) fds.push_back(d.fds[0].get());
  }
  for (const ConsoleSink* sink : {&vm_->serial, &vm_->console}) {
    if (sink->listener.valid()) fds.push_back(sink->listener.get());
  }
  return fds;
}

}  // namespace sandboxlet::chsim
