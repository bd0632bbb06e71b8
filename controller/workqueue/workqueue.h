// WorkQueue: the reconcile queue. Keys ("sandboxes/default/demo") are deduplicated while they
// wait, a key is never handed to two workers at once (a key added while it is being processed is
// queued again when Done is called), failed keys come back after a per-key exponential backoff,
// and delayed adds (TTL, resync, crash-loop backoff) fire on the injected clock. Semantics follow
// client-go's rate-limited delaying queue.
//
// Thread-safe: any number of producers and workers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/base/clock.h"

namespace sandboxlet::controller {

struct WorkQueueOptions {
  Clock* clock = nullptr;  // defaults to RealClock::Get()
  // Backoff after the n-th consecutive failure of a key: base * 2^(n-1), capped at max.
  Clock::Duration base_backoff = std::chrono::milliseconds(100);
  Clock::Duration max_backoff = std::chrono::minutes(5);
  // Observability hooks (may be empty). Called without the queue's lock held.
  std::function<void()> on_add;                          // a key became queued
  std::function<void()> on_retry;                        // AddRateLimited
  std::function<void(size_t depth)> on_depth;            // queue length changed
  std::function<void(Clock::Duration waited)> on_start;  // a key was handed to a worker
};

class WorkQueue {
 public:
  explicit WorkQueue(WorkQueueOptions options = {});
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `key` now unless it is already waiting.
  void Add(const std::string& key);
  // Queues `key` once `delay` has passed on the clock (earliest pending time wins).
  void AddAfter(const std::string& key, Clock::Duration delay);
  // Queues `key` after its backoff and counts a failure.
  void AddRateLimited(const std::string& key);
  // Clears `key`'s failure count (call after a successful reconcile).
  void Forget(const std::string& key);
  int NumRequeues(const std::string& key) const;
  // The backoff AddRateLimited would use next for `key`.
  Clock::Duration NextBackoff(const std::string& key) const;

  // Blocks until a key is ready and not being processed, then marks it processing. Returns
  // nullopt once ShutDown has been called and the queue is drained of ready keys.
  std::optional<std::string> Get();
  // As Get, but gives up at `deadline` on the queue's clock.
  std::optional<std::string> GetUntil(Clock::TimePoint deadline);
  // Marks `key` processed; if it was added meanwhile it is queued again.
  void Done(const std::string& key);

  // Wakes every Get; later Adds are ignored.
  void ShutDown();
  bool ShuttingDown() const;
  // Keys ready to be handed out (excluding delayed ones and those being processed).
  size_t Len() const;

 private:
  struct Timer {
    Clock::TimePoint when;
    std::string key;
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  Clock::Duration BackoffFor(int failures) const;
  void AddLocked(const std::string& key, std::vector<std::function<void()>>* hooks);
  void PromoteDueTimersLocked(std::vector<std::function<void()>>* hooks);
  void RunHooks(std::vector<std::function<void()>>& hooks);

  const WorkQueueOptions options_;
  Clock* const clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;                                               // guarded by mu_
  std::unordered_set<std::string> dirty_;                                       // guarded by mu_
  std::unordered_set<std::string> processing_;                                  // guarded by mu_
  std::unordered_map<std::string, Clock::TimePoint> queued_at_;                 // guarded by mu_
  std::unordered_map<std::string, int> failures_;                               // guarded by mu_
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;  // guarded by mu_
  std::unordered_map<std::string, Clock::TimePoint> timer_due_;  // guarded by mu_: earliest per key
  bool shutting_down_ = false;                                   // guarded by mu_
};

}  // namespace sandboxlet::controller
