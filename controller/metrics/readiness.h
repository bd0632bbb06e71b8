// Readiness: the named checks behind /readyz ("store", "adoption", "api", ...). The process is
// ready when every check passes; the report lists each check the way kube-apiserver's
// `/readyz?verbose` does ("[+]store ok", "[-]adoption failed: ...").
//
// Thread-safe: checks may be added and flags set from any thread while Evaluate runs. Checks are
// called without the internal lock held, so a check may take its own locks.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sandboxlet::metrics {

class Readiness {
 public:
  struct Result {
    bool ready = false;
    std::string report;  // one line per check, then "readyz check passed|failed"
  };

  // Adds a check called on every evaluation; a non-OK status makes the process not ready and
  // its message appears in the report. A check with the same name is replaced.
  void AddCheck(const std::string& name, std::function<absl::Status()> check);
  // A check that is a flag: not ready (with `reason`) until SetFlag(name, true). Adds the check
  // on first use.
  void SetFlag(const std::string& name, bool ready, const std::string& reason = "not yet");

  Result Evaluate() const;

 private:
  struct Check {
    std::string name;
    std::function<absl::Status()> fn;
  };
  struct Flag {
    std::mutex mu;
    bool ready = false;  // guarded by mu
    std::string reason;  // guarded by mu
  };

  mutable std::mutex mu_;
  std::vector<Check> checks_;  // guarded by mu_, in order added
  std::vector<std::pair<std::string, std::shared_ptr<Flag>>> flags_;  // guarded by mu_
};

}  // namespace sandboxlet::metrics
