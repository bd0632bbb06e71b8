// ReconcileResult: what one reconcile pass tells the controller loop.
// Thread-safe: a plain value.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "runtime/base/clock.h"

namespace sandboxlet::controller {

struct ReconcileResult {
  // Reconcile again after this long (zero = at once); nullopt = only when something changes.
  std::optional<Clock::Duration> requeue_after;
  // Not OK: the step failed and is retried after the key's exponential backoff. The cause is
  // already written to the object's status; this is for logs and metrics.
  absl::Status error;
};

// The earlier of two requeue requests.
inline std::optional<Clock::Duration> EarlierRequeue(std::optional<Clock::Duration> a,
                                                     std::optional<Clock::Duration> b) {
  if (!a) return b;
  if (!b) return a;
  return *a < *b ? a : b;
}

}  // namespace sandboxlet::controller
