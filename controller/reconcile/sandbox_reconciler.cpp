#include "controller/reconcile/sandbox_reconciler.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include <google/protobuf/util/message_differencer.h>

#include "api/codec.h"
#include "controller/reconcile/conditions.h"
#include "controller/reconcile/object_writes.h"
#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using google::protobuf::util::MessageDifferencer;
using nlohmann::json;
using runtime::VmPhase;
using v1alpha1::SandboxSpec;
using v1alpha1::SandboxStatus;

// Errors a retry will not fix by itself: the spec, the node's templates or a snapshot must
// change first. The controller still retries them with backoff (a template may be installed).
bool IsPermanent(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
      return true;
    default:
      return false;
  }
}

std::string DescribeExit(const runtime::VmExitInfo& exit) {
  std::string what;
  if (exit.signal != 0) {
    what = Cat("signal ", exit.signal);
  } else if (exit.status_known) {
    what = Cat("exit code ", exit.exit_code);
  } else {
    what = "exit status unknown";
  }
  if (!exit.reason.empty()) what = Cat(what, ", ", exit.reason);
  return what;
}

const char* PolicyName(SandboxSpec::RestartPolicy policy) {
  switch (policy) {
    case SandboxSpec::OnFailure:
      return "OnFailure";
    case SandboxSpec::Never:
      return "Never";
    default:
      return "Always";
  }
}

std::string Seconds(Clock::Duration d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms % 1000 == 0) return Cat(ms / 1000, "s");
  return Cat(ms / 1000, ".", (ms % 1000) / 100, "s");
}

// Whether the runtime state is the one `power` asks for.
bool Reached(SandboxSpec::Power power, VmPhase phase) {
  switch (power) {
    case SandboxSpec::Paused:
      return phase == VmPhase::kPaused;
    case SandboxSpec::Hibernated:
      return phase == VmPhase::kAbsent;
    case SandboxSpec::Stopped:
      return phase == VmPhase::kStopped || phase == VmPhase::kAbsent;
    default:
      return phase == VmPhase::kRunning;
  }
}

}  // namespace

std::string HibernationSnapshotId(const std::string& uid) { return Cat("hibernate-", uid); }

struct SandboxReconciler::Pass {
  std::string ns, name, key;
  json object;                // as last read from or written to the store
  v1alpha1::Sandbox sandbox;  // decoded and defaulted; its status is the stored one
  SandboxStatus status;       // the status being built
  std::string uid;
  int64_t generation = 0;
  std::chrono::system_clock::time_point now;
  std::optional<Clock::Duration> ttl_requeue;
  bool new_exit = false;  // ApplyObservation recorded an exit not in the stored status
};

SandboxReconciler::SandboxReconciler(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
                                     EventRecorder& events, SandboxLocks& locks,
                                     SandboxReconcilerOptions options)
    : store_(store),
      runtime_(runtime),
      events_(events),
      locks_(locks),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : *RealClock::Get()),
      guest_(options_.guest) {}

absl::Status SandboxReconciler::Load(Pass& pass) {
  SBL_ASSIGN_OR_RETURN(pass.object, store_.Get(kSandboxesResource, pass.ns, pass.name));
  // Stored objects may carry fields the API does not model (ownerReferences, ...): ignore them.
  absl::StatusOr<v1alpha1::Sandbox> decoded = api::DecodeAs<v1alpha1::Sandbox>(
      pass.object, api::DecodeOptions{api::FieldValidation::kIgnore});
  if (!decoded.ok()) return decoded.status();
  pass.sandbox = std::move(*decoded);
  api::SetDefaults(pass.sandbox);
  pass.status = pass.sandbox.status();
  pass.uid = pass.sandbox.metadata().uid();
  pass.generation = pass.sandbox.metadata().generation();
  return absl::OkStatus();
}

ReconcileResult SandboxReconciler::Reconcile(const std::string& ns, const std::string& name) {
  Pass pass;
  pass.ns = ns;
  pass.name = name;
  pass.key = Cat(ns, "/", name);
  pass.now = clock_.WallNow();
  absl::Status loaded = Load(pass);
  if (loaded.code() == absl::StatusCode::kNotFound) return {};
  if (!loaded.ok()) {
    if (loaded.code() != absl::StatusCode::kInvalidArgument || !pass.object.is_object()) {
      return {std::nullopt, Annotate(loaded, Cat("sandbox ", pass.key, ": read"))};
    }
    // Not decodable as a Sandbox: say so in status; only a change of the object can help.
    json request = pass.object;
    request["status"] = {{"phase", "Failed"},
                         {"message", Cat("cannot decode the object: ", loaded.message())}};
    (void)store_.UpdateStatus(kSandboxesResource, request);
    log::Warn("sandbox not decodable", {{"sandbox", pass.key}, {"error", loaded.message()}});
    return {};
  }
  if (pass.uid.empty()) {
    return {std::nullopt, absl::InternalError(Cat("sandbox ", pass.key, ": no metadata.uid"))};
  }
  if (pass.sandbox.metadata().has_deletion_timestamp()) return Finalize(pass);
  if (absl::Status st = AddFinalizer(pass); !st.ok()) {
    if (st.code() == absl::StatusCode::kNotFound) return {};
    return {std::nullopt, Annotate(st, Cat("sandbox ", pass.key, ": add finalizer"))};
  }
  if (pass.sandbox.metadata().has_deletion_timestamp()) return Finalize(pass);

  std::vector<api::FieldError> invalid = api::Validate(pass.sandbox, options_.limits);
  if (!invalid.empty()) {
    std::string message = api::InvalidMessage(api::Kind::kSandbox, name, invalid);
    pass.status.set_phase(SandboxStatus::Failed);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "InvalidSpec", message,
                 pass.now, pass.generation);
    absl::Status st = WriteStatus(pass);
    // Only a change of the spec can help, and that change enqueues the key again.
    return {std::nullopt, st};
  }

  const SandboxSpec& spec = pass.sandbox.spec();
  if (spec.ttl_seconds() > 0) {
    auto expiry = FromTimestamp(pass.sandbox.metadata().creation_timestamp()) +
                  std::chrono::seconds(spec.ttl_seconds());
    if (pass.now >= expiry) {
      events_.Normal(pass.object, "Expired",
                     Cat("ttlSeconds ", spec.ttl_seconds(), " passed; deleting the sandbox"));
      auto deleted = store_.Delete(kSandboxesResource, ns, name, {.uid = pass.uid});
      if (!deleted.ok() && deleted.status().code() != absl::StatusCode::kNotFound) {
        return {std::nullopt,
                Annotate(deleted.status(), Cat("sandbox ", pass.key, ": ttl delete"))};
      }
      log::Info("sandbox ttl expired; deleted", {{"sandbox", pass.key}});
      return {Clock::Duration::zero(), absl::OkStatus()};  // finalize at once
    }
    pass.ttl_requeue = std::chrono::duration_cast<Clock::Duration>(expiry - pass.now);
  }

  std::unique_ptr<SandboxLocks::Guard> guard = locks_.Lock(pass.uid);
  ReconcileResult result = Step(pass);
  result.requeue_after = EarlierRequeue(result.requeue_after, pass.ttl_requeue);
  return result;
}

