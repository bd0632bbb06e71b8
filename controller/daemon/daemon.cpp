#include "controller/daemon/daemon.h"

#include "controller/daemon/snapshot_usage_feed.h"
#include "controller/grpc/sandbox_service.h"
#include "controller/manifests/manifest_dir.h"
#include "controller/metrics/http_server.h"
#include "controller/metrics/metrics.h"
#include "controller/metrics/readiness.h"
#include "controller/metrics/snapshot_usage.h"
#include "controller/metrics/store_collector.h"
#include "controller/reconcile/controller.h"
#include "controller/rest/api_server.h"
#include "controller/store/object_store.h"
#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/ch/version.h"
#include "runtime/node/node_runtime.h"

namespace sandboxlet::daemon {
namespace {

std::optional<metrics::VmOperation> VmOperationOf(std::string_view op) {
  if (op == "boot") return metrics::VmOperation::kBoot;
  if (op == "restore") return metrics::VmOperation::kRestore;
  if (op == "pause") return metrics::VmOperation::kPause;
  if (op == "resume") return metrics::VmOperation::kResume;
  if (op == "snapshot") return metrics::VmOperation::kSnapshot;
  if (op == "stop") return metrics::VmOperation::kStop;
  return std::nullopt;
}

metrics::VmmExitReason ExitReasonOf(std::string_view reason) {
  if (reason == "shutdown") return metrics::VmmExitReason::kShutdown;
  if (reason == "killed") return metrics::VmmExitReason::kKilled;
  return metrics::VmmExitReason::kCrash;
}

metrics::ReconcileResult ReconcileResultOf(std::string_view result) {
  if (result == "error") return metrics::ReconcileResult::kError;
  if (result == "requeue") return metrics::ReconcileResult::kRequeue;
  return metrics::ReconcileResult::kSuccess;
}

}  // namespace

Daemon::Daemon(DaemonConfig config) : config_(std::move(config)) {}

Daemon::~Daemon() { Stop(); }

void Daemon::RequestStop() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_requested_ = true;
  cv_.notify_all();
}

void Daemon::WaitForStopRequest() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return stop_requested_; });
}

absl::Status Daemon::Start() {
  absl::Status s = StartLocked();
  if (!s.ok()) Stop();
  return s;
}

