// Clock: the source of time for everything that waits, backs off or expires, injected so tests
// can drive time without sleeping. RealClock is thread-safe; FakeClock is thread-safe too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace sandboxlet {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;
  // Monotonic time, for deadlines and backoff.
  virtual TimePoint Now() const = 0;
  // Wall-clock time, for timestamps shown to users.
  virtual std::chrono::system_clock::time_point WallNow() const = 0;
  // Blocks until Now() >= deadline.
  virtual void SleepUntil(TimePoint deadline) = 0;
  // Waits on `cv` (with `lock` held on entry and exit) until notified or until this clock
  // reaches `deadline`. May return early or spuriously: callers loop and re-check their
  // condition and Now().
  virtual void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                         TimePoint deadline) = 0;
};

class RealClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point WallNow() const override {
    return std::chrono::system_clock::now();
  }
  void SleepUntil(TimePoint deadline) override;
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 TimePoint deadline) override;

  // A process-wide instance.
  static RealClock* Get();
};

// Time moves only when Advance() is called; SleepUntil blocks until then. WaitUntil cannot know
// when another thread advances the clock, so it returns after a short real-time wait (a few
// milliseconds) and the caller re-checks: tests stay free of sleeps measured in fake time.
class FakeClock final : public Clock {
 public:
  FakeClock();
  TimePoint Now() const override;
  std::chrono::system_clock::time_point WallNow() const override;
  void SleepUntil(TimePoint deadline) override;
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 TimePoint deadline) override;
  void Advance(Duration d);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  TimePoint now_;                               // guarded by mu_
  std::chrono::system_clock::time_point wall_;  // guarded by mu_
};

}  // namespace sandboxlet
