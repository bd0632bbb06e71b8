#include "runtime/volume/dm_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/volume/clone.h"

namespace sandboxlet {
namespace {

constexpr uint64_t kSector = 512;
constexpr uint64_t kChunkSectors = 8;
constexpr uint64_t kChunkBytes = kChunkSectors * kSector;
constexpr uint64_t kExceptionsPerArea = kChunkBytes / 16;  // struct disk_exception: 2 x le64
constexpr uint64_t kMiB = 1 << 20;

std::string Shown(const VolumeSpec& spec) { return spec.key.empty() ? spec.id : spec.key; }

// Checks what the snapshot target needs of a base image: whole sectors, and the disk cannot be
// larger than the origin (the target maps the origin 1:1).
absl::Status CheckGeometry(const VolumeSpec& spec, const BaseImage& base) {
  if (base.size % kSector != 0) {
    return absl::FailedPreconditionError(
        Cat("base image ", base.path, " size ", base.size, " is not a multiple of 512 bytes"));
  }
  if (spec.min_size_bytes > base.size) {
    return absl::InvalidArgumentError(
        Cat("the devicemapper backend cannot make a disk larger than its base image (", base.size,
            " bytes); requested ", spec.min_size_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t DmVolumeBackend::CowSizeFor(uint64_t origin_bytes) {
  uint64_t chunks = (origin_bytes + kChunkBytes - 1) / kChunkBytes;
  uint64_t areas = (chunks + kExceptionsPerArea - 1) / kExceptionsPerArea;
  uint64_t bytes = (1 + chunks + areas) * kChunkBytes;
  return (bytes + kMiB - 1) / kMiB * kMiB;
}

absl::StatusOr<std::unique_ptr<DmVolumeBackend>> DmVolumeBackend::Make(
    const VolumeOptions& options, std::unique_ptr<DeviceControl> control) {
  if (!control) return absl::InvalidArgumentError("devicemapper volumes: no device control");
  if (options.remove_attempts < 1) {
    return absl::InvalidArgumentError("devicemapper volumes: remove_attempts must be >= 1");
  }
  SBL_ASSIGN_OR_RETURN(VolumeLayout layout, PrepareLayout(options.state_dir));
  return std::unique_ptr<DmVolumeBackend>(
      new DmVolumeBackend(options, std::move(layout), std::move(control)));
}

DmVolumeBackend::DmVolumeBackend(const VolumeOptions& options, VolumeLayout layout,
                                 std::unique_ptr<DeviceControl> control)
    : options_(options),
      layout_(std::move(layout)),
      control_(std::move(control)),
      clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
      digests_(layout_.root + "/digests.json") {}

Volume DmVolumeBackend::Describe(const std::string& id, const BaseImage& base,
                                 const std::string& digest) const {
  return Volume{id, Cat(options_.dev_mapper_dir, "/", DmName(id)), base.path, digest, Name()};
}

absl::StatusOr<nlohmann::json> DmVolumeBackend::LoadBasesLocked() {
  std::string path = layout_.root + "/bases.json";
  auto data = ReadFile(path);
  if (!data.ok()) {
    if (absl::IsNotFound(data.status())) return nlohmann::json::object();
    return data.status();
  }
  auto json = nlohmann::json::parse(*data, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) {
    // Losing reference counts would detach a base under running sandboxes: refuse instead.
    return absl::DataLossError(Cat(path, ": not a JSON object; fix or remove it by hand"));
  }
  for (auto& [base, entry] : json.items()) {
    if (!entry.is_object() || !entry.contains("users") || !entry["users"].is_array()) {
      return absl::DataLossError(Cat(path, ": entry for ", base, " has no users list"));
    }
  }
  return json;
}

absl::Status DmVolumeBackend::SaveBasesLocked(const nlohmann::json& bases) {
  return WriteFileAtomic(layout_.root + "/bases.json", bases.dump(1));
}

absl::StatusOr<DmVolumeBackend::BaseRef> DmVolumeBackend::AcquireBase(const std::string& id,
                                                                      const BaseImage& base,
                                                                      const std::string& digest) {
  std::lock_guard<std::mutex> lock(bases_mu_);
  SBL_ASSIGN_OR_RETURN(nlohmann::json bases, LoadBasesLocked());
  nlohmann::json& entry = bases[base.path];
  if (!entry.is_object()) entry = {{"digest", digest}, {"users", nlohmann::json::array()}};
  std::set<std::string> users;
  for (const auto& u : entry["users"]) {
    if (u.is_string()) users.insert(u.get<std::string>());
  }
  std::string recorded = entry.value("digest", "");
  if (!users.empty() && !recorded.empty() && recorded != digest) {
    return absl::FailedPreconditionError(Cat("base image ", base.path, " changed while in use by ",
                                             users.size(), " volume(s): digest was ", recorded,
                                             ", now ", digest));
  }
  SBL_ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, control_->ListLoops());
  BaseRef ref;
  for (const auto& loop : loops) {
    if (loop.back_file == base.path && loop.read_only) {
      ref.loop = loop.name;
      break;
    }
  }
  bool attached = false;
  if (ref.loop.empty()) {
    SBL_ASSIGN_OR_RETURN(ref.loop, control_->AttachLoop(base.path, /*read_only=*/true));
    attached = true;
  }
  ref.added = users.insert(id).second;
  if (ref.added || recorded != digest) {
    entry["digest"] = digest;
    entry["users"] = users;
    absl::Status st = SaveBasesLocked(bases);
    if (!st.ok()) {
      if (attached) LogUndoFailure(id, "detach base loop", control_->DetachLoop(ref.loop));
      return st;
    }
  }
  return ref;
}

absl::Status DmVolumeBackend::ReleaseBase(const std::string& id) {
  std::lock_guard<std::mutex> lock(bases_mu_);
  SBL_ASSIGN_OR_RETURN(nlohmann::json bases, LoadBasesLocked());
  bool changed = false;
  std::vector<std::string> unused;
  for (auto& [path, entry] : bases.items()) {
    nlohmann::json users = nlohmann::json::array();
    for (const auto& u : entry["users"]) {
      if (u == id) {
        changed = true;
      } else {
        users.push_back(u);
      }
    }
    entry["users"] = users;
    if (users.empty()) unused.push_back(path);
  }
  if (!unused.empty()) {
    // Detach before forgetting: a crash in between leaves a record (retried next time), never an
    // attached loop nobody knows about.
    SBL_ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, control_->ListLoops());
    for (const auto& path : unused) {
      for (const auto& loop : loops) {
        if (loop.back_file == path && loop.read_only) {
          absl::Status st = control_->DetachLoop(loop.name);
          if (!st.ok()) {
            if (changed) LogUndoFailure(id, "save bases", SaveBasesLocked(bases));
            return Annotate(st, Cat("detach base image ", path));
          }
        }
      }
      bases.erase(path);
      changed = true;
    }
  }
  if (!changed) return absl::OkStatus();
  return SaveBasesLocked(bases);
}

absl::StatusOr<std::pair<std::string, std::string>> DmVolumeBackend::BaseOf(const std::string& id) {
  std::lock_guard<std::mutex> lock(bases_mu_);
  SBL_ASSIGN_OR_RETURN(nlohmann::json bases, LoadBasesLocked());
  for (auto& [path, entry] : bases.items()) {
    for (const auto& u : entry["users"]) {
      if (u == id) return std::make_pair(path, entry.value("digest", std::string()));
    }
  }
  return absl::NotFoundError(Cat("volume ", id, ": no base image recorded"));
}

absl::Status DmVolumeBackend::WriteCow(const std::string& id, const std::string& source,
                                       uint64_t origin_bytes) {
  const std::string cow = layout_.File(id, kCowFile);
  const std::string partial = cow + ".partial";
  if (!source.empty()) {
    CloneOptions clone;
    clone.fsync = false;  // synced below, after sizing
    SBL_RETURN_IF_ERROR(CloneFile(source, partial, clone).status());
  }
  auto result = [&]() -> absl::Status {
    UniqueFd fd(::open(partial.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("create ", partial));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", partial));
    uint64_t want = CowSizeFor(origin_bytes);
    if (static_cast<uint64_t>(st.st_size) < want &&
        ::ftruncate(fd.get(), static_cast<off_t>(want)) != 0) {
      return ErrnoStatus(errno, Cat("size ", partial, " to ", want, " bytes"));
    }
    if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, Cat("fsync ", partial));
    return PublishNoReplace(partial, cow);
  }();
  if (!result.ok()) ::unlink(partial.c_str());
  return result;
}

absl::Status DmVolumeBackend::Activate(const std::string& id, const BaseImage& base,
                                       const std::string& digest, bool reattach, Undo& undo) {
  auto origin = AcquireBase(id, base, digest);
  if (!origin.ok()) return Annotate(origin.status(), "attach base image");
  if (origin->added) {
    undo.Add([this, id] { LogUndoFailure(id, "release base image", ReleaseBase(id)); });
  }

  const std::string cow = layout_.File(id, kCowFile);
  std::string cow_loop;
  if (reattach) {
    auto loops = control_->ListLoops();
    if (!loops.ok()) return Annotate(loops.status(), "list loop devices");
    for (const auto& loop : *loops) {
      if (loop.back_file == cow && !loop.read_only) cow_loop = loop.name;
    }
  }
  if (cow_loop.empty()) {
    auto attached = control_->AttachLoop(cow, /*read_only=*/false);
    if (!attached.ok()) return Annotate(attached.status(), "attach CoW");
    cow_loop = *attached;
    undo.Add([this, id, cow_loop] {
      LogUndoFailure(id, "detach CoW loop", control_->DetachLoop(cow_loop));
    });
  }

  const std::string name = DmName(id);
  if (reattach) {
    auto exists = control_->DmExists(name);
    if (!exists.ok()) return Annotate(exists.status(), "look up dm device");
    if (*exists) return absl::OkStatus();
  }
  std::string table = Cat("0 ", base.size / kSector, " snapshot ", origin->loop, " ", cow_loop,
                          " P ", kChunkSectors);
  return Annotate(control_->CreateDm(name, table), "create dm device");
}

absl::StatusOr<Volume> DmVolumeBackend::Create(const VolumeSpec& spec) {
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": create: ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  SBL_RETURN_IF_ERROR(fail("check base image", CheckGeometry(spec, *base)));
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());

  const std::string dir = layout_.Dir(spec.id);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError(
          Cat("volume ", Shown(spec), ": create: already exists at ", dir));
    }
    return fail("make volume directory", ErrnoStatus(errno, dir));
  }
  Undo undo;
  undo.Add([&] { LogUndoFailure(spec.id, "remove volume directory", RemoveAll(dir)); });
  SBL_RETURN_IF_ERROR(fail("create CoW file", WriteCow(spec.id, "", base->size)));
  SBL_RETURN_IF_ERROR(fail("activate", Activate(spec.id, *base, *digest, false, undo)));
  undo.Commit();
  log::Info("volume created",
            {{"sandbox", Shown(spec)}, {"backend", Name()}, {"base", base->path}});
  return Describe(spec.id, *base, *digest);
}

absl::StatusOr<Volume> DmVolumeBackend::Open(const VolumeSpec& spec) {
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": open: ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  const std::string cow = layout_.File(spec.id, kCowFile);
  if (!PathExists(cow)) {
    return absl::NotFoundError(Cat("volume ", Shown(spec), ": open: no CoW file at ", cow));
  }
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  SBL_RETURN_IF_ERROR(fail("check base image", CheckGeometry(spec, *base)));
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());
  Undo undo;
  SBL_RETURN_IF_ERROR(fail("activate", Activate(spec.id, *base, *digest, true, undo)));
  undo.Commit();
  return Describe(spec.id, *base, *digest);
}

