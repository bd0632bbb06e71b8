// Crash-detection latency: time from SIGKILL of a child to its ExitWatcher callback (target:
// median under 10 ms). Each iteration forks a child that waits in pause(), watches its pidfd,
// kills it and waits for the callback; manual time is the kill→callback interval. The p50/p99
// counters are over all iterations of a run.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/base/fd.h"
#include "runtime/vmm/exit_watcher.h"

namespace {

using Clock = std::chrono::steady_clock;

void BM_SigkillToExitEvent(benchmark::State& state) {
  std::mutex mu;
  std::condition_variable cv;
  bool fired = false;
  Clock::time_point fired_at;
  auto watcher = sandboxlet::vmm::ExitWatcher::Start([&](const sandboxlet::vmm::VmmExit&) {
    auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mu);
    fired = true;
    fired_at = now;
    cv.notify_all();
  });
  if (!watcher.ok()) {
    state.SkipWithError("cannot start exit watcher");
    return;
  }
  // Background watches, so epoll holds more than the one pidfd that fires.
  std::vector<pid_t> idle;
  for (int i = 0; i < state.range(0); ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      while (true) ::pause();
    }
    sandboxlet::UniqueFd fd(sandboxlet::vmm::PidfdOpen(pid));
    (void)(*watcher)->Watch("idle/" + std::to_string(i), fd.get(), pid, true);
    idle.push_back(pid);
  }

  std::vector<double> samples;
  for (auto _ : state) {
    pid_t pid = ::fork();
    if (pid == 0) {
      while (true) ::pause();
    }
    sandboxlet::UniqueFd fd(sandboxlet::vmm::PidfdOpen(pid));
    {
      std::lock_guard<std::mutex> lock(mu);
      fired = false;
    }
    if (!(*watcher)->Watch("bench/victim", fd.get(), pid, true).ok()) {
      state.SkipWithError("watch failed");
      break;
    }
    auto start = Clock::now();
    ::kill(pid, SIGKILL);
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(5), [&] { return fired; })) {
      state.SkipWithError("no exit event within 5 s");
      break;
    }
    double secs = std::chrono::duration<double>(fired_at - start).count();
    samples.push_back(secs);
    state.SetIterationTime(secs);
  }
  for (pid_t pid : idle) ::kill(pid, SIGKILL);
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    state.counters["p50_ms"] = samples[samples.size() / 2] * 1e3;
    state.counters["p99_ms"] =
        samples[std::min(samples.size() - 1, samples.size() * 99 / 100)] * 1e3;
  }
  // Let the watcher reap the idle children before it is destroyed (each exit notifies cv).
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(5), [&] { return (*watcher)->watched() == 0; });
}
BENCHMARK(BM_SigkillToExitEvent)
    ->Arg(0)
    ->Arg(100)
    ->UseManualTime()
    ->Iterations(200)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
