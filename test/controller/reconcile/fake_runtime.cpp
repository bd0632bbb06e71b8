#include "test/controller/reconcile/fake_runtime.h"

#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::testing {

using runtime::VmPhase;

FakeSandboxRuntime::FakeSandboxRuntime(Clock* clock) : clock_(clock) {}

FakeSandboxRuntime::InFlight::InFlight(FakeSandboxRuntime* rt, std::string uid,
                                       const std::string& op)
    : rt_(rt), uid_(std::move(uid)) {
  std::function<void(const std::string&, const std::string&)> hook;
  std::chrono::microseconds delay;
  {
    std::lock_guard<std::mutex> lock(rt_->mu_);
    if (!rt_->in_flight_.insert(uid_).second) ++rt_->overlaps_;
    hook = rt_->hook_;
    delay = rt_->op_delay_;
  }
  if (hook) hook(op, uid_);
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

FakeSandboxRuntime::InFlight::~InFlight() {
  std::lock_guard<std::mutex> lock(rt_->mu_);
  rt_->in_flight_.erase(uid_);
}

void FakeSandboxRuntime::AddTemplate(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  templates_.insert(name);
}

void FakeSandboxRuntime::SetMaxVcpus(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  max_vcpus_ = n;
}

void FakeSandboxRuntime::FailNext(const std::string& op, absl::Status status, int times) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < times; ++i) failures_[op].push_back(status);
}

void FakeSandboxRuntime::SetCallHook(
    std::function<void(const std::string& op, const std::string& uid)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

void FakeSandboxRuntime::SetOpDelay(std::chrono::microseconds delay) {
  std::lock_guard<std::mutex> lock(mu_);
  op_delay_ = delay;
}

void FakeSandboxRuntime::SimulateExit(const std::string& uid, int exit_code, int signal,
                                      bool status_known) {
  std::function<void(const std::string&, const runtime::VmExitInfo&)> handler;
  runtime::VmExitInfo exit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Vm& vm = vms_[uid];
    exit.exit_code = signal != 0 || !status_known ? -1 : exit_code;
    exit.signal = signal;
    exit.status_known = status_known;
    exit.reason = !status_known    ? "Unknown"
                  : signal != 0    ? "Killed"
                  : exit_code == 0 ? "Completed"
                                   : "Crashed";
    exit.finished_at = clock_->WallNow();
    vm.phase = VmPhase::kExited;
    vm.pid = 0;
    vm.last_exit = exit;
    handler = exit_handler_;
  }
  if (handler) handler(uid, exit);
}

std::vector<std::string> FakeSandboxRuntime::Calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

int FakeSandboxRuntime::CallCount(const std::string& op) const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const std::string& c : calls_) {
    if (StartsWith(c, Cat(op, " "))) ++n;
  }
  return n;
}

void FakeSandboxRuntime::ClearCalls() {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.clear();
}

bool FakeSandboxRuntime::HasSnapshot(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshots_.count(id) > 0;
}

runtime::SandboxRuntimeSpec FakeSandboxRuntime::LastSpec(const std::string& uid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(uid);
  return it == vms_.end() ? runtime::SandboxRuntimeSpec{} : it->second.spec;
}

absl::Status FakeSandboxRuntime::EnterLocked(const std::string& op, const std::string& detail) {
  calls_.push_back(Cat(op, " ", detail));
  auto it = failures_.find(op);
  if (it == failures_.end() || it->second.empty()) return absl::OkStatus();
  absl::Status st = it->second.front();
  it->second.pop_front();
  return st;
}

void FakeSandboxRuntime::BootLocked(Vm& vm, const runtime::SandboxRuntimeSpec& spec) {
  vm.phase = VmPhase::kRunning;
  vm.spec = spec;
  vm.pid = ++next_pid_;
  vm.started_at = clock_->WallNow();
  vm.last_exit.reset();
}

