// DeviceControl: the narrow seam between the device-mapper volume backend and the kernel's loop
// and device-mapper drivers. The production implementation runs `losetup` and `dmsetup`
// (runtime/base/command.h); tests put fake programs of the same names on PATH that validate the
// arguments and tables and log every call. Thread-safe: each call runs one command.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

struct LoopDevice {
  std::string name;       // "/dev/loop3"
  std::string back_file;  // absolute path of the backing file (" (deleted)" suffix removed)
  bool read_only = false;
};

enum class DmRemoveResult { kRemoved, kBusy, kAbsent };

class DeviceControl {
 public:
  virtual ~DeviceControl() = default;
  // Every attached loop device.
  virtual absl::StatusOr<std::vector<LoopDevice>> ListLoops() = 0;
  // Attaches file to a free loop device; returns its path.
  virtual absl::StatusOr<std::string> AttachLoop(const std::string& file, bool read_only) = 0;
  virtual absl::Status DetachLoop(const std::string& device) = 0;
  // `dmsetup create <name> --table <table>`.
  virtual absl::Status CreateDm(const std::string& name, const std::string& table) = 0;
  // One `dmsetup remove`: busy and absent are results, not errors (the caller retries busy).
  virtual absl::StatusOr<DmRemoveResult> RemoveDm(const std::string& name) = 0;
  virtual absl::StatusOr<bool> DmExists(const std::string& name) = 0;
  // Names of all dm devices.
  virtual absl::StatusOr<std::vector<std::string>> ListDm() = 0;
};

// Runs losetup/dmsetup (names looked up on PATH unless they contain '/').
class CommandDeviceControl final : public DeviceControl {
 public:
  CommandDeviceControl(std::string dmsetup_bin, std::string losetup_bin,
                       std::chrono::milliseconds timeout)
      : dmsetup_(std::move(dmsetup_bin)), losetup_(std::move(losetup_bin)), timeout_(timeout) {}

  absl::StatusOr<std::vector<LoopDevice>> ListLoops() override;
  absl::StatusOr<std::string> AttachLoop(const std::string& file, bool read_only) override;
  absl::Status DetachLoop(const std::string& device) override;
  absl::Status CreateDm(const std::string& name, const std::string& table) override;
  absl::StatusOr<DmRemoveResult> RemoveDm(const std::string& name) override;
  absl::StatusOr<bool> DmExists(const std::string& name) override;
  absl::StatusOr<std::vector<std::string>> ListDm() override;

 private:
  const std::string dmsetup_;
  const std::string losetup_;
  const std::chrono::milliseconds timeout_;
};

// Parses `losetup --list --json --output NAME,BACK-FILE,RO` output (RO as a JSON boolean, as
// util-linux >= 2.33 prints it, or as "0"/"1"/0/1 from older versions).
absl::StatusOr<std::vector<LoopDevice>> ParseLosetupJson(const std::string& out);
// Parses `dmsetup ls` output ("No devices found" or "<name>\t(<maj>:<min>)" lines).
std::vector<std::string> ParseDmsetupLs(const std::string& out);

}  // namespace sandboxlet
