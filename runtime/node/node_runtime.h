// NodeRuntime: the real SandboxRuntime of a node. It composes the runtime layer:
//   runtime/vm       a Machine per sandbox (CH process + client) and the snapshot/restore flows
//   runtime/volume   the sandbox's copy-on-write root volume over its template's base image
//   runtime/network  the sandbox's netns, veth, tap0 and NAT
//   runtime/snapshot the node's snapshots
//   runtime/vmm      the exit watcher (crash detection) and adoption after a restart
//
// On disk, per sandbox: <state>/vms/<uid>/sandbox.json (what it was started with, and whether it
// was stopped on purpose) beside the VMM's own record, logs and serial console. That record is
// what lets a restarted sandboxlet re-attach to a running VMM, re-open the volume and network of
// a stopped one, and tell a VMM that died while sandboxlet was down from one that was stopped.
//
// Templates: <templates-dir>/<name>/rootfs.ext4 is the immutable base image.
//
// Thread-safety: see sandbox_runtime.h. mu_ guards the table of sandboxes and each entry's
// observable fields; long operations run outside it (the caller serializes per uid).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/ch/version.h"
#include "runtime/guest/agent_client.h"
#include "runtime/network/sandbox_network.h"
#include "runtime/node/guest_agent_access.h"
#include "runtime/node/sandbox_runtime.h"
#include "runtime/snapshot/store.h"
#include "runtime/vm/machine.h"
#include "runtime/vmm/cgroup.h"
#include "runtime/vmm/exit_watcher.h"
#include "runtime/volume/volume.h"

namespace sandboxlet::runtime {

struct NodeRuntimeOptions {
  std::string state_dir = "/var/lib/sandboxlet";
  std::string run_dir = "/run/sandboxlet";
  std::string vmm_bin = "cloud-hypervisor";
  // The version of vmm_bin if the caller already detected it; Open runs `--version` otherwise.
  std::optional<ch::ChVersion> version;
  std::string kernel;         // default <state>/kernel/vmlinux
  std::string templates_dir;  // default <state>/templates
  std::string cmdline = "console=ttyS0 root=/dev/vda rw reboot=k panic=1";
  std::string volume_backend = "auto";  // auto | devicemapper | file
  bool network_enabled = true;          // false: no sandbox gets a network (nodes without netns)
  network::NetworkConfig network;       // state_dir is filled in from state_dir
  std::chrono::milliseconds api_timeout{10000};
  std::chrono::milliseconds ready_timeout{10000};
  std::chrono::milliseconds snapshot_timeout{300000};
  std::chrono::milliseconds stop_grace{3000};
  int parallelism = 16;  // adoption and reclaim workers
  // Every VMM in a cgroup of its own (runtime/vmm/cgroup.h), so that VMs survive a restart of
  // sandboxlet's systemd unit or pod: "auto" (detect v1/v2 at Open; if cgroups are unusable,
  // log a warning and run VMMs in sandboxlet's cgroup) | "off".
  std::string vmm_cgroups = "auto";
  vmm::VmmCgroupOptions cgroups;  // root (/sys/fs/cgroup) and parent directory (sandboxlet)
  // The guest agent at <slot address>:<port> (needs networking). Start/RestoreFrom never wait
  // for it; the controller polls GuestHealth. Snapshot/Hibernate ask it to quiesce first.
  GuestAgentOptions guest_agent;
  // Metrics hooks (may be empty): every CH call; every VM operation ("boot", "restore",
  // "pause", "resume", "snapshot", "stop") with its duration and whether it succeeded; every
  // VMM exit by reason ("crash", "shutdown", "killed").
  std::function<void(std::string_view, int, std::chrono::nanoseconds)> ch_observer;
  std::function<void(std::string_view op, bool ok, std::chrono::nanoseconds)> op_observer;
  std::function<void(std::string_view reason)> exit_observer;
};

class NodeRuntime final : public SandboxRuntime, public GuestAgentAccess {
 public:
  // Detects the CH version (a missing --vmm-bin is a clear error), opens the volume backend,
  // the network and the snapshot store, and starts the exit watcher.
  static absl::StatusOr<std::unique_ptr<NodeRuntime>> Open(NodeRuntimeOptions options);
  ~NodeRuntime() override;

  VmObservation Observe(const std::string& uid) override;
  absl::Status Start(const SandboxRuntimeSpec& spec) override;
  absl::Status RestoreFrom(const SandboxRuntimeSpec& spec, const std::string& snapshot_id) override;
  absl::Status Pause(const std::string& uid) override;
  absl::Status Resume(const std::string& uid) override;
  absl::StatusOr<SnapshotInfo> Snapshot(const std::string& uid,
                                        const std::string& snapshot_id) override;
  absl::StatusOr<SnapshotInfo> Hibernate(const std::string& uid,
                                         const std::string& snapshot_id) override;
  absl::Status Stop(const std::string& uid) override;
  absl::Status Destroy(const std::string& uid) override;
  absl::Status DeleteSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<SnapshotInfo> GetSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<std::string>> ListSnapshots() override;
  absl::StatusOr<AdoptionReport> AdoptAndReclaim(
      const std::map<std::string, std::string>& claimed) override;
  void SetExitHandler(
      std::function<void(const std::string& uid, const VmExitInfo& exit)> handler) override;

