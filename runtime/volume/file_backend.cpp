#include "runtime/volume/file_backend.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"
#include "runtime/volume/clone.h"

namespace sandboxlet {
namespace {

std::string Shown(const VolumeSpec& spec) { return spec.key.empty() ? spec.id : spec.key; }

// Sets the copy's final size (never below the source's) and makes it durable before the rename
// that publishes it.
absl::Status FinishDisk(const std::string& path, uint64_t min_size) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
  if (min_size > static_cast<uint64_t>(st.st_size) &&
      ::ftruncate(fd.get(), static_cast<off_t>(min_size)) != 0) {
    return ErrnoStatus(errno, Cat("grow ", path, " to ", min_size, " bytes"));
  }
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, Cat("fsync ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileVolumeBackend>> FileVolumeBackend::Make(
    const VolumeOptions& options) {
  SBL_ASSIGN_OR_RETURN(VolumeLayout layout, PrepareLayout(options.state_dir));
  return std::unique_ptr<FileVolumeBackend>(new FileVolumeBackend(std::move(layout)));
}

FileVolumeBackend::FileVolumeBackend(VolumeLayout layout)
    : layout_(std::move(layout)), digests_(layout_.root + "/digests.json") {}

Volume FileVolumeBackend::Describe(const std::string& id, const BaseImage& base,
                                   const std::string& digest) const {
  return Volume{id, layout_.File(id, kDiskFile), base.path, digest, Name()};
}

absl::StatusOr<Volume> FileVolumeBackend::Populate(const VolumeSpec& spec, const std::string& step,
                                                   const std::string& source, const BaseImage& base,
                                                   const std::string& digest) {
  auto fail = [&](const std::string& what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": ", step, ": ", what));
  };
  const std::string dir = layout_.Dir(spec.id);
  const std::string disk = layout_.File(spec.id, kDiskFile);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST) return fail("make volume directory", ErrnoStatus(errno, dir));
    if (PathExists(disk)) {
      return absl::AlreadyExistsError(
          Cat("volume ", Shown(spec), ": ", step, ": already exists at ", disk));
    }
    // What an interrupted setup left behind holds no complete disk: start over.
    SBL_RETURN_IF_ERROR(fail("clear unfinished volume", RemoveAll(dir)));
    if (::mkdir(dir.c_str(), 0700) != 0) {
      return fail("make volume directory", ErrnoStatus(errno, dir));
    }
  }
  Undo undo;
  undo.Add([&] { LogUndoFailure(spec.id, "remove volume directory", RemoveAll(dir)); });

  const std::string partial = disk + ".partial";
  CloneOptions clone;
  clone.fsync = false;  // FinishDisk syncs once, after the resize
  auto method = CloneFile(source, partial, clone);
  if (!method.ok()) return fail(Cat("copy ", source), method.status());
  SBL_RETURN_IF_ERROR(fail("finish disk", FinishDisk(partial, spec.min_size_bytes)));
  SBL_RETURN_IF_ERROR(fail("publish disk", PublishNoReplace(partial, disk)));
  undo.Commit();
  log::Info("volume ready", {{"sandbox", Shown(spec)},
                             {"backend", Name()},
                             {"step", step},
                             {"method", CloneMethodName(*method)},
                             {"base", base.path}});
  return Describe(spec.id, base, digest);
}

absl::StatusOr<Volume> FileVolumeBackend::Create(const VolumeSpec& spec) {
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": create: ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());
  return Populate(spec, "create", base->path, *base, *digest);
}

absl::StatusOr<Volume> FileVolumeBackend::Open(const VolumeSpec& spec) {
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": open: ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  const std::string disk = layout_.File(spec.id, kDiskFile);
  if (!PathExists(disk)) {
    return absl::NotFoundError(Cat("volume ", Shown(spec), ": open: no disk at ", disk));
  }
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());
  return Describe(spec.id, *base, *digest);
}

absl::Status FileVolumeBackend::Remove(const std::string& id) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume remove"));
  auto held = locks_.Lock(id);
  return Annotate(RemoveAll(layout_.Dir(id)), Cat("volume ", id, ": remove"));
}

