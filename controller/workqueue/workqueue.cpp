#include "controller/workqueue/workqueue.h"

namespace sandboxlet::controller {

WorkQueue::WorkQueue(WorkQueueOptions options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : RealClock::Get()) {}

Clock::Duration WorkQueue::BackoffFor(int failures) const {
  if (failures <= 0) return Clock::Duration::zero();
  Clock::Duration d = options_.base_backoff;
  for (int i = 1; i < failures && d < options_.max_backoff; ++i) d *= 2;
  return d < options_.max_backoff ? d : options_.max_backoff;
}

void WorkQueue::RunHooks(std::vector<std::function<void()>>& hooks) {
  for (auto& h : hooks) h();
}

void WorkQueue::AddLocked(const std::string& key, std::vector<std::function<void()>>* hooks) {
  if (shutting_down_ || dirty_.count(key)) return;
  dirty_.insert(key);
  queued_at_.emplace(key, clock_->Now());
  if (options_.on_add) hooks->push_back(options_.on_add);
  if (processing_.count(key)) return;  // re-queued by Done
  queue_.push_back(key);
  if (options_.on_depth) {
    size_t depth = queue_.size();
    hooks->push_back([this, depth] { options_.on_depth(depth); });
  }
  cv_.notify_one();
}

void WorkQueue::Add(const std::string& key) {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AddLocked(key, &hooks);
  }
  RunHooks(hooks);
}

void WorkQueue::AddAfter(const std::string& key, Clock::Duration delay) {
  if (delay <= Clock::Duration::zero()) return Add(key);
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) return;
  Clock::TimePoint when = clock_->Now() + delay;
  auto it = timer_due_.find(key);
  if (it != timer_due_.end() && it->second <= when) return;  // an earlier timer already exists
  timer_due_[key] = when;
  timers_.push(Timer{when, key});
  cv_.notify_all();  // a sleeping Get may need to wake earlier
}

void WorkQueue::AddRateLimited(const std::string& key) {
  Clock::Duration delay;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int& n = failures_[key];
    ++n;
    delay = BackoffFor(n);
  }
  if (options_.on_retry) options_.on_retry();
  AddAfter(key, delay);
}

void WorkQueue::Forget(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.erase(key);
}

int WorkQueue::NumRequeues(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

Clock::Duration WorkQueue::NextBackoff(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = failures_.find(key);
  return BackoffFor((it == failures_.end() ? 0 : it->second) + 1);
}

void WorkQueue::PromoteDueTimersLocked(std::vector<std::function<void()>>* hooks) {
  Clock::TimePoint now = clock_->Now();
  while (!timers_.empty() && timers_.top().when <= now) {
    Timer t = timers_.top();
    timers_.pop();
    auto it = timer_due_.find(t.key);
    // Stale entries (superseded by an earlier timer for the same key) are skipped.
    if (it == timer_due_.end() || it->second != t.when) continue;
    timer_due_.erase(it);
    AddLocked(t.key, hooks);
  }
}

std::optional<std::string> WorkQueue::Get() { return GetUntil(Clock::TimePoint::max()); }

std::optional<std::string> WorkQueue::GetUntil(Clock::TimePoint deadline) {
  std::vector<std::function<void()>> hooks;
  std::optional<std::string> key;
  Clock::Duration waited{};
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      PromoteDueTimersLocked(&hooks);
      if (!queue_.empty()) break;
      if (shutting_down_) break;
      Clock::TimePoint now = clock_->Now();
      if (now >= deadline) break;
      Clock::TimePoint wake = deadline;
      if (!timers_.empty() && timers_.top().when < wake) wake = timers_.top().when;
      // Hooks collected so far must not run under the lock; run them before sleeping.
      if (!hooks.empty()) {
        lock.unlock();
        RunHooks(hooks);
        hooks.clear();
        lock.lock();
        continue;
      }
      clock_->WaitUntil(lock, cv_, wake);
    }
    if (!queue_.empty()) {
      key = std::move(queue_.front());
      queue_.pop_front();
      dirty_.erase(*key);
      processing_.insert(*key);
      auto it = queued_at_.find(*key);
      if (it != queued_at_.end()) {
        waited = clock_->Now() - it->second;
        queued_at_.erase(it);
      }
      if (options_.on_depth) {
        size_t depth = queue_.size();
        hooks.push_back([this, depth] { options_.on_depth(depth); });
      }
    }
  }
  RunHooks(hooks);
  if (key && options_.on_start) options_.on_start(waited);
  return key;
}

void WorkQueue::Done(const std::string& key) {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    processing_.erase(key);
    if (dirty_.count(key)) {
      queue_.push_back(key);
      if (options_.on_depth) {
        size_t depth = queue_.size();
        hooks.push_back([this, depth] { options_.on_depth(depth); });
      }
      cv_.notify_one();
    }
  }
  RunHooks(hooks);
}

void WorkQueue::ShutDown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutting_down_ = true;
  cv_.notify_all();
}

bool WorkQueue::ShuttingDown() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shutting_down_;
}

size_t WorkQueue::Len() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

}  // namespace sandboxlet::controller
