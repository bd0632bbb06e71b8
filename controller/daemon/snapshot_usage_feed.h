// SnapshotUsageFeed: keeps the SnapshotUsageTracker (sandboxlet_snapshot_disk_usage_bytes) in
// step with the store: every Ready SandboxSnapshot is registered with the directory its runtime
// snapshot lives in (the snapshot store's directory of the object's uid), and removed when the
// object goes away or stops being Ready. It follows the store with a list + watch and re-lists
// when the watch ends.
//
// Thread-safety: Start/Stop from one thread; one internal thread does the work.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "controller/metrics/snapshot_usage.h"
#include "controller/store/object_store.h"

namespace sandboxlet::daemon {

class SnapshotUsageFeed {
 public:
  // `snapshot_dir` maps a snapshot id (the object's uid) to its directory.
  SnapshotUsageFeed(store::ObjectStore* store, metrics::SnapshotUsageTracker* tracker,
                    std::function<absl::StatusOr<std::string>(const std::string& id)> snapshot_dir);
  ~SnapshotUsageFeed();
  SnapshotUsageFeed(const SnapshotUsageFeed&) = delete;
  SnapshotUsageFeed& operator=(const SnapshotUsageFeed&) = delete;

  void Start();
  void Stop();

 private:
  void Run();
  void Apply(const nlohmann::json& object, bool deleted);

  store::ObjectStore* const store_;
  metrics::SnapshotUsageTracker* const tracker_;
  const std::function<absl::StatusOr<std::string>(const std::string&)> snapshot_dir_;
  std::map<std::pair<std::string, std::string>, std::string> registered_;  // worker thread only
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace sandboxlet::daemon