absl::Status FileVolumeBackend::CaptureInto(const std::string& id, const std::string& snapshot_dir,
                                            CaptureMode mode) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume capture"));
  auto held = locks_.Lock(id);
  const std::string disk = layout_.File(id, kDiskFile);
  const std::string dst = Cat(snapshot_dir, "/", kDiskFile);
  std::string context = Cat("volume ", id, ": capture into ", snapshot_dir);
  if (!PathExists(disk)) return absl::NotFoundError(Cat(context, ": no disk at ", disk));
  if (mode == CaptureMode::kMove) {
    SBL_RETURN_IF_ERROR(Annotate(MoveFile(disk, dst), context));
    return Annotate(RemoveAll(layout_.Dir(id)), Cat(context, ": remove volume"));
  }
  // The sandbox keeps writing its disk: the snapshot must share no block it can write, which a
  // reflink (copy-on-write extents) or a copy guarantees and a hard link would not.
  auto method = CloneFile(disk, dst);
  if (!method.ok()) return Annotate(method.status(), context);
  return Annotate(FsyncParent(dst), context);
}

absl::StatusOr<Volume> FileVolumeBackend::RestoreFrom(const VolumeSpec& spec,
                                                      const std::string& snapshot_dir,
                                                      const std::string& expected_base_digest) {
  auto fail = [&](const char* what, const absl::Status& st) {
    return Annotate(st, Cat("volume ", Shown(spec), ": restore from ", snapshot_dir, ": ", what));
  };
  SBL_RETURN_IF_ERROR(fail("check id", ValidateVolumeId(spec.id)));
  auto held = locks_.Lock(spec.id);
  auto base = InspectBaseImage(spec.base_image);
  if (!base.ok()) return fail("inspect base image", base.status());
  auto digest = digests_.Of(base->path);
  if (!digest.ok()) return fail("digest base image", digest.status());
  if (expected_base_digest.empty()) {
    // Snapshots written before digests were recorded (the Go predecessor's) carry none.
    log::Warn("snapshot records no base digest; base image not verified",
              {{"sandbox", Shown(spec)}, {"snapshot", snapshot_dir}, {"base", base->path}});
  } else if (expected_base_digest != *digest) {
    return absl::FailedPreconditionError(Cat(
        "volume ", Shown(spec), ": restore from ", snapshot_dir, ": base image ", base->path,
        " has digest ", *digest, " but the snapshot was captured against ", expected_base_digest));
  }
  const std::string source = Cat(snapshot_dir, "/", kDiskFile);
  if (!PathExists(source)) {
    return absl::NotFoundError(Cat("volume ", Shown(spec), ": restore from ", snapshot_dir,
                                   ": snapshot has no ", kDiskFile));
  }
  return Populate(spec, Cat("restore from ", snapshot_dir), source, *base, *digest);
}

absl::Status FileVolumeBackend::Flatten(const std::string& id, const std::string& new_base_path) {
  SBL_RETURN_IF_ERROR(Annotate(ValidateVolumeId(id), "volume flatten"));
  auto held = locks_.Lock(id);
  std::string context = Cat("volume ", id, ": flatten into ", new_base_path);
  const std::string disk = layout_.File(id, kDiskFile);
  if (!PathExists(disk)) return absl::NotFoundError(Cat(context, ": no disk at ", disk));
  if (PathExists(new_base_path)) return absl::AlreadyExistsError(Cat(context, ": already exists"));
  const std::string partial = Cat(new_base_path, ".partial-", id);
  CloneOptions clone;
  clone.mode = 0444;  // base images are immutable
  auto method = CloneFile(disk, partial, clone);
  if (!method.ok()) return Annotate(method.status(), context);
  absl::Status st = PublishNoReplace(partial, new_base_path);
  if (!st.ok()) ::unlink(partial.c_str());
  return Annotate(st, context);
}

absl::StatusOr<std::vector<std::string>> FileVolumeBackend::ListLeftovers() {
  return layout_.ListIds();
}

}  // namespace sandboxlet
