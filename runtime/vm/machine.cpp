#include "runtime/vm/machine.h"

#include <sys/stat.h>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::vm {
namespace {

constexpr char kStableDir[] = "stable";  // <vm_dir>/stable, mounted on stable_root
constexpr char kDiskName[] = "rootfs";   // <stable_root>/rootfs: the disk as CH sees it
constexpr char kSerialName[] = "serial.log";

std::unique_ptr<ch::ChClient> MakeClient(const MachineEnv& env, const std::string& vm_dir,
                                         const std::string& key) {
  ch::ChClientOptions opts;
  opts.socket_path = vmm::VmmProcess::ApiSocketPath(vm_dir);
  opts.vm_name = key;
  opts.version = env.version;
  opts.default_timeout = env.api_timeout;
  opts.observer = env.ch_observer;
  return std::make_unique<ch::ChClient>(std::move(opts));
}

// Creates an empty regular file if nothing exists at `path` (a bind-mount target for a file).
absl::Status TouchFile(const std::string& path) {
  if (PathExists(path)) return absl::OkStatus();
  return WriteFileAtomic(path, "", 0600);
}

}  // namespace

absl::Status ChProbe::Ping(std::chrono::milliseconds timeout) {
  return client_.Ping(timeout).status();
}

absl::Status ChProbe::ShutdownVmm(std::chrono::milliseconds timeout) {
  return client_.ShutdownVmm(timeout);
}

std::string Machine::StableDiskPath(const MachineEnv& env) {
  return Cat(env.stable_root, "/", kDiskName);
}

std::string Machine::StableSerialPath(const MachineEnv& env) {
  return Cat(env.stable_root, "/", kSerialName);
}

absl::StatusOr<std::string> Machine::VmDir(const MachineEnv& env, const std::string& id) {
  return JoinUnder(env.vms_dir, id, "sandbox id");
}

ch::VmConfig BuildVmConfig(const MachineEnv& env, const MachineSpec& spec) {
  ch::VmConfig config;
  config.payload.kernel = env.kernel;
  config.payload.cmdline = env.cmdline;
  if (!env.initramfs.empty()) config.payload.initramfs = env.initramfs;
  config.cpus.boot_vcpus = spec.vcpus;
  config.cpus.max_vcpus = spec.vcpus;
  config.memory.size = spec.memory_mib << 20;
  ch::DiskConfig disk;
  disk.path = Machine::StableDiskPath(env);
  disk.id = "rootfs";
  config.disks.push_back(disk);
  if (spec.tap) {
    ch::NetConfig net;
    net.tap = spec.tap->name;
    // ip/mask configure the host side of a tap CH creates itself; our tap0 is pre-created with
    // the gateway address, so they are omitted (CONTRACT §6: together or not at all).
    if (!spec.tap->ip.empty()) {
      net.ip = spec.tap->ip;
      net.mask = spec.tap->mask;
    }
    net.mac = spec.tap->mac;
    net.id = "net0";
    config.net.push_back(net);
  }
  // A daemon captures the serial console to a file and never ties the guest to a terminal
  // (CONTRACT §6).
  config.serial.mode = ch::ConsoleMode::kFile;
  config.serial.file = Machine::StableSerialPath(env);
  config.console.mode = ch::ConsoleMode::kOff;
  return config;
}

Machine::Machine(const MachineEnv& env, std::string id, std::string key, std::string vm_dir,
                 std::unique_ptr<ch::ChClient> client, std::unique_ptr<vmm::VmmProcess> process)
    : env_(env),
      id_(std::move(id)),
      key_(std::move(key)),
      vm_dir_(std::move(vm_dir)),
      client_(std::move(client)),
      process_(std::move(process)) {}

std::string Machine::serial_log_path() const {
  return Cat(vm_dir_, "/", kStableDir, "/", kSerialName);
}
std::string Machine::vmm_log_path() const { return Cat(vm_dir_, "/", vmm::VmmProcess::kLogName); }

