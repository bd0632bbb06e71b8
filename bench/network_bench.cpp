// Benchmarks of per-sandbox networking (needs root): setup + teardown of one sandbox network
// (median and p99 reported as counters), `ip netns add` alone for comparison, and reclaim of 500
// leftovers. Numbers only; never a CI gate.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/network/reclaim.h"
#include "runtime/network/sandbox_network.h"

namespace sandboxlet::network {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<SandboxNetwork> OpenBenchNetwork(benchmark::State& state, const std::string& dir) {
  NetworkConfig config{.state_dir = dir, .cidr = "100.98.0.0/22", .name_prefix = "bnch"};
  auto net = SandboxNetwork::Open(config);
  if (!net.ok()) {
    state.SkipWithError(std::string(net.status().message()).c_str());
    return nullptr;
  }
  return std::move(*net);
}

std::string TempDir() {
  char tmpl[] = "/tmp/sbl-net-bench-XXXXXX";
  return ::mkdtemp(tmpl) == nullptr ? "/tmp/sbl-net-bench" : tmpl;
}

void SetPercentiles(benchmark::State& state, std::vector<double> ms) {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  state.counters["median_ms"] = ms[ms.size() / 2];
  state.counters["p99_ms"] = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
}

void BM_SetupTeardown(benchmark::State& state) {
  std::string dir = TempDir();
  auto net = OpenBenchNetwork(state, dir);
  if (net == nullptr) return;
  std::vector<double> total, setup;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto info = net->Create({.id = "bench"});
    auto t1 = Clock::now();
    if (!info.ok()) {
      state.SkipWithError(std::string(info.status().message()).c_str());
      break;
    }
    absl::Status st = net->Remove("bench");
    auto t2 = Clock::now();
    if (!st.ok()) {
      state.SkipWithError(std::string(st.message()).c_str());
      break;
    }
    setup.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    total.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  }
  SetPercentiles(state, total);
  std::sort(setup.begin(), setup.end());
  if (!setup.empty()) state.counters["setup_median_ms"] = setup[setup.size() / 2];
  (void)net->RemoveHostRules();
  (void)RemoveAll(dir);
}
BENCHMARK(BM_SetupTeardown)->Iterations(1000)->Unit(benchmark::kMillisecond);

void BM_IpNetnsAddAlone(benchmark::State& state) {
  std::vector<double> ms;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto r = RunCommand({"ip", "netns", "add", "bnch-ipnetns"});
    auto t1 = Clock::now();
    state.PauseTiming();
    (void)RunCommand({"ip", "netns", "del", "bnch-ipnetns"});
    state.ResumeTiming();
    if (!r.ok() || !r->ok()) {
      state.SkipWithError("ip netns add failed");
      break;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  SetPercentiles(state, ms);
}
BENCHMARK(BM_IpNetnsAddAlone)->Iterations(200)->Unit(benchmark::kMillisecond);

void BM_Reclaim500(benchmark::State& state) {
  std::string dir = TempDir();
  auto net = OpenBenchNetwork(state, dir);
  if (net == nullptr) return;
  for (auto _ : state) {
    state.PauseTiming();
    for (int i = 0; i < 500; ++i) {
      auto info = net->Create({.id = Cat("leftover-", i)});
      if (!info.ok()) {
        state.SkipWithError(std::string(info.status().message()).c_str());
        break;
      }
    }
    state.ResumeTiming();
    auto result = ReclaimNetworkLeftovers(*net, {}, 8);
    if (!result.ok() || result->netns_removed != 500 || result->veths_removed != 500) {
      state.SkipWithError("reclaim did not remove all 500 leftovers");
    }
  }
  (void)net->RemoveHostRules();
  (void)RemoveAll(dir);
}
BENCHMARK(BM_Reclaim500)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sandboxlet::network

BENCHMARK_MAIN();
