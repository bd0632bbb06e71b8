// FakeSandboxRuntime: an in-memory SandboxRuntime for controller tests. It keeps the interface's
// state machine per uid (Absent/Running/Paused/Stopped/Exited), its snapshots with their source,
// and its error contract (AlreadyExists on a second Start, NotFound for a missing template or
// snapshot, FailedPrecondition for an operation in the wrong state, InvalidArgument for vcpus
// beyond the node), records every call, injects failures per operation, simulates VMM exits
// (calling the exit handler like the crash watcher would) and counts overlapping operations on
// one uid, which the controller must never cause.
// It is also the node's guest agents (GuestAgentAccess): disabled unless SetGuestAgentSettings
// enables them; then each Running sandbox with a network has an agent that answers GuestHealth
// (or, per uid or for all, never answers, as a guest that does not boot) and records the
// GuestInit requests it is sent.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/clock.h"
#include "runtime/guest/agent_client.h"
#include "runtime/node/guest_agent_access.h"
#include "runtime/node/sandbox_runtime.h"

namespace sandboxlet::testing {

class FakeSandboxRuntime : public runtime::SandboxRuntime, public runtime::GuestAgentAccess {
 public:
  explicit FakeSandboxRuntime(Clock* clock);

  // --- test controls ---
  void AddTemplate(const std::string& name);
  void SetMaxVcpus(int n);
  // The next `times` calls of `op` ("Start", "RestoreFrom", "Pause", "Resume", "Snapshot",
  // "Hibernate", "Stop", "Destroy", "DeleteSnapshot") fail with `status` (the state is unchanged,
  // as the runtime unwinds failed operations).
  void FailNext(const std::string& op, absl::Status status, int times = 1);
  // Makes the VMM of `uid` exit on its own and reports it through the exit handler.
  void SimulateExit(const std::string& uid, int exit_code, int signal, bool status_known = true);
  // Called at the start of every mutating operation with (op, uid), before its effect.
  void SetCallHook(std::function<void(const std::string& op, const std::string& uid)> hook);
  // Real time each mutating operation takes, to widen windows in concurrency tests.
  void SetOpDelay(std::chrono::microseconds delay);

  // "Start <uid>", "RestoreFrom <uid> <snapshot>", ... in call order.
  std::vector<std::string> Calls() const;
  int CallCount(const std::string& op) const;
  void ClearCalls();
  // Operations that started on a uid while another one was running on it.
  int OverlapViolations() const { return overlaps_.load(); }
  bool HasSnapshot(const std::string& id) const;
  runtime::SandboxRuntimeSpec LastSpec(const std::string& uid) const;

  // --- guest agent controls ---
  void SetGuestAgentSettings(const runtime::GuestAgentOptions& options);
  // Whether agents answer (default true); the per-uid setting wins over the default.
  void SetGuestAnswers(bool answers);
  void SetGuestAnswers(const std::string& uid, bool answers);
  // The version agents report in their health answer (default "0.3.1"; "" for none).
  void SetGuestVersion(const std::string& version);
  // FailNext("GuestHealth" | "GuestInit", ...) injects failures too (not recorded in Calls()).
  int GuestHealthCalls(const std::string& uid) const;
  std::vector<guest::InitRequest> GuestInits(const std::string& uid) const;

  // --- SandboxRuntime ---
  runtime::VmObservation Observe(const std::string& uid) override;
  absl::Status Start(const runtime::SandboxRuntimeSpec& spec) override;
  absl::Status RestoreFrom(const runtime::SandboxRuntimeSpec& spec,
                           const std::string& snapshot_id) override;
  absl::Status Pause(const std::string& uid) override;
  absl::Status Resume(const std::string& uid) override;
  absl::StatusOr<runtime::SnapshotInfo> Snapshot(const std::string& uid,
                                                 const std::string& snapshot_id) override;
  absl::StatusOr<runtime::SnapshotInfo> Hibernate(const std::string& uid,
                                                  const std::string& snapshot_id) override;
  absl::Status Stop(const std::string& uid) override;
  absl::Status Destroy(const std::string& uid) override;
  absl::Status DeleteSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<runtime::SnapshotInfo> GetSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<std::string>> ListSnapshots() override;
  absl::StatusOr<runtime::AdoptionReport> AdoptAndReclaim(
      const std::map<std::string, std::string>& claimed) override;
  void SetExitHandler(std::function<void(const std::string& uid, const runtime::VmExitInfo& exit)>
                          handler) override;

  // --- GuestAgentAccess ---
  const runtime::GuestAgentOptions& GuestAgentSettings() const override;
  absl::StatusOr<guest::AgentHealth> GuestHealth(const std::string& uid) override;
  absl::Status GuestInit(const std::string& uid, const guest::InitRequest& request) override;

 private:
  struct Vm {
    runtime::VmPhase phase = runtime::VmPhase::kAbsent;
    runtime::SandboxRuntimeSpec spec;
    int pid = 0;
    std::chrono::system_clock::time_point started_at;
    std::optional<runtime::VmExitInfo> last_exit;
  };
  // Marks an operation on `uid` in flight for its lifetime; counts overlaps.
  class InFlight {
   public:
    InFlight(FakeSandboxRuntime* rt, std::string uid, const std::string& op);
    ~InFlight();

   private:
    FakeSandboxRuntime* rt_;
    std::string uid_;
  };

  // Records the call and returns the injected failure for `op`, if any. Requires mu_.
  absl::Status EnterLocked(const std::string& op, const std::string& detail);
  void BootLocked(Vm& vm, const runtime::SandboxRuntimeSpec& spec);
  runtime::SnapshotInfo TakeSnapshotLocked(const Vm& vm, const std::string& id);
  // The preconditions of a guest call and whether the agent answers. Requires mu_.
  absl::Status GuestReachableLocked(const std::string& uid, const std::string& request);
  absl::Status InjectedLocked(const std::string& op);

  Clock* const clock_;
  std::atomic<int> overlaps_{0};
  mutable std::mutex mu_;
  std::map<std::string, Vm> vms_;                                     // guarded by mu_
  std::map<std::string, runtime::SnapshotInfo> snapshots_;            // guarded by mu_
  std::set<std::string> templates_;                                   // guarded by mu_
  int max_vcpus_ = 64;                                                // guarded by mu_
  std::map<std::string, std::deque<absl::Status>> failures_;          // guarded by mu_
  std::vector<std::string> calls_;                                    // guarded by mu_
  std::set<std::string> in_flight_;                                   // guarded by mu_
  int next_pid_ = 1000;                                               // guarded by mu_
  std::chrono::microseconds op_delay_{0};                             // guarded by mu_
  std::function<void(const std::string&, const std::string&)> hook_;  // guarded by mu_
  std::function<void(const std::string&, const runtime::VmExitInfo&)> exit_handler_;  // mu_
  // Set before use (tests configure it before reconciling); read without mu_.
  runtime::GuestAgentOptions guest_settings_;
  bool guest_answers_ = true;                                           // guarded by mu_
  std::map<std::string, bool> guest_answers_by_uid_;                    // guarded by mu_
  std::string guest_version_ = "0.3.1";                                 // guarded by mu_
  std::map<std::string, int> guest_health_calls_;                       // guarded by mu_
  std::map<std::string, std::vector<guest::InitRequest>> guest_inits_;  // guarded by mu_
};

}  // namespace sandboxlet::testing
