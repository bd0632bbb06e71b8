// SandboxReconciler: drives one Sandbox object toward its spec, one step per call. It reads the
// desired state from the store and the actual state from the runtime (Observe), takes at most one
// runtime action (start, restore, pause, resume, hibernate, stop, restart after an exit, destroy
// on deletion), writes status, and returns when to look again. Level-triggered: every decision
// is recomputed from the store and the runtime, so a missed event or a restart of sandboxlet
// changes nothing but timing.
//
// State machine (status.phase):
//   Pending ─► Creating ─► Running ⇄ Paused
//   Running/Paused ─► Hibernating ─► Hibernated ─► (Creating) ─► Running
//   Running/Paused ─► Stopped ─► Running (same disk)
//   VMM exit ─► restart per restartPolicy (crash-loop back-off 1s, 2s, … 5 min; reset after
//               10 min of running) │ Stopped (clean exit) │ Failed (abnormal exit, Never)
//   deletionTimestamp ─► Terminating ─► runtime.Destroy ─► finalizer removed (object gone)
// Creating is written before the (synchronous) runtime.Start/RestoreFrom so that watchers see
// it. A hibernated sandbox is one whose runtime state is Absent while the snapshot
// "hibernate-<uid>" exists; the Hibernated condition records it and stays True until that
// snapshot is deleted after the wake-up restore.
//
// Spec changes a live VM cannot take (template, vcpus, memoryMiB, diskMiB, network) do not
// restart it: the SpecApplied condition turns False (reason RestartRequired) naming them, and
// they take effect at the next cold start (power Stopped then Running, or a restart after an
// exit). What the running VM was booted with is remembered in memory; after a sandboxlet restart
// the spec at the first observation is assumed to be what runs.
//
// Guest agent (options.guest set and its settings enabled): a Running VM is Ready only once its
// guest agent has answered `GET /health` (GuestReady=True, reason AgentReady, status.guest
// .agentVersion) and has taken `POST /init` with the sandbox's identity, template, spec.env and
// the wall clock (GuestInitialized=True). Each pass makes at most one bounded GuestHealth and one
// GuestInit attempt and asks to be requeued after poll_interval; a pass that comes sooner (say,
// woken by its own status write) does not probe again. Past ready_timeout since the VM started
// (or was resumed, or was first seen by this process) GuestReady turns False with reason
// AgentTimeout and the client's last error, and polling slows to guest_slow_poll_interval: the
// guest may still come up. Init happens once per VM start: GuestInitialized is reset whenever the
// VM is observed not up (stopped, exited, absent — which every start, restart, restore and
// wake-up passes through), so a restored VM is initialised again with its new identity, while a
// sandboxlet restart or a pause/resume re-initialises nothing. While Paused, GuestReady is False
// with reason VMPaused. A sandbox without a network cannot reach its agent: GuestReady=Unknown
// (reason NoNetwork) and Ready does not wait for it.
// Without a guest agent (options.guest null or disabled) Ready means VMM up and VM Running, and
// no guest conditions are written (stale ones are removed).
//
// ttlSeconds counts from metadata.creationTimestamp; when it passes the object is deleted (and
// then goes through the finalizer). Until then the result asks for a requeue at the expiry.
//
// Errors never escape as exceptions: every failure ends in status.message naming the operation
// and cause, phase Failed for errors that will not go away by themselves (InvalidArgument,
// NotFound, FailedPrecondition, ...) or Pending for transient ones, and a non-OK result so the
// controller retries with exponential backoff (no hot loop).
//
// Thread-safety: Reconcile may be called from many threads for different keys; calls for one key
// must be serialized (the workqueue does). Runtime calls for a uid happen under SandboxLocks.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "api/validation.h"
#include "controller/reconcile/events.h"
#include "controller/reconcile/result.h"
#include "controller/reconcile/sandbox_locks.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"
#include "runtime/node/guest_agent_access.h"
#include "runtime/node/sandbox_runtime.h"
#include "sandboxlet/v1alpha1/sandbox.pb.h"

namespace sandboxlet::controller {

inline constexpr char kSandboxesResource[] = "sandboxes";
inline constexpr char kSnapshotsResource[] = "sandboxsnapshots";
inline constexpr char kCleanupFinalizer[] = "sandboxlet.dev/cleanup";

// Condition types written on Sandbox status.
inline constexpr char kConditionReady[] = "Ready";
inline constexpr char kConditionVmmRunning[] = "VMMRunning";
inline constexpr char kConditionHibernated[] = "Hibernated";
inline constexpr char kConditionRestored[] = "Restored";
inline constexpr char kConditionSpecApplied[] = "SpecApplied";
inline constexpr char kConditionGuestReady[] = "GuestReady";
inline constexpr char kConditionGuestInitialized[] = "GuestInitialized";

// The runtime snapshot id a sandbox hibernates into.
std::string HibernationSnapshotId(const std::string& uid);

struct SandboxReconcilerOptions {
  Clock* clock = nullptr;  // RealClock::Get() when null
  api::ValidationLimits limits;
  // Crash-loop back-off: the first restart after an exit waits `restart_backoff_initial`, each
  // further one twice as long up to `restart_backoff_max`; a VM that ran for
  // `restart_backoff_reset` before exiting starts over at the initial delay.
  Clock::Duration restart_backoff_initial = std::chrono::seconds(1);
  Clock::Duration restart_backoff_max = std::chrono::minutes(5);
  Clock::Duration restart_backoff_reset = std::chrono::minutes(10);
  // The node's guest agents; null (or settings with enabled=false): Ready needs no guest agent.
  // Timeouts and the poll interval come from guest->GuestAgentSettings().
  runtime::GuestAgentAccess* guest = nullptr;
  // How often a guest that has not answered within ready_timeout is asked again.
  Clock::Duration guest_slow_poll_interval = std::chrono::seconds(10);
};

class SandboxReconciler {
 public:
  SandboxReconciler(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
                    EventRecorder& events, SandboxLocks& locks,
                    SandboxReconcilerOptions options = {});
  SandboxReconciler(const SandboxReconciler&) = delete;
  SandboxReconciler& operator=(const SandboxReconciler&) = delete;

