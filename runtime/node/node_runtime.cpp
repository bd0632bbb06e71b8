#include "runtime/node/node_runtime.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"
#include "runtime/network/reclaim.h"
#include "runtime/snapshot/dir_size.h"
#include "runtime/vm/snapshot_flow.h"

namespace sandboxlet::runtime {

const char* VmPhaseName(VmPhase phase) {
  switch (phase) {
    case VmPhase::kAbsent:
      return "Absent";
    case VmPhase::kRunning:
      return "Running";
    case VmPhase::kPaused:
      return "Paused";
    case VmPhase::kStopped:
      return "Stopped";
    case VmPhase::kExited:
      return "Exited";
  }
  return "Unknown";
}

namespace {

constexpr char kRecordName[] = "sandbox.json";

// Runs fn over items with at most `parallelism` threads.
template <typename T>
void ParallelFor(const std::vector<T>& items, int parallelism,
                 const std::function<void(const T&)>& fn) {
  std::atomic<size_t> next{0};
  int n = std::max(1, std::min<int>(parallelism, static_cast<int>(items.size())));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      for (size_t k; (k = next.fetch_add(1)) < items.size();) fn(items[k]);
    });
  }
  for (auto& t : threads) t.join();
}

VmExitInfo ExitInfoFrom(const vmm::VmmExit& exit) {
  VmExitInfo info;
  info.status_known = exit.status_known;
  info.exit_code = exit.exit_code;
  info.signal = exit.signal;
  info.finished_at = exit.when;
  if (!exit.status_known)
    info.reason = "Unknown";
  else if (exit.signal == SIGKILL)
    info.reason = "Killed";
  else if (exit.signal != 0)
    info.reason = "Crashed";
  else if (exit.exit_code == 0)
    info.reason = "Completed";
  else
    info.reason = "Error";
  return info;
}

// Kernel ip= autoconfiguration for the guest (same addresses in every sandbox).
std::string GuestIpArg() {
  return Cat(" ip=", network::kGuestIp, "::", network::kGatewayIp, ":", network::kGuestMask,
             "::eth0:off");
}

}  // namespace

absl::StatusOr<std::unique_ptr<NodeRuntime>> NodeRuntime::Open(NodeRuntimeOptions options) {
  if (options.kernel.empty()) options.kernel = Cat(options.state_dir, "/kernel/vmlinux");
  if (options.templates_dir.empty()) options.templates_dir = Cat(options.state_dir, "/templates");
  SBL_RETURN_IF_ERROR(MakeDirs(options.state_dir, 0755));
  SBL_RETURN_IF_ERROR(MakeDirs(options.run_dir, 0755));
  if (options.vmm_cgroups != "auto" && options.vmm_cgroups != "off") {
    return absl::InvalidArgumentError(
        Cat("vmm cgroups: \"", options.vmm_cgroups, "\" is not one of auto, off"));
  }

  vm::MachineEnv env;
  env.vmm_bin = options.vmm_bin;
  if (options.version) {
    env.version = *options.version;
  } else {
    SBL_ASSIGN_OR_RETURN(env.version, ch::DetectChVersion(options.vmm_bin));
  }
  env.vms_dir = Cat(options.state_dir, "/vms");
  env.stable_root = Cat(options.run_dir, "/vmroot");
  env.kernel = options.kernel;
  env.cmdline = options.cmdline;
  env.api_timeout = options.api_timeout;
  env.ready_timeout = options.ready_timeout;
  env.snapshot_timeout = options.snapshot_timeout;
  env.stop_grace = options.stop_grace;
  env.ch_observer = options.ch_observer;
  SBL_RETURN_IF_ERROR(MakeDirs(env.vms_dir, 0700));

  VolumeOptions vopts;
  vopts.state_dir = options.state_dir;
  vopts.backend = options.volume_backend;
  SBL_ASSIGN_OR_RETURN(std::unique_ptr<VolumeBackend> volumes, MakeVolumeBackend(vopts));

  std::unique_ptr<network::SandboxNetwork> net;
  if (options.network_enabled) {
    network::NetworkConfig ncfg = options.network;
    ncfg.state_dir = options.state_dir;
    auto opened = network::SandboxNetwork::Open(std::move(ncfg));
    if (!opened.ok()) return Annotate(opened.status(), "open sandbox network");
    net = std::move(*opened);
  }

  SnapshotStoreOptions sopts;
  sopts.base_dir = Cat(options.state_dir, "/snapshots");
  SBL_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotStore> snapshots, SnapshotStore::Open(sopts));
  SBL_ASSIGN_OR_RETURN(int recovered, snapshots->RecoverAtStartup());
  if (recovered > 0) log::Info("removed partial snapshots left by a crash", {{"count", recovered}});

  log::Info("node runtime ready", {{"vmm_bin", options.vmm_bin},
                                   {"ch_version", env.version.ToString()},
                                   {"volume_backend", volumes->Name()},
                                   {"network", options.network_enabled}});
  std::unique_ptr<NodeRuntime> rt(new NodeRuntime(std::move(options), std::move(env),
                                                  std::move(volumes), std::move(net),
                                                  std::move(snapshots)));
  rt->cgroups_ = rt->options_.vmm_cgroups == "off" ? vmm::VmmCgroups::Disabled("vmm_cgroups=off")
                                                   : vmm::VmmCgroups::Open(rt->options_.cgroups);
  NodeRuntime* self = rt.get();
  SBL_ASSIGN_OR_RETURN(rt->watcher_,
                       vmm::ExitWatcher::Start([self](const vmm::VmmExit& e) { self->OnExit(e); }));
  return rt;
}

