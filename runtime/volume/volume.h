// Root volumes: each sandbox's writable disk, a copy-on-write view of its template's immutable base
// image. Two backends implement one interface:
//  - devicemapper (production): a dm `snapshot` target over a shared read-only loop device of the
//    base image and a per-sandbox sparse CoW file (<state>/volumes/<id>/rootfs.cow);
//  - file (kernels without device-mapper): a per-sandbox reflink or sparse copy of the base image
//    (<state>/volumes/<id>/rootfs.ext4).
// MakeVolumeBackend picks one ("auto": devicemapper when /dev/mapper/control answers DM_VERSION).
//
// Base digest: "sha256:<hex>" over the base image's size and every 4 KiB block that is not all
// zeros, with its offset (digest.h). It identifies content, not layout: a copy of a template with
// different holes has the same digest, holes cost nothing to hash, and it is cached per
// (dev, inode, size, mtime, ctime) in <state>/volumes/digests.json so each base is read once.
// Base images are never modified in place; the digest lets a restore refuse a CoW recorded against
// other content (the caller stores Volume::base_digest in the snapshot's rootfs.meta).
//
// Thread-safety: backends are thread-safe. Operations on one id are serialized; operations on
// different ids run in parallel (the device-mapper backend serializes its base-image bookkeeping).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/clock.h"

namespace sandboxlet {

struct VolumeSpec {
  std::string id;          // sandbox uid; becomes a path component and the dm name "sbl-<id>"
  std::string key;         // "ns/name", for messages
  std::string base_image;  // path of the template's rootfs image (read-only, never modified)
  // The disk's minimum size. The file backend grows the copy (sparse) to it; the devicemapper
  // backend cannot exceed the base image's size and refuses a larger value.
  uint64_t min_size_bytes = 0;
};

struct Volume {
  std::string id;
  std::string device_path;  // what CH gets as disks[].path: /dev/mapper/sbl-<id> or the file
  std::string base_image;
  std::string base_digest;  // "sha256:<hex>", to be recorded in rootfs.meta by the caller
  std::string backend;      // "devicemapper" | "file"
};

// What CaptureInto does with the sandbox's own CoW/disk.
enum class CaptureMode {
  // The sandbox keeps running after the snapshot: the snapshot gets a reflink or sparse copy that
  // shares no block the sandbox can still write.
  kCopy,
  // The sandbox is going away (hibernate): its CoW/disk is moved into the snapshot (a rename when
  // on the same filesystem) and the volume is removed as by Remove.
  kMove,
};

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;

  // A fresh CoW volume over spec.base_image. AlreadyExists if the id already has a volume.
  virtual absl::StatusOr<Volume> Create(const VolumeSpec& spec) = 0;
  // Re-attaches an existing volume (after a sandboxlet or host restart); idempotent. NotFound if
  // the id has no volume.
  virtual absl::StatusOr<Volume> Open(const VolumeSpec& spec) = 0;
  // Removes the volume and everything it holds; a missing volume is OK. A busy dm device is
  // retried with bounded backoff.
  virtual absl::Status Remove(const std::string& id) = 0;
  // Puts the sandbox's CoW (devicemapper: rootfs.cow) or disk (file: rootfs.ext4) into
  // snapshot_dir, by reflink/rename where possible. The VM must be paused.
  virtual absl::Status CaptureInto(const std::string& id, const std::string& snapshot_dir,
                                   CaptureMode mode = CaptureMode::kCopy) = 0;
  // Creates the sandbox's volume from snapshot_dir's captured CoW/disk (which is left intact).
  // FailedPrecondition naming the base and both digests if spec.base_image's digest is not
  // expected_base_digest (the one recorded at capture).
  virtual absl::StatusOr<Volume> RestoreFrom(const VolumeSpec& spec,
                                             const std::string& snapshot_dir,
                                             const std::string& expected_base_digest) = 0;
  // Writes a new immutable base image (mode 0444) at new_base_path = base + CoW. The VM must be
  // paused or stopped. AlreadyExists if new_base_path exists.
  virtual absl::Status Flatten(const std::string& id, const std::string& new_base_path) = 0;
  // Ids of the volumes, devices and files of ours that exist, for reclaim at startup.
  virtual absl::StatusOr<std::vector<std::string>> ListLeftovers() = 0;
  // "devicemapper" | "file".
  virtual std::string Name() const = 0;
};

struct VolumeOptions {
  std::string state_dir;         // volumes live under <state_dir>/volumes
  std::string backend = "auto";  // "auto" | "devicemapper" | "file"
  // devicemapper backend: the programs (looked up on PATH without '/'), where dm nodes appear and
  // the control node probed by "auto".
  std::string dmsetup_bin = "dmsetup";
  std::string losetup_bin = "losetup";
  std::string dev_mapper_dir = "/dev/mapper";
  std::string dm_control_path = "/dev/mapper/control";
  std::chrono::milliseconds command_timeout{30000};
  // `dmsetup remove` of a busy device: attempts and first backoff (doubling, capped at 2 s).
  int remove_attempts = 8;
  std::chrono::milliseconds remove_backoff{100};
  Clock* clock = nullptr;  // RealClock::Get() when null
};

// The backend named by options.backend; "auto" probes device-mapper and logs the choice and why.
absl::StatusOr<std::unique_ptr<VolumeBackend>> MakeVolumeBackend(const VolumeOptions& options);

// Whether the device-mapper control node at control_path answers DM_VERSION; on false, *reason
// says why (for logs).
bool DeviceMapperUsable(const std::string& control_path, std::string* reason);

}  // namespace sandboxlet