runtime::SnapshotInfo FakeSandboxRuntime::TakeSnapshotLocked(const Vm& vm, const std::string& id) {
  runtime::SnapshotInfo info;
  info.id = id;
  // Sparse memory file: a quarter of guest memory is touched, plus the state files.
  info.size_bytes = static_cast<int64_t>(vm.spec.memory_mib) * 1024 * 256 + 8192;
  info.template_name = vm.spec.template_name;
  info.vcpus = vm.spec.vcpus;
  info.memory_mib = vm.spec.memory_mib;
  return info;
}

runtime::VmObservation FakeSandboxRuntime::Observe(const std::string& uid) {
  std::lock_guard<std::mutex> lock(mu_);
  runtime::VmObservation obs;
  auto it = vms_.find(uid);
  if (it == vms_.end()) return obs;
  const Vm& vm = it->second;
  obs.phase = vm.phase;
  if (vm.phase == VmPhase::kRunning || vm.phase == VmPhase::kPaused) {
    obs.pid = vm.pid;
    obs.ch_version = "v48.0.0";
    obs.api_socket = Cat("/run/sandboxlet/vms/", uid, "/api.sock");
    obs.vmm_log = Cat("/run/sandboxlet/vms/", uid, "/vmm.log");
    obs.serial_log = Cat("/run/sandboxlet/vms/", uid, "/serial.log");
    if (vm.spec.network) obs.ip = Cat("10.200.0.", vm.pid % 250 + 2);
  }
  obs.started_at = vm.started_at;
  if (vm.phase == VmPhase::kExited) obs.last_exit = vm.last_exit;
  return obs;
}

absl::Status FakeSandboxRuntime::Start(const runtime::SandboxRuntimeSpec& spec) {
  InFlight in_flight(this, spec.uid, "Start");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Start", spec.uid));
  Vm& vm = vms_[spec.uid];
  if (vm.phase == VmPhase::kRunning || vm.phase == VmPhase::kPaused) {
    return absl::AlreadyExistsError(Cat("sandbox ", spec.key, ": a VMM is already running"));
  }
  if (!templates_.count(spec.template_name)) {
    if (vm.phase == VmPhase::kAbsent) vms_.erase(spec.uid);
    return absl::NotFoundError(
        Cat("sandbox ", spec.key, ": template \"", spec.template_name, "\" not found on the node"));
  }
  if (spec.vcpus > max_vcpus_) {
    if (vm.phase == VmPhase::kAbsent) vms_.erase(spec.uid);
    return absl::InvalidArgumentError(
        Cat("sandbox ", spec.key, ": vcpus ", spec.vcpus, " exceeds the node's ", max_vcpus_));
  }
  BootLocked(vm, spec);
  return absl::OkStatus();
}

absl::Status FakeSandboxRuntime::RestoreFrom(const runtime::SandboxRuntimeSpec& spec,
                                             const std::string& snapshot_id) {
  InFlight in_flight(this, spec.uid, "RestoreFrom");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("RestoreFrom", Cat(spec.uid, " ", snapshot_id)));
  auto existing = vms_.find(spec.uid);
  if (existing != vms_.end() && existing->second.phase != VmPhase::kAbsent) {
    return absl::FailedPreconditionError(
        Cat("sandbox ", spec.key, ": restore needs an absent sandbox"));
  }
  auto snap = snapshots_.find(snapshot_id);
  if (snap == snapshots_.end()) {
    return absl::NotFoundError(Cat("snapshot ", snapshot_id, " not found"));
  }
  if (spec.template_name != snap->second.template_name) {
    return absl::FailedPreconditionError(Cat("sandbox ", spec.key, ": template ",
                                             spec.template_name, " is not the snapshot's ",
                                             snap->second.template_name));
  }
  runtime::SandboxRuntimeSpec restored = spec;
  restored.vcpus = snap->second.vcpus;
  restored.memory_mib = snap->second.memory_mib;
  BootLocked(vms_[spec.uid], restored);
  return absl::OkStatus();
}

absl::Status FakeSandboxRuntime::Pause(const std::string& uid) {
  InFlight in_flight(this, uid, "Pause");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Pause", uid));
  auto it = vms_.find(uid);
  if (it == vms_.end() || it->second.phase != VmPhase::kRunning) {
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": pause needs a running VM"));
  }
  it->second.phase = VmPhase::kPaused;
  return absl::OkStatus();
}

