#include "controller/metrics/snapshot_usage.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/snapshot/dir_size.h"

namespace sandboxlet::metrics {

SnapshotUsageTracker::SnapshotUsageTracker(Metrics* metrics, SnapshotUsageOptions options)
    : metrics_(metrics),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : RealClock::Get()) {
  metrics_->SetSnapshotDiskUsageTotal(0);
  MeasureFilesystemFree();
  if (options_.background_refresh) thread_ = std::thread([this] { RefreshLoop(); });
}

SnapshotUsageTracker::~SnapshotUsageTracker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status SnapshotUsageTracker::Set(const std::string& ns, const std::string& name,
                                       const std::string& dir) {
  if (ns.empty() || name.empty()) {
    return absl::InvalidArgumentError(
        Cat("snapshot usage: namespace and name are required, got \"", ns, "/", name, "\""));
  }
  absl::StatusOr<int64_t> bytes = DirSize(dir);
  if (!bytes.ok()) {
    return Annotate(bytes.status(), Cat("snapshot ", ns, "/", name, ": disk usage of ", dir));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = entries_[Key{ns, name}];
  total_ += *bytes - e.bytes;
  e = Entry{dir, *bytes, next_generation_++};
  metrics_->SetSnapshotDiskUsage(ns, name, *bytes);
  metrics_->SetSnapshotDiskUsageTotal(total_);
  return absl::OkStatus();
}

void SnapshotUsageTracker::Remove(const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(Key{ns, name});
  if (it == entries_.end()) return;
  total_ -= it->second.bytes;
  entries_.erase(it);
  metrics_->RemoveSnapshotDiskUsage(ns, name);
  metrics_->SetSnapshotDiskUsageTotal(total_);
}

absl::Status SnapshotUsageTracker::RefreshNow() {
  std::lock_guard<std::mutex> refresh_lock(refresh_mu_);
  struct Work {
    Key key;
    std::string dir;
    uint64_t generation;
  };
  std::vector<Work> work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    work.reserve(entries_.size());
    for (const auto& [key, e] : entries_) work.push_back({key, e.dir, e.generation});
  }
  std::vector<std::string> failed;
  for (const Work& w : work) {
    // Measured without the lock: a large tree takes a while and Set/Remove must not wait on it.
    absl::StatusOr<int64_t> bytes = DirSize(w.dir);
    const std::string snapshot = Cat(w.key.first, "/", w.key.second);
    if (!bytes.ok()) {
      log::Warn("snapshot disk usage not refreshed",
                {{"snapshot", snapshot}, {"dir", w.dir}, {"error", bytes.status().message()}});
      failed.push_back(Cat(snapshot, " (", bytes.status().message(), ")"));
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(w.key);
    // Removed or re-registered meanwhile: this measurement is stale.
    if (it == entries_.end() || it->second.generation != w.generation) continue;
    total_ += *bytes - it->second.bytes;
    it->second.bytes = *bytes;
    metrics_->SetSnapshotDiskUsage(w.key.first, w.key.second, *bytes);
    metrics_->SetSnapshotDiskUsageTotal(total_);
  }
  MeasureFilesystemFree();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++refreshes_;
  }
  if (!failed.empty()) {
    return absl::UnavailableError(
        Cat("snapshot disk usage: could not measure ", Join(failed, ", ")));
  }
  return absl::OkStatus();
}

void SnapshotUsageTracker::MeasureFilesystemFree() {
  if (options_.filesystem_path.empty()) return;
  struct statvfs st;
  if (::statvfs(options_.filesystem_path.c_str(), &st) != 0) {
    const int err = errno;
    log::Warn(
        "snapshot filesystem free space not measured",
        {{"path", options_.filesystem_path}, {"error", ErrnoStatus(err, "statvfs").message()}});
    return;
  }
  // f_bavail: what an unprivileged writer can still use, the number that predicts ENOSPC for
  // new snapshots better than f_bfree (which includes root's reserve).
  metrics_->SetSnapshotFilesystemFree(static_cast<int64_t>(st.f_bavail) *
                                      static_cast<int64_t>(st.f_frsize));
}

std::optional<int64_t> SnapshotUsageTracker::Bytes(const std::string& ns,
                                                   const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(Key{ns, name});
  if (it == entries_.end()) return std::nullopt;
  return it->second.bytes;
}

int64_t SnapshotUsageTracker::TotalBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

uint64_t SnapshotUsageTracker::Refreshes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refreshes_;
}

void SnapshotUsageTracker::RefreshLoop() {
  Clock::TimePoint next = clock_->Now() + options_.refresh_interval;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stopping_ && clock_->Now() < next) clock_->WaitUntil(lock, cv_, next);
      if (stopping_) return;
    }
    (void)RefreshNow();  // failures are logged per snapshot
    next = clock_->Now() + options_.refresh_interval;
  }
}

}  // namespace sandboxlet::metrics
