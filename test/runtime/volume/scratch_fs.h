// Test and benchmark support: a throwaway filesystem (xfs, btrfs, ext4) made in a sparse image
// file and mounted through a loop device (`mount -o loop` sets autoclear, so unmounting releases
// the loop). Needs root. Also small file helpers shared by the volume tests. Not thread-safe.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/base/command.h"
#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet::testing {

// mkdtemp under /tmp; empty on failure.
inline std::string MakeTempDir(const std::string& tag) {
  std::string tmpl = Cat("/tmp/sbl-", tag, "-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) return "";
  return tmpl;
}

class ScratchFs {
 public:
  // Creates an fs_type filesystem of size_mib in <work_dir>/<fs_type>.img, mounted at
  // <work_dir>/<fs_type>. Errors say which step failed (for GTEST_SKIP messages).
  static absl::StatusOr<std::unique_ptr<ScratchFs>> Make(const std::string& work_dir,
                                                         const std::string& fs_type,
                                                         uint64_t size_mib) {
    if (::geteuid() != 0) return absl::PermissionDeniedError("mounting needs root");
    std::unique_ptr<ScratchFs> fs(new ScratchFs());
    fs->image_ = Cat(work_dir, "/", fs_type, ".img");
    fs->mount_point_ = Cat(work_dir, "/", fs_type);
    SBL_RETURN_IF_ERROR(MakeDirs(fs->mount_point_));
    SBL_RETURN_IF_ERROR(RunChecked({"truncate", "-s", Cat(size_mib, "M"), fs->image_}).status());
    std::vector<std::string> mkfs;
    if (fs_type == "xfs") mkfs = {"mkfs.xfs", "-q", "-f", fs->image_};
    if (fs_type == "btrfs") mkfs = {"mkfs.btrfs", "-q", "-f", fs->image_};
    if (fs_type == "ext4") mkfs = {"mkfs.ext4", "-q", "-F", "-m", "0", fs->image_};
    if (mkfs.empty()) return absl::InvalidArgumentError(Cat("unknown fs type ", fs_type));
    SBL_RETURN_IF_ERROR(RunChecked(mkfs, {std::chrono::seconds(60)}).status());
    SBL_RETURN_IF_ERROR(RunChecked({"mount", "-o", "loop", fs->image_, fs->mount_point_},
                                   {std::chrono::seconds(60)})
                            .status());
    fs->mounted_ = true;
    return fs;
  }

  ~ScratchFs() {
    if (mounted_) (void)RunCommand({"umount", mount_point_}, {std::chrono::seconds(60)});
    ::unlink(image_.c_str());
    ::rmdir(mount_point_.c_str());
  }

  const std::string& path() const { return mount_point_; }

  // Flushes this filesystem only (block accounting of delayed allocations settles).
  void Sync() const {
    UniqueFd fd(::open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.valid()) ::syncfs(fd.get());
  }

  // Bytes in use on the filesystem.
  uint64_t UsedBytes() const {
    struct statvfs sv;
    if (::statvfs(mount_point_.c_str(), &sv) != 0) return 0;
    return (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
  }

 private:
  ScratchFs() = default;
  std::string image_;
  std::string mount_point_;
  bool mounted_ = false;
};

// Writes a sparse image of `size` bytes with `data_bytes` of pseudo-random data spread over
// extents of 1 MiB (every other MiB from the start, then holes). Returns false on failure.
inline bool WriteSparseImage(const std::string& path, uint64_t size, uint64_t data_bytes,
                             uint32_t seed = 1) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return false;
  constexpr uint64_t kMiB = 1 << 20;
  std::string chunk(kMiB, '\0');
  uint32_t x = seed * 2654435761u + 1;
  uint64_t written = 0;
  for (uint64_t off = 0; written < data_bytes && off < size; off += 2 * kMiB) {
    uint64_t n = std::min<uint64_t>({kMiB, data_bytes - written, size - off});
    for (uint64_t i = 0; i < n; i += 4) {
      x = x * 1664525u + 1013904223u;
      std::memcpy(&chunk[i], &x, std::min<uint64_t>(4, n - i));
    }
    if (::pwrite(fd.get(), chunk.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      return false;
    }
    written += n;
  }
  return ::fsync(fd.get()) == 0;
}

inline uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

inline uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

inline bool WriteAt(const std::string& path, uint64_t off, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  return fd.valid() && ::pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(off)) ==
                           static_cast<ssize_t>(data.size());
}

// Whether two files have the same size and bytes (streamed; images can be large).
inline bool SameContent(const std::string& a, const std::string& b) {
  UniqueFd fa(::open(a.c_str(), O_RDONLY | O_CLOEXEC)), fb(::open(b.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fa.valid() || !fb.valid() || FileSize(a) != FileSize(b)) return false;
  std::string ba(1 << 20, '\0'), bb(1 << 20, '\0');
  for (;;) {
    ssize_t na = ::read(fa.get(), ba.data(), ba.size());
    ssize_t nb = ::read(fb.get(), bb.data(), bb.size());
    if (na != nb || na < 0) return false;
    if (na == 0) return true;
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) return false;
  }
}

}  // namespace sandboxlet::testing