absl::Status DmVolumeBackend::RemoveDevice(const std::string& id) {
  const std::string name = DmName(id);
  auto backoff = options_.remove_backoff;
  for (int attempt = 1;; ++attempt) {
    SBL_ASSIGN_OR_RETURN(DmRemoveResult result, control_->RemoveDm(name));
    if (result != DmRemoveResult::kBusy) return absl::OkStatus();
    if (attempt >= options_.remove_attempts) {
      return absl::UnavailableError(Cat("dm device ", name, " still busy after ", attempt,
                                        " attempts (is the VMM still running?)"));
    }
    log::Info("dm device busy, retrying remove",
              {{"volume", id}, {"attempt", attempt}, {"backoff_ms", backoff.count()}});
    clock_->SleepUntil(clock_->Now() + backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(2));
  }
}

absl::Status DmVolumeBackend::DetachVolumeLoops(const std::string& id) {
  const std::string prefix = layout_.Dir(id) + "/";
  SBL_ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, control_->ListLoops());
  for (const auto& loop : loops) {
    if (StartsWith(loop.back_file, prefix)) {
      SBL_RETURN_IF_ERROR(
          Annotate(control_->DetachLoop(loop.name), Cat("detach ", loop.back_file)));
    }
  }
  return absl::OkStatus();
}