absl::Status SandboxReconciler::AddFinalizer(Pass& pass) {
  if (HasFinalizer(pass.object, kCleanupFinalizer)) return absl::OkStatus();
  absl::StatusOr<json> updated =
      EnsureFinalizer(store_, kSandboxesResource, pass.object, kCleanupFinalizer);
  if (!updated.ok()) return updated.status();
  if ((*updated)["metadata"].value("resourceVersion", "") !=
      pass.object["metadata"].value("resourceVersion", "")) {
    // Re-read through Load so that spec, generation and deletion state are current.
    return Load(pass);
  }
  return absl::OkStatus();
}

ReconcileResult SandboxReconciler::Finalize(Pass& pass) {
  if (!HasFinalizer(pass.object, kCleanupFinalizer)) return {};
  std::unique_ptr<SandboxLocks::Guard> guard = locks_.Lock(pass.uid);
  pass.status.set_phase(SandboxStatus::Terminating);
  pass.status.set_message("deleting: destroying the VM, its network and its volume");
  SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "Terminating",
               "the sandbox is being deleted", pass.now, pass.generation);
  if (absl::Status st = WriteStatus(pass); !st.ok()) {
    if (st.code() == absl::StatusCode::kNotFound) return {};
    return {std::nullopt, st};
  }
  if (runtime_.Observe(pass.uid).phase != VmPhase::kAbsent) {
    events_.Normal(pass.object, "Killing",
                   "Destroying the VM and releasing its network and volume");
  }
  if (absl::Status st = runtime_.Destroy(pass.uid); !st.ok())
    return Fail(pass, "destroy", st, false);
  const std::string hib = HibernationSnapshotId(pass.uid);
  if (absl::Status st = runtime_.DeleteSnapshot(hib);
      !st.ok() && st.code() != absl::StatusCode::kNotFound) {
    return Fail(pass, Cat("delete hibernation snapshot ", hib), st, false);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    memory_.erase(pass.uid);
  }
  if (absl::Status st = RemoveFinalizer(store_, kSandboxesResource, pass.object, kCleanupFinalizer);
      !st.ok()) {
    return {std::nullopt, Annotate(st, Cat("sandbox ", pass.key))};
  }
  log::Info("sandbox deleted", {{"sandbox", pass.key}, {"uid", pass.uid}});
  return {};
}

ReconcileResult SandboxReconciler::Step(Pass& pass) {
  const SandboxSpec::Power power = pass.sandbox.spec().power();
  const runtime::VmObservation obs = runtime_.Observe(pass.uid);
  ApplyObservation(pass, obs);
  auto done = [&](std::optional<Clock::Duration> requeue = std::nullopt) -> ReconcileResult {
    return {requeue, WriteStatus(pass)};
  };

  switch (obs.phase) {
    case VmPhase::kAbsent: {
      const std::string hib_id = HibernationSnapshotId(pass.uid);
      absl::StatusOr<runtime::SnapshotInfo> hib = runtime_.GetSnapshot(hib_id);
      if (hib.ok()) {
        if (power != SandboxSpec::Hibernated) return WakeFromHibernation(pass, *hib);
        std::string message = Cat("hibernated to snapshot ", hib_id, " (", hib->size_bytes,
                                  " bytes); set spec.power Running to resume");
        pass.status.set_phase(SandboxStatus::Hibernated);
        pass.status.set_message(message);
        SetCondition(pass.status.mutable_conditions(), kConditionHibernated, true, "Hibernated",
                     Cat("hibernated to snapshot ", hib_id), pass.now, pass.generation);
        return done();
      }
      if (hib.status().code() != absl::StatusCode::kNotFound) {
        return Fail(pass, "read hibernation snapshot", hib.status(), false);
      }
      if (IsConditionTrue(pass.status.conditions(), kConditionHibernated)) {
        SetCondition(pass.status.mutable_conditions(), kConditionHibernated, false,
                     "SnapshotMissing", Cat("hibernation snapshot ", hib_id, " no longer exists"),
                     pass.now, pass.generation);
      }
      if (power == SandboxSpec::Stopped || power == SandboxSpec::Hibernated) {
        pass.status.set_phase(SandboxStatus::Stopped);
        pass.status.set_message(power == SandboxSpec::Stopped
                                    ? "not started: spec.power is Stopped"
                                    : "not started: spec.power is Hibernated and there is no "
                                      "hibernation snapshot to resume");
        return done();
      }
      return Create(pass);
    }
    case VmPhase::kRunning:
    case VmPhase::kPaused: {
      if (IsConditionTrue(pass.status.conditions(), kConditionHibernated)) {
        // Woken from hibernation earlier but the snapshot could not be deleted then.
        const std::string hib_id = HibernationSnapshotId(pass.uid);
        absl::Status st = runtime_.DeleteSnapshot(hib_id);
        if (st.ok() || st.code() == absl::StatusCode::kNotFound) {
          SetCondition(pass.status.mutable_conditions(), kConditionHibernated, false, "Resumed",
                       Cat("resumed from hibernation snapshot ", hib_id), pass.now,
                       pass.generation);
        } else {
          log::Warn("cannot delete hibernation snapshot",
                    {{"sandbox", pass.key}, {"snapshot", hib_id}, {"error", st.message()}});
        }
      }
      NoteSpecDrift(pass);
      const bool running = obs.phase == VmPhase::kRunning;
      switch (power) {
        case SandboxSpec::Paused:
          if (!running) return done();
          return Act(pass, "pause", runtime_.Pause(pass.uid), "Paused",
                     "Paused the VM; its memory stays resident");
        case SandboxSpec::Hibernated:
          return Hibernate(pass);
        case SandboxSpec::Stopped:
          return Act(pass, "stop", runtime_.Stop(pass.uid), "Stopped",
                     "Stopped the VMM; the disk is kept");
        default:
          if (running) return done(ProbeGuest(pass, obs));
          return Act(pass, "resume", runtime_.Resume(pass.uid), "Resumed", "Resumed the VM");
      }
    }
    case VmPhase::kStopped: {
      if (power == SandboxSpec::Running || power == SandboxSpec::Paused) {
        absl::StatusOr<runtime::SandboxRuntimeSpec> rs = RuntimeSpec(pass);
        if (!rs.ok()) return Fail(pass, "start", rs.status(), true);
        return StartVm(pass, *rs, "starting the VM from its kept disk",
                       "Started the VMM from the kept disk");
      }
      if (power == SandboxSpec::Hibernated) {
        pass.status.set_message("the VM is stopped; there is no memory to hibernate");
      }
      return done();
    }
    case VmPhase::kExited:
      if (power == SandboxSpec::Stopped || power == SandboxSpec::Hibernated) {
        return Act(pass, "stop", runtime_.Stop(pass.uid), "Stopped",
                   "The VMM had exited; released it and kept the disk");
      }
      return HandleExit(pass, obs);
  }
  return done();
}

