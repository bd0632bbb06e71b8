#include "controller/workqueue/workqueue.h"

#include <atomic>
#include <map>
#include <thread>

#include <gtest/gtest.h>

namespace sandboxlet::controller {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(WorkQueue, DeduplicatesWaitingKeys) {
  FakeClock clock;
  WorkQueue q({.clock = &clock});
  q.Add("a");
  q.Add("b");
  q.Add("a");
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(q.Get(), "a");
  EXPECT_EQ(q.Get(), "b");
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
}

TEST(WorkQueue, KeyAddedWhileProcessingComesBackAfterDone) {
  FakeClock clock;
  WorkQueue q({.clock = &clock});
  q.Add("a");
  ASSERT_EQ(q.Get(), "a");
  q.Add("a");
  // Not handed out again while the first worker holds it.
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
  q.Done("a");
  EXPECT_EQ(q.Get(), "a");
}

TEST(WorkQueue, NeverRunsOneKeyOnTwoWorkers) {
  WorkQueue q;
  std::mutex mu;
  std::map<std::string, int> active;
  std::atomic<bool> overlap{false};
  std::atomic<int> handled{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.Get()) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (++active[*key] > 1) overlap = true;
        }
        std::this_thread::yield();
        {
          std::lock_guard<std::mutex> lock(mu);
          --active[*key];
        }
        ++handled;
        q.Done(*key);
      }
    });
  }
  for (int i = 0; i < 20000; ++i) q.Add("k" + std::to_string(i % 7));
  // Drain: wait until every worker is idle with nothing queued.
  while (q.Len() > 0) std::this_thread::yield();
  q.ShutDown();
  for (auto& t : workers) t.join();
  EXPECT_FALSE(overlap.load());
  EXPECT_GE(handled.load(), 7);
}

TEST(WorkQueue, ExponentialBackoffPerKeyOnTheClock) {
  FakeClock clock;
  WorkQueue q({.clock = &clock, .base_backoff = milliseconds(100), .max_backoff = seconds(1)});
  EXPECT_EQ(q.NextBackoff("a"), milliseconds(100));
  q.AddRateLimited("a");  // 100ms
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
  clock.Advance(milliseconds(99));
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
  clock.Advance(milliseconds(1));
  ASSERT_EQ(q.GetUntil(clock.Now()), "a");
  q.Done("a");
  q.AddRateLimited("a");  // 200ms
  q.AddRateLimited("b");  // 100ms: keys back off independently
  clock.Advance(milliseconds(100));
  EXPECT_EQ(q.GetUntil(clock.Now()), "b");
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
  clock.Advance(milliseconds(100));
  EXPECT_EQ(q.GetUntil(clock.Now()), "a");
  q.Done("a");
  EXPECT_EQ(q.NumRequeues("a"), 2);
  for (int i = 0; i < 10; ++i) q.AddRateLimited("a");
  EXPECT_EQ(q.NextBackoff("a"), seconds(1));  // capped
  q.Forget("a");
  EXPECT_EQ(q.NumRequeues("a"), 0);
  EXPECT_EQ(q.NextBackoff("a"), milliseconds(100));
}

TEST(WorkQueue, EarliestDelayedAddWins) {
  FakeClock clock;
  WorkQueue q({.clock = &clock});
  q.AddAfter("a", seconds(60));
  q.AddAfter("a", seconds(5));
  clock.Advance(seconds(5));
  EXPECT_EQ(q.GetUntil(clock.Now()), "a");
  q.Done("a");
  clock.Advance(seconds(60));
  // The superseded 60 s timer does not fire a second time.
  EXPECT_EQ(q.GetUntil(clock.Now()), std::nullopt);
}

TEST(WorkQueue, BlockedGetWakesWhenFakeTimeReachesTimer) {
  FakeClock clock;
  WorkQueue q({.clock = &clock});
  q.AddAfter("ttl", seconds(30));
  std::optional<std::string> got;
  std::thread worker([&] { got = q.Get(); });
  clock.Advance(seconds(30));
  worker.join();
  EXPECT_EQ(got, "ttl");
}

TEST(WorkQueue, ShutDownReleasesWorkers) {
  WorkQueue q;
  std::thread worker([&] { EXPECT_EQ(q.Get(), std::nullopt); });
  q.ShutDown();
  worker.join();
  q.Add("late");
  EXPECT_EQ(q.Len(), 0u);
}

TEST(WorkQueue, HooksReportAddsDepthAndWait) {
  FakeClock clock;
  std::atomic<int> adds{0}, retries{0};
  std::atomic<size_t> depth{0};
  Clock::Duration waited{};
  WorkQueue q({.clock = &clock,
               .on_add = [&] { ++adds; },
               .on_retry = [&] { ++retries; },
               .on_depth = [&](size_t d) { depth = d; },
               .on_start = [&](Clock::Duration w) { waited = w; }});
  q.Add("a");
  q.Add("b");
  EXPECT_EQ(adds.load(), 2);
  EXPECT_EQ(depth.load(), 2u);
  clock.Advance(seconds(3));
  ASSERT_EQ(q.Get(), "a");
  EXPECT_EQ(waited, seconds(3));
  EXPECT_EQ(depth.load(), 1u);
  q.AddRateLimited("c");
  EXPECT_EQ(retries.load(), 1);
}

}  // namespace
}  // namespace sandboxlet::controller
