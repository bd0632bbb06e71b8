// GuestAgentAccess: what the controller may ask of a sandbox's guest agent through the node
// runtime — is it answering (GuestReady), and initialise it (identity, env, clock; after a boot
// and again after every restore, since a restored guest still holds the snapshot's identity).
// Kept apart from SandboxRuntime so that runtimes without guests (fakes in controller tests) need
// not implement it; NodeRuntime does.
//
// Semantics: every call is one bounded attempt (no retries, no blocking on readiness): the
// controller polls GuestHealth on its own schedule, within GuestAgentSettings().ready_timeout.
//
// Thread-safety: all methods are thread-safe; calls for one uid are serialized by the caller.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/guest/agent_client.h"

namespace sandboxlet::runtime {

struct GuestAgentOptions {
  bool enabled = false;  // off: sandboxes are Ready without asking their guest
  uint16_t port = guest::kDefaultAgentPort;
  std::chrono::milliseconds ready_timeout{30000};   // how long a guest may take to answer
  std::chrono::milliseconds poll_interval{500};     // between GuestHealth attempts
  std::chrono::milliseconds request_timeout{2000};  // one GuestHealth or GuestInit attempt
  std::chrono::milliseconds prepare_timeout{1000};  // snapshot/prepare before a snapshot
};

class GuestAgentAccess {
 public:
  virtual ~GuestAgentAccess() = default;

  virtual const GuestAgentOptions& GuestAgentSettings() const = 0;

  // One `GET /health` at the sandbox's address. FailedPrecondition if the agent is disabled, the
  // sandbox has no network, or its VM is not Running (a paused guest cannot answer); otherwise
  // the client's error (Unavailable / DeadlineExceeded / Internal) naming sandbox and endpoint.
  virtual absl::StatusOr<guest::AgentHealth> GuestHealth(const std::string& uid) = 0;

  // One `POST /init`; same preconditions as GuestHealth.
  virtual absl::Status GuestInit(const std::string& uid, const guest::InitRequest& request) = 0;
};

}  // namespace sandboxlet::runtime