ReconcileResult SandboxReconciler::StartVm(Pass& pass, const runtime::SandboxRuntimeSpec& rs,
                                           const std::string& announce,
                                           const std::string& event_message) {
  if (absl::Status st = Announce(pass, SandboxStatus::Creating, announce); !st.ok()) {
    return {std::nullopt, st};
  }
  absl::Status st = runtime_.Start(rs);
  if (!st.ok()) {
    ApplyObservation(pass, runtime_.Observe(pass.uid));
    return Fail(pass, "start", st, true);
  }
  NoteBoot(pass.uid, BootConfig{rs.template_name, rs.vcpus, rs.memory_mib, rs.disk_mib, rs.network,
                                rs.egress});
  return Act(pass, "start", st, "Started", event_message);
}

ReconcileResult SandboxReconciler::Create(Pass& pass) {
  const SandboxSpec& spec = pass.sandbox.spec();
  absl::StatusOr<runtime::SandboxRuntimeSpec> rs = RuntimeSpec(pass);
  if (spec.restore_from().empty()) {
    if (!rs.ok()) return Fail(pass, "start", rs.status(), true);
    return StartVm(pass, *rs, Cat("starting the VM from template ", rs->template_name),
                   Cat("Started the VMM from template ", rs->template_name, " (", rs->vcpus,
                       " vCPUs, ", rs->memory_mib, " MiB)"));
  }

  // Restore from a SandboxSnapshot of the same namespace.
  const std::string snap_key = Cat(pass.ns, "/", spec.restore_from());
  absl::StatusOr<json> snap_json = store_.Get(kSnapshotsResource, pass.ns, spec.restore_from());
  if (!snap_json.ok()) {
    if (snap_json.status().code() != absl::StatusCode::kNotFound) {
      return Fail(pass, Cat("read SandboxSnapshot ", snap_key), snap_json.status(), true);
    }
    // The snapshot may be created later: wait for it, with backoff.
    std::string message = Cat("waiting for SandboxSnapshot ", snap_key, ": not found");
    pass.status.set_phase(SandboxStatus::Pending);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "SnapshotNotFound",
                 message, pass.now, pass.generation);
    absl::Status st = WriteStatus(pass);
    return {std::nullopt,
            st.ok() ? absl::NotFoundError(Cat("sandbox ", pass.key, ": ", message)) : st};
  }
  absl::StatusOr<v1alpha1::SandboxSnapshot> snap = api::DecodeAs<v1alpha1::SandboxSnapshot>(
      *snap_json, api::DecodeOptions{api::FieldValidation::kIgnore});
  if (!snap.ok()) return Fail(pass, Cat("decode SandboxSnapshot ", snap_key), snap.status(), true);
  const auto& sstatus = snap->status();
  if (sstatus.phase() == v1alpha1::SandboxSnapshotStatus::Failed) {
    std::string message =
        Cat("cannot restore: SandboxSnapshot ", snap_key, " failed: ", sstatus.message());
    pass.status.set_phase(SandboxStatus::Failed);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "SnapshotFailed",
                 message, pass.now, pass.generation);
    // A failed snapshot stays failed: only a new spec.restoreFrom helps, which enqueues again.
    return {std::nullopt, WriteStatus(pass)};
  }
  if (sstatus.phase() != v1alpha1::SandboxSnapshotStatus::Ready) {
    std::string phase = sstatus.phase() == v1alpha1::SandboxSnapshotStatus::PhaseUnset
                            ? "Pending"
                            : v1alpha1::SandboxSnapshotStatus::Phase_Name(sstatus.phase());
    std::string message =
        Cat("waiting for SandboxSnapshot ", snap_key, " to become Ready (phase ", phase, ")");
    pass.status.set_phase(SandboxStatus::Pending);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "SnapshotNotReady",
                 message, pass.now, pass.generation);
    absl::Status st = WriteStatus(pass);
    return {std::nullopt,
            st.ok() ? absl::UnavailableError(Cat("sandbox ", pass.key, ": ", message)) : st};
  }
  const v1alpha1::SnapshotSource& source = sstatus.source();
  std::vector<std::string> mismatch;
  if (!spec.template_().empty() && spec.template_() != source.template_()) {
    mismatch.push_back(Cat("spec.template \"", spec.template_(), "\" is not the snapshot's \"",
                           source.template_(), "\""));
  }
  if (spec.has_vcpus() && spec.vcpus() != source.vcpus()) {
    mismatch.push_back(Cat("spec.vcpus ", spec.vcpus(), " is not the snapshot's ", source.vcpus()));
  }
  if (spec.has_memory_mib() && spec.memory_mib() != source.memory_mib()) {
    mismatch.push_back(
        Cat("spec.memoryMiB ", spec.memory_mib(), " is not the snapshot's ", source.memory_mib()));
  }
  if (!mismatch.empty()) {
    return Fail(pass, Cat("restore from SandboxSnapshot ", snap_key),
                absl::InvalidArgumentError(Join(mismatch, "; ")), true);
  }
  if (!rs.ok()) return Fail(pass, "restore", rs.status(), true);
  rs->template_name = source.template_();
  rs->vcpus = source.vcpus();
  rs->memory_mib = static_cast<uint64_t>(source.memory_mib());

  if (absl::Status st =
          Announce(pass, SandboxStatus::Creating, Cat("restoring from SandboxSnapshot ", snap_key));
      !st.ok()) {
    return {std::nullopt, st};
  }
  absl::Status st = runtime_.RestoreFrom(*rs, snap->metadata().uid());
  if (!st.ok()) {
    ApplyObservation(pass, runtime_.Observe(pass.uid));
    return Fail(pass, Cat("restore from SandboxSnapshot ", snap_key), st, true);
  }
  NoteBoot(pass.uid, BootConfig{rs->template_name, rs->vcpus, rs->memory_mib, rs->disk_mib,
                                rs->network, rs->egress});
  SetCondition(pass.status.mutable_conditions(), kConditionRestored, true, "RestoredFromSnapshot",
               Cat("restored from SandboxSnapshot ", snap_key), pass.now, pass.generation);
  return Act(pass, "restore", st, "Restored",
             Cat("Restored the VM from SandboxSnapshot ", snap_key));
}

