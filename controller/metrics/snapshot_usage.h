// SnapshotUsageTracker: the disk usage of each snapshot, for
// sandboxlet_snapshot_disk_usage_bytes{namespace,snapshot}, the node's total and the free bytes of
// the filesystem holding them. A snapshot is measured (DirSize: allocated blocks, sparse-aware,
// equal to `du -sB1`) when it is registered and re-measured by a background refresh at an
// interval; a scrape only reads the last values and never walks a directory, so its cost does
// not depend on the snapshots' sizes.
//
// Thread-safe: Set, Remove and RefreshNow may be called from any thread; directories are walked
// without the lock held, and a snapshot removed while it is being measured is not brought back.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "controller/metrics/metrics.h"
#include "runtime/base/clock.h"

namespace sandboxlet::metrics {

struct SnapshotUsageOptions {
  // A directory on the filesystem that holds the snapshots (the snapshot store's root), for
  // sandboxlet_snapshot_filesystem_free_bytes; "" = not reported.
  std::string filesystem_path;
  Clock* clock = nullptr;  // defaults to RealClock::Get()
  Clock::Duration refresh_interval = std::chrono::seconds(60);
  // Runs the refresh on a background thread every refresh_interval; when false only RefreshNow
  // re-measures.
  bool background_refresh = true;
};

class SnapshotUsageTracker {
 public:
  // `metrics` must outlive the tracker.
  SnapshotUsageTracker(Metrics* metrics, SnapshotUsageOptions options = {});
  // Stops the background refresh (waiting for a refresh in progress to finish).
  ~SnapshotUsageTracker();
  SnapshotUsageTracker(const SnapshotUsageTracker&) = delete;
  SnapshotUsageTracker& operator=(const SnapshotUsageTracker&) = delete;

  // Registers (or re-registers) snapshot ns/name stored in `dir` and measures it now. On error
  // (the directory is missing or unreadable) nothing is registered and the error names the
  // snapshot and the directory.
  absl::Status Set(const std::string& ns, const std::string& name, const std::string& dir);
  // Forgets the snapshot and removes its series. No-op if unknown.
  void Remove(const std::string& ns, const std::string& name);

  // Re-measures every registered snapshot and the filesystem's free bytes, as the background
  // refresh does. A snapshot whose directory cannot be measured keeps its last value; the
  // returned error lists those snapshots (OK if all were measured).
  absl::Status RefreshNow();

  // The last measured bytes of ns/name, nullopt if not registered.
  std::optional<int64_t> Bytes(const std::string& ns, const std::string& name) const;
  int64_t TotalBytes() const;
  // Completed refreshes (background or RefreshNow) since construction.
  uint64_t Refreshes() const;

 private:
  using Key = std::pair<std::string, std::string>;  // {namespace, name}
  struct Entry {
    std::string dir;
    int64_t bytes = 0;
    uint64_t generation = 0;  // changes on every Set, so a stale measurement is dropped
  };

  void RefreshLoop();
  void MeasureFilesystemFree();

  Metrics* const metrics_;
  const SnapshotUsageOptions options_;
  Clock* const clock_;

  std::mutex refresh_mu_;  // one refresh at a time; never held together with mu_ by Set/Remove

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, Entry> entries_;  // guarded by mu_
  int64_t total_ = 0;             // guarded by mu_: sum of entries_' bytes
  uint64_t next_generation_ = 1;  // guarded by mu_
  uint64_t refreshes_ = 0;        // guarded by mu_
  bool stopping_ = false;         // guarded by mu_

  std::thread thread_;
};

}  // namespace sandboxlet::metrics
