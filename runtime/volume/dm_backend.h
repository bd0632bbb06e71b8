// The device-mapper volume backend (production). Per base image one read-only loop device,
// shared by every sandbox of that template and reference-counted in <state>/volumes/bases.json
// (written atomically; survives a sandboxlet restart; the loop itself is found again by its
// backing file). Per sandbox a sparse CoW file <state>/volumes/<id>/rootfs.cow on its own loop
// device, and a dm device "sbl-<id>" with the kernel's snapshot target (see
// the kernel's Documentation/admin-guide/device-mapper/snapshot.rst):
//   0 <origin sectors> snapshot <origin loop> <cow loop> P 8
// P = persistent exception store (the CoW survives a reboot and can be re-attached or put into a
// snapshot), 8 = chunk of 8 sectors (4 KiB, the guest's block size: a 4 KiB guest write copies
// exactly one chunk).
//
// Every multi-step setup unwinds in reverse order on failure. dmsetup/losetup are reached only
// through DeviceControl. Thread-safe (see volume.h); bases_mu_ serializes the base-image
// bookkeeping (attach/detach of base loops and bases.json).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/volume/device_control.h"
#include "runtime/volume/digest.h"
#include "runtime/volume/layout.h"
#include "runtime/volume/volume.h"

namespace sandboxlet {

class DmVolumeBackend final : public VolumeBackend {
 public:
  static absl::StatusOr<std::unique_ptr<DmVolumeBackend>> Make(
      const VolumeOptions& options, std::unique_ptr<DeviceControl> control);

  absl::StatusOr<Volume> Create(const VolumeSpec& spec) override;
  absl::StatusOr<Volume> Open(const VolumeSpec& spec) override;
  absl::Status Remove(const std::string& id) override;
  absl::Status CaptureInto(const std::string& id, const std::string& snapshot_dir,
                           CaptureMode mode) override;
  absl::StatusOr<Volume> RestoreFrom(const VolumeSpec& spec, const std::string& snapshot_dir,
                                     const std::string& expected_base_digest) override;
  absl::Status Flatten(const std::string& id, const std::string& new_base_path) override;
  absl::StatusOr<std::vector<std::string>> ListLeftovers() override;
  std::string Name() const override { return "devicemapper"; }

  // The CoW file's size for an origin of origin_bytes: enough for every origin chunk to be
  // copied once. The persistent exception store uses 4 KiB chunks here: one header chunk, then
  // areas of one metadata chunk (256 exceptions of 16 bytes) followed by 256 data chunks. So a
  // fully rewritten origin of N chunks needs 1 + N + ceil(N/256) chunks (~0.4% over the origin);
  // rounded up to 1 MiB. A CoW that fills up makes the kernel invalidate the snapshot and the
  // guest sees EIO on every access, so this is the minimum, not an estimate. The file is sparse:
  // only written chunks use space.
  static uint64_t CowSizeFor(uint64_t origin_bytes);

 private:
  DmVolumeBackend(const VolumeOptions& options, VolumeLayout layout,
                  std::unique_ptr<DeviceControl> control);

  struct BaseRef {
    std::string loop;
    bool added = false;  // the id was not a user of the base before
  };
  // Adds id as a user of base (attaching its loop device if none is attached) and persists it.
  absl::StatusOr<BaseRef> AcquireBase(const std::string& id, const BaseImage& base,
                                      const std::string& digest);
  // Drops id from every base it uses; detaches a base's loop when its last user goes.
  absl::Status ReleaseBase(const std::string& id);
  // The base image id uses per bases.json, with the digest recorded there.
  absl::StatusOr<std::pair<std::string, std::string>> BaseOf(const std::string& id);
  absl::StatusOr<nlohmann::json> LoadBasesLocked();
  absl::Status SaveBasesLocked(const nlohmann::json& bases);

  // Brings up the loops and the dm device for a volume whose CoW file exists. With
  // `reattach`, reuses a cow loop / dm device that is already there (Open after a restart).
  // Registers the unwind of each step it takes in `undo`.
  absl::Status Activate(const std::string& id, const BaseImage& base, const std::string& digest,
                        bool reattach, Undo& undo);
  // `dmsetup remove` retried with backoff while busy; absent is OK.
  absl::Status RemoveDevice(const std::string& id);
  // Detaches every loop device backed by a file in the volume's directory.
  absl::Status DetachVolumeLoops(const std::string& id);
  // Creates the CoW file as <cow>.partial from `source` (a snapshot's CoW, or empty for a fresh
  // one), sized at least CowSizeFor(origin), fsynced, and renamed into place.
  absl::Status WriteCow(const std::string& id, const std::string& source, uint64_t origin_bytes);

  Volume Describe(const std::string& id, const BaseImage& base, const std::string& digest) const;
  std::string DmName(const std::string& id) const { return std::string(kDmPrefix) + id; }

  const VolumeOptions options_;
  const VolumeLayout layout_;
  const std::unique_ptr<DeviceControl> control_;
  Clock* const clock_;
  BaseDigests digests_;
  IdLocks locks_;
  std::mutex bases_mu_;  // guards bases.json and the attach/detach of base loops
};

}  // namespace sandboxlet