absl::Status FakeSandboxRuntime::Resume(const std::string& uid) {
  InFlight in_flight(this, uid, "Resume");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Resume", uid));
  auto it = vms_.find(uid);
  if (it == vms_.end() || it->second.phase != VmPhase::kPaused) {
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": resume needs a paused VM"));
  }
  it->second.phase = VmPhase::kRunning;
  return absl::OkStatus();
}

absl::StatusOr<runtime::SnapshotInfo> FakeSandboxRuntime::Snapshot(const std::string& uid,
                                                                   const std::string& snapshot_id) {
  InFlight in_flight(this, uid, "Snapshot");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Snapshot", Cat(uid, " ", snapshot_id)));
  auto it = vms_.find(uid);
  if (it == vms_.end() ||
      (it->second.phase != VmPhase::kRunning && it->second.phase != VmPhase::kPaused)) {
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": snapshot needs a live VM"));
  }
  runtime::SnapshotInfo info = TakeSnapshotLocked(it->second, snapshot_id);
  snapshots_[snapshot_id] = info;
  return info;
}

absl::StatusOr<runtime::SnapshotInfo> FakeSandboxRuntime::Hibernate(
    const std::string& uid, const std::string& snapshot_id) {
  InFlight in_flight(this, uid, "Hibernate");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Hibernate", Cat(uid, " ", snapshot_id)));
  auto it = vms_.find(uid);
  if (it == vms_.end() ||
      (it->second.phase != VmPhase::kRunning && it->second.phase != VmPhase::kPaused)) {
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": hibernate needs a live VM"));
  }
  runtime::SnapshotInfo info = TakeSnapshotLocked(it->second, snapshot_id);
  snapshots_[snapshot_id] = info;
  vms_.erase(it);
  return info;
}

absl::Status FakeSandboxRuntime::Stop(const std::string& uid) {
  InFlight in_flight(this, uid, "Stop");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Stop", uid));
  auto it = vms_.find(uid);
  if (it == vms_.end() || it->second.phase == VmPhase::kAbsent) {
    return absl::FailedPreconditionError(Cat("sandbox ", uid, ": nothing to stop"));
  }
  it->second.phase = VmPhase::kStopped;
  it->second.pid = 0;
  it->second.last_exit.reset();
  return absl::OkStatus();
}

absl::Status FakeSandboxRuntime::Destroy(const std::string& uid) {
  InFlight in_flight(this, uid, "Destroy");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("Destroy", uid));
  vms_.erase(uid);
  return absl::OkStatus();
}

absl::Status FakeSandboxRuntime::DeleteSnapshot(const std::string& snapshot_id) {
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(EnterLocked("DeleteSnapshot", snapshot_id));
  if (snapshots_.erase(snapshot_id) == 0) {
    return absl::NotFoundError(Cat("snapshot ", snapshot_id, " not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<runtime::SnapshotInfo> FakeSandboxRuntime::GetSnapshot(
    const std::string& snapshot_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = snapshots_.find(snapshot_id);
  if (it == snapshots_.end()) return absl::NotFoundError(Cat("snapshot ", snapshot_id));
  return it->second;
}

absl::StatusOr<std::vector<std::string>> FakeSandboxRuntime::ListSnapshots() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, info] : snapshots_) ids.push_back(id);
  return ids;
}

absl::StatusOr<runtime::AdoptionReport> FakeSandboxRuntime::AdoptAndReclaim(
    const std::map<std::string, std::string>& claimed) {
  std::lock_guard<std::mutex> lock(mu_);
  runtime::AdoptionReport report;
  for (auto it = vms_.begin(); it != vms_.end();) {
    if (claimed.count(it->first)) {
      if (it->second.phase == VmPhase::kRunning || it->second.phase == VmPhase::kPaused) {
        report.adopted.push_back(it->first);
      }
      ++it;
    } else {
      ++report.reclaimed["vmm"];
      it = vms_.erase(it);
    }
  }
  return report;
}

