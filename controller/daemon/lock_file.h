// LockFile: an exclusive advisory lock (flock) on a file holding the owner's PID, so that two
// sandboxlet daemons never run on one state or run directory. The kernel drops the lock when the
// process dies, so a crash never leaves a stale lock behind (the file itself may stay; it is
// simply locked again).
//
// Thread-safety: a value type; not shared between threads.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/base/fd.h"

namespace sandboxlet::daemon {

class LockFile {
 public:
  // Creates `path` if needed, takes the lock without waiting and writes our PID into it.
  // FailedPrecondition naming the holder's PID when another process has it.
  static absl::StatusOr<LockFile> Acquire(const std::string& path, const std::string& what);

  LockFile(LockFile&&) = default;
  LockFile& operator=(LockFile&&) = default;
  // Empties the file and releases the lock.
  ~LockFile();

  const std::string& path() const { return path_; }

 private:
  LockFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  std::string path_;
  UniqueFd fd_;
};

}  // namespace sandboxlet::daemon
