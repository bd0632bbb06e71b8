// The two multi-step flows that cross the VM, its volume and the snapshot store:
//
//   TakeSnapshot:    pause → vm.snapshot into a fresh pending directory → capture the rootfs →
//                    rootfs.meta → commit (atomic) → resume
//   RestoreSnapshot: read meta → volume from the snapshot's rootfs (base digest checked) →
//                    stage the snapshot (hard links) → spawn CH → vm.restore → resume
//
// Each undoes what it did, in reverse order, when a step fails: a failed snapshot leaves the VM
// running as it was and any earlier snapshot of the same id untouched; a failed restore leaves
// no VMM, no volume and no files behind (DESIGN.md, Invariants).
//
// Thread-safety: as Machine — the caller holds the sandbox's lock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/snapshot/store.h"
#include "runtime/vm/machine.h"
#include "runtime/volume/volume.h"

namespace sandboxlet::vm {

struct SnapshotRequest {
  std::string snapshot_id;  // SnapshotStore id
  std::string template_name;
  int vcpus = 0;
  uint64_t memory_mib = 0;
  // Hibernate: the VM is left Paused after the commit; the caller then stops the VMM and
  // removes the volume.
  bool hibernate = false;
};

struct SnapshotResult {
  std::string dir;         // the committed snapshot directory
  int64_t size_bytes = 0;  // allocated bytes (DirSize)
};

absl::StatusOr<SnapshotResult> TakeSnapshot(Machine& machine, const Volume& volume,
                                            VolumeBackend& volumes, SnapshotStore& store,
                                            const SnapshotRequest& request);

struct RestoredMachine {
  std::unique_ptr<Machine> machine;
  Volume volume;
};

// `spec.disk_path` is ignored: the disk is the volume restored from the snapshot. `base_image`
// is the template's image, whose digest must match the one the snapshot recorded.
absl::StatusOr<RestoredMachine> RestoreSnapshot(const MachineEnv& env, MachineSpec spec,
                                                VolumeBackend& volumes, SnapshotStore& store,
                                                const std::string& snapshot_id,
                                                const std::string& base_image);

}  // namespace sandboxlet::vm
