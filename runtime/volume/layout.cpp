#include "runtime/volume/layout.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet {

absl::Status ValidateVolumeId(const std::string& id) {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(id, "volume id"));
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat("volume id \"", id, "\": ", why));
  };
  if (id.size() > 100) return bad("longer than 100 characters");
  if (id[0] == '.' || id[0] == '-') return bad("must not start with '.' or '-'");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return bad("only letters, digits, '.', '_' and '-' are allowed");
  }
  return absl::OkStatus();
}

absl::StatusOr<BaseImage> InspectBaseImage(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("base image path is empty");
  std::unique_ptr<char, decltype(&::free)> real(::realpath(path.c_str(), nullptr), &::free);
  if (!real) return ErrnoStatus(errno, Cat("base image ", path));
  struct stat st;
  if (::stat(real.get(), &st) != 0) return ErrnoStatus(errno, Cat("base image ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(Cat("base image ", path, ": not a regular file"));
  }
  if (st.st_size == 0) return absl::FailedPreconditionError(Cat("base image ", path, ": empty"));
  return BaseImage{real.get(), static_cast<uint64_t>(st.st_size)};
}

absl::StatusOr<std::vector<std::string>> VolumeLayout::ListIds() const {
  std::vector<std::string> ids;
  DIR* dir = ::opendir(root.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return ids;
    return ErrnoStatus(errno, Cat("list ", root));
  }
  while (struct dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::lstat(Cat(root, "/", name).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (ValidateVolumeId(name).ok()) ids.push_back(name);
  }
  ::closedir(dir);
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<VolumeLayout> PrepareLayout(const std::string& state_dir) {
  if (state_dir.empty()) return absl::InvalidArgumentError("volumes: state_dir is empty");
  std::string root = Cat(state_dir, "/", kVolumesDir);
  SBL_RETURN_IF_ERROR(MakeDirs(root, 0700));
  std::unique_ptr<char, decltype(&::free)> real(::realpath(root.c_str(), nullptr), &::free);
  if (!real) return ErrnoStatus(errno, Cat("resolve ", root));
  return VolumeLayout{real.get()};
}

IdLocks::Held IdLocks::Lock(const std::string& id) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return held_.count(id) == 0; });
  held_.insert(id);
  return Held(this, id);
}

void IdLocks::Unlock(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    held_.erase(id);
  }
  cv_.notify_all();
}

void LogUndoFailure(const std::string& id, const std::string& step, const absl::Status& status) {
  if (status.ok()) return;
  log::Warn("volume unwind step failed",
            {{"volume", id}, {"step", step}, {"error", status.message()}});
}

}  // namespace sandboxlet
