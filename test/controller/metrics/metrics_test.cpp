#include "controller/metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "controller/workqueue/workqueue.h"
#include "test/controller/metrics/metrics_test_util.h"

namespace sandboxlet::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Sample;
using namespace std::chrono_literals;

struct Family {
  std::string type;
  std::set<std::set<std::string>> label_keys;  // label names of each series (sans "le")
};

// Parses "# TYPE" lines and the label names of each sample, folding histogram samples
// (_bucket/_sum/_count) into their family.
std::map<std::string, Family> ParseFamilies(const std::string& text) {
  std::map<std::string, Family> out;
  std::istringstream in(text);
  std::string line;
  std::string current;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream l(line.substr(7));
      std::string name, type;
      l >> name >> type;
      out[name].type = type;
      current = name;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::set<std::string> keys;
    const size_t brace = line.find('{');
    if (brace != std::string::npos) {
      size_t pos = brace + 1;
      while (pos < line.size() && line[pos] != '}') {
        const size_t eq = line.find('=', pos);
        const std::string key = line.substr(pos, eq - pos);
        if (key != "le") keys.insert(key);
        size_t end = line.find('"', eq + 2);
        while (line[end - 1] == '\\') end = line.find('"', end + 1);
        pos = end + 1;
        if (line[pos] == ',') ++pos;
      }
    }
    out[current].label_keys.insert(keys);
  }
  return out;
}

void PopulateAll(Metrics& m) {
  m.SetBuildInfo({"0.1.0", "v41.0", "file"});
  m.SetSandboxesByPhase({{"Running", 2}, {"Paused", 1}});
  m.SetSnapshotsByPhase({{"Ready", 3}});
  m.SetStoreObjects("sandboxes", 3);
  m.SetSandboxPhase("default", "demo", "Running");
  m.CountVmmExit(VmmExitReason::kCrash, "default", "demo");
  m.ObserveReconcile("Sandbox", ReconcileResult::kSuccess, 3ms);
  controller::WorkQueueOptions wq;
  m.Instrument("sandboxes", &wq);
  m.ObserveVmOperation(VmOperation::kRestore, 1500ms);
  m.ObserveChApiRequest("vm.pause", 204, 2ms);
  m.SetSnapshotDiskUsage("default", "snap", 4096);
  m.SetSnapshotDiskUsageTotal(4096);
  m.SetSnapshotFilesystemFree(1 << 30);
}

TEST(Metrics, EveryFamilyIsExportedWithItsTypeAndLabels) {
  Metrics m;
  PopulateAll(m);
  const auto families = ParseFamilies(m.Render());
  const std::map<std::string, std::pair<std::string, std::set<std::string>>> want = {
      {"sandboxlet_build_info", {"gauge", {"version", "ch_version", "volume_backend"}}},
      {"sandboxlet_sandboxes", {"gauge", {"phase"}}},
      {"sandboxlet_snapshots", {"gauge", {"phase"}}},
      {"sandboxlet_store_objects", {"gauge", {"resource"}}},
      {"sandboxlet_sandbox_phase", {"gauge", {"namespace", "sandbox", "phase"}}},
      {"sandboxlet_sandbox_vmm_exits_total", {"counter", {"namespace", "sandbox"}}},
      {"sandboxlet_reconcile_total", {"counter", {"kind", "result"}}},
      {"sandboxlet_reconcile_duration_seconds", {"histogram", {"kind"}}},
      {"sandboxlet_workqueue_depth", {"gauge", {"queue"}}},
      {"sandboxlet_workqueue_adds_total", {"counter", {"queue"}}},
      {"sandboxlet_workqueue_retries_total", {"counter", {"queue"}}},
      {"sandboxlet_workqueue_queue_duration_seconds", {"histogram", {"queue"}}},
      {"sandboxlet_vm_operation_duration_seconds", {"histogram", {"operation"}}},
      {"sandboxlet_vmm_exits_total", {"counter", {"reason"}}},
      {"sandboxlet_ch_api_requests_total", {"counter", {"endpoint", "code"}}},
      {"sandboxlet_ch_api_request_duration_seconds", {"histogram", {"endpoint"}}},
      {"sandboxlet_snapshot_disk_usage_bytes", {"gauge", {"namespace", "snapshot"}}},
      {"sandboxlet_snapshot_disk_usage_total_bytes", {"gauge", {}}},
      {"sandboxlet_snapshot_filesystem_free_bytes", {"gauge", {}}},
  };
  for (const auto& [name, type_labels] : want) {
    SCOPED_TRACE(name);
    auto it = families.find(name);
    ASSERT_NE(it, families.end());
    EXPECT_EQ(it->second.type, type_labels.first);
    EXPECT_EQ(it->second.label_keys, std::set<std::set<std::string>>{type_labels.second});
  }
  EXPECT_EQ(families.size(), want.size()) << "a family is missing from this test or docs";
}

TEST(Metrics, ValuesAreReported) {
  Metrics m;
  PopulateAll(m);
  const std::string text = m.Render();
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_build_info{ch_version="v41.0",version="0.1.0",volume_backend="file"})"),
      1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Running"})"), 2);
  EXPECT_EQ(Sample(text, R"(sandboxlet_vmm_exits_total{reason="crash"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_ch_api_requests_total{code="204",endpoint="vm.pause"})"), 1);
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_vm_operation_duration_seconds_bucket{operation="restore",le="1"})"),
      0);
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_vm_operation_duration_seconds_bucket{operation="restore",le="2.5"})"),
      1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_vm_operation_duration_seconds_sum{operation="restore"})"),
            1.5);
  EXPECT_EQ(
      Sample(text, R"(sandboxlet_snapshot_disk_usage_bytes{namespace="default",snapshot="snap"})"),
      4096);
}

