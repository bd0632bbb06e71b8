#include "runtime/vm/snapshot_flow.h"

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/snapshot/dir_size.h"

namespace sandboxlet::vm {

absl::StatusOr<SnapshotResult> TakeSnapshot(Machine& machine, const Volume& volume,
                                            VolumeBackend& volumes, SnapshotStore& store,
                                            const SnapshotRequest& request) {
  const std::string what = Cat("snapshot ", machine.key(), " -> ", request.snapshot_id);
  SBL_ASSIGN_OR_RETURN(ch::VmInfo info, machine.Info());
  const bool was_running = info.state == ch::VmState::kRunning;
  if (!was_running && info.state != ch::VmState::kPaused) {
    return absl::FailedPreconditionError(
        Cat(what, ": VM is ", info.state_text, ", not Running or Paused"));
  }
  // Resumes the VM on every failure path if we paused it: a timed-out or failed snapshot must
  // never leave a frozen VM behind (DESIGN.md, Invariants).
  auto unwind = [&](const absl::Status& st, std::string_view step) {
    absl::Status out = Annotate(st, Cat(what, ": ", step));
    if (was_running) {
      if (absl::Status r = machine.Resume(); !r.ok()) {
        log::Error("resume after failed snapshot failed",
                   {{"sandbox", machine.key()}, {"error", r.message()}});
        out = Annotate(out, Cat("(and resume failed: ", r.message(), ")"));
      }
    }
    return out;
  };
  if (was_running) {
    if (absl::Status st = machine.Pause(); !st.ok()) return Annotate(st, Cat(what, ": pause"));
  }
  auto pending = store.Begin(request.snapshot_id);
  if (!pending.ok()) return unwind(pending.status(), "prepare directory");
  if (absl::Status st = machine.SnapshotTo(pending->dir()); !st.ok()) {
    return unwind(st, "vm.snapshot");
  }
  // Always a copy (reflink where the filesystem can): moving a hibernating sandbox's disk into
  // a snapshot that then fails to commit would lose the disk. The caller removes the volume once
  // the hibernation snapshot is committed.
  if (absl::Status st = volumes.CaptureInto(volume.id, pending->dir(), CaptureMode::kCopy);
      !st.ok()) {
    return unwind(st, "capture rootfs");
  }
  RootfsMeta meta;
  meta.base_template = request.template_name;
  meta.vcpus = request.vcpus;
  meta.memory_mb = static_cast<int>(request.memory_mib);
  meta.base_digest = volume.base_digest;
  if (absl::Status st = pending->WriteMeta(meta); !st.ok()) return unwind(st, "write meta");
  if (absl::Status st = pending->Commit(); !st.ok()) return unwind(st, "commit");
  SBL_ASSIGN_OR_RETURN(std::string final_dir, store.Path(request.snapshot_id));
  if (was_running && !request.hibernate) {
    if (absl::Status st = machine.Resume(); !st.ok()) {
      // The snapshot is good; the VM is not running: report it, the caller decides.
      return Annotate(st, Cat(what, ": snapshot committed, but resume failed"));
    }
  }
  SnapshotResult result;
  result.dir = final_dir;
  SBL_ASSIGN_OR_RETURN(result.size_bytes, DirSize(final_dir));
  log::Info("snapshot committed", {{"sandbox", machine.key()},
                                   {"snapshot", request.snapshot_id},
                                   {"size_bytes", result.size_bytes}});
  return result;
}

absl::StatusOr<RestoredMachine> RestoreSnapshot(const MachineEnv& env, MachineSpec spec,
                                                VolumeBackend& volumes, SnapshotStore& store,
                                                const std::string& snapshot_id,
                                                const std::string& base_image) {
  const std::string what = Cat("restore ", spec.key, " <- ", snapshot_id);
  auto meta = store.ReadMeta(snapshot_id);
  if (!meta.ok()) return Annotate(meta.status(), what);
  SBL_ASSIGN_OR_RETURN(std::string snapshot_dir, store.Path(snapshot_id));
  VolumeSpec vspec;
  vspec.id = spec.id;
  vspec.key = spec.key;
  vspec.base_image = base_image;
  auto volume = volumes.RestoreFrom(vspec, snapshot_dir, meta->base_digest);
  if (!volume.ok()) return Annotate(volume.status(), Cat(what, ": rootfs"));
  spec.disk_path = volume->device_path;

  auto unwind_volume = [&](const absl::Status& st, std::string_view step) {
    if (absl::Status r = volumes.Remove(spec.id); !r.ok()) {
      log::Error("remove volume after failed restore failed",
                 {{"sandbox", spec.key}, {"error", r.message()}});
    }
    return Annotate(st, Cat(what, ": ", step));
  };
  auto vm_dir = Machine::VmDir(env, spec.id);
  if (!vm_dir.ok()) return unwind_volume(vm_dir.status(), "vm directory");
  const std::string staging = Cat(*vm_dir, "/restore");
  // Paths baked into config.json are stable by construction (machine.h), so nothing needs
  // rewriting unless the snapshot came from a node whose stable root differs.
  std::map<std::string, std::string> rewrites;
  if (auto config = ReadFile(Cat(snapshot_dir, "/", kSnapshotConfigFile)); config.ok()) {
    auto j = nlohmann::json::parse(*config, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("disks") && j["disks"].is_array() && !j["disks"].empty() &&
        j["disks"][0].is_object() && j["disks"][0].contains("path") &&
        j["disks"][0]["path"].is_string()) {
      std::string old_disk = j["disks"][0]["path"].get<std::string>();
      if (old_disk != Machine::StableDiskPath(env))
        rewrites[old_disk] = Machine::StableDiskPath(env);
    }
    if (j.is_object() && j.contains("serial") && j["serial"].is_object() &&
        j["serial"].contains("file") && j["serial"]["file"].is_string()) {
      std::string old_serial = j["serial"]["file"].get<std::string>();
      if (old_serial != Machine::StableSerialPath(env)) {
        rewrites[old_serial] = Machine::StableSerialPath(env);
      }
    }
  }
  if (absl::Status st = MakeDirs(*vm_dir, 0700); !st.ok()) return unwind_volume(st, "vm directory");
  auto source_url = store.StageRestore(snapshot_id, staging, rewrites);
  if (!source_url.ok()) {
    (void)RemoveAll(*vm_dir);
    return unwind_volume(source_url.status(), "stage");
  }
  auto machine = Machine::Restore(env, spec, *source_url);
  if (!machine.ok()) {
    (void)RemoveAll(*vm_dir);
    return unwind_volume(machine.status(), "vm.restore");
  }
  // Copy-mode restore has read the memory into the VMM: the staged links are no longer needed.
  (void)RemoveAll(staging);
  return RestoredMachine{std::move(*machine), std::move(*volume)};
}

}  // namespace sandboxlet::vm
