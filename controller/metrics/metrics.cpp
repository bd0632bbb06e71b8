#include "controller/metrics/metrics.h"

#include <charconv>
#include <cmath>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>


namespace sandboxlet::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

double Seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Reconciles: a pure status update takes a millisecond; a boot or restore inside a reconcile
// can take a minute.
Histogram::BucketBoundaries ReconcileBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}
// Time a key waits in a workqueue: from sub-millisecond to the longest backoff (5 min).
Histogram::BucketBoundaries QueueBuckets() {
  return {0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};
}
// VM operations: pause/resume take a millisecond, a restore of a large memory snapshot or a
// stop that waits for the guest can take minutes.
Histogram::BucketBoundaries VmBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1,     2.5,    5,     10,   30,    60,   120, 300,  600};
}
// CH API calls: most are local-socket round trips; vm.snapshot/vm.restore write/read memory.
Histogram::BucketBoundaries ChApiBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120};
}

}  // namespace

std::string_view VmOperationName(VmOperation op) {
  switch (op) {
    case VmOperation::kBoot:
      return "boot";
    case VmOperation::kRestore:
      return "restore";
    case VmOperation::kPause:
      return "pause";
    case VmOperation::kResume:
      return "resume";
    case VmOperation::kSnapshot:
      return "snapshot";
    case VmOperation::kStop:
      return "stop";
  }
  return "unknown";
}

std::string_view VmmExitReasonName(VmmExitReason reason) {
  switch (reason) {
    case VmmExitReason::kCrash:
      return "crash";
    case VmmExitReason::kShutdown:
      return "shutdown";
    case VmmExitReason::kKilled:
      return "killed";
  }
  return "unknown";
}

std::string_view ReconcileResultName(ReconcileResult result) {
  switch (result) {
    case ReconcileResult::kSuccess:
      return "success";
    case ReconcileResult::kError:
      return "error";
    case ReconcileResult::kRequeue:
      return "requeue";
  }
  return "unknown";
}

struct Metrics::Families {
  prometheus::Registry registry;

  Family<Gauge>& build_info =
      prometheus::BuildGauge()
          .Name("sandboxlet_build_info")
          .Help("Build of this sandboxlet: always 1, information in labels.")
          .Register(registry);
  Family<Gauge>& sandboxes = prometheus::BuildGauge()
                                 .Name("sandboxlet_sandboxes")
                                 .Help("Sandboxes in the store by status phase.")
                                 .Register(registry);
  Family<Gauge>& snapshots = prometheus::BuildGauge()
                                 .Name("sandboxlet_snapshots")
                                 .Help("SandboxSnapshots in the store by status phase.")
                                 .Register(registry);
  Family<Gauge>& store_objects = prometheus::BuildGauge()
                                     .Name("sandboxlet_store_objects")
                                     .Help("Objects in the store by resource.")
                                     .Register(registry);
  Family<Gauge>& sandbox_phase =
      prometheus::BuildGauge()
          .Name("sandboxlet_sandbox_phase")
          .Help("Current phase of each sandbox: 1 for the phase label it is in.")
          .Register(registry);
  Family<Counter>& sandbox_vmm_exits =
      prometheus::BuildCounter()
          .Name("sandboxlet_sandbox_vmm_exits_total")
          .Help("VMM process exits of each sandbox, whatever the reason.")
          .Register(registry);
  Family<Counter>& reconcile_total = prometheus::BuildCounter()
                                         .Name("sandboxlet_reconcile_total")
                                         .Help("Reconciles by object kind and result.")
                                         .Register(registry);
  Family<Histogram>& reconcile_duration = prometheus::BuildHistogram()
                                              .Name("sandboxlet_reconcile_duration_seconds")
                                              .Help("Duration of reconciles by object kind.")
                                              .Register(registry);
  Family<Gauge>& wq_depth = prometheus::BuildGauge()
                                .Name("sandboxlet_workqueue_depth")
                                .Help("Keys ready in the workqueue, waiting for a worker.")
                                .Register(registry);
  Family<Counter>& wq_adds = prometheus::BuildCounter()
                                 .Name("sandboxlet_workqueue_adds_total")
                                 .Help("Keys queued in the workqueue.")
                                 .Register(registry);
  Family<Counter>& wq_retries = prometheus::BuildCounter()
                                    .Name("sandboxlet_workqueue_retries_total")
                                    .Help("Keys re-queued after a failure, with backoff.")
                                    .Register(registry);
  Family<Histogram>& wq_wait =
      prometheus::BuildHistogram()
          .Name("sandboxlet_workqueue_queue_duration_seconds")
          .Help("Time a key waited in the workqueue before a worker took it.")
          .Register(registry);
  Family<Histogram>& vm_op = prometheus::BuildHistogram()
                                 .Name("sandboxlet_vm_operation_duration_seconds")
                                 .Help("Duration of VM operations by operation.")
                                 .Register(registry);
  Family<Counter>& vmm_exits = prometheus::BuildCounter()
                                   .Name("sandboxlet_vmm_exits_total")
                                   .Help("VMM process exits by reason (crash, shutdown, killed).")
                                   .Register(registry);
  Family<Counter>& ch_requests =
      prometheus::BuildCounter()
          .Name("sandboxlet_ch_api_requests_total")
          .Help("Cloud Hypervisor API requests by endpoint and HTTP status code.")
          .Register(registry);
  Family<Histogram>& ch_duration =
      prometheus::BuildHistogram()
          .Name("sandboxlet_ch_api_request_duration_seconds")
          .Help("Latency of Cloud Hypervisor API requests by endpoint.")
          .Register(registry);
  Family<Gauge>& snapshot_usage =
      prometheus::BuildGauge()
          .Name("sandboxlet_snapshot_disk_usage_bytes")
          .Help("Bytes allocated on disk by each snapshot (sparse-aware, like du).")
          .Register(registry);
  Family<Gauge>& snapshot_usage_total =
      prometheus::BuildGauge()
          .Name("sandboxlet_snapshot_disk_usage_total_bytes")
          .Help("Bytes allocated on disk by all snapshots of this node.")
          .Register(registry);
  Family<Gauge>& snapshot_fs_free =
      prometheus::BuildGauge()
          .Name("sandboxlet_snapshot_filesystem_free_bytes")
          .Help("Bytes available to sandboxlet on the filesystem holding the snapshots.")
          .Register(registry);
};