ReconcileResult SandboxReconciler::WakeFromHibernation(Pass& pass,
                                                       const runtime::SnapshotInfo& hib) {
  absl::StatusOr<runtime::SandboxRuntimeSpec> rs = RuntimeSpec(pass);
  if (!rs.ok()) return Fail(pass, "resume from hibernation", rs.status(), true);
  if (!hib.template_name.empty()) rs->template_name = hib.template_name;
  if (hib.vcpus > 0) rs->vcpus = hib.vcpus;
  if (hib.memory_mib > 0) rs->memory_mib = hib.memory_mib;
  const std::string hib_id = HibernationSnapshotId(pass.uid);
  if (absl::Status st = Announce(pass, SandboxStatus::Creating,
                                 Cat("resuming from hibernation snapshot ", hib_id));
      !st.ok()) {
    return {std::nullopt, st};
  }
  absl::Status st = runtime_.RestoreFrom(*rs, hib_id);
  if (!st.ok()) {
    ApplyObservation(pass, runtime_.Observe(pass.uid));
    return Fail(pass, Cat("restore from hibernation snapshot ", hib_id), st, true);
  }
  NoteBoot(pass.uid, BootConfig{rs->template_name, rs->vcpus, rs->memory_mib, rs->disk_mib,
                                rs->network, rs->egress});
  // The hibernation snapshot served its purpose; if deleting it fails the Hibernated condition
  // stays True and a later pass retries.
  absl::Status del = runtime_.DeleteSnapshot(hib_id);
  if (del.ok() || del.code() == absl::StatusCode::kNotFound) {
    SetCondition(pass.status.mutable_conditions(), kConditionHibernated, false, "Resumed",
                 Cat("resumed from hibernation snapshot ", hib_id), pass.now, pass.generation);
  } else {
    log::Warn("cannot delete hibernation snapshot",
              {{"sandbox", pass.key}, {"snapshot", hib_id}, {"error", del.message()}});
  }
  return Act(pass, "resume from hibernation", st, "Restored",
             Cat("Resumed the VM from hibernation snapshot ", hib_id));
}

ReconcileResult SandboxReconciler::Hibernate(Pass& pass) {
  const std::string hib_id = HibernationSnapshotId(pass.uid);
  if (absl::Status st =
          Announce(pass, SandboxStatus::Hibernating, Cat("hibernating to snapshot ", hib_id));
      !st.ok()) {
    return {std::nullopt, st};
  }
  absl::StatusOr<runtime::SnapshotInfo> info = runtime_.Hibernate(pass.uid, hib_id);
  ApplyObservation(pass, runtime_.Observe(pass.uid));
  if (!info.ok()) return Fail(pass, "hibernate", info.status(), false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    VmMemory& m = Memory(pass.uid);
    m.booted = false;
    m.last_step_failed = false;
  }
  std::string message = Cat("hibernated to snapshot ", hib_id, " (", info->size_bytes, " bytes)");
  events_.Normal(pass.object, "Hibernated", Cat("Hibernated the VM to snapshot ", hib_id));
  pass.status.set_phase(SandboxStatus::Hibernated);
  pass.status.set_message(Cat(message, "; set spec.power Running to resume"));
  SetCondition(pass.status.mutable_conditions(), kConditionHibernated, true, "Hibernated",
               Cat("hibernated to snapshot ", hib_id), pass.now, pass.generation);
  SetCondition(pass.status.mutable_conditions(), kConditionVmmRunning, false, "Hibernated", message,
               pass.now, pass.generation);
  SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "Hibernated", message,
               pass.now, pass.generation);
  return {std::nullopt, WriteStatus(pass)};
}

