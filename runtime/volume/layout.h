// Pieces both volume backends share: the on-disk layout under <state>/volumes, id and base image
// checks, per-id serialization and the unwind stack that undoes a half-done setup in reverse
// order. Thread-safety: IdLocks is thread-safe; Undo and the functions are not shared.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

inline constexpr char kVolumesDir[] = "volumes";
inline constexpr char kCowFile[] = "rootfs.cow";    // devicemapper backend, and in snapshots
inline constexpr char kDiskFile[] = "rootfs.ext4";  // file backend, and in snapshots
inline constexpr char kDmPrefix[] = "sbl-";

// A volume id becomes a path component and part of a dm name (at most 127 bytes): 1-100 chars of
// [A-Za-z0-9._-], not starting with '.' or '-'.
absl::Status ValidateVolumeId(const std::string& id);

struct BaseImage {
  std::string path;  // canonical (symlinks resolved), as losetup reports backing files
  uint64_t size = 0;
};

// The base image at path must exist and be a regular file. Errors name the image.
absl::StatusOr<BaseImage> InspectBaseImage(const std::string& path);

// The directories a backend keeps its volumes in.
struct VolumeLayout {
  std::string root;  // <state>/volumes, canonical

  std::string Dir(const std::string& id) const { return root + "/" + id; }
  std::string File(const std::string& id, const char* name) const {
    return root + "/" + id + "/" + name;
  }
  // Ids of the directories present under root.
  absl::StatusOr<std::vector<std::string>> ListIds() const;
};

// Creates <state_dir>/volumes and returns its canonical layout.
absl::StatusOr<VolumeLayout> PrepareLayout(const std::string& state_dir);

// Serializes operations per id: Lock blocks while another thread holds the same id.
class IdLocks {
 public:
  class Held {
   public:
    Held(IdLocks* locks, std::string id) : locks_(locks), id_(std::move(id)) {}
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { locks_->Unlock(id_); }

   private:
    IdLocks* locks_;
    std::string id_;
  };

  [[nodiscard]] Held Lock(const std::string& id);

 private:
  void Unlock(const std::string& id);

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> held_;  // guarded by mu_
};

// Steps registered after each successful setup action; run in reverse unless Commit() is called.
class Undo {
 public:
  Undo() = default;
  Undo(const Undo&) = delete;
  Undo& operator=(const Undo&) = delete;
  ~Undo() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
  }
  void Add(std::function<void()> step) { steps_.push_back(std::move(step)); }
  void Commit() { steps_.clear(); }

 private:
  std::vector<std::function<void()>> steps_;
};

// Logs an unwind step's failure (an unwind cannot return it: the original error is reported).
void LogUndoFailure(const std::string& id, const std::string& step, const absl::Status& status);

}  // namespace sandboxlet
