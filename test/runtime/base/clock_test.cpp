#include "runtime/base/clock.h"

#include <thread>

#include <gtest/gtest.h>

namespace sandboxlet {
namespace {

TEST(FakeClock, SleepReturnsOnlyAfterAdvance) {
  FakeClock clock;
  auto deadline = clock.Now() + std::chrono::seconds(30);
  std::atomic<bool> woke{false};
  std::thread t([&] {
    clock.SleepUntil(deadline);
    woke = true;
  });
  clock.Advance(std::chrono::seconds(10));
  EXPECT_FALSE(woke.load());
  clock.Advance(std::chrono::seconds(20));
  t.join();
  EXPECT_TRUE(woke.load());
  EXPECT_GE(clock.Now(), deadline);
}

}  // namespace
}  // namespace sandboxlet