ReconcileResult SandboxReconciler::HandleExit(Pass& pass, const runtime::VmObservation& obs) {
  runtime::VmExitInfo exit = obs.last_exit.value_or(runtime::VmExitInfo{});
  const std::string what = DescribeExit(exit);
  const bool clean = exit.status_known && exit.exit_code == 0 && exit.signal == 0;
  const SandboxSpec::RestartPolicy policy = pass.sandbox.spec().restart_policy();
  if (pass.new_exit) {
    events_.Record(pass.object,
                   clean ? EventRecorder::Type::kNormal : EventRecorder::Type::kWarning,
                   clean ? "Completed" : "Exited", Cat("The VMM exited (", what, ")"));
  }
  if (policy == SandboxSpec::Never || (policy == SandboxSpec::OnFailure && clean)) {
    pass.status.set_phase(clean ? SandboxStatus::Stopped : SandboxStatus::Failed);
    pass.status.set_message(
        Cat("the VMM exited (", what, "); restartPolicy ", PolicyName(policy), ": not restarted"));
    return {std::nullopt, WriteStatus(pass)};
  }

  const Clock::TimePoint now = clock_.Now();
  Clock::TimePoint restart_at;
  Clock::Duration delay;
  bool new_backoff = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VmMemory& m = Memory(pass.uid);
    if (!m.crash_loop || m.exit_at != exit.finished_at) {
      // How long the VM ran before this exit decides whether the back-off starts over.
      Clock::Duration ran = Clock::Duration::max();
      if (m.booted) {
        ran = now - m.started;
      } else if (obs.started_at.time_since_epoch().count() > 0 &&
                 exit.finished_at > obs.started_at) {
        ran = std::chrono::duration_cast<Clock::Duration>(exit.finished_at - obs.started_at);
      }
      Clock::Duration next = options_.restart_backoff_initial;
      if (m.crash_loop && ran < options_.restart_backoff_reset) {
        next = std::min(m.delay * 2, options_.restart_backoff_max);
      }
      m.crash_loop = true;
      m.delay = next;
      m.restart_at = now + next;
      m.exit_at = exit.finished_at;
      new_backoff = true;
    }
    restart_at = m.restart_at;
    delay = m.delay;
  }
  if (now < restart_at) {
    if (new_backoff) {
      events_.Warning(pass.object, "BackOff", "Back-off restarting the exited VMM");
    }
    std::string message = Cat("the VMM exited (", what, "); restarting in ", Seconds(delay),
                              " (crash-loop back-off)");
    pass.status.set_phase(SandboxStatus::Pending);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, "CrashLoopBackOff",
                 message, pass.now, pass.generation);
    absl::Status st = WriteStatus(pass);
    return {restart_at - now, st};
  }

  absl::StatusOr<runtime::SandboxRuntimeSpec> rs = RuntimeSpec(pass);
  if (!rs.ok()) return Fail(pass, "restart", rs.status(), true);
  if (absl::Status st = Announce(pass, SandboxStatus::Creating,
                                 Cat("restarting the VMM after it exited (", what, ")"));
      !st.ok()) {
    return {std::nullopt, st};
  }
  absl::Status st = runtime_.Start(*rs);
  if (!st.ok()) {
    ApplyObservation(pass, runtime_.Observe(pass.uid));
    return Fail(pass, "restart", st, true);
  }
  NoteBoot(pass.uid, BootConfig{rs->template_name, rs->vcpus, rs->memory_mib, rs->disk_mib,
                                rs->network, rs->egress});
  pass.status.set_restart_count(pass.status.restart_count() + 1);
  return Act(
      pass, "restart", st, "Started",
      Cat("Restarted the VMM after it exited (", what, "); restart ", pass.status.restart_count()));
}

ReconcileResult SandboxReconciler::Act(Pass& pass, const char* op, const absl::Status& status,
                                       const char* event_reason, const std::string& event_message) {
  const runtime::VmObservation obs = runtime_.Observe(pass.uid);
  ApplyObservation(pass, obs);
  if (!status.ok()) return Fail(pass, op, status, false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Memory(pass.uid).last_step_failed = false;
  }
  events_.Normal(pass.object, event_reason, event_message);
  log::Info(event_message, {{"sandbox", pass.key}, {"op", op}});
  if (obs.phase == VmPhase::kRunning || obs.phase == VmPhase::kPaused) NoteSpecDrift(pass);
  // Another step is due (e.g. started, and the spec wants it Paused): come back at once.
  std::optional<Clock::Duration> requeue;
  if (!Reached(pass.sandbox.spec().power(), obs.phase)) {
    requeue = Clock::Duration::zero();
  } else if (obs.phase == VmPhase::kRunning) {
    // Just started, restored or resumed: a restored guest may answer at once.
    requeue = ProbeGuest(pass, obs);
  }
  absl::Status st = WriteStatus(pass);
  return {requeue, st};
}

ReconcileResult SandboxReconciler::Fail(Pass& pass, const std::string& op,
                                        const absl::Status& status, bool creating) {
  const std::string cause =
      Cat(op, " failed: ", absl::StatusCodeToString(status.code()), ": ", status.message());
  if (creating) {
    pass.status.set_phase(IsPermanent(status.code()) ? SandboxStatus::Failed
                                                     : SandboxStatus::Pending);
    std::string reason = IsPermanent(status.code()) ? "StartFailed" : "StartRetrying";
    SetCondition(pass.status.mutable_conditions(), kConditionReady, false, reason, cause, pass.now,
                 pass.generation);
  }
  pass.status.set_message(cause);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Memory(pass.uid).last_step_failed = true;
  }
  events_.Warning(pass.object, "Failed", cause);
  log::Warn("sandbox step failed", {{"sandbox", pass.key}, {"error", cause}});
  absl::Status st = WriteStatus(pass);
  if (!st.ok()) {
    log::Warn("cannot write sandbox status", {{"sandbox", pass.key}, {"error", st.message()}});
  }
  return {std::nullopt, absl::Status(status.code(), Cat("sandbox ", pass.key, ": ", cause))};
}

