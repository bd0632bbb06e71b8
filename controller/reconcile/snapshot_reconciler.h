// SnapshotReconciler: drives one SandboxSnapshot object. A snapshot is taken once and is then
// immutable: Pending (its Sandbox is missing or not Running/Paused; retried with backoff) →
// InProgress → runtime.Snapshot(sandbox uid, snapshot uid) → Ready with sizeBytes (allocated
// bytes), createdAt and source {template, vcpus, memoryMiB}, or Failed with the cause (the
// runtime guarantees the VM is resumed and any earlier snapshot untouched). A snapshot left
// InProgress by a crash is taken again.
//
// Deletion: the finalizer sandboxlet.dev/cleanup removes the runtime's snapshot files, but not
// while a Sandbox of the namespace names the snapshot in spec.restoreFrom and has not finished
// restoring (its Restored condition is not True and it is not being deleted); status.message then
// says "in use by <ns>/<name>" and the controller retries when that Sandbox changes.
//
// Thread-safety: Reconcile may be called from many threads for different keys (one key at a
// time). The runtime snapshot is taken under the sandbox's lock in SandboxLocks, so it never
// overlaps another operation on that sandbox.
#pragma once

#include <string>

#include "controller/reconcile/events.h"
#include "controller/reconcile/result.h"
#include "controller/reconcile/sandbox_locks.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"
#include "runtime/node/sandbox_runtime.h"

namespace sandboxlet::controller {

struct SnapshotReconcilerOptions {
  Clock* clock = nullptr;  // RealClock::Get() when null
};

class SnapshotReconciler {
 public:
  SnapshotReconciler(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
                     EventRecorder& events, SandboxLocks& locks,
                     SnapshotReconcilerOptions options = {});
  SnapshotReconciler(const SnapshotReconciler&) = delete;
  SnapshotReconciler& operator=(const SnapshotReconciler&) = delete;

  // One pass for the SandboxSnapshot `ns`/`name`. A missing object is a successful no-op.
  ReconcileResult Reconcile(const std::string& ns, const std::string& name);

 private:
  struct Pass;
  ReconcileResult Finalize(Pass& pass);
  absl::Status AddFinalizer(Pass& pass);
  absl::Status WriteStatus(Pass& pass);
  absl::Status Load(Pass& pass);
  // Keys of the Sandboxes that still need this snapshot to restore from.
  absl::StatusOr<std::vector<std::string>> Users(const Pass& pass);

  store::ObjectStore& store_;
  runtime::SandboxRuntime& runtime_;
  EventRecorder& events_;
  SandboxLocks& locks_;
  Clock& clock_;
};

}  // namespace sandboxlet::controller