NodeRuntime::NodeRuntime(NodeRuntimeOptions options, vm::MachineEnv env,
                         std::unique_ptr<VolumeBackend> volumes,
                         std::unique_ptr<network::SandboxNetwork> network,
                         std::unique_ptr<SnapshotStore> snapshots)
    : options_(std::move(options)),
      env_(std::move(env)),
      volumes_(std::move(volumes)),
      network_(std::move(network)),
      snapshots_(std::move(snapshots)) {}

NodeRuntime::~NodeRuntime() {
  // Stop the watcher first: VMMs keep running (they outlive sandboxlet), and no callback may run
  // against a half-destroyed runtime.
  watcher_.reset();
}

void NodeRuntime::SetExitHandler(
    std::function<void(const std::string& uid, const VmExitInfo& exit)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  exit_handler_ = std::move(handler);
}

std::shared_ptr<NodeRuntime::Entry> NodeRuntime::Find(const std::string& uid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(uid);
  return it == entries_.end() ? nullptr : it->second;
}

std::shared_ptr<NodeRuntime::Entry> NodeRuntime::FindOrCreate(const std::string& uid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& e = entries_[uid];
  if (!e) e = std::make_shared<Entry>();
  return e;
}

void NodeRuntime::SetPhase(Entry& e, VmPhase phase) {
  std::lock_guard<std::mutex> lock(mu_);
  e.phase = phase;
}

VmObservation NodeRuntime::Observe(const std::string& uid) {
  VmObservation obs;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(uid);
  if (it == entries_.end()) return obs;
  const Entry& e = *it->second;
  obs.phase = e.phase;
  obs.pid = e.pid;
  obs.ch_version = env_.version.ToString();
  obs.started_at = e.started_at;
  obs.last_exit = e.last_exit;
  if (e.net) obs.ip = e.net->slot_ip;
  auto vm_dir = vm::Machine::VmDir(env_, uid);
  if (vm_dir.ok() && e.phase != VmPhase::kAbsent) {
    obs.api_socket = vmm::VmmProcess::ApiSocketPath(*vm_dir);
    obs.vmm_log = Cat(*vm_dir, "/", vmm::VmmProcess::kLogName);
    obs.serial_log = Cat(*vm_dir, "/stable/serial.log");
  }
  return obs;
}

absl::StatusOr<std::string> NodeRuntime::BaseImage(const std::string& template_name) const {
  SBL_ASSIGN_OR_RETURN(std::string dir,
                       JoinUnder(options_.templates_dir, template_name, "template"));
  std::string image = Cat(dir, "/rootfs.ext4");
  struct stat st;
  if (::stat(image.c_str(), &st) != 0) {
    return absl::NotFoundError(Cat("template \"", template_name, "\": base image ", image,
                                   " not found (templates live in ", options_.templates_dir, ")"));
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return absl::InvalidArgumentError(
        Cat("template \"", template_name, "\": ", image, " is not a regular file"));
  }
  return image;
}

absl::Status NodeRuntime::WriteRecord(const Record& r) {
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, vm::Machine::VmDir(env_, r.uid));
  SBL_RETURN_IF_ERROR(MakeDirs(vm_dir, 0700));
  nlohmann::json j = {{"uid", r.uid},
                      {"key", r.key},
                      {"template", r.template_name},
                      {"vcpus", r.vcpus},
                      {"memoryMiB", r.memory_mib},
                      {"diskMiB", r.disk_mib},
                      {"network", r.network},
                      {"egress", r.egress},
                      {"stopped", r.stopped}};
  return WriteFileAtomic(Cat(vm_dir, "/", kRecordName), j.dump(), 0600);
}

