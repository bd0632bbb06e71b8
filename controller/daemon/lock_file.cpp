#include "controller/daemon/lock_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet::daemon {

absl::StatusOr<LockFile> LockFile::Acquire(const std::string& path, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("lock file ", path));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return ErrnoStatus(errno, Cat("lock file ", path, ": flock"));
    absl::StatusOr<std::string> holder = ReadFile(path);
    std::string pid = holder.ok() ? std::string(Trim(*holder)) : "";
    return absl::FailedPreconditionError(
        Cat("another sandboxlet", pid.empty() ? "" : Cat(" (pid ", pid, ")"), " is running on ",
            what, " (", path, " is locked); stop it first or use other directories"));
  }
  std::string pid = Cat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
    return ErrnoStatus(errno, Cat("lock file ", path, ": writing the pid"));
  }
  return LockFile(path, std::move(fd));
}

LockFile::~LockFile() {
  // The file stays (unlinking it would let a process that opened it just before lock a file
  // nobody else can see); emptying it says that no daemon runs.
  if (fd_.valid()) (void)!::ftruncate(fd_.get(), 0);
}

}  // namespace sandboxlet::daemon
