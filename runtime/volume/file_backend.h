// The file volume backend, for kernels without device-mapper: each sandbox's disk is a full copy
// of its base image at <state>/volumes/<id>/rootfs.ext4 — a reflink (FICLONE: no data copied,
// blocks shared copy-on-write by the filesystem) on XFS/btrfs, else a sparse copy preserving the
// base's holes. A copy is written as rootfs.ext4.partial, fsynced and renamed into place, so the
// name rootfs.ext4 always means a complete disk. Thread-safe (see volume.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/volume/digest.h"
#include "runtime/volume/layout.h"
#include "runtime/volume/volume.h"

namespace sandboxlet {

class FileVolumeBackend final : public VolumeBackend {
 public:
  static absl::StatusOr<std::unique_ptr<FileVolumeBackend>> Make(const VolumeOptions& options);

  absl::StatusOr<Volume> Create(const VolumeSpec& spec) override;
  absl::StatusOr<Volume> Open(const VolumeSpec& spec) override;
  absl::Status Remove(const std::string& id) override;
  absl::Status CaptureInto(const std::string& id, const std::string& snapshot_dir,
                           CaptureMode mode) override;
  absl::StatusOr<Volume> RestoreFrom(const VolumeSpec& spec, const std::string& snapshot_dir,
                                     const std::string& expected_base_digest) override;
  absl::Status Flatten(const std::string& id, const std::string& new_base_path) override;
  absl::StatusOr<std::vector<std::string>> ListLeftovers() override;
  std::string Name() const override { return "file"; }

 private:
  explicit FileVolumeBackend(VolumeLayout layout);

  // Creates the volume's disk from `source` (the base image or a snapshot's disk).
  absl::StatusOr<Volume> Populate(const VolumeSpec& spec, const std::string& step,
                                  const std::string& source, const BaseImage& base,
                                  const std::string& digest);
  Volume Describe(const std::string& id, const BaseImage& base, const std::string& digest) const;

  const VolumeLayout layout_;
  BaseDigests digests_;
  IdLocks locks_;
};

}  // namespace sandboxlet