  const GuestAgentOptions& GuestAgentSettings() const override { return options_.guest_agent; }
  absl::StatusOr<guest::AgentHealth> GuestHealth(const std::string& uid) override;
  absl::Status GuestInit(const std::string& uid, const guest::InitRequest& request) override;
  // Polls GuestHealth until it answers or guest_agent.ready_timeout passes (the clear
  // DeadlineExceeded of AgentClient::WaitReady). Blocks: for tools and tests, not reconcilers.
  absl::StatusOr<guest::AgentHealth> GuestWaitReady(const std::string& uid);

  const ch::ChVersion& version() const { return env_.version; }
  std::string volume_backend() const { return volumes_->Name(); }
  SnapshotStore& snapshots() { return *snapshots_; }
  const NodeRuntimeOptions& options() const { return options_; }

 private:
  // What <vm_dir>/sandbox.json holds.
  struct Record {
    std::string uid, key, template_name;
    int vcpus = 1;
    uint64_t memory_mib = 512;
    uint64_t disk_mib = 0;
    bool network = true;
    bool egress = true;
    bool stopped = false;  // Stop() was called: the VMM is meant to be down
  };
  struct Entry {
    Record record;
    std::unique_ptr<vm::Machine> machine;  // set while a VMM is up (or adopted)
    std::optional<Volume> volume;
    std::optional<network::NetworkInfo> net;
    VmPhase phase = VmPhase::kAbsent;
    std::optional<VmExitInfo> last_exit;
    std::chrono::system_clock::time_point started_at;
    int pid = 0;
  };

  NodeRuntime(NodeRuntimeOptions options, vm::MachineEnv env,
              std::unique_ptr<VolumeBackend> volumes,
              std::unique_ptr<network::SandboxNetwork> network,
              std::unique_ptr<SnapshotStore> snapshots);

  std::shared_ptr<Entry> Find(const std::string& uid);
  std::shared_ptr<Entry> FindOrCreate(const std::string& uid);
  void SetPhase(Entry& e, VmPhase phase);
  absl::StatusOr<std::string> BaseImage(const std::string& template_name) const;
  absl::Status WriteRecord(const Record& record);
  absl::StatusOr<Record> ReadRecord(const std::string& uid);
  vm::MachineSpec MachineSpecFor(const Entry& e) const;
  absl::StatusOr<Volume> EnsureVolume(Entry& e, bool* created);
  absl::StatusOr<network::NetworkInfo> EnsureNetwork(Entry& e, bool* created);
  void Watch(Entry& e);
  void OnExit(const vmm::VmmExit& exit);
  // Stops the VMM of `e` if any (unwatching it first, so the exit is not reported as a crash).
  absl::Status StopMachine(Entry& e);
  // Snapshot (and, for hibernation, leave the VM paused) through vm::TakeSnapshot.
  absl::StatusOr<SnapshotInfo> TakeSnapshot(const std::string& uid, const std::string& snapshot_id,
                                            bool hibernate);
  void Timed(std::string_view op, const std::function<absl::Status()>& fn, absl::Status* out);
  // A client for the guest agent of a Running sandbox with a network (FailedPrecondition else).
  absl::StatusOr<guest::AgentClient> GuestClient(const std::string& uid);
  // Best effort `POST /snapshot/prepare` before pausing for a snapshot; failures are logged.
  void PrepareGuestForSnapshot(const std::string& uid);
  absl::Status AdoptOne(const std::string& uid, const std::string& key, AdoptionReport* report,
                        std::mutex* report_mu);
  std::map<std::string, int> Reclaim(const std::map<std::string, std::string>& claimed);
  // Removes the VMM cgroups of `uid` (its VMM is gone); a failure is logged.
  void RemoveCgroups(const std::string& uid, const std::string& key);

  const NodeRuntimeOptions options_;
  const vm::MachineEnv env_;
  const std::unique_ptr<VolumeBackend> volumes_;
  const std::unique_ptr<network::SandboxNetwork> network_;  // null without networking
  const std::unique_ptr<SnapshotStore> snapshots_;
  std::unique_ptr<vmm::ExitWatcher> watcher_;
  std::unique_ptr<vmm::VmmCgroups> cgroups_;  // set in Open, never null afterwards

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;                    // guarded by mu_
  std::function<void(const std::string&, const VmExitInfo&)> exit_handler_;  // guarded by mu_
};

}  // namespace sandboxlet::runtime