void SandboxReconciler::ApplyObservation(Pass& pass, const runtime::VmObservation& obs) {
  SandboxStatus& s = pass.status;
  Conditions* conditions = s.mutable_conditions();
  const bool up = obs.phase == VmPhase::kRunning || obs.phase == VmPhase::kPaused;
  if (up) {
    v1alpha1::VmmStatus& vmm = *s.mutable_vmm();
    vmm.set_pid(obs.pid);
    vmm.set_version(obs.ch_version);
    vmm.set_api_socket(obs.api_socket);
    vmm.set_log_path(obs.vmm_log);
    vmm.set_serial_path(obs.serial_log);
    if (obs.ip.empty()) {
      s.clear_network();
    } else {
      s.mutable_network()->set_ip(obs.ip);
    }
    if (obs.started_at.time_since_epoch().count() > 0) {
      *s.mutable_started_at() = ToTimestamp(obs.started_at);
    }
  } else {
    s.clear_vmm();
    s.clear_network();
  }
  if (obs.last_exit) {
    v1alpha1::ExitStatus e;
    e.set_exit_code(obs.last_exit->exit_code);
    e.set_signal(obs.last_exit->signal);
    e.set_reason(obs.last_exit->reason);
    *e.mutable_finished_at() = ToTimestamp(obs.last_exit->finished_at);
    if (!MessageDifferencer::Equals(e, s.last_exit())) {
      *s.mutable_last_exit() = e;
      pass.new_exit = true;
    }
  }

  ObserveGuest(pass, obs);
  const auto now = pass.now;
  const int64_t gen = pass.generation;
  switch (obs.phase) {
    case VmPhase::kRunning:
    case VmPhase::kPaused: {
      const bool running = obs.phase == VmPhase::kRunning;
      s.set_phase(running ? SandboxStatus::Running : SandboxStatus::Paused);
      s.set_message(running ? "the VM is running" : "the VM is paused; its memory is kept");
      SetCondition(conditions, kConditionVmmRunning, true, "Running",
                   Cat("cloud-hypervisor ", obs.ch_version, " pid ", obs.pid), now, gen);
      if (running) {
        SetRunningReady(pass, obs);
      } else {
        SetCondition(conditions, kConditionReady, false, "Paused", "the VM is paused", now, gen);
      }
      break;
    }
    case VmPhase::kStopped:
      s.set_phase(SandboxStatus::Stopped);
      s.set_message("the VM is stopped; its disk is kept");
      SetCondition(conditions, kConditionVmmRunning, false, "Stopped", "the VMM was stopped", now,
                   gen);
      SetCondition(conditions, kConditionReady, false, "Stopped", "the VM is stopped", now, gen);
      break;
    case VmPhase::kExited: {
      std::string message =
          Cat("the VMM exited (", DescribeExit(obs.last_exit.value_or(runtime::VmExitInfo{})), ")");
      SetCondition(conditions, kConditionVmmRunning, false, "Exited", message, now, gen);
      SetCondition(conditions, kConditionReady, false, "Exited", message, now, gen);
      break;
    }
    case VmPhase::kAbsent:
      if (s.phase() == SandboxStatus::PhaseUnset) s.set_phase(SandboxStatus::Pending);
      SetCondition(conditions, kConditionVmmRunning, false, "NoVMM", "no VMM runs for the sandbox",
                   now, gen);
      if (const auto* ready = FindCondition(*conditions, kConditionReady);
          ready == nullptr || ready->status() == v1alpha1::Condition::True) {
        SetCondition(conditions, kConditionReady, false, "NoVMM", "no VMM runs for the sandbox",
                     now, gen);
      }
      break;
  }
}

bool SandboxReconciler::AwaitsGuest(const runtime::VmObservation& obs) const {
  return guest_ != nullptr && guest_->GuestAgentSettings().enabled && !obs.ip.empty();
}

bool SandboxReconciler::GuestInitialized(const Pass& pass) const {
  return IsConditionTrue(pass.status.conditions(), kConditionGuestInitialized);
}

void SandboxReconciler::ObserveGuest(Pass& pass, const runtime::VmObservation& obs) {
  SandboxStatus& s = pass.status;
  Conditions* conditions = s.mutable_conditions();
  if (guest_ == nullptr || !guest_->GuestAgentSettings().enabled) {
    RemoveCondition(conditions, kConditionGuestReady);
    RemoveCondition(conditions, kConditionGuestInitialized);
    s.clear_guest();
    return;
  }
  const bool running = obs.phase == VmPhase::kRunning;
  if (!running) {
    // A guest that is not running cannot answer; the wait for it starts over when it runs.
    std::lock_guard<std::mutex> lock(mu_);
    VmMemory& m = Memory(pass.uid);
    m.guest_since.reset();
    m.next_guest_attempt = Clock::TimePoint{};
  }
  if (obs.phase != VmPhase::kPaused && !running) {
    SetCondition(conditions, kConditionGuestReady, false, "VMNotRunning",
                 "no VM runs for the sandbox", pass.now, pass.generation);
    // The next VM start (boot, restart, restore, wake-up) must initialise its guest again.
    if (FindCondition(*conditions, kConditionGuestInitialized) != nullptr) {
      SetCondition(conditions, kConditionGuestInitialized, false, "VMNotRunning",
                   "the next VM start initialises the guest agent", pass.now, pass.generation);
    }
    s.clear_guest();
    return;
  }
  if (obs.ip.empty()) {
    SetConditionStatus(conditions, kConditionGuestReady, v1alpha1::Condition::Unknown, "NoNetwork",
                       "the sandbox has no network to reach its guest agent by; Ready does not "
                       "wait for it",
                       pass.now, pass.generation);
    return;
  }
  if (!running) {
    SetCondition(conditions, kConditionGuestReady, false, "VMPaused",
                 "the VM is paused; its guest agent cannot answer until it resumes", pass.now,
                 pass.generation);
  }
  // Running: ProbeGuest decides.
}