TEST(Metrics, VmOperationBucketsSpanMillisecondsToMinutes) {
  Metrics m;
  m.ObserveVmOperation(VmOperation::kPause, 800us);
  m.ObserveVmOperation(VmOperation::kBoot, 4min);
  const std::string text = m.Render();
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_vm_operation_duration_seconds_bucket{operation="pause",le="0.001"})"),
      1);
  EXPECT_EQ(
      Sample(text, R"(sandboxlet_vm_operation_duration_seconds_bucket{operation="boot",le="120"})"),
      0);
  EXPECT_EQ(
      Sample(text, R"(sandboxlet_vm_operation_duration_seconds_bucket{operation="boot",le="300"})"),
      1);
}

TEST(Metrics, RemovingASnapshotDropsItsSeriesOnly) {
  Metrics m;
  m.SetSnapshotDiskUsage("default", "a", 100);
  m.SetSnapshotDiskUsage("default", "b", 200);
  m.RemoveSnapshotDiskUsage("default", "a");
  m.RemoveSnapshotDiskUsage("default", "never-existed");
  const std::string text = m.Render();
  EXPECT_THAT(text, Not(HasSubstr(R"(snapshot="a")")));
  EXPECT_EQ(
      Sample(text, R"(sandboxlet_snapshot_disk_usage_bytes{namespace="default",snapshot="b"})"),
      200);
}

TEST(Metrics, RemovingASandboxDropsAllItsSeries) {
  Metrics m;
  m.SetSandboxPhase("default", "gone", "Running");
  m.CountVmmExit(VmmExitReason::kCrash, "default", "gone");
  m.SetSandboxPhase("default", "kept", "Paused");
  m.RemoveSandbox("default", "gone");
  const std::string text = m.Render();
  EXPECT_THAT(text, Not(HasSubstr(R"(sandbox="gone")")));
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_sandbox_phase{namespace="default",phase="Paused",sandbox="kept"})"),
      1);
  // The node-wide counter keeps counting the exit.
  EXPECT_EQ(Sample(text, R"(sandboxlet_vmm_exits_total{reason="crash"})"), 1);
}

TEST(Metrics, APhaseChangeReplacesTheSandboxSeries) {
  Metrics m;
  m.SetSandboxPhase("default", "demo", "Creating");
  m.SetSandboxPhase("default", "demo", "Running");
  const std::string text = m.Render();
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_sandbox_phase{namespace="default",phase="Creating",sandbox="demo"})"),
      std::nullopt);
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_sandbox_phase{namespace="default",phase="Running",sandbox="demo"})"),
      1);
}

TEST(Metrics, APhaseNoLongerPresentDropsToZero) {
  Metrics m;
  m.SetSandboxesByPhase({{"Running", 2}, {"Paused", 1}});
  m.SetSandboxesByPhase({{"Running", 3}});
  const std::string text = m.Render();
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Running"})"), 3);
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Paused"})"), 0);
}

TEST(Metrics, BuildInfoIsReplaced) {
  Metrics m;
  m.SetBuildInfo({"0.1.0", "v40.0", "dm"});
  m.SetBuildInfo({"0.1.0", "v41.0", "dm"});
  const std::string text = m.Render();
  EXPECT_THAT(text, Not(HasSubstr("v40.0")));
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_build_info{ch_version="v41.0",version="0.1.0",volume_backend="dm"})"),
      1);
}

TEST(Metrics, ChApiObserverCountsRequestsWithoutResponseAsError) {
  Metrics m;
  auto observer = m.ChApiObserver();
  observer("vm.info", 200, 1ms);
  observer("vm.info", 0, 5s);
  observer("vm.info", 0, 5s);
  const std::string text = m.Render();
  EXPECT_EQ(Sample(text, R"(sandboxlet_ch_api_requests_total{code="200",endpoint="vm.info"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_ch_api_requests_total{code="error",endpoint="vm.info"})"),
            2);
  EXPECT_EQ(Sample(text, R"(sandboxlet_ch_api_request_duration_seconds_count{endpoint="vm.info"})"),
            3);
}

TEST(Metrics, InstrumentedWorkQueueReportsAddsRetriesDepthAndWait) {
  Metrics m;
  FakeClock clock;
  controller::WorkQueueOptions options;
  options.clock = &clock;
  m.Instrument("sandboxes", &options);
  controller::WorkQueue queue(options);
  queue.Add("sandboxes/default/a");
  queue.Add("sandboxes/default/b");
  queue.Add("sandboxes/default/a");  // deduplicated
  EXPECT_EQ(Sample(m.Render(), R"(sandboxlet_workqueue_depth{queue="sandboxes"})"), 2);
  clock.Advance(2s);
  auto key = queue.Get();
  ASSERT_TRUE(key.has_value());
  queue.AddRateLimited(*key);
  queue.Done(*key);
  const std::string text = m.Render();
  EXPECT_EQ(Sample(text, R"(sandboxlet_workqueue_adds_total{queue="sandboxes"})"), 2);
  EXPECT_EQ(Sample(text, R"(sandboxlet_workqueue_retries_total{queue="sandboxes"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_workqueue_depth{queue="sandboxes"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_workqueue_queue_duration_seconds_count{queue="sandboxes"})"),
            1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_workqueue_queue_duration_seconds_sum{queue="sandboxes"})"),
            2);
}

}  // namespace
}  // namespace sandboxlet::metrics