absl::StatusOr<NodeRuntime::Record> NodeRuntime::ReadRecord(const std::string& uid) {
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, vm::Machine::VmDir(env_, uid));
  std::string path = Cat(vm_dir, "/", kRecordName);
  SBL_ASSIGN_OR_RETURN(std::string data, ReadFile(path));
  auto j = nlohmann::json::parse(data, nullptr, false);
  if (!j.is_object()) return absl::DataLossError(Cat(path, ": not a JSON object"));
  Record r;
  try {
    r.uid = j.at("uid").get<std::string>();
    r.key = j.at("key").get<std::string>();
    r.template_name = j.at("template").get<std::string>();
    r.vcpus = j.at("vcpus").get<int>();
    r.memory_mib = j.at("memoryMiB").get<uint64_t>();
    r.disk_mib = j.value("diskMiB", uint64_t{0});
    r.network = j.at("network").get<bool>();
    r.egress = j.value("egress", true);
    r.stopped = j.value("stopped", false);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(Cat(path, ": ", e.what()));
  }
  if (r.uid != uid)
    return absl::DataLossError(Cat(path, ": records uid ", r.uid, ", expected ", uid));
  return r;
}

vm::MachineSpec NodeRuntime::MachineSpecFor(const Entry& e) const {
  vm::MachineSpec m;
  m.id = e.record.uid;
  m.key = e.record.key;
  m.vcpus = e.record.vcpus;
  m.memory_mib = e.record.memory_mib;
  if (e.volume) m.disk_path = e.volume->device_path;
  if (e.net) {
    m.netns = e.net->netns_name;
    vm::TapDevice tap;
    tap.name = e.net->tap;
    tap.mac = e.net->guest_mac;
    m.tap = tap;
  }
  return m;
}

absl::StatusOr<Volume> NodeRuntime::EnsureVolume(Entry& e, bool* created) {
  *created = false;
  if (e.volume) return *e.volume;
  SBL_ASSIGN_OR_RETURN(std::string base, BaseImage(e.record.template_name));
  VolumeSpec vs;
  vs.id = e.record.uid;
  vs.key = e.record.key;
  vs.base_image = base;
  vs.min_size_bytes = e.record.disk_mib << 20;
  auto opened = volumes_->Open(vs);
  if (opened.ok()) return *opened;
  if (opened.status().code() != absl::StatusCode::kNotFound) return opened.status();
  auto made = volumes_->Create(vs);
  if (made.ok()) *created = true;
  return made;
}

absl::StatusOr<network::NetworkInfo> NodeRuntime::EnsureNetwork(Entry& e, bool* created) {
  *created = false;
  if (e.net) return *e.net;
  if (!network_) {
    return absl::FailedPreconditionError(
        Cat("sandbox ", e.record.key, ": networking is disabled on this node (--network=false)"));
  }
  auto found = network_->Lookup(e.record.uid);
  if (found.ok()) return *found;
  network::NetworkSpec ns;
  ns.id = e.record.uid;
  ns.egress = e.record.egress;
  auto made = network_->Create(ns);
  if (made.ok()) *created = true;
  return made;
}

void NodeRuntime::Watch(Entry& e) {
  if (!e.machine) return;
  absl::Status st = watcher_->Watch(e.record.uid, e.machine->process());
  if (!st.ok()) {
    log::Error("cannot watch vmm", {{"sandbox", e.record.key}, {"error", st.message()}});
  }
}

void NodeRuntime::OnExit(const vmm::VmmExit& exit) {
  VmExitInfo info = ExitInfoFrom(exit);
  std::function<void(const std::string&, const VmExitInfo&)> handler;
  std::string key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(exit.key);
    if (it == entries_.end()) return;
    Entry& e = *it->second;
    e.phase = VmPhase::kExited;
    e.last_exit = info;
    e.pid = 0;
    key = e.record.key;
    handler = exit_handler_;
  }
  log::Warn("vmm exited", {{"sandbox", key}, {"how", vmm::DescribeExit(exit)}});
  if (options_.exit_observer) {
    options_.exit_observer(info.reason == "Completed" ? "shutdown"
                           : info.reason == "Killed"  ? "killed"
                                                      : "crash");
  }
  if (handler) handler(exit.key, info);
}

void NodeRuntime::Timed(std::string_view op, const std::function<absl::Status()>& fn,
                        absl::Status* out) {
  auto start = std::chrono::steady_clock::now();
  *out = fn();
  if (options_.op_observer) {
    options_.op_observer(op, out->ok(), std::chrono::steady_clock::now() - start);
  }
}

absl::Status NodeRuntime::StopMachine(Entry& e) {
  if (!e.machine) return absl::OkStatus();
  // Unwatch first: an exit we cause is not a crash (never called with mu_ held: the watcher's
  // callback takes it).
  watcher_->Unwatch(e.record.uid);
  absl::Status st;
  Timed(
      "stop", [&] { return e.machine->Stop().status(); }, &st);
  if (!st.ok()) {
    Watch(e);  // still alive: keep detecting its exit
    return st;
  }
  std::lock_guard<std::mutex> lock(mu_);
  e.machine.reset();
  e.pid = 0;
  return absl::OkStatus();
}

