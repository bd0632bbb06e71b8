#include "controller/reconcile/snapshot_reconciler.h"

#include <optional>
#include <utility>
#include <vector>

#include <google/protobuf/util/message_differencer.h>

#include "api/codec.h"
#include "api/validation.h"
#include "controller/reconcile/conditions.h"
#include "controller/reconcile/object_writes.h"
#include "controller/reconcile/sandbox_reconciler.h"
#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using google::protobuf::util::MessageDifferencer;
using nlohmann::json;
using v1alpha1::SandboxSnapshotStatus;

constexpr api::DecodeOptions kLenient{api::FieldValidation::kIgnore};

}  // namespace

struct SnapshotReconciler::Pass {
  std::string ns, name, key;
  json object;
  v1alpha1::SandboxSnapshot snapshot;  // decoded; its status is the stored one
  SandboxSnapshotStatus status;        // being built
  std::string uid;
  int64_t generation = 0;
  std::chrono::system_clock::time_point now;
};

SnapshotReconciler::SnapshotReconciler(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
                                       EventRecorder& events, SandboxLocks& locks,
                                       SnapshotReconcilerOptions options)
    : store_(store),
      runtime_(runtime),
      events_(events),
      locks_(locks),
      clock_(options.clock != nullptr ? *options.clock : *RealClock::Get()) {}

absl::Status SnapshotReconciler::Load(Pass& pass) {
  SBL_ASSIGN_OR_RETURN(pass.object, store_.Get(kSnapshotsResource, pass.ns, pass.name));
  absl::StatusOr<v1alpha1::SandboxSnapshot> decoded =
      api::DecodeAs<v1alpha1::SandboxSnapshot>(pass.object, kLenient);
  if (!decoded.ok()) return decoded.status();
  pass.snapshot = std::move(*decoded);
  api::SetDefaults(pass.snapshot);
  pass.status = pass.snapshot.status();
  pass.uid = pass.snapshot.metadata().uid();
  pass.generation = pass.snapshot.metadata().generation();
  return absl::OkStatus();
}

absl::Status SnapshotReconciler::WriteStatus(Pass& pass) {
  return WriteStatusIfChanged(store_, kSnapshotsResource, Cat("snapshot ", pass.key),
                              pass.generation, pass.status, pass.snapshot.mutable_status(),
                              pass.object);
}

absl::Status SnapshotReconciler::AddFinalizer(Pass& pass) {
  if (HasFinalizer(pass.object, kCleanupFinalizer)) return absl::OkStatus();
  absl::StatusOr<json> updated =
      EnsureFinalizer(store_, kSnapshotsResource, pass.object, kCleanupFinalizer);
  if (!updated.ok()) return updated.status();
  return Load(pass);
}

absl::StatusOr<std::vector<std::string>> SnapshotReconciler::Users(const Pass& pass) {
  SBL_ASSIGN_OR_RETURN(store::ObjectList sandboxes, store_.List(kSandboxesResource, pass.ns));
  std::vector<std::string> users;
  for (const json& item : sandboxes.items) {
    absl::StatusOr<v1alpha1::Sandbox> sb = api::DecodeAs<v1alpha1::Sandbox>(item, kLenient);
    if (!sb.ok() || sb->spec().restore_from() != pass.name) continue;
    if (sb->metadata().has_deletion_timestamp()) continue;  // it will not restore any more
    if (IsConditionTrue(sb->status().conditions(), kConditionRestored)) continue;
    users.push_back(Cat(pass.ns, "/", sb->metadata().name()));
  }
  return users;
}

