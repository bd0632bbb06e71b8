#include "runtime/volume/clone.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet {
namespace {

constexpr size_t kBlock = 4096;
constexpr size_t kBuffer = 1 << 20;

absl::Status PwriteAll(int fd, const char* data, size_t len, uint64_t off,
                       const std::string& what) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, Cat(what, ": write at offset ", off));
    }
    data += n;
    len -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Fills buf with up to len bytes at off; returns the count read (short only at end of file).
absl::StatusOr<size_t> PreadFull(int fd, char* buf, size_t len, uint64_t off,
                                 const std::string& what) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, Cat(what, ": read at offset ", off + got));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

// Copies [begin, end) with read/write; the fallback when copy_file_range cannot be used.
absl::Status CopyRangeRw(int src, int dst, uint64_t begin, uint64_t end, const std::string& what) {
  std::vector<char> buf(kBuffer);
  for (uint64_t off = begin; off < end;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kBuffer, end - off));
    SBL_ASSIGN_OR_RETURN(size_t got, PreadFull(src, buf.data(), want, off, what));
    if (got == 0) break;
    SBL_RETURN_IF_ERROR(PwriteAll(dst, buf.data(), got, off, what));
    off += got;
  }
  return absl::OkStatus();
}

// Copies [begin, end) in the kernel; falls back to read/write where copy_file_range is refused
// (across filesystems, or by filesystems without support).
absl::Status CopyRange(int src, int dst, uint64_t begin, uint64_t end, const std::string& what) {
  loff_t in = static_cast<loff_t>(begin), out = static_cast<loff_t>(begin);
  while (static_cast<uint64_t>(in) < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(1ull << 30, end - in));
    ssize_t n = ::copy_file_range(src, &in, dst, &out, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) {
        return CopyRangeRw(src, dst, static_cast<uint64_t>(in), end, what);
      }
      return ErrnoStatus(errno, Cat(what, ": copy at offset ", in));
    }
    if (n == 0) break;  // source shorter than expected; the final ftruncate sets the size
  }
  return absl::OkStatus();
}

bool AllZero(const char* p, size_t n) {
  // Word-at-a-time scan; blocks are 4 KiB aligned in the buffer.
  size_t i = 0;
  for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
    uint64_t w;
    std::memcpy(&w, p + i, sizeof(w));
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

const char* CloneMethodName(CloneMethod method) {
  return method == CloneMethod::kReflink ? "reflink" : "sparse-copy";
}

absl::Status SparseCopyFd(int src_fd, int dst_fd, uint64_t size, const std::string& what) {
  if (::ftruncate(dst_fd, static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, Cat(what, ": set size to ", size));
  }
  uint64_t off = 0;
  while (off < size) {
    off_t data = ::lseek(src_fd, static_cast<off_t>(off), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno == EINVAL || errno == EOPNOTSUPP) {
        return CopyRange(src_fd, dst_fd, off, size, what);  // no hole information: copy it all
      }
      return ErrnoStatus(errno, Cat(what, ": seek data at offset ", off));
    }
    if (static_cast<uint64_t>(data) >= size) break;
    off_t hole = ::lseek(src_fd, data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus(errno, Cat(what, ": seek hole at offset ", data));
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    SBL_RETURN_IF_ERROR(CopyRange(src_fd, dst_fd, static_cast<uint64_t>(data), end, what));
    off = end;
  }
  return absl::OkStatus();
}

absl::Status CopySkippingZeros(int src_fd, int dst_fd, uint64_t size, const std::string& what) {
  if (::ftruncate(dst_fd, static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, Cat(what, ": set size to ", size));
  }
  std::vector<char> buf(kBuffer);
  for (uint64_t off = 0; off < size;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kBuffer, size - off));
    SBL_ASSIGN_OR_RETURN(size_t got, PreadFull(src_fd, buf.data(), want, off, what));
    if (got == 0) {
      return absl::DataLossError(Cat(what, ": source ends at ", off, ", expected ", size));
    }
    // Write maximal runs of non-zero blocks.
    size_t i = 0;
    while (i < got) {
      size_t n = std::min(kBlock, got - i);
      if (AllZero(buf.data() + i, n)) {
        i += n;
        continue;
      }
      size_t run_end = i + n;
      while (run_end < got) {
        size_t m = std::min(kBlock, got - run_end);
        if (AllZero(buf.data() + run_end, m)) break;
        run_end += m;
      }
      SBL_RETURN_IF_ERROR(PwriteAll(dst_fd, buf.data() + i, run_end - i, off + i, what));
      i = run_end;
    }
    off += got;
  }
  return absl::OkStatus();
}

absl::StatusOr<CloneMethod> CloneFile(const std::string& src, const std::string& dst,
                                      const CloneOptions& options) {
  std::string what = Cat("clone ", src, " to ", dst);
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return ErrnoStatus(errno, Cat(what, ": open source"));
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return ErrnoStatus(errno, Cat(what, ": stat source"));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(what, ": source is not a regular file"));
  }
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, options.mode));
  if (!out.valid()) return ErrnoStatus(errno, Cat(what, ": create destination"));

  auto result = [&]() -> absl::StatusOr<CloneMethod> {
    CloneMethod method = CloneMethod::kSparseCopy;
    if (options.allow_reflink && ::ioctl(out.get(), FICLONE, in.get()) == 0) {
      method = CloneMethod::kReflink;
    } else if (options.allow_reflink && errno != EOPNOTSUPP && errno != EXDEV && errno != EINVAL &&
               errno != ENOTTY && errno != ENOSYS) {
      return ErrnoStatus(errno, Cat(what, ": reflink"));
    } else {
      SBL_RETURN_IF_ERROR(
          SparseCopyFd(in.get(), out.get(), static_cast<uint64_t>(st.st_size), what));
    }
    if (options.fsync && ::fsync(out.get()) != 0) return ErrnoStatus(errno, Cat(what, ": fsync"));
    return method;
  }();
  if (!result.ok()) {
    out.Reset();
    ::unlink(dst.c_str());
  }
  return result;
}

absl::Status PublishNoReplace(const std::string& tmp, const std::string& dst) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno != EINVAL && errno != ENOSYS) {
      return ErrnoStatus(errno, Cat("rename ", tmp, " to ", dst));
    }
    // Filesystems without RENAME_NOREPLACE: link() refuses an existing name just the same.
    if (::link(tmp.c_str(), dst.c_str()) != 0) {
      return ErrnoStatus(errno, Cat("link ", tmp, " to ", dst));
    }
    ::unlink(tmp.c_str());
  }
  return FsyncParent(dst);
}

absl::Status MoveFile(const std::string& src, const std::string& dst) {
  if (::renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) == 0) {
    return FsyncParent(dst);
  }
  if (errno != EXDEV && errno != EINVAL && errno != ENOSYS) {
    return ErrnoStatus(errno, Cat("move ", src, " to ", dst));
  }
  if (errno != EXDEV && PathExists(dst)) {
    return absl::AlreadyExistsError(Cat("move ", src, " to ", dst, ": destination exists"));
  }
  SBL_RETURN_IF_ERROR(CloneFile(src, dst).status());
  SBL_RETURN_IF_ERROR(FsyncParent(dst));
  if (::unlink(src.c_str()) != 0) return ErrnoStatus(errno, Cat("unlink ", src));
  return absl::OkStatus();
}

}  // namespace sandboxlet