void SandboxReconciler::SetRunningReady(Pass& pass, const runtime::VmObservation& obs) {
  Conditions* conditions = pass.status.mutable_conditions();
  if (!AwaitsGuest(obs)) {
    SetCondition(conditions, kConditionReady, true, "Running", "the VM is running", pass.now,
                 pass.generation);
    return;
  }
  std::string reason = "Running";
  std::string message = "the VM is running and its guest agent is initialized";
  const v1alpha1::Condition* ready = FindCondition(*conditions, kConditionGuestReady);
  const v1alpha1::Condition* init = FindCondition(*conditions, kConditionGuestInitialized);
  if (ready == nullptr || ready->status() != v1alpha1::Condition::True) {
    reason = "GuestNotReady";
    message = ready == nullptr || ready->reason() == "VMPaused"
                  ? "the VM is running; waiting for its guest agent"
                  : Cat("the VM is running; its guest agent is not ready: ", ready->message());
  } else if (init == nullptr || init->status() != v1alpha1::Condition::True) {
    reason = "GuestNotInitialized";
    message = init == nullptr || init->reason() != "InitFailed"
                  ? "the VM is running; its guest agent is not initialized yet"
                  : Cat("the VM is running; its guest agent is not initialized: ", init->message());
  }
  SetCondition(conditions, kConditionReady, reason == "Running", reason, message, pass.now,
               pass.generation);
  pass.status.set_message(message);
}

std::optional<Clock::Duration> SandboxReconciler::ProbeGuest(Pass& pass,
                                                             const runtime::VmObservation& obs) {
  if (obs.phase != VmPhase::kRunning || !AwaitsGuest(obs)) return std::nullopt;
  Conditions* conditions = pass.status.mutable_conditions();
  const bool answered = IsConditionTrue(*conditions, kConditionGuestReady);
  if (answered && GuestInitialized(pass)) {
    SetRunningReady(pass, obs);
    return std::nullopt;
  }
  const runtime::GuestAgentOptions& settings = guest_->GuestAgentSettings();
  const Clock::TimePoint now = clock_.Now();
  Clock::TimePoint since;
  Clock::TimePoint next_attempt;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VmMemory& m = Memory(pass.uid);
    if (!m.guest_since) m.guest_since = now;
    since = *m.guest_since;
    next_attempt = m.next_guest_attempt;
  }
  if (now < next_attempt) {
    // Woken early (by our own status write, a watch event, a resync): one attempt per interval.
    SetRunningReady(pass, obs);
    return next_attempt - now;
  }
  const Clock::Duration ready_timeout = settings.ready_timeout;
  const bool late = now - since >= ready_timeout;
  // Until the deadline every poll_interval (and once right at it); after it, slower.
  const Clock::Duration retry =
      late ? std::max<Clock::Duration>(options_.guest_slow_poll_interval, settings.poll_interval)
           : std::min<Clock::Duration>(settings.poll_interval, since + ready_timeout - now);
  auto retry_later = [&]() -> std::optional<Clock::Duration> {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Memory(pass.uid).next_guest_attempt = now + retry;
    }
    SetRunningReady(pass, obs);
    return retry;
  };

  if (!answered) {
    absl::StatusOr<guest::AgentHealth> health = guest_->GuestHealth(pass.uid);
    if (!health.ok()) {
      if (late) {
        const v1alpha1::Condition* prev = FindCondition(*conditions, kConditionGuestReady);
        const bool first = prev == nullptr || prev->reason() != "AgentTimeout";
        std::string message = Cat("the guest agent did not answer within ", Seconds(ready_timeout),
                                  ": ", health.status().message());
        SetCondition(conditions, kConditionGuestReady, false, "AgentTimeout", message, pass.now,
                     pass.generation);
        if (first) {
          events_.Warning(pass.object, "GuestTimeout", message);
          log::Warn("guest agent did not answer in time; still polling",
                    {{"sandbox", pass.key}, {"error", health.status().message()}});
        }
      } else {
        SetCondition(conditions, kConditionGuestReady, false, "WaitingForAgent",
                     Cat("waiting for the guest agent: ", health.status().message()), pass.now,
                     pass.generation);
      }
      return retry_later();
    }
    const std::string& version = health->version;
    std::string message = version.empty() ? "the guest agent answered"
                                          : Cat("the guest agent ", version, " answered");
    SetCondition(conditions, kConditionGuestReady, true, "AgentReady", message, pass.now,
                 pass.generation);
    if (version.empty()) {
      pass.status.clear_guest();
    } else {
      pass.status.mutable_guest()->set_agent_version(version);
    }
    events_.Normal(pass.object, "GuestReady",
                   version.empty() ? "The guest agent answered"
                                   : Cat("The guest agent ", version, " answered"));
  }

  if (!GuestInitialized(pass)) {
    const v1alpha1::SandboxSpec& spec = pass.sandbox.spec();
    guest::InitRequest request;
    request.sandbox_id = pass.uid;
    request.sandbox_namespace = pass.ns;
    request.name = pass.name;
    request.template_name = spec.template_();
    {
      // What the VM was booted with (a restored sandbox's spec may leave the template out).
      std::lock_guard<std::mutex> lock(mu_);
      const VmMemory& m = Memory(pass.uid);
      if (m.booted && !m.config.template_name.empty())
        request.template_name = m.config.template_name;
    }
    for (const v1alpha1::EnvVar& e : spec.env()) request.env.emplace_back(e.name(), e.value());
    request.wall_clock = pass.now;
    if (absl::Status st = guest_->GuestInit(pass.uid, request); !st.ok()) {
      std::string message =
          Cat("POST /init failed: ", absl::StatusCodeToString(st.code()), ": ", st.message());
      SetCondition(conditions, kConditionGuestInitialized, false, "InitFailed", message, pass.now,
                   pass.generation);
      log::Warn("cannot initialize the guest agent", {{"sandbox", pass.key}, {"error", message}});
      return retry_later();
    }
    SetCondition(conditions, kConditionGuestInitialized, true, "Initialized",
                 Cat("initialized as ", pass.key, " (uid ", pass.uid, ")"), pass.now,
                 pass.generation);
    log::Info("guest agent initialized", {{"sandbox", pass.key}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Memory(pass.uid).next_guest_attempt = Clock::TimePoint{};
  }
  SetRunningReady(pass, obs);
  return std::nullopt;
}

absl::StatusOr<runtime::SandboxRuntimeSpec> SandboxReconciler::RuntimeSpec(Pass& pass) {
  const SandboxSpec& spec = pass.sandbox.spec();
  runtime::SandboxRuntimeSpec rs;
  rs.uid = pass.uid;
  rs.key = pass.key;
  rs.template_name = spec.template_();
  rs.vcpus = spec.has_vcpus() ? spec.vcpus() : 0;
  rs.memory_mib = spec.has_memory_mib() ? static_cast<uint64_t>(spec.memory_mib()) : 0;
  rs.disk_mib = static_cast<uint64_t>(spec.disk_mib());
  rs.network = spec.network().enabled();
  rs.egress = spec.network().enabled() && spec.network().egress();
  for (const v1alpha1::EnvVar& e : spec.env()) rs.env.emplace_back(e.name(), e.value());
  if (rs.template_name.empty() || rs.vcpus == 0 || rs.memory_mib == 0) {
    // A restored sandbox takes what the spec leaves out from what it was booted with, or from
    // its snapshot.
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = memory_.find(pass.uid);
      if (it != memory_.end() && it->second.booted) {
        const BootConfig& c = it->second.config;
        if (rs.template_name.empty()) rs.template_name = c.template_name;
        if (rs.vcpus == 0) rs.vcpus = c.vcpus;
        if (rs.memory_mib == 0) rs.memory_mib = c.memory_mib;
      }
    }
    if ((rs.template_name.empty() || rs.vcpus == 0 || rs.memory_mib == 0) &&
        !spec.restore_from().empty()) {
      absl::StatusOr<json> snap = store_.Get(kSnapshotsResource, pass.ns, spec.restore_from());
      if (snap.ok()) {
        absl::StatusOr<v1alpha1::SandboxSnapshot> decoded =
            api::DecodeAs<v1alpha1::SandboxSnapshot>(
                *snap, api::DecodeOptions{api::FieldValidation::kIgnore});
        if (decoded.ok()) {
          const auto& src = decoded->status().source();
          if (rs.template_name.empty()) rs.template_name = src.template_();
          if (rs.vcpus == 0) rs.vcpus = src.vcpus();
          if (rs.memory_mib == 0) rs.memory_mib = static_cast<uint64_t>(src.memory_mib());
        }
      }
    }
  }
  if (rs.template_name.empty()) {
    return absl::FailedPreconditionError(
        Cat("spec.template is empty and the template of SandboxSnapshot ", pass.ns, "/",
            spec.restore_from(), " is unknown"));
  }
  if (rs.vcpus == 0) rs.vcpus = 1;
  if (rs.memory_mib == 0) rs.memory_mib = 512;
  return rs;
}