absl::Status NodeRuntime::Start(const SandboxRuntimeSpec& spec) {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(spec.uid, "sandbox uid"));
  if (spec.network) SBL_RETURN_IF_ERROR(network::ValidateNetworkId(spec.uid));
  auto e = FindOrCreate(spec.uid);
  VmPhase phase;
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase = e->phase;
  }
  if (phase == VmPhase::kRunning || phase == VmPhase::kPaused) {
    return absl::AlreadyExistsError(Cat("sandbox ", spec.key, ": VMM already running"));
  }
  // An exited VMM leaves its record and socket: clear them (it is gone, this cannot kill it).
  SBL_RETURN_IF_ERROR(StopMachine(*e));
  SBL_RETURN_IF_ERROR(BaseImage(spec.template_name).status());

  e->record.uid = spec.uid;
  e->record.key = spec.key;
  e->record.template_name = spec.template_name;
  e->record.vcpus = spec.vcpus;
  e->record.memory_mib = spec.memory_mib;
  e->record.disk_mib = spec.disk_mib;
  e->record.network = spec.network && network_ != nullptr;
  e->record.egress = spec.egress;
  e->record.stopped = false;
  if (spec.network && network_ == nullptr) {
    return absl::FailedPreconditionError(
        Cat("sandbox ", spec.key, ": wants a network, but networking is disabled on this node"));
  }
  SBL_RETURN_IF_ERROR(WriteRecord(e->record));

  // Each step is undone in reverse order if a later one fails.
  bool volume_created = false, net_created = false;
  auto volume = EnsureVolume(*e, &volume_created);
  if (!volume.ok()) return Annotate(volume.status(), Cat("sandbox ", spec.key, ": volume"));
  auto undo_volume = [&] {
    if (volume_created) (void)volumes_->Remove(spec.uid);
  };
  std::optional<network::NetworkInfo> net;
  if (e->record.network) {
    auto n = EnsureNetwork(*e, &net_created);
    if (!n.ok()) {
      undo_volume();
      return Annotate(n.status(), Cat("sandbox ", spec.key, ": network"));
    }
    net = *n;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    e->volume = *volume;
    e->net = net;
  }
  vm::MachineEnv env = env_;
  if (net) env.cmdline += GuestIpArg();
  absl::Status st;
  std::unique_ptr<vm::Machine> machine;
  Timed(
      "boot",
      [&] {
        // The VMM's own cgroups, so that it outlives sandboxlet's unit or pod.
        vm::MachineSpec ms = MachineSpecFor(*e);
        SBL_ASSIGN_OR_RETURN(ms.cgroup_procs, cgroups_->Prepare(spec.uid));
        auto m = vm::Machine::Boot(env, ms);
        if (!m.ok()) return m.status();
        machine = std::move(*m);
        return absl::OkStatus();
      },
      &st);
  if (!st.ok()) {
    if (net_created) (void)network_->Remove(spec.uid);
    undo_volume();
    RemoveCgroups(spec.uid, spec.key);
    std::lock_guard<std::mutex> lock(mu_);
    if (net_created) e->net.reset();
    if (volume_created) e->volume.reset();
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    e->pid = machine->process().pid();
    e->machine = std::move(machine);
    e->phase = VmPhase::kRunning;
    e->started_at = std::chrono::system_clock::now();
    e->last_exit.reset();
  }
  Watch(*e);
  return absl::OkStatus();
}

absl::Status NodeRuntime::RestoreFrom(const SandboxRuntimeSpec& spec,
                                      const std::string& snapshot_id) {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(spec.uid, "sandbox uid"));
  auto e = FindOrCreate(spec.uid);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e->machine || e->volume) {
      return absl::AlreadyExistsError(
          Cat("sandbox ", spec.key, ": already has a VM or volume; destroy it before a restore"));
    }
  }
  auto meta = snapshots_->ReadMeta(snapshot_id);
  if (!meta.ok()) return Annotate(meta.status(), Cat("restore ", spec.key, " <- ", snapshot_id));
  if (!spec.template_name.empty() && spec.template_name != meta->base_template) {
    return absl::FailedPreconditionError(
        Cat("restore ", spec.key, " <- ", snapshot_id, ": snapshot was taken from template \"",
            meta->base_template, "\", sandbox asks for \"", spec.template_name, "\""));
  }
  SBL_ASSIGN_OR_RETURN(std::string base, BaseImage(meta->base_template));
  // A snapshot with a net device needs the sandbox's tap0 (CONTRACT §5: the tap is re-opened by
  // name on restore).
  bool wants_net = false;
  if (auto cfg = snapshots_->ConfigPath(snapshot_id); cfg.ok()) {
    if (auto data = ReadFile(*cfg); data.ok()) {
      auto j = nlohmann::json::parse(*data, nullptr, false);
      wants_net = j.is_object() && j.contains("net") && j["net"].is_array() && !j["net"].empty();
    }
  }
  e->record.uid = spec.uid;
  e->record.key = spec.key;
  e->record.template_name = meta->base_template;
  e->record.vcpus = meta->vcpus;
  e->record.memory_mib = static_cast<uint64_t>(meta->memory_mb);
  e->record.disk_mib = spec.disk_mib;
  e->record.network = wants_net;
  e->record.egress = spec.egress;
  e->record.stopped = false;
  SBL_RETURN_IF_ERROR(WriteRecord(e->record));
  bool net_created = false;
  std::optional<network::NetworkInfo> net;
  if (wants_net) {
    auto n = EnsureNetwork(*e, &net_created);
    if (!n.ok()) return Annotate(n.status(), Cat("restore ", spec.key, ": network"));
    net = *n;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    e->net = net;
  }
  absl::Status st;
  std::optional<vm::RestoredMachine> restored;
  Timed(
      "restore",
      [&] {
        vm::MachineSpec ms = MachineSpecFor(*e);
        SBL_ASSIGN_OR_RETURN(ms.cgroup_procs, cgroups_->Prepare(spec.uid));
        auto r = vm::RestoreSnapshot(env_, ms, *volumes_, *snapshots_, snapshot_id, base);
        if (!r.ok()) return r.status();
        restored = std::move(*r);
        return absl::OkStatus();
      },
      &st);
  if (!st.ok()) {
    if (net_created) (void)network_->Remove(spec.uid);
    RemoveCgroups(spec.uid, spec.key);
    std::lock_guard<std::mutex> lock(mu_);
    e->net.reset();
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    e->pid = restored->machine->process().pid();
    e->machine = std::move(restored->machine);
    e->volume = restored->volume;
    e->phase = VmPhase::kRunning;
    e->started_at = std::chrono::system_clock::now();
    e->last_exit.reset();
  }
  Watch(*e);
  return absl::OkStatus();
}