absl::Status DmVolumeBackend::Remove(const std::string& id) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume remove"));
  auto held = locks_.Lock(id);
  std::string context = Cat("volume ", id, ": remove: ");
  // Reverse order of setup: dm device, CoW loop, base reference, files.
  SBL_RETURN_IF_ERROR(Annotate(RemoveDevice(id), Cat(context, "remove dm device")));
  SBL_RETURN_IF_ERROR(Annotate(DetachVolumeLoops(id), Cat(context, "detach CoW loop")));
  SBL_RETURN_IF_ERROR(Annotate(ReleaseBase(id), Cat(context, "release base image")));
  return Annotate(RemoveAll(layout_.Dir(id)), Cat(context, "remove files"));
}

absl::Status DmVolumeBackend::CaptureInto(const std::string& id, const std::string& snapshot_dir,
                                          CaptureMode mode) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume capture"));
  auto held = locks_.Lock(id);
  std::string context = Cat("volume ", id, ": capture into ", snapshot_dir);
  const std::string cow = layout_.File(id, kCowFile);
  const std::string dst = Cat(snapshot_dir, "/", kCowFile);
  if (!PathExists(cow)) return absl::NotFoundError(Cat(context, ": no CoW file at ", cow));
  if (mode == CaptureMode::kCopy) {
    // The VM is paused; the persistent exception store has committed its metadata for every
    // completed write, and the loop device writes through the file's page cache, which a reflink
    // or read of the file sees.
    auto method = CloneFile(cow, dst);
    if (!method.ok()) return Annotate(method.status(), context);
    return Annotate(FsyncParent(dst), context);
  }
  // kMove: take the devices down, move the CoW, then drop the rest; if the move fails the
  // devices are brought back so the volume is as it was.
  auto base_of = BaseOf(id);
  if (!base_of.ok()) return Annotate(base_of.status(), context);
  SBL_RETURN_IF_ERROR(Annotate(RemoveDevice(id), Cat(context, ": remove dm device")));
  SBL_RETURN_IF_ERROR(Annotate(DetachVolumeLoops(id), Cat(context, ": detach CoW loop")));
  absl::Status moved = MoveFile(cow, dst);
  if (!moved.ok()) {
    auto base = InspectBaseImage(base_of->first);
    Undo none;
    absl::Status back =
        base.ok() ? Activate(id, *base, base_of->second, true, none) : base.status();
    none.Commit();
    LogUndoFailure(id, "reactivate after failed move", back);
    return Annotate(moved, context);
  }
  SBL_RETURN_IF_ERROR(Annotate(ReleaseBase(id), Cat(context, ": release base image")));
  return Annotate(RemoveAll(layout_.Dir(id)), Cat(context, ": remove files"));
}

