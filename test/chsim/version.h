// Which Cloud Hypervisor release the simulator pretends to be, and the quirks that follow from it
// (CONTRACT §7). Thread-safe: immutable value.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sandboxlet::chsim {

struct ChVersion {
  int major = 53;      // printed by --version and vmm.ping
  int behaviour = 53;  // 48, 52 or 53: the simulated release whose quirks apply

  bool AtLeast(int v) const { return behaviour >= v; }
  std::string BuildVersion() const;  // "v53.0"
  std::string CrateVersion() const;  // "53.0.0"
};

// CHSIM_VERSION (`env_value`, may be null) if set, else argv[0]'s basename ending in "-v<N>",
// else 53. Majors below 30 are rejected; unsupported majors behave as the nearest lower supported
// release (48, 52, 53), or 48 when there is none.
absl::StatusOr<ChVersion> SelectVersion(const char* argv0, const char* env_value);

}  // namespace sandboxlet::chsim