absl::Status NodeRuntime::Pause(const std::string& uid) {
  auto e = Find(uid);
  if (!e || !e->machine)
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": no running VM"));
  absl::Status st;
  Timed(
      "pause", [&] { return e->machine->Pause(); }, &st);
  if (st.ok()) SetPhase(*e, VmPhase::kPaused);
  return st;
}

absl::Status NodeRuntime::Resume(const std::string& uid) {
  auto e = Find(uid);
  if (!e || !e->machine)
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": no running VM"));
  absl::Status st;
  Timed(
      "resume", [&] { return e->machine->Resume(); }, &st);
  if (st.ok()) SetPhase(*e, VmPhase::kRunning);
  return st;
}

absl::StatusOr<SnapshotInfo> NodeRuntime::TakeSnapshot(const std::string& uid,
                                                       const std::string& snapshot_id,
                                                       bool hibernate) {
  auto e = Find(uid);
  if (!e || !e->machine || !e->volume) {
    return absl::FailedPreconditionError(
        Cat(hibernate ? "hibernate sandbox " : "snapshot of sandbox ", uid, ": no running VM"));
  }
  PrepareGuestForSnapshot(uid);
  vm::SnapshotRequest req;
  req.snapshot_id = snapshot_id;
  req.template_name = e->record.template_name;
  req.vcpus = e->record.vcpus;
  req.memory_mib = e->record.memory_mib;
  req.hibernate = hibernate;
  absl::Status st;
  SnapshotInfo info;
  Timed(
      "snapshot",
      [&] {
        auto r = vm::TakeSnapshot(*e->machine, *e->volume, *volumes_, *snapshots_, req);
        if (!r.ok()) return r.status();
        info.size_bytes = r->size_bytes;
        return absl::OkStatus();
      },
      &st);
  if (!st.ok()) return st;
  info.id = snapshot_id;
  info.template_name = req.template_name;
  info.vcpus = req.vcpus;
  info.memory_mib = req.memory_mib;
  return info;
}

absl::StatusOr<SnapshotInfo> NodeRuntime::Snapshot(const std::string& uid,
                                                   const std::string& snapshot_id) {
  return TakeSnapshot(uid, snapshot_id, /*hibernate=*/false);
}

absl::StatusOr<SnapshotInfo> NodeRuntime::Hibernate(const std::string& uid,
                                                    const std::string& snapshot_id) {
  SBL_ASSIGN_OR_RETURN(SnapshotInfo info, TakeSnapshot(uid, snapshot_id, /*hibernate=*/true));
  // The snapshot is committed: everything else of the sandbox can go.
  SBL_RETURN_IF_ERROR(Destroy(uid));
  return info;
}

absl::Status NodeRuntime::Stop(const std::string& uid) {
  auto e = Find(uid);
  if (!e) return absl::OkStatus();
  SBL_RETURN_IF_ERROR(StopMachine(*e));
  e->record.stopped = true;
  if (!e->record.uid.empty()) SBL_RETURN_IF_ERROR(WriteRecord(e->record));
  SetPhase(*e, VmPhase::kStopped);
  return absl::OkStatus();
}