absl::StatusOr<Volume> DmVolumeBackend::RestoreFrom(const VolumeSpec& spec,
                                                    const std::string& snapshot_dir,
                                                    const std::string& expected_base_digest) {
  std::string context = Cat("volume ", Shown(spec), ": restore from ", snapshot_dir);
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat(context, ": ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  SBL_RETURN_IF_ERROR(fail("check base image", CheckGeometry(spec, *base)));
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());
  if (expected_base_digest.empty()) {
    log::Warn("snapshot records no base digest; base image not verified",
              {{"sandbox", Shown(spec)}, {"snapshot", snapshot_dir}, {"base", base->path}});
  } else if (expected_base_digest != *digest) {
    // A CoW diff applied to other content would hand the guest a corrupt filesystem.
    return absl::FailedPreconditionError(Cat(context, ": base image ", base->path, " has digest ",
                                             *digest, " but the snapshot was captured against ",
                                             expected_base_digest));
  }
  const std::string source = Cat(snapshot_dir, "/", kCowFile);
  if (!PathExists(source)) {
    return absl::NotFoundError(Cat(context, ": snapshot has no ", kCowFile));
  }
  const std::string dir = layout_.Dir(spec.id);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(Cat(context, ": already exists at ", dir));
    return fail("make volume directory", ErrnoStatus(errno, dir));
  }
  Undo undo;
  undo.Add([&] { LogUndoFailure(spec.id, "remove volume directory", RemoveAll(dir)); });
  SBL_RETURN_IF_ERROR(fail("copy CoW", WriteCow(spec.id, source, base->size)));
  SBL_RETURN_IF_ERROR(fail("activate", Activate(spec.id, *base, *digest, false, undo)));
  undo.Commit();
  log::Info("volume restored",
            {{"sandbox", Shown(spec)}, {"backend", Name()}, {"snapshot", snapshot_dir}});
  return Describe(spec.id, *base, *digest);
}

