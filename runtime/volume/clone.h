// Copying disk images without copying more than needed: reflink (FICLONE) where the filesystem
// shares extents (XFS with reflink=1, btrfs), else a sparse copy that keeps holes as holes
// (SEEK_DATA/SEEK_HOLE + copy_file_range), and a zero-skipping copy for block devices, which have
// no hole information. Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

enum class CloneMethod { kReflink, kSparseCopy };
const char* CloneMethodName(CloneMethod method);

struct CloneOptions {
  bool allow_reflink = true;  // false forces the sparse copy (benchmarks, tests)
  bool fsync = true;          // fsync dst before returning, so a later rename publishes data
  int mode = 0644;
};

// Creates dst (which must not exist) with src's content and size. On any failure dst is removed,
// so a full disk never leaves a partial file. Errors name src, dst and the step (e.g.
// "clone /a to /b: copy at offset 1048576: No space left on device", code ResourceExhausted).
absl::StatusOr<CloneMethod> CloneFile(const std::string& src, const std::string& dst,
                                      const CloneOptions& options = {});

// Copies src_fd's data extents into dst_fd (already sized or not) and sets dst's size to `size`.
// `what` prefixes errors.
absl::Status SparseCopyFd(int src_fd, int dst_fd, uint64_t size, const std::string& what);

// Reads `size` bytes of src_fd (e.g. a dm device) and writes only the 4 KiB blocks that are not
// all zeros, so dst is sparse; sets dst's size to `size`.
absl::Status CopySkippingZeros(int src_fd, int dst_fd, uint64_t size, const std::string& what);

// Renames tmp to dst unless dst exists (AlreadyExists then; tmp is left for the caller), then
// fsyncs dst's directory.
absl::Status PublishNoReplace(const std::string& tmp, const std::string& dst);

// Moves src to dst (which must not exist): a rename on the same filesystem, else CloneFile then
// unlink of src.
absl::Status MoveFile(const std::string& src, const std::string& dst);

}  // namespace sandboxlet
