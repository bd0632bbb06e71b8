#include "runtime/snapshot/dir_size.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/strings.h"

namespace sandboxlet {

namespace {

// The kernel's record layout for getdents64 (glibc 2.36 has no wrapper in <dirent.h>).
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

struct InodeKey {
  dev_t dev;
  ino_t ino;
  bool operator==(const InodeKey&) const = default;
};

struct InodeKeyHash {
  size_t operator()(const InodeKey& k) const {
    return std::hash<uint64_t>()(static_cast<uint64_t>(k.ino) * 0x9E3779B97F4A7C15ULL ^
                                 static_cast<uint64_t>(k.dev));
  }
};

class Walk {
 public:
  Walk(const std::string& root, dev_t dev) : root_(root), dev_(dev) {}

  // Counts the entries of the open directory `dirfd` and recurses into its subdirectories.
  // `rel` is the directory's path relative to the root, used only to build error messages.
  absl::Status Directory(int dirfd, const std::string& rel) {
    constexpr size_t kBufSize = 32 * 1024;
    std::unique_ptr<char[]> buf(new char[kBufSize]);
    for (;;) {
      long n = ::syscall(SYS_getdents64, dirfd, buf.get(), kBufSize);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, Cat("read directory ", Shown(rel)));
      }
      if (n == 0) return absl::OkStatus();
      for (long off = 0; off < n;) {
        auto* d = reinterpret_cast<LinuxDirent64*>(buf.get() + off);
        off += d->d_reclen;
        const char* name = d->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
        SBL_RETURN_IF_ERROR(Entry(dirfd, name, rel));
      }
    }
  }

  int64_t total() const { return total_; }

  // Adds one inode; false if it was already counted (another hard link to it).
  bool Count(const struct stat& st) {
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 &&
        !seen_.insert(InodeKey{st.st_dev, st.st_ino}).second) {
      return false;
    }
    total_ += static_cast<int64_t>(st.st_blocks) * 512;
    return true;
  }

 private:
  std::string Shown(const std::string& rel) const {
    return rel.empty() ? root_ : Cat(root_, "/", rel);
  }

  absl::Status Entry(int dirfd, const char* name, const std::string& rel) {
    struct stat st;
    if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return absl::OkStatus();  // removed while we walk
      return ErrnoStatus(errno, Cat("stat ", Shown(rel), "/", name));
    }
    if (st.st_dev != dev_) return absl::OkStatus();  // another file system (du -x)
    if (!Count(st) || !S_ISDIR(st.st_mode)) return absl::OkStatus();
    // The path for messages is only built for directories, never per file.
    std::string child = rel.empty() ? std::string(name) : Cat(rel, "/", name);
    UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      // Removed or replaced by a non-directory since the stat: nothing more to count.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return absl::OkStatus();
      return ErrnoStatus(errno, Cat("open ", Shown(child)));
    }
    return Directory(fd.get(), child);
  }

  const std::string& root_;
  const dev_t dev_;
  int64_t total_ = 0;
  std::unordered_set<InodeKey, InodeKeyHash> seen_;  // hard-linked inodes already counted
};

}  // namespace

absl::StatusOr<int64_t> DirSize(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("disk usage: stat ", path));
  Walk walk(path, st.st_dev);
  walk.Count(st);
  if (!S_ISDIR(st.st_mode)) return walk.total();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("disk usage: open ", path));
  absl::Status status = walk.Directory(fd.get(), "");
  if (!status.ok()) return Annotate(status, "disk usage");
  return walk.total();
}

}  // namespace sandboxlet