Metrics::Metrics() : f_(std::make_unique<Families>()) {
  // The node's total exists from the start so dashboards see 0 rather than "no data"; the free
  // bytes appear once measured (a made-up 0 would fire disk-full alerts).
  f_->snapshot_usage_total.Add({});
}

Metrics::~Metrics() = default;

namespace {

// The text exposition format 0.0.4, written straight into one string. prometheus-cpp's
// TextSerializer goes through an ostream and formats every number with stream precision, which
// dominated the scrape time with tens of thousands of series (bench/metrics_bench.cpp).
void AppendDouble(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, r.ptr);
  }
}

void AppendEscaped(std::string& out, const std::string& v, bool quote_escape) {
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quote_escape && c == '"')
      out += "\\\"";
    else
      out += c;
  }
}

// name{labels[,extra_name="extra_value"]} value
void AppendSample(std::string& out, const std::string& name, std::string_view suffix,
                  const std::vector<prometheus::ClientMetric::Label>& labels,
                  std::string_view extra_name, const std::string& extra_value, double value) {
  out += name;
  out += suffix;
  if (!labels.empty() || !extra_name.empty()) {
    out += '{';
    bool first = true;
    for (const auto& l : labels) {
      if (!first) out += ',';
      first = false;
      out += l.name;
      out += "=\"";
      AppendEscaped(out, l.value, true);
      out += '"';
    }
    if (!extra_name.empty()) {
      if (!first) out += ',';
      out += extra_name;
      out += "=\"";
      out += extra_value;
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  AppendDouble(out, value);
  out += '\n';
}

std::string Exposition(const std::vector<prometheus::MetricFamily>& families) {
  std::string out;
  out.reserve(1 << 20);
  for (const auto& f : families) {
    if (f.metric.empty()) continue;
    out += "# HELP ";
    out += f.name;
    out += ' ';
    AppendEscaped(out, f.help, false);
    out += "\n# TYPE ";
    out += f.name;
    switch (f.type) {
      case prometheus::MetricType::Counter:
        out += " counter\n";
        break;
      case prometheus::MetricType::Gauge:
        out += " gauge\n";
        break;
      case prometheus::MetricType::Histogram:
        out += " histogram\n";
        break;
      case prometheus::MetricType::Summary:
        out += " summary\n";
        break;
      case prometheus::MetricType::Untyped:
        out += " untyped\n";
        break;
    }
    for (const auto& m : f.metric) {
      switch (f.type) {
        case prometheus::MetricType::Counter:
          AppendSample(out, f.name, "", m.label, "", "", m.counter.value);
          break;
        case prometheus::MetricType::Gauge:
          AppendSample(out, f.name, "", m.label, "", "", m.gauge.value);
          break;
        case prometheus::MetricType::Untyped:
          AppendSample(out, f.name, "", m.label, "", "", m.untyped.value);
          break;
        case prometheus::MetricType::Summary: {
          for (const auto& q : m.summary.quantile) {
            std::string qs;
            AppendDouble(qs, q.quantile);
            AppendSample(out, f.name, "", m.label, "quantile", qs, q.value);
          }
          AppendSample(out, f.name, "_sum", m.label, "", "", m.summary.sample_sum);
          AppendSample(out, f.name, "_count", m.label, "", "",
                       static_cast<double>(m.summary.sample_count));
          break;
        }
        case prometheus::MetricType::Histogram: {
          for (const auto& b : m.histogram.bucket) {
            std::string le;
            AppendDouble(le, b.upper_bound);
            AppendSample(out, f.name, "_bucket", m.label, "le", le,
                         static_cast<double>(b.cumulative_count));
          }
          AppendSample(out, f.name, "_sum", m.label, "", "", m.histogram.sample_sum);
          AppendSample(out, f.name, "_count", m.label, "", "",
                       static_cast<double>(m.histogram.sample_count));
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace

std::string Metrics::Render() const { return Exposition(f_->registry.Collect()); }

void Metrics::SetBuildInfo(const BuildInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  if (build_info_set_) {
    f_->build_info.Remove(&f_->build_info.Add({{"version", build_info_.version},
                                               {"ch_version", build_info_.ch_version},
                                               {"volume_backend", build_info_.volume_backend}}));
  }
  f_->build_info
      .Add({{"version", info.version},
            {"ch_version", info.ch_version},
            {"volume_backend", info.volume_backend}})
      .Set(1);
  build_info_ = info;
  build_info_set_ = true;
}

namespace {

void SetByPhase(Family<Gauge>& family, std::set<std::string>& seen,
                const std::map<std::string, int64_t>& counts) {
  for (const auto& phase : seen) {
    if (counts.count(phase) == 0) family.Add({{"phase", phase}}).Set(0);
  }
  for (const auto& [phase, n] : counts) {
    family.Add({{"phase", phase}}).Set(static_cast<double>(n));
    seen.insert(phase);
  }
}

}  // namespace

void Metrics::SetSandboxesByPhase(const std::map<std::string, int64_t>& counts) {
  std::lock_guard<std::mutex> lock(mu_);
  SetByPhase(f_->sandboxes, sandboxes_phases_, counts);
}

void Metrics::SetSnapshotsByPhase(const std::map<std::string, int64_t>& counts) {
  std::lock_guard<std::mutex> lock(mu_);
  SetByPhase(f_->snapshots, snapshots_phases_, counts);
}

void Metrics::SetStoreObjects(const std::string& resource, int64_t count) {
  f_->store_objects.Add({{"resource", resource}}).Set(static_cast<double>(count));
}

void Metrics::SetSandboxPhase(const std::string& ns, const std::string& name,
                              const std::string& phase) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = sandbox_phase_.try_emplace(Key{ns, name}, phase);
  if (!inserted) {
    if (it->second == phase) return;
    f_->sandbox_phase.Remove(
        &f_->sandbox_phase.Add({{"namespace", ns}, {"sandbox", name}, {"phase", it->second}}));
    it->second = phase;
  }
  f_->sandbox_phase.Add({{"namespace", ns}, {"sandbox", name}, {"phase", phase}}).Set(1);
}

void Metrics::RemoveSandbox(const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sandbox_phase_.find(Key{ns, name});
  if (it != sandbox_phase_.end()) {
    f_->sandbox_phase.Remove(
        &f_->sandbox_phase.Add({{"namespace", ns}, {"sandbox", name}, {"phase", it->second}}));
    sandbox_phase_.erase(it);
  }
  const Labels key{{"namespace", ns}, {"sandbox", name}};
  if (f_->sandbox_vmm_exits.Has(key)) f_->sandbox_vmm_exits.Remove(&f_->sandbox_vmm_exits.Add(key));
}

void Metrics::ObserveReconcile(std::string_view kind, ReconcileResult result,
                               std::chrono::nanoseconds duration) {
  f_->reconcile_total
      .Add({{"kind", std::string(kind)}, {"result", std::string(ReconcileResultName(result))}})
      .Increment();
  f_->reconcile_duration.Add({{"kind", std::string(kind)}}, ReconcileBuckets())
      .Observe(Seconds(duration));
}

void Metrics::WorkQueueAdded(std::string_view queue) {
  f_->wq_adds.Add({{"queue", std::string(queue)}}).Increment();
}

void Metrics::WorkQueueRetried(std::string_view queue) {
  f_->wq_retries.Add({{"queue", std::string(queue)}}).Increment();
}

void Metrics::SetWorkQueueDepth(std::string_view queue, int64_t depth) {
  f_->wq_depth.Add({{"queue", std::string(queue)}}).Set(static_cast<double>(depth));
}

void Metrics::ObserveWorkQueueWait(std::string_view queue, std::chrono::nanoseconds waited) {
  f_->wq_wait.Add({{"queue", std::string(queue)}}, QueueBuckets()).Observe(Seconds(waited));
}

void Metrics::Instrument(std::string_view queue, controller::WorkQueueOptions* options) {
  const std::string q(queue);
  // Create the series now so a queue that never saw a key still reports 0.
  SetWorkQueueDepth(q, 0);
  f_->wq_adds.Add({{"queue", q}});
  f_->wq_retries.Add({{"queue", q}});
  f_->wq_wait.Add({{"queue", q}}, QueueBuckets());
  options->on_add = [this, q] { WorkQueueAdded(q); };
  options->on_retry = [this, q] { WorkQueueRetried(q); };
  options->on_depth = [this, q](size_t depth) {
    SetWorkQueueDepth(q, static_cast<int64_t>(depth));
  };
  options->on_start = [this, q](Clock::Duration waited) {
    ObserveWorkQueueWait(q, std::chrono::duration_cast<std::chrono::nanoseconds>(waited));
  };
}

void Metrics::ObserveVmOperation(VmOperation op, std::chrono::nanoseconds duration) {
  f_->vm_op.Add({{"operation", std::string(VmOperationName(op))}}, VmBuckets())
      .Observe(Seconds(duration));
}

void Metrics::CountVmmExit(VmmExitReason reason) {
  f_->vmm_exits.Add({{"reason", std::string(VmmExitReasonName(reason))}}).Increment();
}

void Metrics::CountVmmExit(VmmExitReason reason, const std::string& ns, const std::string& name) {
  CountVmmExit(reason);
  std::lock_guard<std::mutex> lock(mu_);
  f_->sandbox_vmm_exits.Add({{"namespace", ns}, {"sandbox", name}}).Increment();
}

void Metrics::ObserveChApiRequest(std::string_view endpoint, int http_status,
                                  std::chrono::nanoseconds latency) {
  const std::string ep(endpoint);
  const std::string code = http_status > 0 ? std::to_string(http_status) : "error";
  f_->ch_requests.Add({{"endpoint", ep}, {"code", code}}).Increment();
  f_->ch_duration.Add({{"endpoint", ep}}, ChApiBuckets()).Observe(Seconds(latency));
}

std::function<void(std::string_view, int, std::chrono::nanoseconds)> Metrics::ChApiObserver() {
  return [this](std::string_view endpoint, int http_status, std::chrono::nanoseconds latency) {
    ObserveChApiRequest(endpoint, http_status, latency);
  };
}

void Metrics::SetSnapshotDiskUsage(const std::string& ns, const std::string& name, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  f_->snapshot_usage.Add({{"namespace", ns}, {"snapshot", name}}).Set(static_cast<double>(bytes));
}

void Metrics::RemoveSnapshotDiskUsage(const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  const Labels key{{"namespace", ns}, {"snapshot", name}};
  if (f_->snapshot_usage.Has(key)) f_->snapshot_usage.Remove(&f_->snapshot_usage.Add(key));
}

void Metrics::SetSnapshotDiskUsageTotal(int64_t bytes) {
  f_->snapshot_usage_total.Add({}).Set(static_cast<double>(bytes));
}

void Metrics::SetSnapshotFilesystemFree(int64_t bytes) {
  f_->snapshot_fs_free.Add({}).Set(static_cast<double>(bytes));
}

}  // namespace sandboxlet::metrics
