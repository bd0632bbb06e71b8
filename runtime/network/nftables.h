// Runs nftables scripts (the `nft -f` language) in the calling thread's network namespace.
// Uses libnftables in-process (loaded with dlopen: Debian ships libnftables.so.1 with the nft
// binary but no development headers); where the library cannot be loaded, spawns `nft -f -`,
// which inherits the calling thread's namespace too. In-process is ~10x cheaper than a spawn.
// Once the lowest free fd is high (libnftables select()s on its socket: fd >= FD_SETSIZE aborts
// the process), the nft program is used as well.
// A script is applied as one transaction: all of it or nothing.
// Thread-safe: calls into libnftables are serialized by an internal mutex.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sandboxlet::network {

// Applies `script`; returns nft's output (non-empty for list commands). `what` prefixes errors,
// which carry nft's own message.
absl::StatusOr<std::string> RunNft(const std::string& script, const std::string& what);

}  // namespace sandboxlet::network
