// Reclaim of network leftovers: after a crash or an unclean stop, netns "<prefix>-<id>", host
// veths "<prefix>v<N>" and slot records may remain for sandboxes that no longer exist. Reclaim
// removes those whose id is not in the caller's claimed set (the sandboxes the store still has),
// with a small bounded pool of threads so hundreds of leftovers take well under a second.
// Per-sandbox nftables rules live inside each netns and go with it; the shared host table is
// not per sandbox (see sandbox_network.h), so there is no rule kind to reclaim.
// Loop/dm devices, directories and VMM processes are reclaimed by their own modules.
// Thread-safety: do not run concurrently with Create for an unclaimed id.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/network/sandbox_network.h"

namespace sandboxlet::network {

struct NetworkReclaimResult {
  int netns_removed = 0;
  int veths_removed = 0;
  int slots_released = 0;
  int failures = 0;
  std::vector<std::string> errors;  // the first few failure messages
};

// Removes every leftover not owned by an id in `claimed`. A veth is owned by the id holding its
// slot; an unowned veth is always removed. A slot is released only after its veth is gone.
// Errors for single objects are counted, not returned; listing failures are returned.
absl::StatusOr<NetworkReclaimResult> ReclaimNetworkLeftovers(SandboxNetwork& network,
                                                             const std::set<std::string>& claimed,
                                                             int parallelism = 8);

}  // namespace sandboxlet::network
