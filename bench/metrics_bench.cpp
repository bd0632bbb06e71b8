// Scrape cost of /metrics on a busy node: 10,000 snapshots and 1,000 sandboxes with their
// per-object series. Disk usage was measured beforehand by SnapshotUsageTracker, so neither the
// serialisation nor the HTTP GET depends on the snapshots' sizes. Reports the exposition's size.
#include <benchmark/benchmark.h>
#include <curl/curl.h>

#include <chrono>
#include <memory>
#include <string>

#include "controller/metrics/http_server.h"
#include "controller/metrics/metrics.h"

namespace sandboxlet::metrics {
namespace {

using namespace std::chrono_literals;

constexpr int kSnapshots = 10000;
constexpr int kSandboxes = 1000;

void Populate(Metrics& m) {
  m.SetBuildInfo({"0.1.0", "v41.0", "dm"});
  const char* phases[] = {"Running", "Paused", "Hibernated", "Stopped"};
  for (int i = 0; i < kSandboxes; ++i) {
    const std::string name = "sandbox-" + std::to_string(i);
    m.SetSandboxPhase("tenant-" + std::to_string(i % 50), name, phases[i % 4]);
    m.CountVmmExit(VmmExitReason::kShutdown, "tenant-" + std::to_string(i % 50), name);
  }
  m.SetSandboxesByPhase({{"Running", 250}, {"Paused", 250}, {"Hibernated", 250}, {"Stopped", 250}});
  m.SetSnapshotsByPhase({{"Ready", kSnapshots}});
  m.SetStoreObjects("sandboxes", kSandboxes);
  m.SetStoreObjects("sandboxsnapshots", kSnapshots);
  int64_t total = 0;
  for (int i = 0; i < kSnapshots; ++i) {
    // Sizes from a few MiB to tens of GiB: only the value changes, never the cost.
    const int64_t bytes = (int64_t{1} << 22) * (1 + i % 8192);
    m.SetSnapshotDiskUsage("tenant-" + std::to_string(i % 50), "snapshot-" + std::to_string(i),
                           bytes);
    total += bytes;
  }
  m.SetSnapshotDiskUsageTotal(total);
  m.SetSnapshotFilesystemFree(int64_t{500} << 30);
  for (const char* kind : {"Sandbox", "SandboxSnapshot"}) {
    m.ObserveReconcile(kind, ReconcileResult::kSuccess, 5ms);
    m.ObserveReconcile(kind, ReconcileResult::kError, 50ms);
  }
  for (VmOperation op : {VmOperation::kBoot, VmOperation::kRestore, VmOperation::kPause,
                         VmOperation::kResume, VmOperation::kSnapshot, VmOperation::kStop}) {
    m.ObserveVmOperation(op, 200ms);
  }
  for (const char* ep : {"vm.create", "vm.boot", "vm.pause", "vm.resume", "vm.snapshot",
                         "vm.restore", "vm.info", "vmm.ping", "vmm.shutdown"}) {
    m.ObserveChApiRequest(ep, 204, 2ms);
  }
}

Metrics& Busy() {
  static Metrics* m = [] {
    auto* metrics = new Metrics();
    Populate(*metrics);
    return metrics;
  }();
  return *m;
}

void BM_Render(benchmark::State& state) {
  Metrics& m = Busy();
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = m.Render();
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["exposition_bytes"] = static_cast<double>(bytes);
  state.counters["series"] = kSnapshots + 2 * kSandboxes;
}
BENCHMARK(BM_Render)->Unit(benchmark::kMillisecond);

size_t Discard(char*, size_t size, size_t n, void* out) {
  *static_cast<size_t*>(out) += size * n;
  return size * n;
}

void BM_HttpGetMetrics(benchmark::State& state) {
  Metrics& m = Busy();
  Readiness readiness;
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(&m, &readiness, o);
  if (!server.ok()) {
    state.SkipWithError(std::string(server.status().message()).c_str());
    return;
  }
  const std::string url = "http://127.0.0.1:" + std::to_string((*server)->port()) + "/metrics";
  CURL* curl = curl_easy_init();
  size_t received = 0;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &received);
  size_t last = 0;
  for (auto _ : state) {
    received = 0;
    if (curl_easy_perform(curl) != CURLE_OK) {
      state.SkipWithError("GET /metrics failed");
      break;
    }
    last = received;
  }
  curl_easy_cleanup(curl);
  state.counters["exposition_bytes"] = static_cast<double>(last);
}
BENCHMARK(BM_HttpGetMetrics)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sandboxlet::metrics

BENCHMARK_MAIN();
