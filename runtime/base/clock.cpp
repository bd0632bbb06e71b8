#include "runtime/base/clock.h"

#include <thread>

namespace sandboxlet {

void RealClock::SleepUntil(TimePoint deadline) { std::this_thread::sleep_until(deadline); }

void RealClock::WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          TimePoint deadline) {
  cv.wait_until(lock, deadline);
}

RealClock* RealClock::Get() {
  static RealClock* clock = new RealClock();
  return clock;
}

FakeClock::FakeClock()
    : now_(std::chrono::steady_clock::time_point{} + std::chrono::hours(1)),
      wall_(std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 56)) {}

Clock::TimePoint FakeClock::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

std::chrono::system_clock::time_point FakeClock::WallNow() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wall_;
}

void FakeClock::SleepUntil(TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return now_ >= deadline; });
}

void FakeClock::WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          TimePoint deadline) {
  if (Now() >= deadline) return;
  cv.wait_for(lock, std::chrono::milliseconds(2));
}

void FakeClock::Advance(Duration d) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }
  cv_.notify_all();
}

}  // namespace sandboxlet
