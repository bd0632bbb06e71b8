// Watches on the object store: the event types, the consumer's WatchStream, and the WatchHub that
// keeps a bounded in-memory history of committed changes per resource and fans them out to
// streams.
//
// Semantics follow Kubernetes watches:
//  - A watch from resourceVersion R replays every change of the resource with a version > R that
//    is still in the history, then continues live. If changes after R were already dropped from
//    the (bounded) history, the watch fails with OutOfRange "too old resource version: R (S)",
//    where S is the oldest version a watch can resume from (the REST layer maps this to 410).
//  - The history lives in memory only and starts empty at ObjectStore::Open: after a restart a
//    watch from a version older than the store's version at open is "gone" and the client
//    re-lists (as it would after a kube-apiserver restart with a compacted etcd).
//  - With label/field selectors, a MODIFIED change that makes an object stop matching is delivered
//    as DELETED, one that makes it start matching as ADDED.
//  - A consumer that falls more than `queue_limit` events behind gets one ERROR event (a
//    Kubernetes Status object, code 410, reason Expired) and the stream ends; it re-lists.
//  - BOOKMARK events carry only {"metadata": {"resourceVersion": "N"}} (the REST layer adds
//    apiVersion/kind): periodic ones when `bookmark_interval` > 0 and the stream's progress moved,
//    and one annotated "k8s.io/initial-events-end": "true" after the initial events when asked.
//
// Thread-safety: WatchStream::Next and Stop may be called from any thread (Next from one consumer
// at a time). WatchHub is thread-safe; the store calls Publish in commit order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "controller/store/selector.h"

namespace sandboxlet::store {

enum class WatchEventType { kAdded, kModified, kDeleted, kBookmark, kError };

// "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR" (the Kubernetes wire names).
std::string_view WatchEventTypeName(WatchEventType type);

struct WatchEvent {
  WatchEventType type;
  nlohmann::json object;
};

struct WatchOptions {
  LabelSelector labels;
  FieldSelector fields;
  // "" or "0": start at the current version. Otherwise replay the changes after this version.
  std::string resource_version;
  // Begin with a synthetic ADDED event for every existing matching object (Kubernetes does this
  // for a watch without a resourceVersion or with "0"). The live part starts after them.
  bool send_initial_events = false;
  // After the initial events, send a BOOKMARK annotated "k8s.io/initial-events-end": "true".
  bool initial_events_end_bookmark = false;
  // When > 0, a BOOKMARK with the stream's progress is sent after this long without events.
  std::chrono::steady_clock::duration bookmark_interval{0};
};

namespace internal {

// One committed change, shared between the history and every stream that receives it.
struct Change {
  WatchEventType type;  // kAdded, kModified or kDeleted
  int64_t resource_version;
  std::string resource;
  std::string ns;
  std::shared_ptr<const nlohmann::json> object;    // the object after the change
  std::shared_ptr<const nlohmann::json> previous;  // before the change; null for kAdded
};

struct QueuedEvent {
  WatchEventType type;
  int64_t resource_version;  // 0 for ERROR
  std::shared_ptr<const nlohmann::json> object;
};

struct WatchState {
  WatchState(std::string resource_in, std::string ns_in, WatchOptions options_in)
      : resource(std::move(resource_in)), ns(std::move(ns_in)), options(std::move(options_in)) {}

  const std::string resource;
  const std::string ns;  // "" = all namespaces
  const WatchOptions options;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<QueuedEvent> queue;                        // guarded by mu
  bool stopped = false;                                 // guarded by mu; Stop() was called
  std::string end_reason;                               // guarded by mu; non-empty once ended
  int64_t progress_rv = 0;                              // guarded by mu; all changes ≤ it seen
  int64_t sent_rv = 0;                                  // guarded by mu; last rv handed out
  std::chrono::steady_clock::time_point next_bookmark;  // guarded by mu
};

}  // namespace internal

// The consumer's end of a watch. Destroying it stops the watch.
class WatchStream {
 public:
  explicit WatchStream(std::shared_ptr<internal::WatchState> state) : state_(std::move(state)) {}
  ~WatchStream() { Stop(); }
  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;

  // Waits until an event is available or `deadline` (steady clock) passes. Returns the event;
  // DeadlineExceeded when nothing came by the deadline; Cancelled once the stream was stopped,
  // ended after an ERROR event, or the store was closed (queued events are delivered first).
  absl::StatusOr<WatchEvent> Next(std::chrono::steady_clock::time_point deadline);

  // Ends the watch; a blocked Next returns Cancelled. Idempotent.
  void Stop();

 private:
  std::shared_ptr<internal::WatchState> state_;
};

class WatchHub {
 public:
  // `history_per_resource`: changes kept per resource for replay; `queue_limit`: events a stream
  // may have undelivered before it is ended with ERROR/Expired. `current_rv`: the store's version
  // at open — the oldest version a watch can start from until history is dropped.
  WatchHub(size_t history_per_resource, size_t queue_limit, int64_t current_rv);
  ~WatchHub();

  // Records a committed change and delivers it to the matching streams. Calls must come in
  // increasing resource_version order (the store holds its write lock around them).
  void Publish(std::shared_ptr<const internal::Change> change);

  // Starts a watch at `current_rv`, the store's version at the moment `existing` (all objects of
  // the resource in `ns`, used for initial events) was read; no Publish may run between that read
  // and this call. Errors: OutOfRange (too old), InvalidArgument (malformed or future version).
  absl::StatusOr<std::unique_ptr<WatchStream>> Register(
      const std::string& resource, const std::string& ns, const WatchOptions& options,
      int64_t current_rv, const std::vector<std::shared_ptr<const nlohmann::json>>& existing);

  // Ends every stream (their Next returns Cancelled after draining). Used when the store closes.
  void CloseAll();

 private:
  struct ResourceHistory {
    std::deque<std::shared_ptr<const internal::Change>> changes;
    int64_t start_rv = 0;  // every change with a version > start_rv is in `changes`
    std::vector<std::shared_ptr<internal::WatchState>> streams;
  };

  ResourceHistory& HistoryFor(const std::string& resource);  // requires mu_

  const size_t history_per_resource_;
  const size_t queue_limit_;
  const int64_t open_rv_;

  std::mutex mu_;
  std::map<std::string, ResourceHistory> resources_;  // guarded by mu_
  bool closed_ = false;                               // guarded by mu_
};

}  // namespace sandboxlet::store