ReconcileResult SnapshotReconciler::Reconcile(const std::string& ns, const std::string& name) {
  Pass pass;
  pass.ns = ns;
  pass.name = name;
  pass.key = Cat(ns, "/", name);
  pass.now = clock_.WallNow();
  absl::Status loaded = Load(pass);
  if (loaded.code() == absl::StatusCode::kNotFound) return {};
  if (!loaded.ok()) {
    if (loaded.code() != absl::StatusCode::kInvalidArgument || !pass.object.is_object()) {
      return {std::nullopt, Annotate(loaded, Cat("snapshot ", pass.key, ": read"))};
    }
    (void)WriteStatusOf(
        store_, kSnapshotsResource, pass.object,
        {{"phase", "Failed"}, {"message", Cat("cannot decode the object: ", loaded.message())}});
    return {};
  }
  if (pass.snapshot.metadata().has_deletion_timestamp()) return Finalize(pass);
  if (absl::Status st = AddFinalizer(pass); !st.ok()) {
    if (st.code() == absl::StatusCode::kNotFound) return {};
    return {std::nullopt, Annotate(st, Cat("snapshot ", pass.key))};
  }
  if (pass.snapshot.metadata().has_deletion_timestamp()) return Finalize(pass);

  // One snapshot per object: once Ready or Failed it never changes.
  if (pass.status.phase() == SandboxSnapshotStatus::Ready ||
      pass.status.phase() == SandboxSnapshotStatus::Failed) {
    return {};
  }
  std::vector<api::FieldError> invalid = api::Validate(pass.snapshot);
  if (!invalid.empty()) {
    std::string message = api::InvalidMessage(api::Kind::kSandboxSnapshot, name, invalid);
    pass.status.set_phase(SandboxSnapshotStatus::Failed);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), "Ready", false, "InvalidSpec", message, pass.now,
                 pass.generation);
    return {std::nullopt, WriteStatus(pass)};
  }

  const std::string sandbox_name = pass.snapshot.spec().sandbox_name();
  const std::string sandbox_key = Cat(ns, "/", sandbox_name);
  auto wait = [&](const std::string& message, absl::StatusCode code) -> ReconcileResult {
    pass.status.set_phase(SandboxSnapshotStatus::Pending);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), "Ready", false, "Waiting", message, pass.now,
                 pass.generation);
    absl::Status st = WriteStatus(pass);
    // Retried with backoff; a change of the Sandbox also enqueues this snapshot.
    return {std::nullopt,
            st.ok() ? absl::Status(code, Cat("snapshot ", pass.key, ": ", message)) : st};
  };
  absl::StatusOr<json> sandbox_json = store_.Get(kSandboxesResource, ns, sandbox_name);
  if (!sandbox_json.ok()) {
    if (sandbox_json.status().code() == absl::StatusCode::kNotFound) {
      return wait(Cat("waiting for Sandbox ", sandbox_key, ": not found"),
                  absl::StatusCode::kNotFound);
    }
    return {std::nullopt, Annotate(sandbox_json.status(), Cat("snapshot ", pass.key))};
  }
  if (BeingDeleted(*sandbox_json)) {
    return wait(Cat("Sandbox ", sandbox_key, " is being deleted"),
                absl::StatusCode::kFailedPrecondition);
  }
  const std::string sandbox_uid = (*sandbox_json)["metadata"].value("uid", "");

  std::unique_ptr<SandboxLocks::Guard> guard = locks_.Lock(sandbox_uid);
  const runtime::VmObservation obs = runtime_.Observe(sandbox_uid);
  if (obs.phase != runtime::VmPhase::kRunning && obs.phase != runtime::VmPhase::kPaused) {
    std::string state = (*sandbox_json)["status"].is_object()
                            ? (*sandbox_json)["status"].value("phase", "Pending")
                            : "Pending";
    return wait(Cat("waiting for Sandbox ", sandbox_key,
                    " to run: a snapshot needs a Running or Paused VM (it is ", state, ")"),
                absl::StatusCode::kUnavailable);
  }

  pass.status.set_phase(SandboxSnapshotStatus::InProgress);
  pass.status.set_message(Cat("snapshotting Sandbox ", sandbox_key));
  SetCondition(pass.status.mutable_conditions(), "Ready", false, "InProgress",
               pass.status.message(), pass.now, pass.generation);
  if (absl::Status st = WriteStatus(pass); !st.ok()) return {std::nullopt, st};

  absl::StatusOr<runtime::SnapshotInfo> info = runtime_.Snapshot(sandbox_uid, pass.uid);
  guard.reset();
  pass.now = clock_.WallNow();
  if (!info.ok()) {
    std::string message = Cat("snapshot of Sandbox ", sandbox_key,
                              " failed: ", absl::StatusCodeToString(info.status().code()), ": ",
                              info.status().message());
    pass.status.set_phase(SandboxSnapshotStatus::Failed);
    pass.status.set_message(message);
    SetCondition(pass.status.mutable_conditions(), "Ready", false, "SnapshotFailed", message,
                 pass.now, pass.generation);
    events_.Warning(pass.object, "SnapshotFailed", message);
    log::Warn("snapshot failed", {{"snapshot", pass.key}, {"error", message}});
    // Failed is final for this object (one snapshot per object); create another to retry.
    return {std::nullopt, WriteStatus(pass)};
  }
  pass.status.set_phase(SandboxSnapshotStatus::Ready);
  pass.status.set_size_bytes(info->size_bytes);
  *pass.status.mutable_created_at() = ToTimestamp(pass.now);
  v1alpha1::SnapshotSource& source = *pass.status.mutable_source();
  source.set_template_(info->template_name);
  source.set_vcpus(info->vcpus);
  source.set_memory_mib(static_cast<int64_t>(info->memory_mib));
  pass.status.set_message(
      Cat("snapshot of Sandbox ", sandbox_key, " is ready (", info->size_bytes, " bytes)"));
  SetCondition(pass.status.mutable_conditions(), "Ready", true, "SnapshotReady",
               pass.status.message(), pass.now, pass.generation);
  events_.Normal(
      pass.object, "SnapshotReady",
      Cat("Snapshot of Sandbox ", sandbox_key, " is ready (", info->size_bytes, " bytes)"));
  log::Info("snapshot ready", {{"snapshot", pass.key}, {"bytes", info->size_bytes}});
  return {std::nullopt, WriteStatus(pass)};
}