void SandboxReconciler::NoteBoot(const std::string& uid, const BootConfig& config) {
  std::lock_guard<std::mutex> lock(mu_);
  VmMemory& m = Memory(uid);
  m.booted = true;
  m.config = config;
  m.started = clock_.Now();
}

void SandboxReconciler::NoteSpecDrift(Pass& pass) {
  const SandboxSpec& spec = pass.sandbox.spec();
  BootConfig running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VmMemory& m = Memory(pass.uid);
    if (!m.booted) {
      // Adopted after a sandboxlet restart: assume the VM runs the current spec.
      m.booted = true;
      m.started = clock_.Now();
      m.config = BootConfig{spec.template_(),
                            spec.has_vcpus() ? spec.vcpus() : 0,
                            spec.has_memory_mib() ? static_cast<uint64_t>(spec.memory_mib()) : 0,
                            static_cast<uint64_t>(spec.disk_mib()),
                            spec.network().enabled(),
                            spec.network().enabled() && spec.network().egress()};
    }
    running = m.config;
  }
  std::vector<std::string> drift;
  if (!spec.template_().empty() && !running.template_name.empty() &&
      spec.template_() != running.template_name) {
    drift.push_back(Cat("spec.template (", running.template_name, " → ", spec.template_(), ")"));
  }
  if (spec.has_vcpus() && running.vcpus != 0 && spec.vcpus() != running.vcpus) {
    drift.push_back(Cat("spec.vcpus (", running.vcpus, " → ", spec.vcpus(), ")"));
  }
  if (spec.has_memory_mib() && running.memory_mib != 0 &&
      static_cast<uint64_t>(spec.memory_mib()) != running.memory_mib) {
    drift.push_back(Cat("spec.memoryMiB (", running.memory_mib, " → ", spec.memory_mib(), ")"));
  }
  if (static_cast<uint64_t>(spec.disk_mib()) != running.disk_mib) {
    drift.push_back(Cat("spec.diskMiB (", running.disk_mib, " → ", spec.disk_mib(), ")"));
  }
  bool egress = spec.network().enabled() && spec.network().egress();
  if (spec.network().enabled() != running.network || egress != running.egress) {
    drift.push_back("spec.network");
  }
  if (drift.empty()) {
    if (FindCondition(pass.status.conditions(), kConditionSpecApplied) != nullptr) {
      SetCondition(pass.status.mutable_conditions(), kConditionSpecApplied, true, "Applied",
                   "the running VM matches the spec", pass.now, pass.generation);
    }
    return;
  }
  std::string message = Cat(Join(drift, ", "),
                            ": cannot change on a live VM; takes effect at the next start (set "
                            "spec.power Stopped, then Running)");
  SetCondition(pass.status.mutable_conditions(), kConditionSpecApplied, false, "RestartRequired",
               message, pass.now, pass.generation);
  pass.status.set_message(message);
}

SandboxReconciler::VmMemory& SandboxReconciler::Memory(const std::string& uid) {
  return memory_[uid];
}

absl::Status SandboxReconciler::Announce(Pass& pass, SandboxStatus::Phase phase,
                                         std::string message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (Memory(pass.uid).last_step_failed) return absl::OkStatus();
  }
  pass.status.set_phase(phase);
  SetCondition(pass.status.mutable_conditions(), kConditionReady, false,
               SandboxStatus::Phase_Name(phase), message, pass.now, pass.generation);
  pass.status.set_message(std::move(message));
  return WriteStatus(pass);
}

absl::Status SandboxReconciler::WriteStatus(Pass& pass) {
  return WriteStatusIfChanged(store_, kSandboxesResource, Cat("sandbox ", pass.key),
                              pass.generation, pass.status, pass.sandbox.mutable_status(),
                              pass.object);
}

}  // namespace sandboxlet::controller
