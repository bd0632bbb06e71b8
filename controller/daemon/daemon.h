// Daemon: `sandboxlet run` — the node agent's startup and shutdown sequence around its parts.
//
// Start, in order (each failure is a clear error and nothing started so far is left running):
//  1. logs configured; the VMM binary checked and its version detected;
//  2. lock files taken: <run-dir>/sandboxlet.pid and <state-dir>/sandboxlet.lock, so two
//     daemons never share a run or state directory;
//  3. the object store opened — a corrupt store is an error naming the file, never reset;
//  4. /metrics, /healthz, /readyz served (readyz reports not ready until step 9);
//  5. the node runtime opened (volumes, network, snapshots, exit watcher);
//  6. the local APIs served — gRPC on --grpc-socket (0600) and the REST API on --api-listen —
//     so that clients are answered while adoption runs (writes are reconciled from step 8);
//  7. adoption: VMMs recorded in the state dir re-attached to the Sandboxes in the store, and
//     whatever no Sandbox claims reclaimed (SandboxRuntime::AdoptAndReclaim);
//  8. the controller started; the manifests directory (if any) scanned and followed;
//  9. ready.
// Stop (SIGTERM/SIGINT): stop accepting (manifests, gRPC, REST), stop the controller (workers
// finish the key they hold), close the runtime WITHOUT stopping VMMs — the next start adopts
// them — close the store, release the locks.
//
// Thread-safety: Start, Stop from one thread (main); RequestStop from any thread or from a
// signal-handling thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "controller/daemon/config.h"
#include "controller/daemon/lock_file.h"

namespace sandboxlet::store {
class ObjectStore;
}
namespace sandboxlet::runtime {
class NodeRuntime;
}
namespace sandboxlet::metrics {
class Metrics;
class Readiness;
class HttpServer;
class StoreCollector;
class SnapshotUsageTracker;
}  // namespace sandboxlet::metrics
namespace sandboxlet::controller {
class Controller;
class ManifestDirectory;
}  // namespace sandboxlet::controller
namespace sandboxlet::grpcapi {
class GrpcServer;
}
namespace sandboxlet::rest {
class ApiServer;
}

namespace sandboxlet::daemon {

class SnapshotUsageFeed;

// sandboxlet's own version, as `sandboxlet version` and the build-info metric show it.
inline constexpr char kVersion[] = "0.1.0";

class Daemon {
 public:
  explicit Daemon(DaemonConfig config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs the startup sequence above. On error, what was started is stopped again.
  absl::Status Start();
  // Blocks until RequestStop().
  void WaitForStopRequest();
  void RequestStop();
  // The shutdown sequence above. Idempotent.
  void Stop();

 private:
  absl::Status StartLocked();

  const DaemonConfig config_;

  std::optional<LockFile> run_lock_;
  std::optional<LockFile> state_lock_;
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<metrics::Readiness> readiness_;
  std::unique_ptr<metrics::HttpServer> metrics_server_;
  std::unique_ptr<metrics::StoreCollector> store_collector_;
  std::unique_ptr<metrics::SnapshotUsageTracker> snapshot_usage_;
  std::unique_ptr<runtime::NodeRuntime> runtime_;
  std::unique_ptr<grpcapi::GrpcServer> grpc_;
  std::unique_ptr<rest::ApiServer> rest_;
  std::unique_ptr<controller::Controller> controller_;
  std::unique_ptr<controller::ManifestDirectory> manifests_;
  std::unique_ptr<SnapshotUsageFeed> usage_feed_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_requested_ = false;  // guarded by mu_
};

}  // namespace sandboxlet::daemon
