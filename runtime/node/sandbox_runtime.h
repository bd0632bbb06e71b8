// SandboxRuntime: everything the controller asks of the node, in node terms — start a sandbox's
// microVM with its volume and network, pause/resume it, snapshot it, hibernate it, restore a
// snapshot into it, stop and destroy it, adopt what an earlier sandboxlet left running and
// reclaim what nobody claims. It knows nothing of the store or of Kubernetes objects: sandboxes
// are identified by their uid (a path-safe id that outlives sandboxlet restarts) and carry their
// "namespace/name" key only for messages.
//
// Semantics the reconcilers rely on:
//  - Observe() is cheap (in-memory, no I/O) and never blocks on a VMM.
//  - Every operation returns within its deadlines (CH calls are bounded), and undoes what it did
//    when it fails, so a failed Start leaves the sandbox Absent and a failed Snapshot leaves the
//    VM as it was (Running stays Running).
//  - A VMM exit (crash, guest poweroff, kill) is reported within milliseconds through the exit
//    handler; the sandbox is then observed as kExited with the exit, until Start (restart, keeping
//    the volume and network) or Destroy.
//  - Stop keeps the volume and network (the sandbox can Start again from the same disk); Hibernate
//    keeps only the snapshot; Destroy removes everything but snapshots.
//
// Thread-safety: all methods are thread-safe; operations on one uid must be serialized by the
// caller (the workqueue never runs one key on two workers), operations on different uids run in
// parallel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet::runtime {

struct SandboxRuntimeSpec {
  std::string uid;            // path-safe id (metadata.uid)
  std::string key;            // "namespace/name"
  std::string template_name;  // base image: <templates-dir>/<template>/rootfs.ext4
  int vcpus = 1;
  uint64_t memory_mib = 512;
  uint64_t disk_mib = 0;  // minimum disk size; 0 = the template's size
  bool network = true;
  bool egress = true;
  std::vector<std::pair<std::string, std::string>> env;  // for the guest agent's /init
};

enum class VmPhase {
  kAbsent,   // no VMM and no resources for this uid
  kRunning,  // VMM up, VM running
  kPaused,   // VMM up, VM paused (memory kept)
  kStopped,  // no VMM; volume and network kept (Stop)
  kExited,   // the VMM exited on its own (crash, guest poweroff); volume and network kept
};
const char* VmPhaseName(VmPhase phase);

struct VmExitInfo {
  int exit_code = -1;  // -1 if unknown or killed by a signal
  int signal = 0;
  bool status_known = false;  // false for adopted VMMs (not our children)
  std::string reason;         // "Crashed", "Completed", "Killed", "Unknown"
  std::chrono::system_clock::time_point finished_at;
};

struct VmObservation {
  VmPhase phase = VmPhase::kAbsent;
  int pid = 0;
  std::string ch_version;  // "v48.0.0"
  std::string api_socket;
  std::string ip;       // host-routable address of the guest ("" without network)
  std::string vmm_log;  // host paths of CH's log and the guest's serial console
  std::string serial_log;
  std::chrono::system_clock::time_point started_at;
  std::optional<VmExitInfo> last_exit;  // set in kExited
};

struct SnapshotInfo {
  std::string id;
  int64_t size_bytes = 0;  // allocated bytes of the snapshot directory
  std::string template_name;
  int vcpus = 0;
  uint64_t memory_mib = 0;
};

struct AdoptionReport {
  std::vector<std::string> adopted;         // uids re-attached with their VMM running
  std::map<std::string, std::string> lost;  // uid → why its VMM could not be adopted
  std::map<std::string, int> reclaimed;     // kind ("vmm", "netns", "volume", "dir") → count
};

class SandboxRuntime {
 public:
  virtual ~SandboxRuntime() = default;

  virtual VmObservation Observe(const std::string& uid) = 0;

  // Absent/Stopped/Exited → Running: creates what is missing (volume, network) and boots a new
  // VMM. AlreadyExists if a VMM is up. NotFound naming the template if its image is missing.
  virtual absl::Status Start(const SandboxRuntimeSpec& spec) = 0;
  // Absent → Running from a snapshot (its disk, memory and device state). The template must be
  // the snapshot's (digest-checked); vcpus/memory come from the snapshot.
  virtual absl::Status RestoreFrom(const SandboxRuntimeSpec& spec,
                                   const std::string& snapshot_id) = 0;
  virtual absl::Status Pause(const std::string& uid) = 0;
  virtual absl::Status Resume(const std::string& uid) = 0;
  // Running or Paused → the same state, with a committed snapshot `snapshot_id` (replacing an
  // earlier one of that id only on success).
  virtual absl::StatusOr<SnapshotInfo> Snapshot(const std::string& uid,
                                                const std::string& snapshot_id) = 0;
  // Running/Paused → Absent with a committed snapshot `snapshot_id`: snapshot, stop the VMM,
  // release network and volume. On failure the VM is left Running as before.
  virtual absl::StatusOr<SnapshotInfo> Hibernate(const std::string& uid,
                                                 const std::string& snapshot_id) = 0;
  // Running/Paused/Exited → Stopped (VMM gone; volume and network kept).
  virtual absl::Status Stop(const std::string& uid) = 0;
  // Anything → Absent: VMM, network, volume and files removed. Idempotent.
  virtual absl::Status Destroy(const std::string& uid) = 0;

  virtual absl::Status DeleteSnapshot(const std::string& snapshot_id) = 0;
  virtual absl::StatusOr<SnapshotInfo> GetSnapshot(const std::string& snapshot_id) = 0;
  virtual absl::StatusOr<std::vector<std::string>> ListSnapshots() = 0;

  // At startup, before serving: re-attach to the VMMs of `claimed` (uid → key) recorded on disk;
  // then remove VMMs, networks, volumes and directories that belong to no claimed uid. Claimed
  // sandboxes whose VMM is gone are reported in `lost` (and observed as kExited).
  virtual absl::StatusOr<AdoptionReport> AdoptAndReclaim(
      const std::map<std::string, std::string>& claimed) = 0;

  // Called (from a runtime thread, without runtime locks held) when a sandbox's VMM exits on
  // its own. Set once before AdoptAndReclaim.
  virtual void SetExitHandler(
      std::function<void(const std::string& uid, const VmExitInfo& exit)> handler) = 0;
};

}  // namespace sandboxlet::runtime