absl::Status DmVolumeBackend::Flatten(const std::string& id, const std::string& new_base_path) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume flatten"));
  auto held = locks_.Lock(id);
  std::string context = Cat("volume ", id, ": flatten into ", new_base_path);
  if (PathExists(new_base_path)) return absl::AlreadyExistsError(Cat(context, ": already exists"));
  const std::string device = Cat(options_.dev_mapper_dir, "/", DmName(id));
  UniqueFd in(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Annotate(ErrnoStatus(errno, Cat("open ", device)), context);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) {
    return Annotate(ErrnoStatus(errno, Cat("stat ", device)), context);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode) && ::ioctl(in.get(), BLKGETSIZE64, &size) != 0) {
    return Annotate(ErrnoStatus(errno, Cat("size of ", device)), context);
  }
  // The dm device is the only place base + CoW are combined; a block device has no hole
  // information, so zero blocks are skipped to keep the new base sparse.
  const std::string partial = Cat(new_base_path, ".partial-", id);
  UniqueFd out(::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
  if (!out.valid()) return Annotate(ErrnoStatus(errno, Cat("create ", partial)), context);
  absl::Status st2 = CopySkippingZeros(in.get(), out.get(), size, Cat("copy ", device));
  if (st2.ok() && ::fsync(out.get()) != 0) st2 = ErrnoStatus(errno, Cat("fsync ", partial));
  out.Reset();
  if (st2.ok()) st2 = PublishNoReplace(partial, new_base_path);
  if (!st2.ok()) ::unlink(partial.c_str());
  return Annotate(st2, context);
}

absl::StatusOr<std::vector<std::string>> DmVolumeBackend::ListLeftovers() {
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> dirs, layout_.ListIds());
  std::set<std::string> ids(dirs.begin(), dirs.end());
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> dms, control_->ListDm());
  for (const auto& name : dms) {
    if (StartsWith(name, kDmPrefix)) ids.insert(name.substr(std::string_view(kDmPrefix).size()));
  }
  SBL_ASSIGN_OR_RETURN(std::vector<LoopDevice> loops, control_->ListLoops());
  const std::string prefix = layout_.root + "/";
  for (const auto& loop : loops) {
    if (!StartsWith(loop.back_file, prefix)) continue;
    std::string rest = loop.back_file.substr(prefix.size());
    ids.insert(rest.substr(0, rest.find('/')));
  }
  {
    std::lock_guard<std::mutex> lock(bases_mu_);
    SBL_ASSIGN_OR_RETURN(nlohmann::json bases, LoadBasesLocked());
    for (auto& [path, entry] : bases.items()) {
      for (const auto& u : entry["users"]) {
        if (u.is_string()) ids.insert(u.get<std::string>());
      }
    }
  }
  std::vector<std::string> out;
  for (const auto& id : ids) {
    if (ValidateVolumeId(id).ok()) out.push_back(id);
  }
  return out;
}

}  // namespace sandboxlet
