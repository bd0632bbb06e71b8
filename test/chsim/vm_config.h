// VmConfig and RestoreConfig as CH's serde deserializes them (CONTRACT §4, §6): required fields,
// case-sensitive enums, defaults filled in, unknown fields silently dropped, fields newer than the
// simulated version treated as unknown. Output keeps nulls for unset optional fields up to v52 and
// omits them from v53 (CONTRACT §5). Thread-safe: pure functions.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "test/chsim/events.h"
#include "test/chsim/version.h"

namespace sandboxlet::chsim {

inline constexpr uint64_t kDefaultMemorySize = 512ull << 20;

// Validates a VmConfig and fills in defaults. Errors are InvalidArgument with a serde-like
// message ("missing field `size`").
absl::StatusOr<Json> NormalizeVmConfig(const Json& in, const ChVersion& version);
// Validates one DiskConfig / NetConfig (for vm.add-disk / vm.add-net).
absl::StatusOr<Json> NormalizeDiskConfig(const Json& in, const ChVersion& version);
absl::StatusOr<Json> NormalizeNetConfig(const Json& in, const ChVersion& version);
// Validates a RestoreConfig.
absl::StatusOr<Json> NormalizeRestoreConfig(const Json& in, const ChVersion& version);

// The config as CH serializes it in vm.info and config.json.
Json SerializeVmConfig(const Json& config, const ChVersion& version);

// A random locally administered unicast MAC, "52:54:xx:xx:xx:xx"-style.
std::string RandomMac();

}  // namespace sandboxlet::chsim