absl::Status NodeRuntime::Destroy(const std::string& uid) {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(uid, "sandbox uid"));
  auto e = Find(uid);
  if (e) SBL_RETURN_IF_ERROR(StopMachine(*e));
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, vm::Machine::VmDir(env_, uid));
  // A VMM we do not hold (never adopted, e.g. after a failed adoption) is found by its record.
  if (auto attached = vmm::VmmProcess::Attach(vm_dir); attached.ok()) {
    auto client = std::make_unique<ch::ChClient>(ch::ChClientOptions{
        vmm::VmmProcess::ApiSocketPath(vm_dir), uid, env_.version, env_.api_timeout, nullptr});
    vm::ChProbe probe(*client);
    SBL_RETURN_IF_ERROR((*attached)->Stop(probe, env_.stop_grace).status());
  }
  RemoveCgroups(uid, e ? e->record.key : uid);
  if (network_) SBL_RETURN_IF_ERROR(network_->Remove(uid));
  SBL_RETURN_IF_ERROR(volumes_->Remove(uid));
  SBL_RETURN_IF_ERROR(RemoveAll(vm_dir));
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(uid);
  return absl::OkStatus();
}

absl::StatusOr<guest::AgentClient> NodeRuntime::GuestClient(const std::string& uid) {
  const GuestAgentOptions& g = options_.guest_agent;
  guest::AgentClientOptions o;
  o.port = g.port;
  o.timeout = g.request_timeout;
  o.prepare_timeout = g.prepare_timeout;
  VmPhase phase;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(uid);
    if (it == entries_.end()) {
      return absl::FailedPreconditionError(
          Cat("guest agent of sandbox ", uid, ": no such sandbox"));
    }
    const Entry& e = *it->second;
    o.sandbox = e.record.key.empty() ? uid : e.record.key;
    phase = e.phase;
    if (e.net) o.address = e.net->slot_ip;
  }
  const std::string what = Cat("guest agent of ", o.sandbox);
  if (!g.enabled) {
    return absl::FailedPreconditionError(
        Cat(what, ": the guest agent is disabled on this node (guest_agent.enabled=false)"));
  }
  if (o.address.empty()) {
    return absl::FailedPreconditionError(Cat(what, ": the sandbox has no network to reach it by"));
  }
  if (phase != VmPhase::kRunning) {
    return absl::FailedPreconditionError(
        Cat(what, ": the VM is ", VmPhaseName(phase), ", not Running"));
  }
  return guest::AgentClient(std::move(o));
}

absl::StatusOr<guest::AgentHealth> NodeRuntime::GuestHealth(const std::string& uid) {
  SBL_ASSIGN_OR_RETURN(guest::AgentClient client, GuestClient(uid));
  return client.Health();
}

absl::Status NodeRuntime::GuestInit(const std::string& uid, const guest::InitRequest& request) {
  SBL_ASSIGN_OR_RETURN(guest::AgentClient client, GuestClient(uid));
  return client.Init(request);
}

absl::StatusOr<guest::AgentHealth> NodeRuntime::GuestWaitReady(const std::string& uid) {
  SBL_ASSIGN_OR_RETURN(guest::AgentClient client, GuestClient(uid));
  const GuestAgentOptions& g = options_.guest_agent;
  return client.WaitReady(g.ready_timeout, g.poll_interval, g.request_timeout);
}

void NodeRuntime::PrepareGuestForSnapshot(const std::string& uid) {
  if (!options_.guest_agent.enabled) return;
  auto client = GuestClient(uid);
  if (!client.ok()) return;  // paused or no network: the guest cannot be asked
  if (absl::Status st = client->PrepareSnapshot(); !st.ok()) {
    auto e = Find(uid);
    log::Warn("guest agent did not prepare for the snapshot; taking it anyway",
              {{"sandbox", e ? e->record.key : uid}, {"error", st.message()}});
  }
}

absl::Status NodeRuntime::DeleteSnapshot(const std::string& snapshot_id) {
  return snapshots_->Remove(snapshot_id);
}

absl::StatusOr<SnapshotInfo> NodeRuntime::GetSnapshot(const std::string& snapshot_id) {
  SBL_ASSIGN_OR_RETURN(bool exists, snapshots_->Exists(snapshot_id));
  if (!exists) return absl::NotFoundError(Cat("snapshot ", snapshot_id, " not found"));
  SBL_ASSIGN_OR_RETURN(RootfsMeta meta, snapshots_->ReadMeta(snapshot_id));
  SnapshotInfo info;
  info.id = snapshot_id;
  SBL_ASSIGN_OR_RETURN(info.size_bytes, snapshots_->Size(snapshot_id));
  info.template_name = meta.base_template;
  info.vcpus = meta.vcpus;
  info.memory_mib = static_cast<uint64_t>(meta.memory_mb);
  return info;
}

absl::StatusOr<std::vector<std::string>> NodeRuntime::ListSnapshots() { return snapshots_->List(); }

