// Machine: one sandbox's microVM — its Cloud Hypervisor process (runtime/vmm), the API client
// that drives it (runtime/ch) and its files under <state>/vms/<id>. Boot, restore, pause,
// resume, snapshot into a directory, stop, and re-attach after a sandboxlet restart.
//
// Stable paths. Every VMM runs in a private mount namespace where the host directory
// <vm_dir>/stable is bind-mounted on the node-wide directory `stable_root` (default
// <run-dir>/vmroot), and the sandbox's disk on <stable_root>/rootfs. CH's config therefore names
// the same disk and serial paths for every sandbox (<stable_root>/rootfs,
// <stable_root>/serial.log), so a snapshot's config.json restores under another sandbox without
// edits (CONTRACT §5), the same way every sandbox's tap is called tap0 in its own network
// namespace.
//
// Thread-safety: a Machine is not thread-safe; the caller serializes operations on one sandbox
// (the controller's per-key lock). Different Machines are independent.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/ch/client.h"
#include "runtime/ch/version.h"
#include "runtime/vmm/process.h"

namespace sandboxlet::vm {

// Node-wide settings shared by every Machine.
struct MachineEnv {
  std::string vmm_bin;      // cloud-hypervisor (or the simulator, in tests)
  ch::ChVersion version;    // detected once from vmm_bin
  std::string vms_dir;      // <state>/vms: one directory per sandbox id
  std::string stable_root;  // host directory every VMM mounts its own files over
  std::string kernel;       // guest kernel (vmlinux/bzImage)
  std::string cmdline = "console=ttyS0 root=/dev/vda rw reboot=k panic=1";
  std::string initramfs;                               // optional
  std::chrono::milliseconds api_timeout{10000};        // ordinary CH calls
  std::chrono::milliseconds ready_timeout{10000};      // spawn until vmm.ping answers
  std::chrono::milliseconds snapshot_timeout{300000};  // vm.snapshot and vm.restore
  std::chrono::milliseconds stop_grace{3000};          // each stop escalation step
  // Called after every CH call (endpoint, HTTP status or 0, latency): feeds metrics.
  std::function<void(std::string_view, int, std::chrono::nanoseconds)> ch_observer;
};

// The guest network device: a tap that already exists in the sandbox's network namespace.
struct TapDevice {
  std::string name = "tap0";
  std::string ip;  // guest address as CH configures it
  std::string mask;
  std::optional<std::string> mac;
};

struct MachineSpec {
  std::string id;   // sandbox uid: a path component, stable across sandboxlet restarts
  std::string key;  // "namespace/name", for messages and logs
  int vcpus = 1;
  uint64_t memory_mib = 512;
  std::string disk_path;  // host path of the root disk (volume layer), bind-mounted as rootfs
  std::string netns;      // named network namespace ("" = sandboxlet's own)
  std::optional<TapDevice> tap;
  // cgroup.procs files the VMM joins before exec (vmm::VmmCgroups::Prepare); empty: none.
  std::vector<std::string> cgroup_procs;
};

class Machine {
 public:
  // Disk and serial paths as CH sees them (inside the VMM's mount namespace).
  static std::string StableDiskPath(const MachineEnv& env);
  static std::string StableSerialPath(const MachineEnv& env);
  // <vms_dir>/<id>, refusing ids that are not a single safe path component.
  static absl::StatusOr<std::string> VmDir(const MachineEnv& env, const std::string& id);

  // Spawns the VMM, vm.create with the spec's config, vm.boot. On failure everything done so
  // far is undone in reverse order (the VMM is stopped, its directory removed).
  static absl::StatusOr<std::unique_ptr<Machine>> Boot(const MachineEnv& env,
                                                       const MachineSpec& spec);

  // Spawns the VMM and restores from `source_url` ("file://<dir>", e.g. from
  // SnapshotStore::StageRestore), then resumes (with `resume:true` on v52+, else vm.resume).
  // The disk at spec.disk_path must already hold the snapshot's disk. Unwinds on failure.
  static absl::StatusOr<std::unique_ptr<Machine>> Restore(const MachineEnv& env,
                                                          const MachineSpec& spec,
                                                          const std::string& source_url);

  // Re-attaches to a VMM started by an earlier sandboxlet from <vm_dir>/vmm.json: NotFound if it
  // is gone; FailedPrecondition if alive but its API does not answer.
  static absl::StatusOr<std::unique_ptr<Machine>> Adopt(const MachineEnv& env,
                                                        const std::string& id,
                                                        const std::string& key);

  absl::Status Pause();
  absl::Status Resume();
  absl::StatusOr<ch::VmInfo> Info();
  // vm.snapshot into `dir` (absolute, existing, empty); the VM must be Paused and stays Paused.
  absl::Status SnapshotTo(const std::string& dir);
  // vmm.shutdown → SIGTERM → SIGKILL; removes the VMM's record and socket. The VM directory
  // (logs, serial) stays until RemoveFiles.
  absl::StatusOr<vmm::ExitKind> Stop();
  // Removes <vm_dir>. Only after Stop (or when the VMM is known to be gone).
  static absl::Status RemoveFiles(const MachineEnv& env, const std::string& id);

  const std::string& id() const { return id_; }
  const std::string& key() const { return key_; }
  const std::string& vm_dir() const { return vm_dir_; }
  std::string serial_log_path() const;  // host path of the guest's serial console
  std::string vmm_log_path() const;     // host path of CH's own log
  vmm::VmmProcess& process() { return *process_; }
  ch::ChClient& client() { return *client_; }

 private:
  Machine(const MachineEnv& env, std::string id, std::string key, std::string vm_dir,
          std::unique_ptr<ch::ChClient> client, std::unique_ptr<vmm::VmmProcess> process);

  static absl::StatusOr<std::unique_ptr<Machine>> Spawn(const MachineEnv& env,
                                                        const MachineSpec& spec,
                                                        std::vector<std::string> extra_args);

  const MachineEnv env_;  // a copy: a Machine may outlive the caller's settings object
  const std::string id_;
  const std::string key_;
  const std::string vm_dir_;
  std::unique_ptr<ch::ChClient> client_;
  std::unique_ptr<vmm::VmmProcess> process_;
};

// The VmmApiProbe the process layer needs, over a ChClient.
class ChProbe final : public vmm::VmmApiProbe {
 public:
  explicit ChProbe(ch::ChClient& client) : client_(client) {}
  absl::Status Ping(std::chrono::milliseconds timeout) override;
  absl::Status ShutdownVmm(std::chrono::milliseconds timeout) override;

 private:
  ch::ChClient& client_;
};

// The CH VmConfig a sandbox boots with.
ch::VmConfig BuildVmConfig(const MachineEnv& env, const MachineSpec& spec);

}  // namespace sandboxlet::vm