absl::Status Daemon::StartLocked() {
  const DaemonConfig& c = config_;
  log::Configure(c.log_level, c.log_format);
  log::Info("sandboxlet starting", {{"version", kVersion},
                                    {"node", c.node_name},
                                    {"state_dir", c.state_dir},
                                    {"run_dir", c.run_dir}});

  // 1. The VMM binary: a missing one is the most common first-run problem, so say how to fix it.
  SBL_ASSIGN_OR_RETURN(std::string vmm_bin, CheckVmmBin(c.vmm_bin));
  absl::StatusOr<ch::ChVersion> version = ch::DetectChVersion(vmm_bin);
  if (!version.ok()) {
    return Annotate(version.status(),
                    Cat("--vmm-bin=", c.vmm_bin, " is not a usable Cloud Hypervisor"));
  }
  log::Info("cloud hypervisor detected", {{"vmm_bin", vmm_bin}, {"version", version->ToString()}});

  // 2. One daemon per run dir and per state dir.
  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(c.run_dir, 0755), "run dir"));
  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(c.state_dir, 0755), "state dir"));
  SBL_ASSIGN_OR_RETURN(LockFile run_lock, LockFile::Acquire(c.PidFile(), "run dir " + c.run_dir));
  run_lock_.emplace(std::move(run_lock));
  SBL_ASSIGN_OR_RETURN(LockFile state_lock, LockFile::Acquire(c.state_dir + "/sandboxlet.lock",
                                                              "state dir " + c.state_dir));
  state_lock_.emplace(std::move(state_lock));

  // 3. The store. A damaged one stops the start: resetting it would orphan every running VM.
  absl::StatusOr<std::unique_ptr<store::ObjectStore>> store =
      store::ObjectStore::Open(c.StorePath());
  if (!store.ok()) {
    std::string hint =
        store.status().code() == absl::StatusCode::kDataLoss
            ? Cat("; sandboxlet never resets a damaged store: restore ", c.StorePath(),
                  " from a backup, or move it (with its -wal and -shm files) aside to start empty")
            : "";
    return absl::Status(store.status().code(),
                        Cat("object store ", c.StorePath(), ": ", store.status().message(), hint));
  }
  store_ = *std::move(store);

  // 4. Observability first, so a slow start can be watched.
  metrics_ = std::make_unique<metrics::Metrics>();
  readiness_ = std::make_unique<metrics::Readiness>();
  readiness_->AddCheck("store", [this]() -> absl::Status {
    absl::StatusOr<int64_t> n = store_->Count("sandboxes");
    return n.ok() ? absl::OkStatus() : n.status();
  });
  readiness_->SetFlag("adoption", false, "adopting running VMMs");
  readiness_->SetFlag("controller", false, "not started");
  if (!c.metrics_listen.empty()) {
    metrics::HttpServerOptions hopts;
    hopts.listen = c.metrics_listen;
    SBL_ASSIGN_OR_RETURN(metrics_server_,
                         metrics::HttpServer::Start(metrics_.get(), readiness_.get(), hopts));
    log::Info("metrics serving", {{"listen", c.metrics_listen}, {"port", metrics_server_->port()}});
  }
  store_collector_ = std::make_unique<metrics::StoreCollector>(store_.get(), metrics_.get());

  // 5. The node runtime.
  runtime::NodeRuntimeOptions ropts;
  ropts.state_dir = c.state_dir;
  ropts.run_dir = c.run_dir;
  ropts.version = *version;
  ropts.vmm_bin = vmm_bin;
  ropts.kernel = c.kernel;
  ropts.templates_dir = c.templates_dir;
  ropts.volume_backend = c.volume_backend;
  ropts.network.cidr = c.network_cidr;
  ropts.network.name_prefix = c.network_prefix;
  ropts.vmm_cgroups = c.vmm_cgroups;
  ropts.cgroups.parent = c.vmm_cgroup_parent;
  ropts.guest_agent.enabled = c.guest_agent;
  ropts.guest_agent.port = static_cast<uint16_t>(c.guest_agent_port);
  metrics::Metrics* m = metrics_.get();
  ropts.ch_observer = m->ChApiObserver();
  ropts.op_observer = [m](std::string_view op, bool, std::chrono::nanoseconds d) {
    if (auto vop = VmOperationOf(op)) m->ObserveVmOperation(*vop, d);
  };
  ropts.exit_observer = [m](std::string_view reason) { m->CountVmmExit(ExitReasonOf(reason)); };
  absl::StatusOr<std::unique_ptr<runtime::NodeRuntime>> rt =
      runtime::NodeRuntime::Open(std::move(ropts));
  if (!rt.ok()) return Annotate(rt.status(), "node runtime");
  runtime_ = *std::move(rt);
  metrics_->SetBuildInfo({kVersion, runtime_->version().ToString(), runtime_->volume_backend()});

  metrics::SnapshotUsageOptions uopts;
  uopts.filesystem_path = runtime_->snapshots().base_dir();
  snapshot_usage_ = std::make_unique<metrics::SnapshotUsageTracker>(metrics_.get(), uopts);

  // 6. Local APIs: they only touch the store, so they can answer while adoption runs.
  const api::ValidationLimits limits{.max_vcpus = c.max_vcpus};
  grpc_ = std::make_unique<grpcapi::GrpcServer>(store_.get(), limits);
  SBL_RETURN_IF_ERROR(grpc_->Start(c.grpc_socket));
  if (!c.api_listen.empty()) {
    rest::ApiServerOptions aopts;
    aopts.listen = c.api_listen;
    aopts.token_file = c.api_token_file;
    aopts.tls_cert_file = c.api_tls_cert_file;
    aopts.tls_key_file = c.api_tls_key_file;
    aopts.sandboxlet_version = kVersion;
    aopts.resources.limits = limits;
    absl::StatusOr<std::unique_ptr<rest::ApiServer>> rest = rest::ApiServer::Start(*store_, aopts);
    if (!rest.ok()) return Annotate(rest.status(), Cat("REST API on --api-listen=", c.api_listen));
    rest_ = *std::move(rest);
    log::Info("REST API serving", {{"url", rest_->url()}});
  }

  // 7. Adoption. The controller is constructed first: it installs the runtime's exit handler,
  // so a VMM that dies during adoption still reaches its Sandbox.
  controller::ControllerOptions copts;
  copts.workers = c.workers;
  copts.resync_period = c.resync;
  copts.node_name = c.node_name;
  copts.sandbox.limits = limits;
  // Guest readiness (GuestReady, /init): the reconciler consults the settings and ignores the
  // agent when --guest-agent is off.
  copts.guest = runtime_.get();
  copts.on_reconcile = [m](std::string_view kind, std::string_view result,
                           Clock::Duration duration) {
    m->ObserveReconcile(kind, ReconcileResultOf(result), duration);
  };
  metrics_->Instrument("reconcile", &copts.queue);
  controller_ = std::make_unique<controller::Controller>(*store_, *runtime_, copts);
  SBL_ASSIGN_OR_RETURN(auto claimed, controller_->ClaimedSandboxes());
  absl::StatusOr<runtime::AdoptionReport> report = runtime_->AdoptAndReclaim(claimed);
  if (!report.ok()) return Annotate(report.status(), "adopting running VMMs");
  for (const auto& [uid, why] : report->lost) {
    log::Warn("VMM not adopted", {{"sandbox", claimed[uid]}, {"uid", uid}, {"reason", why}});
  }
  std::string reclaimed;
  for (const auto& [kind, n] : report->reclaimed) {
    if (n > 0) reclaimed += Cat(reclaimed.empty() ? "" : ",", kind, "=", n);
  }
  log::Info("adoption done", {{"claimed", claimed.size()},
                              {"adopted", report->adopted.size()},
                              {"lost", report->lost.size()},
                              {"reclaimed", reclaimed.empty() ? "none" : reclaimed}});
  readiness_->SetFlag("adoption", true);

  // 8. Reconcile, and the manifests directory.
  SBL_RETURN_IF_ERROR(Annotate(controller_->Start(), "controller"));
  readiness_->SetFlag("controller", true);
  usage_feed_ = std::make_unique<SnapshotUsageFeed>(
      store_.get(), snapshot_usage_.get(),
      [rt = runtime_.get()](const std::string& id) { return rt->snapshots().Path(id); });
  usage_feed_->Start();
  if (!c.manifests.empty()) {
    controller::ManifestDirectoryOptions mopts;
    mopts.dir = c.manifests;
    mopts.limits = limits;
    mopts.node_name = c.node_name;
    manifests_ = std::make_unique<controller::ManifestDirectory>(store_.get(), mopts);
    SBL_RETURN_IF_ERROR(manifests_->Start());
  }

  // 9.
  log::Info("sandboxlet ready", {{"grpc_socket", c.grpc_socket},
                                 {"api", rest_ ? rest_->url() : "off"},
                                 {"metrics", c.metrics_listen.empty() ? "off" : c.metrics_listen}});
  return absl::OkStatus();
}

void Daemon::Stop() {
  bool anything = store_ != nullptr || run_lock_.has_value();
  if (!anything) return;
  log::Info("sandboxlet stopping; VMs keep running and are adopted at the next start");
  // Stop taking changes in, then stop acting on them.
  if (manifests_) manifests_->Stop();
  // Calls in flight are store operations of milliseconds; a longer grace would only wait for
  // idle client connections, which gRPC keeps until its deadline.
  if (grpc_) grpc_->Stop(std::chrono::seconds(1));
  if (rest_) rest_->Stop();
  if (controller_) controller_->Stop();
  if (usage_feed_) usage_feed_->Stop();
  manifests_.reset();
  grpc_.reset();
  rest_.reset();
  controller_.reset();
  usage_feed_.reset();
  // The runtime's destructor stops only its exit watcher: VMMs outlive sandboxlet.
  runtime_.reset();
  snapshot_usage_.reset();
  store_collector_.reset();
  metrics_server_.reset();
  readiness_.reset();
  metrics_.reset();
  store_.reset();
  state_lock_.reset();
  run_lock_.reset();
  log::Info("sandboxlet stopped");
}

}  // namespace sandboxlet::daemon