absl::Status NodeRuntime::AdoptOne(const std::string& uid, const std::string& key,
                                   AdoptionReport* report, std::mutex* report_mu) {
  auto lost = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(*report_mu);
    report->lost[uid] = why;
  };
  auto record = ReadRecord(uid);
  if (!record.ok()) {
    // Never started on this node (or its record is gone): nothing to adopt.
    if (record.status().code() != absl::StatusCode::kNotFound)
      lost(std::string(record.status().message()));
    return absl::OkStatus();
  }
  auto e = FindOrCreate(uid);
  e->record = *record;
  e->record.key = key;
  if (auto base = BaseImage(record->template_name); base.ok()) {
    VolumeSpec vs{uid, key, *base, record->disk_mib << 20};
    if (auto v = volumes_->Open(vs); v.ok()) e->volume = *v;
  }
  if (record->network && network_) {
    if (auto n = network_->Lookup(uid); n.ok()) e->net = *n;
  }
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, vm::Machine::VmDir(env_, uid));
  if (!PathExists(Cat(vm_dir, "/", vmm::VmmProcess::kRecordName))) {
    std::lock_guard<std::mutex> lock(mu_);
    if (record->stopped) {
      e->phase = VmPhase::kStopped;
    } else {
      e->phase = VmPhase::kExited;
      e->last_exit = VmExitInfo{-1, 0, false, "Unknown", std::chrono::system_clock::now()};
    }
    return absl::OkStatus();
  }
  auto machine = vm::Machine::Adopt(env_, uid, key);
  if (!machine.ok()) {
    if (machine.status().code() == absl::StatusCode::kFailedPrecondition) {
      // Alive but deaf: kill it so the reconciler can start a fresh one.
      if (auto attached = vmm::VmmProcess::Attach(vm_dir); attached.ok()) {
        (void)(*attached)->Signal(SIGKILL);
        (void)(*attached)->WaitExit(std::chrono::steady_clock::now() + env_.stop_grace);
      }
    }
    lost(std::string(machine.status().message()));
    std::lock_guard<std::mutex> lock(mu_);
    e->phase = VmPhase::kExited;
    e->last_exit = VmExitInfo{-1, 0, false, "Unknown", std::chrono::system_clock::now()};
    return absl::OkStatus();
  }
  VmPhase phase = VmPhase::kRunning;
  if (auto info = (*machine)->Info(); info.ok() && info->state == ch::VmState::kPaused) {
    phase = VmPhase::kPaused;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    e->pid = (*machine)->process().pid();
    e->machine = std::move(*machine);
    e->phase = phase;
    e->started_at = std::chrono::system_clock::now();
  }
  Watch(*e);
  std::lock_guard<std::mutex> lock(*report_mu);
  report->adopted.push_back(uid);
  return absl::OkStatus();
}

void NodeRuntime::RemoveCgroups(const std::string& uid, const std::string& key) {
  if (absl::Status st = cgroups_->Remove(uid); !st.ok()) {
    log::Warn("vmm cgroup not removed",
              {{"sandbox", key.empty() ? uid : key}, {"error", st.message()}});
  }
}

absl::StatusOr<AdoptionReport> NodeRuntime::AdoptAndReclaim(
    const std::map<std::string, std::string>& claimed) {
  AdoptionReport report;
  std::mutex report_mu;
  std::vector<std::pair<std::string, std::string>> items(claimed.begin(), claimed.end());
  ParallelFor<std::pair<std::string, std::string>>(
      items, options_.parallelism, [&](const std::pair<std::string, std::string>& kv) {
        if (!ValidatePathComponent(kv.first, "sandbox uid").ok()) return;
        if (absl::Status st = AdoptOne(kv.first, kv.second, &report, &report_mu); !st.ok()) {
          std::lock_guard<std::mutex> lock(report_mu);
          report.lost[kv.first] = std::string(st.message());
        }
      });
  report.reclaimed = Reclaim(claimed);
  log::Info("adoption and reclaim done", {{"adopted", report.adopted.size()},
                                          {"lost", report.lost.size()},
                                          {"reclaimed_vmm", report.reclaimed["vmm"]},
                                          {"reclaimed_cgroup", report.reclaimed["cgroup"]},
                                          {"reclaimed_dir", report.reclaimed["dir"]},
                                          {"reclaimed_volume", report.reclaimed["volume"]},
                                          {"reclaimed_netns", report.reclaimed["netns"]}});
  return report;
}

