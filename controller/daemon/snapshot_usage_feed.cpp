#include "controller/daemon/snapshot_usage_feed.h"

#include "runtime/base/log.h"

namespace sandboxlet::daemon {

using nlohmann::json;

SnapshotUsageFeed::SnapshotUsageFeed(
    store::ObjectStore* store, metrics::SnapshotUsageTracker* tracker,
    std::function<absl::StatusOr<std::string>(const std::string& id)> snapshot_dir)
    : store_(store), tracker_(tracker), snapshot_dir_(std::move(snapshot_dir)) {}

SnapshotUsageFeed::~SnapshotUsageFeed() { Stop(); }

void SnapshotUsageFeed::Start() {
  thread_ = std::thread([this] { Run(); });
}

void SnapshotUsageFeed::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void SnapshotUsageFeed::Apply(const json& object, bool deleted) {
  const json& meta = object.value("metadata", json::object());
  std::pair<std::string, std::string> key{meta.value("namespace", ""), meta.value("name", "")};
  const json& status = object.value("status", json::object());
  bool ready = !deleted && status.value("phase", "") == "Ready";
  std::string uid = meta.value("uid", "");
  if (!ready) {
    if (registered_.erase(key) > 0) tracker_->Remove(key.first, key.second);
    return;
  }
  auto it = registered_.find(key);
  if (it != registered_.end() && it->second == uid) return;
  absl::StatusOr<std::string> dir = snapshot_dir_(uid);
  absl::Status s = dir.ok() ? tracker_->Set(key.first, key.second, *dir) : dir.status();
  if (!s.ok()) {
    log::Warn("snapshot disk usage not tracked",
              {{"snapshot", key.first + "/" + key.second}, {"error", s.ToString()}});
    return;
  }
  registered_[key] = uid;
}

void SnapshotUsageFeed::Run() {
  while (!stopping_) {
    absl::StatusOr<store::ObjectList> list = store_->List("sandboxsnapshots", "");
    if (!list.ok()) {
      log::Warn("snapshot disk usage: listing snapshots failed",
                {{"error", list.status().ToString()}});
      return;
    }
    std::map<std::pair<std::string, std::string>, bool> seen;
    for (const json& o : list->items) {
      Apply(o, false);
      seen[{o["metadata"].value("namespace", ""), o["metadata"].value("name", "")}] = true;
    }
    for (auto it = registered_.begin(); it != registered_.end();) {
      if (seen.contains(it->first)) {
        ++it;
      } else {
        tracker_->Remove(it->first.first, it->first.second);
        it = registered_.erase(it);
      }
    }
    store::WatchOptions options;
    options.resource_version = list->resource_version;
    absl::StatusOr<std::unique_ptr<store::WatchStream>> watch =
        store_->Watch("sandboxsnapshots", "", options);
    if (!watch.ok()) continue;  // too old already: list again
    while (!stopping_) {
      absl::StatusOr<store::WatchEvent> event =
          (*watch)->Next(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
      if (!event.ok()) {
        if (event.status().code() == absl::StatusCode::kDeadlineExceeded) continue;
        break;  // ended: list again
      }
      if (event->type == store::WatchEventType::kError) break;
      if (event->type == store::WatchEventType::kBookmark) continue;
      Apply(event->object, event->type == store::WatchEventType::kDeleted);
    }
  }
}

}  // namespace sandboxlet::daemon