absl::StatusOr<std::unique_ptr<Machine>> Machine::Spawn(const MachineEnv& env,
                                                        const MachineSpec& spec,
                                                        std::vector<std::string> extra_args) {
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, VmDir(env, spec.id));
  auto fail = [&](const absl::Status& st, std::string_view step) {
    return Annotate(st, Cat("vm ", spec.key, ": ", step));
  };
  if (spec.disk_path.empty() || spec.disk_path[0] != '/') {
    return absl::InvalidArgumentError(
        Cat("vm ", spec.key, ": disk path \"", spec.disk_path, "\" must be absolute"));
  }
  std::string stable_dir = Cat(vm_dir, "/", kStableDir);
  if (auto st = MakeDirs(stable_dir, 0700); !st.ok()) return fail(st, "create vm directory");
  if (auto st = MakeDirs(env.stable_root, 0755); !st.ok()) return fail(st, "create stable root");
  // Bind targets inside <vm_dir>/stable exist before the VMM's namespace is set up.
  if (auto st = TouchFile(Cat(stable_dir, "/", kDiskName)); !st.ok()) {
    return fail(st, "create disk mount point");
  }
  if (auto st = TouchFile(Cat(stable_dir, "/", kSerialName)); !st.ok()) {
    return fail(st, "create serial log");
  }

  vmm::VmmSpec vspec;
  vspec.vmm_bin = env.vmm_bin;
  vspec.vm_dir = vm_dir;
  vspec.key = spec.key;
  vspec.netns = spec.netns;
  vspec.binds = {{stable_dir, env.stable_root}, {spec.disk_path, StableDiskPath(env)}};
  vspec.extra_args = std::move(extra_args);
  vspec.cgroup_procs = spec.cgroup_procs;
  auto client = MakeClient(env, vm_dir, spec.key);
  ChProbe probe(*client);
  auto process = vmm::VmmProcess::Spawn(vspec, probe, env.ready_timeout);
  if (!process.ok()) return process.status();
  return std::unique_ptr<Machine>(
      new Machine(env, spec.id, spec.key, vm_dir, std::move(client), std::move(*process)));
}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Boot(const MachineEnv& env,
                                                       const MachineSpec& spec) {
  ch::VmConfig config = BuildVmConfig(env, spec);
  if (auto st = ch::ValidateVmConfig(config); !st.ok()) {
    return Annotate(st, Cat("vm ", spec.key, ": config"));
  }
  SBL_ASSIGN_OR_RETURN(std::unique_ptr<Machine> m, Spawn(env, spec, {}));
  absl::Status st = m->client_->CreateVm(config);
  if (st.ok()) st = m->client_->BootVm();
  if (!st.ok()) {
    // Unwind: the VMM we started goes away with its files.
    (void)m->Stop();
    (void)RemoveFiles(env, spec.id);
    return st;
  }
  log::Info("vm booted",
            {{"sandbox", spec.key}, {"vcpus", spec.vcpus}, {"memory_mib", spec.memory_mib}});
  return m;
}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Restore(const MachineEnv& env,
                                                          const MachineSpec& spec,
                                                          const std::string& source_url) {
  SBL_ASSIGN_OR_RETURN(std::unique_ptr<Machine> m, Spawn(env, spec, {}));
  ch::RestoreConfig rc;
  rc.source_url = source_url;
  if (env.version.RestoreResume()) rc.resume = true;
  absl::Status st = m->client_->Restore(rc, env.snapshot_timeout);
  // Below v52 `resume` does not exist and the VM stays Paused (CONTRACT §5).
  if (st.ok() && !env.version.RestoreResume()) st = m->client_->ResumeVm();
  if (!st.ok()) {
    (void)m->Stop();
    (void)RemoveFiles(env, spec.id);
    return st;
  }
  log::Info("vm restored", {{"sandbox", spec.key}, {"source", source_url}});
  return m;
}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Adopt(const MachineEnv& env,
                                                        const std::string& id,
                                                        const std::string& key) {
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, VmDir(env, id));
  auto client = MakeClient(env, vm_dir, key);
  ChProbe probe(*client);
  auto process = vmm::VmmProcess::Adopt(vm_dir, probe, env.api_timeout);
  if (!process.ok()) return Annotate(process.status(), Cat("vm ", key, ": adopt"));
  return std::unique_ptr<Machine>(
      new Machine(env, id, key, vm_dir, std::move(client), std::move(*process)));
}

absl::Status Machine::Pause() { return client_->PauseVm(); }
absl::Status Machine::Resume() { return client_->ResumeVm(); }
absl::StatusOr<ch::VmInfo> Machine::Info() { return client_->Info(); }

absl::Status Machine::SnapshotTo(const std::string& dir) {
  return client_->Snapshot(dir, env_.snapshot_timeout);
}

absl::StatusOr<vmm::ExitKind> Machine::Stop() {
  ChProbe probe(*client_);
  auto kind = process_->Stop(probe, env_.stop_grace);
  client_->Disconnect();
  return kind;
}

absl::Status Machine::RemoveFiles(const MachineEnv& env, const std::string& id) {
  SBL_ASSIGN_OR_RETURN(std::string vm_dir, VmDir(env, id));
  return RemoveAll(vm_dir);
}

}  // namespace sandboxlet::vm