ReconcileResult SnapshotReconciler::Finalize(Pass& pass) {
  if (!HasFinalizer(pass.object, kCleanupFinalizer)) return {};
  // Only a Ready snapshot can be restored from; otherwise nothing needs protecting.
  absl::StatusOr<std::vector<std::string>> users = std::vector<std::string>{};
  if (pass.status.phase() == SandboxSnapshotStatus::Ready) users = Users(pass);
  if (!users.ok()) return {std::nullopt, Annotate(users.status(), Cat("snapshot ", pass.key))};
  if (!users->empty()) {
    pass.status.set_message(
        Cat("deletion waits: in use by ", Join(*users, ", "), " (restoring from it)"));
    // No error: the controller enqueues this snapshot when one of those Sandboxes changes.
    return {std::nullopt, WriteStatus(pass)};
  }
  absl::Status st = runtime_.DeleteSnapshot(pass.uid);
  if (!st.ok() && st.code() != absl::StatusCode::kNotFound) {
    std::string message =
        Cat("delete failed: ", absl::StatusCodeToString(st.code()), ": ", st.message());
    pass.status.set_message(message);
    (void)WriteStatus(pass);
    return {std::nullopt, absl::Status(st.code(), Cat("snapshot ", pass.key, ": ", message))};
  }
  if (absl::Status rm = RemoveFinalizer(store_, kSnapshotsResource, pass.object, kCleanupFinalizer);
      !rm.ok()) {
    return {std::nullopt, rm};
  }
  log::Info("snapshot deleted", {{"snapshot", pass.key}, {"uid", pass.uid}});
  return {};
}

}  // namespace sandboxlet::controller