void FakeSandboxRuntime::SetExitHandler(
    std::function<void(const std::string& uid, const runtime::VmExitInfo& exit)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  exit_handler_ = std::move(handler);
}

void FakeSandboxRuntime::SetGuestAgentSettings(const runtime::GuestAgentOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  guest_settings_ = options;
}

void FakeSandboxRuntime::SetGuestAnswers(bool answers) {
  std::lock_guard<std::mutex> lock(mu_);
  guest_answers_ = answers;
}

void FakeSandboxRuntime::SetGuestAnswers(const std::string& uid, bool answers) {
  std::lock_guard<std::mutex> lock(mu_);
  guest_answers_by_uid_[uid] = answers;
}

void FakeSandboxRuntime::SetGuestVersion(const std::string& version) {
  std::lock_guard<std::mutex> lock(mu_);
  guest_version_ = version;
}

int FakeSandboxRuntime::GuestHealthCalls(const std::string& uid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = guest_health_calls_.find(uid);
  return it == guest_health_calls_.end() ? 0 : it->second;
}

std::vector<guest::InitRequest> FakeSandboxRuntime::GuestInits(const std::string& uid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = guest_inits_.find(uid);
  return it == guest_inits_.end() ? std::vector<guest::InitRequest>{} : it->second;
}

const runtime::GuestAgentOptions& FakeSandboxRuntime::GuestAgentSettings() const {
  return guest_settings_;
}

absl::Status FakeSandboxRuntime::InjectedLocked(const std::string& op) {
  auto it = failures_.find(op);
  if (it == failures_.end() || it->second.empty()) return absl::OkStatus();
  absl::Status st = it->second.front();
  it->second.pop_front();
  return st;
}

absl::Status FakeSandboxRuntime::GuestReachableLocked(const std::string& uid,
                                                      const std::string& request) {
  auto it = vms_.find(uid);
  if (it == vms_.end()) {
    return absl::FailedPreconditionError(Cat("guest agent of sandbox ", uid, ": no such sandbox"));
  }
  const Vm& vm = it->second;
  const std::string what = Cat("guest agent of ", vm.spec.key);
  if (!guest_settings_.enabled) {
    return absl::FailedPreconditionError(Cat(what, ": the guest agent is disabled on this node"));
  }
  if (!vm.spec.network) {
    return absl::FailedPreconditionError(Cat(what, ": the sandbox has no network to reach it by"));
  }
  if (vm.phase != VmPhase::kRunning) {
    return absl::FailedPreconditionError(Cat(
        what, ": the VM is ", vm.phase == VmPhase::kPaused ? "Paused" : "not up", ", not Running"));
  }
  auto answers = guest_answers_by_uid_.find(uid);
  if (!(answers == guest_answers_by_uid_.end() ? guest_answers_ : answers->second)) {
    return absl::UnavailableError(Cat(what, " at 10.200.0.", vm.pid % 250 + 2, ":",
                                      guest_settings_.port, ": ", request,
                                      ": connect: Connection refused"));
  }
  return absl::OkStatus();
}

absl::StatusOr<guest::AgentHealth> FakeSandboxRuntime::GuestHealth(const std::string& uid) {
  InFlight in_flight(this, uid, "GuestHealth");
  std::lock_guard<std::mutex> lock(mu_);
  ++guest_health_calls_[uid];
  SBL_RETURN_IF_ERROR(InjectedLocked("GuestHealth"));
  SBL_RETURN_IF_ERROR(GuestReachableLocked(uid, "GET /health"));
  return guest::AgentHealth{guest_version_};
}

absl::Status FakeSandboxRuntime::GuestInit(const std::string& uid,
                                           const guest::InitRequest& request) {
  InFlight in_flight(this, uid, "GuestInit");
  std::lock_guard<std::mutex> lock(mu_);
  SBL_RETURN_IF_ERROR(InjectedLocked("GuestInit"));
  SBL_RETURN_IF_ERROR(GuestReachableLocked(uid, "POST /init"));
  guest_inits_[uid].push_back(request);
  return absl::OkStatus();
}

}  // namespace sandboxlet::testing
