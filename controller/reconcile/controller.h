// Controller: the reconcile loop of the node. It feeds one WorkQueue with kind-prefixed keys
// ("sandboxes/<ns>/<name>", "sandboxsnapshots/<ns>/<name>") from
//  - store watches of both kinds (watch from now, then list; re-watch and re-list when a watch
//    ends). A snapshot change also enqueues the Sandboxes restoring from it
//    and the Sandbox it snapshots; a Sandbox change also enqueues its unfinished snapshots and
//    the snapshot it restores from (whose deletion may be waiting for it);
//  - the runtime's exit handler (a VMM exit enqueues its Sandbox at once, by uid);
//  - a periodic resync of every key (resync_period on the injected clock);
//  - the reconcilers' own requests (requeue_after: TTL expiry, crash-loop back-off) and per-key
//    exponential backoff after errors (Forget after success).
// N workers take keys; the queue never hands one key to two workers, and both reconcilers take
// a sandbox's lock for runtime calls, so no two operations on one sandbox ever overlap.
//
// Lifecycle: construct (this installs the runtime's exit handler, so do it before
// runtime.AdoptAndReclaim), call ClaimedSandboxes() for the adoption step, then Start(); Stop()
// (or the destructor) ends watches, lets workers finish the keys they hold, and joins threads.
// Start succeeds at most once (a failed Start may be retried).
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/reconcile/events.h"
#include "controller/reconcile/sandbox_locks.h"
#include "controller/reconcile/sandbox_reconciler.h"
#include "controller/reconcile/snapshot_reconciler.h"
#include "controller/store/object_store.h"
#include "controller/workqueue/workqueue.h"
#include "runtime/base/clock.h"
#include "runtime/node/guest_agent_access.h"
#include "runtime/node/sandbox_runtime.h"

namespace sandboxlet::controller {

struct ControllerOptions {
  int workers = 4;
  Clock* clock = nullptr;  // RealClock::Get() when null; also given to the reconcilers
  Clock::Duration resync_period = std::chrono::minutes(10);
  // Per-key backoff after a failed reconcile.
  Clock::Duration error_backoff_base = std::chrono::milliseconds(500);
  Clock::Duration error_backoff_max = std::chrono::minutes(5);
  SandboxReconcilerOptions sandbox;  // its clock is replaced by `clock`
  // The node's guest agents (e.g. dynamic_cast<runtime::GuestAgentAccess*>(&runtime)); when set
  // it replaces sandbox.guest. Null or disabled: Sandboxes are Ready without their guest agent.
  runtime::GuestAgentAccess* guest = nullptr;
  std::string component = "sandboxlet";
  std::string node_name;  // Events' source.host
  // Metrics observers (may be empty), called from worker threads after each reconcile:
  // kind "Sandbox" | "SandboxSnapshot", result "success" | "requeue" | "error".
  std::function<void(std::string_view kind, std::string_view result, Clock::Duration duration)>
      on_reconcile;
  // Queue observers (on_add, on_retry, on_depth, on_start); clock and backoff are set from above.
  WorkQueueOptions queue;
};

class Controller {
 public:
  Controller(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
             ControllerOptions options = {});
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // uid → "namespace/name" of every Sandbox in the store, for runtime.AdoptAndReclaim. Also
  // primes the uid index so exits reported during adoption reach their keys.
  absl::StatusOr<std::map<std::string, std::string>> ClaimedSandboxes();

  // Lists both kinds (enqueueing every object), starts the watches, the resync timer and the
  // workers. Errors: the store's, or FailedPrecondition when already started.
  absl::Status Start();
  // Idempotent.
  void Stop();

  void EnqueueSandbox(const std::string& ns, const std::string& name);
  void EnqueueSnapshot(const std::string& ns, const std::string& name);

  WorkQueue& queue() { return queue_; }

 private:
  // Routes runtime exits to the controller while it exists; the runtime keeps the handler.
  struct ExitRouter {
    std::mutex mu;
    Controller* controller = nullptr;  // guarded by mu
  };

  void OnExit(const std::string& uid);
  void Work();
  void Process(const std::string& key);
  // Consumes `stream` (opened before the list that went with it), then re-opens the watch and
  // re-lists whenever it ends, until Stop.
  void WatchLoop(const std::string& resource, std::unique_ptr<store::WatchStream> stream);
  // Opens a watch of `resource` from now, then lists and enqueues everything: with the watch
  // first, no change can fall between the list and the watch (duplicates are harmless).
  absl::StatusOr<std::unique_ptr<store::WatchStream>> WatchAndList(const std::string& resource);
  void ResyncLoop();
  // Lists `resource` and enqueues every object. With `rebuild_index` (a new watch) its part of
  // the indices is rebuilt from the list; a resync leaves the indices to the running watch.
  absl::Status ListAndEnqueue(const std::string& resource, bool rebuild_index);
  void OnSandbox(const nlohmann::json& object, bool deleted);
  void OnSnapshot(const nlohmann::json& object, bool deleted);
  bool Stopping();

  store::ObjectStore& store_;
  runtime::SandboxRuntime& runtime_;
  const ControllerOptions options_;
  Clock& clock_;
  EventRecorder events_;
  SandboxLocks locks_;
  SandboxReconciler sandboxes_;
  SnapshotReconciler snapshots_;
  WorkQueue queue_;
  std::shared_ptr<ExitRouter> exit_router_;

  std::mutex index_mu_;
  std::map<std::string, std::string> uid_to_key_;  // guarded by index_mu_; sandbox uid → key
  std::map<std::string, std::string> restore_of_;  // guarded by index_mu_; sandbox → snapshot
  std::map<std::string, std::set<std::string>> restore_users_;  // guarded; snapshot → sandboxes
  std::map<std::string, std::string> source_of_;  // guarded by index_mu_; snapshot → sandbox
  std::map<std::string, std::set<std::string>> open_snapshots_;  // guarded; sandbox → snapshots
                                                                 // not yet Ready/Failed

  std::mutex mu_;
  std::condition_variable cv_;                          // wakes the resync loop and retry waits
  bool started_ = false;                                // guarded by mu_
  bool stopping_ = false;                               // guarded by mu_
  std::map<std::string, store::WatchStream*> streams_;  // guarded by mu_; live watch per resource
  std::vector<std::thread> threads_;                    // guarded by mu_
};

}  // namespace sandboxlet::controller
