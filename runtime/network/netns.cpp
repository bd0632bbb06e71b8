#include "runtime/network/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <set>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

namespace sandboxlet::network {
namespace {

// Makes `dir` a shared mount point (bind-mounting it on itself first if it is not a mount
// point yet). Once per directory per process.
absl::Status EnsureSharedDir(const std::string& dir) {
  static std::mutex mu;
  static std::set<std::string> done;  // guarded by mu
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(dir) != 0) return absl::OkStatus();
  SBL_RETURN_IF_ERROR(MakeDirs(dir, 0755));
  bool bound = false;
  while (::mount("", dir.c_str(), "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL || bound) return ErrnoStatus(errno, Cat("make ", dir, " a shared mount"));
    if (::mount(dir.c_str(), dir.c_str(), "none", MS_BIND | MS_REC, nullptr) != 0) {
      return ErrnoStatus(errno, Cat("bind-mount ", dir, " on itself"));
    }
    bound = true;
  }
  done.insert(dir);
  return absl::OkStatus();
}

absl::StatusOr<std::string> NetnsPath(const std::string& dir, const std::string& name) {
  return JoinUnder(dir, name, "network namespace name");
}

}  // namespace

absl::StatusOr<UniqueFd> CreateNamedNetns(const std::string& dir, const std::string& name) {
  SBL_ASSIGN_OR_RETURN(std::string path, NetnsPath(dir, name));
  SBL_RETURN_IF_ERROR(EnsureSharedDir(dir));
  {
    UniqueFd placeholder(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
    if (!placeholder.valid()) {
      return ErrnoStatus(errno, Cat("create network namespace ", path));
    }
  }
  // unshare() moves only the calling thread, so do it on a throwaway thread; the bind mount
  // keeps the namespace alive after that thread exits.
  absl::Status st;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      st = ErrnoStatus(errno, Cat("create network namespace ", name, ": unshare"));
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      st = ErrnoStatus(errno, Cat("create network namespace ", name, ": bind mount on ", path));
    }
  }).join();
  if (!st.ok()) {
    ::unlink(path.c_str());
    return st;
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    (void)DeleteNamedNetns(dir, name);
    return ErrnoStatus(err, Cat("open network namespace ", path));
  }
  return fd;
}

absl::StatusOr<UniqueFd> OpenNamedNetns(const std::string& dir, const std::string& name) {
  SBL_ASSIGN_OR_RETURN(std::string path, NetnsPath(dir, name));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("open network namespace ", path));
  struct statfs sfs {};
  if (::fstatfs(fd.get(), &sfs) != 0) return ErrnoStatus(errno, Cat("statfs ", path));
  if (sfs.f_type != NSFS_MAGIC) {
    return absl::NotFoundError(Cat("open network namespace ", path, ": not a mounted namespace"));
  }
  return fd;
}

absl::Status DeleteNamedNetns(const std::string& dir, const std::string& name) {
  SBL_ASSIGN_OR_RETURN(std::string path, NetnsPath(dir, name));
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return ErrnoStatus(errno, Cat("delete network namespace ", name, ": unmount ", path));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, Cat("delete network namespace ", name, ": unlink ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListNamedNetns(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return ErrnoStatus(errno, Cat("list network namespaces in ", dir));
  }
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

absl::Status RunInNetns(int netns_fd, const std::function<absl::Status()>& fn) {
  absl::Status st;
  std::thread([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      st = ErrnoStatus(errno, "join network namespace");
      return;
    }
    st = fn();
  }).join();
  return st;
}

}  // namespace sandboxlet::network