  // One pass for the Sandbox `ns`/`name`. A missing object is a successful no-op.
  ReconcileResult Reconcile(const std::string& ns, const std::string& name);

 private:
  struct Pass;
  // What a VM was booted with, to tell which spec changes are still to be applied.
  struct BootConfig {
    std::string template_name;
    int vcpus = 0;
    uint64_t memory_mib = 0;
    uint64_t disk_mib = 0;
    bool network = true;
    bool egress = true;
  };
  // Per-uid memory of the controller process (lost on restart, like kubelet's back-off).
  struct VmMemory {
    bool booted = false;
    BootConfig config;
    Clock::TimePoint started;  // on the injected clock
    bool crash_loop = false;   // an exit has been handled since the entry was created
    Clock::Duration delay{};   // the back-off used for the last handled exit
    Clock::TimePoint restart_at;
    std::chrono::system_clock::time_point exit_at;  // finished_at of the last handled exit
    // The last step failed: its retries do not announce Creating/Hibernating first, so a
    // failing retry leaves the stored status unchanged (no watch event, no self-made hot loop).
    bool last_step_failed = false;
    // Guest agent: since when this process has seen the VM Running (unset while it is not), and
    // the earliest time of the next GuestHealth/GuestInit attempt.
    std::optional<Clock::TimePoint> guest_since;
    Clock::TimePoint next_guest_attempt;
  };

  absl::Status Load(Pass& pass);
  absl::Status AddFinalizer(Pass& pass);
  ReconcileResult Finalize(Pass& pass);
  ReconcileResult Step(Pass& pass);
  ReconcileResult Create(Pass& pass);
  // Cold start (from the template or a kept disk): Creating, runtime Start, Started.
  ReconcileResult StartVm(Pass& pass, const runtime::SandboxRuntimeSpec& rs,
                          const std::string& announce, const std::string& event_message);
  ReconcileResult WakeFromHibernation(Pass& pass, const runtime::SnapshotInfo& hib);
  ReconcileResult HandleExit(Pass& pass, const runtime::VmObservation& obs);
  ReconcileResult Hibernate(Pass& pass);
  // Runs a runtime action that moves the VM to another state, then re-observes.
  ReconcileResult Act(Pass& pass, const char* op, const absl::Status& status,
                      const char* event_reason, const std::string& event_message);
  // Writes pass.status (when it differs from the stored one), retrying on conflicts.
  absl::Status WriteStatus(Pass& pass);
  // Writes a transitional phase (Creating, Hibernating) before a long synchronous step, unless
  // the previous attempt failed (see VmMemory::last_step_failed).
  absl::Status Announce(Pass& pass, v1alpha1::SandboxStatus::Phase phase, std::string message);
  // Records a failed step in status and returns the result that backs off. `creating`: the
  // step was to bring up a VM, so the phase becomes Failed (permanent cause) or Pending.
  ReconcileResult Fail(Pass& pass, const std::string& op, const absl::Status& status,
                       bool creating);
  // Copies what the runtime observes into pass.status (vmm, network, conditions, phase).
  void ApplyObservation(Pass& pass, const runtime::VmObservation& obs);
  // Whether Ready waits for the guest agent of this VM (agent enabled, sandbox has a network).
  bool AwaitsGuest(const runtime::VmObservation& obs) const;
  // The guest conditions that follow from the observation alone (no agent call).
  void ObserveGuest(Pass& pass, const runtime::VmObservation& obs);
  // For a Running VM: one GuestHealth attempt until it answers, then one GuestInit attempt until
  // it succeeds; sets GuestReady, GuestInitialized and Ready. Returns when to look again.
  std::optional<Clock::Duration> ProbeGuest(Pass& pass, const runtime::VmObservation& obs);
  // Ready for a Running VM from the guest conditions in pass.status.
  void SetRunningReady(Pass& pass, const runtime::VmObservation& obs);
  bool GuestInitialized(const Pass& pass) const;
  absl::StatusOr<runtime::SandboxRuntimeSpec> RuntimeSpec(Pass& pass);
  void NoteBoot(const std::string& uid, const BootConfig& config);
  void NoteSpecDrift(Pass& pass);
  VmMemory& Memory(const std::string& uid);  // requires mu_

  store::ObjectStore& store_;
  runtime::SandboxRuntime& runtime_;
  EventRecorder& events_;
  SandboxLocks& locks_;
  const SandboxReconcilerOptions options_;
  Clock& clock_;
  runtime::GuestAgentAccess* const guest_;  // null: no guest agent

  std::mutex mu_;
  std::map<std::string, VmMemory> memory_;  // guarded by mu_; by uid
};

}  // namespace sandboxlet::controller