std::map<std::string, int> NodeRuntime::Reclaim(const std::map<std::string, std::string>& claimed) {
  std::map<std::string, int> counts;
  std::mutex mu;
  auto count = [&](const std::string& kind, int n = 1) {
    std::lock_guard<std::mutex> lock(mu);
    counts[kind] += n;
  };
  // 1. VMM processes whose api socket is under our vms dir but that no adopted sandbox owns:
  //    orphans of unclaimed sandboxes, and duplicates (a second VMM for a claimed sandbox, left by
  //    a crash between spawn and record). Found from /proc so that a missing record hides nothing.
  std::map<std::string, int> owned_pid;  // uid → adopted pid
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [uid, e] : entries_) owned_pid[uid] = e->pid;
  }
  const std::string prefix = Cat("path=", env_.vms_dir, "/");
  std::vector<std::pair<int, std::string>> strays;  // pid, uid
  if (DIR* proc = ::opendir("/proc")) {
    while (struct dirent* d = ::readdir(proc)) {
      int pid = std::atoi(d->d_name);
      if (pid <= 0) continue;
      auto cmdline = ReadFile(Cat("/proc/", pid, "/cmdline"));
      if (!cmdline.ok()) continue;
      auto args = Split(*cmdline, '\0');
      for (size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] != "--api-socket" || !StartsWith(args[i + 1], prefix)) continue;
        std::string rest = args[i + 1].substr(prefix.size());
        std::string uid = rest.substr(0, rest.find('/'));
        auto it = owned_pid.find(uid);
        if (it == owned_pid.end() || it->second != pid) strays.emplace_back(pid, uid);
      }
    }
    ::closedir(proc);
  }
  ParallelFor<std::pair<int, std::string>>(strays, options_.parallelism, [&](const auto& s) {
    log::Warn("killing stray vmm", {{"pid", s.first}, {"uid", s.second}});
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, s.first, 0)));
    if (!pidfd.valid()) return;
    ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    // Wait for it to be gone (bounded), and reap it should it be our own child.
    struct pollfd pfd = {pidfd.get(), POLLIN, 0};
    ::poll(&pfd, 1, 2000);
    siginfo_t info = {};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd.get()), &info,
             WEXITED | WNOHANG);
    count("vmm");
  });
  // 2. Sandbox directories of unclaimed uids.
  std::vector<std::string> dirs;
  if (DIR* vms = ::opendir(env_.vms_dir.c_str())) {
    while (struct dirent* d = ::readdir(vms)) {
      std::string name = d->d_name;
      if (name == "." || name == ".." || claimed.count(name)) continue;
      dirs.push_back(name);
    }
    ::closedir(vms);
  }
  // 2a. VMM cgroups of those uids, and of the strays killed above: removed before the
  //     directories, because a directory is what makes a cgroup under the node-wide parent ours.
  //     Only empty cgroups go (Remove waits briefly for the kernel to let go of a VMM that just
  //     died). A duplicate VMM of a claimed uid shared the adopted VMM's cgroup, which stays.
  {
    std::set<std::string> ours(dirs.begin(), dirs.end()), stale;
    for (const auto& s : strays) {
      if (!claimed.count(s.second)) stale.insert(s.second);
    }
    if (auto left = cgroups_->ListLeftovers(); left.ok()) {
      for (const auto& uid : *left) {
        if (ours.count(uid)) stale.insert(uid);
      }
    } else {
      log::Warn("list vmm cgroup leftovers failed", {{"error", left.status().message()}});
    }
    std::vector<std::string> uids(stale.begin(), stale.end());
    ParallelFor<std::string>(uids, options_.parallelism, [&](const std::string& uid) {
      if (!ValidatePathComponent(uid, "sandbox uid").ok()) return;
      if (absl::Status st = cgroups_->Remove(uid); st.ok())
        count("cgroup");
      else
        log::Warn("reclaim vmm cgroup failed", {{"uid", uid}, {"error", st.message()}});
    });
  }
  ParallelFor<std::string>(dirs, options_.parallelism, [&](const std::string& uid) {
    if (RemoveAll(Cat(env_.vms_dir, "/", uid)).ok()) count("dir");
  });
  // 3. Volumes of unclaimed uids.
  if (auto leftovers = volumes_->ListLeftovers(); leftovers.ok()) {
    std::vector<std::string> stale;
    for (const auto& id : *leftovers) {
      if (!claimed.count(id)) stale.push_back(id);
    }
    ParallelFor<std::string>(stale, options_.parallelism, [&](const std::string& id) {
      if (absl::Status st = volumes_->Remove(id); st.ok())
        count("volume");
      else
        log::Warn("reclaim volume failed", {{"uid", id}, {"error", st.message()}});
    });
  } else {
    log::Warn("list volume leftovers failed", {{"error", leftovers.status().message()}});
  }
  // 4. Networks of unclaimed uids.
  if (network_) {
    std::set<std::string> keep;
    for (const auto& [uid, key] : claimed) keep.insert(uid);
    auto r = network::ReclaimNetworkLeftovers(*network_, keep, options_.parallelism);
    if (r.ok()) {
      count("netns", r->netns_removed);
      count("veth", r->veths_removed);
      count("slot", r->slots_released);
    } else {
      log::Warn("reclaim networks failed", {{"error", r.status().message()}});
    }
  }
  return counts;
}

}  // namespace sandboxlet::runtime
