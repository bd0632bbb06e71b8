// StoreCollector: sets the metrics that describe the store's contents — sandboxlet_sandboxes
// {phase}, sandboxlet_snapshots{phase}, sandboxlet_store_objects{resource} and the per-sandbox
// sandboxlet_sandbox_phase{namespace,sandbox,phase} — by listing the store at an interval (default
// 15 s) on its own thread, never during a scrape. Sandboxes that left the store since the
// previous collection get their series removed (Metrics::RemoveSandbox), whatever path deleted
// them. A sandbox without status.phase yet counts as "Pending".
//
// Thread-safe: CollectNow may be called from any thread (collections are serialised).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "controller/metrics/metrics.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"

namespace sandboxlet::metrics {

struct StoreCollectorOptions {
  Clock* clock = nullptr;  // defaults to RealClock::Get()
  Clock::Duration interval = std::chrono::seconds(15);
  bool background = true;  // false: only CollectNow collects
  std::string sandboxes_resource = "sandboxes";
  std::string snapshots_resource = "sandboxsnapshots";
};

class StoreCollector {
 public:
  // `store` and `metrics` must outlive the collector. The first collection runs on the
  // background thread right away.
  StoreCollector(store::ObjectStore* store, Metrics* metrics, StoreCollectorOptions options = {});
  ~StoreCollector();
  StoreCollector(const StoreCollector&) = delete;
  StoreCollector& operator=(const StoreCollector&) = delete;

  // Lists the store and sets the metrics. On a store error the metrics keep their last values.
  absl::Status CollectNow();

 private:
  using Key = std::pair<std::string, std::string>;

  void Loop();

  store::ObjectStore* const store_;
  Metrics* const metrics_;
  const StoreCollectorOptions options_;
  Clock* const clock_;

  std::mutex collect_mu_;
  std::set<Key> sandboxes_;  // guarded by collect_mu_: sandboxes seen by the last collection

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace sandboxlet::metrics
