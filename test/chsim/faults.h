// Fault injection rules: read from CHSIM_FAULTS at startup (rules separated by ';') and re-read
// from "<api-socket-path>.faults" before each request (one rule per line, '#' comments).
// See README.md for the rule language. Thread-safe: immutable value once parsed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sandboxlet::chsim {

enum class FaultKind {
  kCrash,          // crash <endpoint>: SIGKILL itself on receipt
  kHang,           // hang <endpoint>: never answer (nor anything after it)
  kDelay,          // delay <endpoint> <ms>: sleep before handling
  kFail,           // fail <endpoint> <code>: answer <code> with an injected error body
  kEnospc,         // enospc vm.snapshot: partial memory-ranges, then ENOSPC
  kGarbage,        // garbage <endpoint>: non-HTTP bytes, then close
  kTruncate,       // truncate <endpoint>: Content-Length larger than the body, then close
  kOversize,       // oversize <endpoint>: 200 with a valid 5 MiB JSON body
  kClose,          // close <endpoint>: close without answering
  kFailStart,      // fail-start: exit 1 at startup with an error chain
  kIgnoreSigterm,  // ignore-sigterm: SIGTERM/SIGINT are ignored
  kRecord,         // record <path>: append every received request to <path>
  // The simulated guest agent (guest_agent.h), not the API socket:
  kAgentNeverReady,  // agent-never-ready: every agent connection is reset
  kAgentSlow,        // agent-slow <ms>: the agent waits before answering
  kAgentFail,        // agent-fail <code>: the agent answers <code> (debug endpoints excepted)
};

struct FaultRule {
  FaultKind kind;
  std::string endpoint;  // "vm.snapshot" or "*"; empty for global and agent rules
  int value = 0;         // delay ms or HTTP code
  std::string path;      // record target
};

class FaultSet {
 public:
  // Parses rules separated by `separator`; blank pieces and '#' comments are skipped.
  static absl::StatusOr<FaultSet> Parse(std::string_view text, char separator);
  // Reads "<path>"; a missing file is an empty set.
  static absl::StatusOr<FaultSet> Load(const std::string& path);

  void Append(const FaultSet& other);
  bool Has(FaultKind kind) const;
  // The first rule of `kind` whose endpoint is `endpoint` or "*", or null.
  const FaultRule* Find(FaultKind kind, const std::string& endpoint) const;
  std::vector<FaultRule> OfKind(FaultKind kind) const;

 private:
  std::vector<FaultRule> rules_;
};

}  // namespace sandboxlet::chsim
