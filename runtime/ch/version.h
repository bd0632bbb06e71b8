// Cloud Hypervisor version detection and the behaviour gates that depend on it (CONTRACT §2, §7).
// `<vmm-bin> --version` is run once; every module that behaves differently per CH release asks a
// ChVersion gate instead of comparing numbers itself, so the knowledge of "what changed when" lives
// here. Thread-safety: ChVersion is a value type; the functions are thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sandboxlet::ch {

struct ChVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  // The first line as printed, e.g. "cloud-hypervisor v53.0-246-gae44c2971-dirty".
  std::string raw;
  // Whatever follows the numbers ("-246-gae44c2971-dirty"), empty for a release build.
  std::string suffix;

  // A version with only numbers, for tests and callers that already know the release.
  static ChVersion Of(int major, int minor = 0, int patch = 0);

  bool AtLeast(int want_major, int want_minor = 0) const {
    return major > want_major || (major == want_major && minor >= want_minor);
  }
  // "v48.0.0" (plus the suffix, if any), for logs, messages and the build-info metric.
  std::string ToString() const;

  // Gates (CONTRACT §7). CH's behaviour changes on major releases only, so gates test the major.
  bool PingHasBuildVersion() const { return major >= 32; }  // build_version and pid in vmm.ping
  bool PingHasFeatures() const { return major >= 36; }      // features in vmm.ping
  bool DisplayErrorText() const { return major >= 38; }     // Display rather than Debug error text
  bool Nmi() const { return major >= 39; }                  // PUT vm.nmi exists
  bool RestoreNetFds() const { return major >= 40; }        // RestoreConfig.net_fds
  bool Landlock() const { return major >= 41; }
  bool ResizeMayAnswer429() const { return major >= 46; }  // vCPU removal pending
  bool DiskLocking() const { return major >= 46; }         // writable disks are locked
  bool JsonArrayErrors() const { return major >= 47; }     // error bodies: ["outer",..,"root"]
  bool NoDefaultNetIp() const { return major >= 49; }      // net ip/mask have no default
  bool ResizeDisk() const { return major >= 50; }
  bool ImageTypeField() const { return major >= 51; }     // DiskConfig.image_type
  bool RestoreResume() const { return major >= 52; }      // RestoreConfig.resume
  bool MemoryRestoreMode() const { return major >= 52; }  // RestoreConfig.memory_restore_mode
  bool NoShutdownFlag() const { return major >= 52; }     // --no-shutdown
  bool SparseMemoryRanges() const { return major >= 52; }
  bool NotCreatedIs404() const { return major >= 53; }   // VmNotCreated/VmMissingConfig → 404
  bool NullsOmitted() const { return major >= 53; }      // config.json / vm.info without nulls
  bool SocketLock() const { return major >= 53; }        // <api-socket>.lock, stale socket removed
  bool BootResumesPaused() const { return major < 53; }  // vm.boot of a Paused VM resumes it
  // Largest request body CH accepts (CONTRACT §1.7): 51200 bytes up to v53; unreleased main
  // (crate 54+) accepts 4 MiB.
  std::size_t MaxRequestBody() const { return major <= 53 ? 51200 : 4 * 1024 * 1024; }
};

// Parses `cloud-hypervisor --version` output (CONTRACT §2): the first non-empty line must match
// `cloud-hypervisor v<major>.<minor>[.<patch>]<suffix>`; later lines ("Migration Protocol
// Versions: 0" from v53, "Enabled features: [..]" with -v) are ignored. Anything else is
// InvalidArgument quoting what was seen.
absl::StatusOr<ChVersion> ParseChVersion(std::string_view version_output);

// Runs `<vmm_bin> --version` (a bare name is looked up on PATH) and parses it. Errors name the
// binary: NotFound (with the `--vmm-bin` hint) when it does not exist, PermissionDenied when it
// is not executable, DeadlineExceeded when it does not answer within `timeout`, InvalidArgument
// when it is not Cloud Hypervisor (non-zero exit or unrecognised output).
absl::StatusOr<ChVersion> DetectChVersion(
    const std::string& vmm_bin, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace sandboxlet::ch
