// Metrics: every Prometheus metric sandboxlet exports (prefix `sandboxlet_`, listed with their
// meaning in docs/metrics.md), behind typed methods so callers never touch prometheus-cpp. One
// instance per process, shared by the controllers, the workqueues, the CH clients, the snapshot
// usage tracker and the HTTP server that renders it.
//
// Cardinality: the only unbounded label values are object names (namespace, sandbox, snapshot);
// the series of a deleted object are removed (RemoveSandbox, RemoveSnapshotDiskUsage) so churn
// does not grow Prometheus forever. Label values that come from callers (kinds, endpoints,
// queue names) must come from a fixed set in the code.
//
// Thread-safe: every method may be called from any thread, concurrently with rendering.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "controller/workqueue/workqueue.h"

namespace sandboxlet::metrics {

// Content-Type of Render()'s output (text exposition format 0.0.4).
inline constexpr std::string_view kExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

struct BuildInfo {
  std::string version;         // sandboxlet's version
  std::string ch_version;      // Cloud Hypervisor version in use (e.g. "v41.0")
  std::string volume_backend;  // "dm" or "file"
};

// VM operations timed by sandboxlet_vm_operation_duration_seconds{operation}.
enum class VmOperation { kBoot, kRestore, kPause, kResume, kSnapshot, kStop };
std::string_view VmOperationName(VmOperation op);

// Why a VMM process went away, for sandboxlet_vmm_exits_total{reason}: kCrash = it died without
// being asked to (signal or non-zero exit), kShutdown = the guest or sandboxlet shut it down
// cleanly, kKilled = sandboxlet killed it (stop timeout, force delete).
enum class VmmExitReason { kCrash, kShutdown, kKilled };
std::string_view VmmExitReasonName(VmmExitReason reason);

// Reconcile outcomes for sandboxlet_reconcile_total{kind,result}.
enum class ReconcileResult { kSuccess, kError, kRequeue };
std::string_view ReconcileResultName(ReconcileResult result);

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The whole registry in the text exposition format 0.0.4. Only reads the current values: it
  // never measures anything (disk usage is measured beforehand by SnapshotUsageTracker).
  std::string Render() const;

  // sandboxlet_build_info{version,ch_version,volume_backend} = 1 (replaces an earlier set).
  void SetBuildInfo(const BuildInfo& info);

  // --- Object counts (normally set by StoreCollector from the store) ---
  // sandboxlet_sandboxes{phase} / sandboxlet_snapshots{phase}: every phase in `counts` is set; a
  // phase reported earlier and absent now drops to 0 (the series stays: phases are a fixed set).
  void SetSandboxesByPhase(const std::map<std::string, int64_t>& counts);
  void SetSnapshotsByPhase(const std::map<std::string, int64_t>& counts);
  // sandboxlet_store_objects{resource}.
  void SetStoreObjects(const std::string& resource, int64_t count);

  // --- Per-sandbox series (removed by RemoveSandbox) ---
  // sandboxlet_sandbox_phase{namespace,sandbox,phase} = 1 for the current phase only; the
  // series of the previous phase is removed.
  void SetSandboxPhase(const std::string& ns, const std::string& name, const std::string& phase);
  // Removes every series labelled with this sandbox.
  void RemoveSandbox(const std::string& ns, const std::string& name);

  // --- Reconcilers ---
  // sandboxlet_reconcile_total{kind,result} and sandboxlet_reconcile_duration_seconds{kind}.
  void ObserveReconcile(std::string_view kind, ReconcileResult result,
                        std::chrono::nanoseconds duration);

  // --- Workqueues ---
  // sandboxlet_workqueue_{adds_total,retries_total,depth,queue_duration_seconds}{queue}.
  void WorkQueueAdded(std::string_view queue);
  void WorkQueueRetried(std::string_view queue);
  void SetWorkQueueDepth(std::string_view queue, int64_t depth);
  void ObserveWorkQueueWait(std::string_view queue, std::chrono::nanoseconds waited);
  // Fills the observability hooks of `options` so the queue named `queue` reports to this.
  // `this` must outlive the queue.
  void Instrument(std::string_view queue, controller::WorkQueueOptions* options);

  // --- VMs ---
  // sandboxlet_vm_operation_duration_seconds{operation}.
  void ObserveVmOperation(VmOperation op, std::chrono::nanoseconds duration);
  // sandboxlet_vmm_exits_total{reason}; with a sandbox key also
  // sandboxlet_sandbox_vmm_exits_total{namespace,sandbox}.
  void CountVmmExit(VmmExitReason reason);
  void CountVmmExit(VmmExitReason reason, const std::string& ns, const std::string& name);

  // --- Cloud Hypervisor API ---
  // sandboxlet_ch_api_requests_total{endpoint,code} and
  // sandboxlet_ch_api_request_duration_seconds{endpoint}. `http_status` 0 (no response: connect
  // error, timeout) is reported as code="error". Signature of ch::ClientOptions::observer.
  void ObserveChApiRequest(std::string_view endpoint, int http_status,
                           std::chrono::nanoseconds latency);
  // A callable for ch::ClientOptions::observer. `this` must outlive the client.
  std::function<void(std::string_view, int, std::chrono::nanoseconds)> ChApiObserver();

  // --- Snapshot disk usage (set only by SnapshotUsageTracker) ---
  void SetSnapshotDiskUsage(const std::string& ns, const std::string& name, int64_t bytes);
  void RemoveSnapshotDiskUsage(const std::string& ns, const std::string& name);
  void SetSnapshotDiskUsageTotal(int64_t bytes);
  void SetSnapshotFilesystemFree(int64_t bytes);

 private:
  struct Families;
  using Key = std::pair<std::string, std::string>;  // {namespace, name}

  std::unique_ptr<Families> f_;
  // Serialises adding, updating and removing series that can be removed, so a series is never
  // updated through a reference to a metric another thread removed.
  mutable std::mutex mu_;
  std::map<Key, std::string> sandbox_phase_;  // guarded by mu_
  std::set<std::string> sandboxes_phases_;    // guarded by mu_: phases reported so far
  std::set<std::string> snapshots_phases_;    // guarded by mu_
  BuildInfo build_info_;                      // guarded by mu_
  bool build_info_set_ = false;               // guarded by mu_
};

}  // namespace sandboxlet::metrics
