#include "runtime/volume/volume.h"

#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/volume/device_control.h"
#include "runtime/volume/dm_backend.h"
#include "runtime/volume/file_backend.h"

namespace sandboxlet {

bool DeviceMapperUsable(const std::string& control_path, std::string* reason) {
  UniqueFd fd(::open(control_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    *reason = Cat("open ", control_path, ": ", std::strerror(errno));
    return false;
  }
  struct dm_ioctl io;
  std::memset(&io, 0, sizeof(io));
  io.version[0] = DM_VERSION_MAJOR;
  io.data_size = sizeof(io);
  if (::ioctl(fd.get(), DM_VERSION, &io) != 0) {
    *reason = Cat("DM_VERSION on ", control_path, ": ", std::strerror(errno));
    return false;
  }
  *reason = Cat("device-mapper driver ", io.version[0], ".", io.version[1], ".", io.version[2],
                " answers at ", control_path);
  return true;
}

absl::StatusOr<std::unique_ptr<VolumeBackend>> MakeVolumeBackend(const VolumeOptions& options) {
  std::string backend = options.backend;
  std::string reason = Cat("configured as \"", backend, "\"");
  if (backend == "auto") {
    backend = DeviceMapperUsable(options.dm_control_path, &reason) ? "devicemapper" : "file";
  }
  std::unique_ptr<VolumeBackend> out;
  if (backend == "devicemapper") {
    auto control = std::make_unique<CommandDeviceControl>(options.dmsetup_bin, options.losetup_bin,
                                                          options.command_timeout);
    SBL_ASSIGN_OR_RETURN(out, DmVolumeBackend::Make(options, std::move(control)));
  } else if (backend == "file") {
    SBL_ASSIGN_OR_RETURN(out, FileVolumeBackend::Make(options));
  } else {
    return absl::InvalidArgumentError(
        Cat("volume backend \"", options.backend, "\": must be auto, devicemapper or file"));
  }
  log::Info("volume backend chosen", {{"backend", out->Name()}, {"reason", reason}});
  return out;
}

}  // namespace sandboxlet
