// Disk usage of a directory tree by allocated blocks, the number the snapshot-size metric and
// SandboxSnapshot.status.sizeBytes report. Sparse files (CH's memory-ranges, CoW diffs) count only
// the blocks they really use (CONTRACT §5). Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace sandboxlet {

// Sum of st_blocks*512 over `path` and everything under it, equal to `du -sB1 path`:
// directories' own blocks count; symlinks are not followed (their own blocks count); an inode
// with several hard links inside the tree counts once per call; entries on another file system
// (mount points under `path`) are skipped entirely, like `du -x`. Entries that vanish during the
// walk are skipped. `path` itself may be a regular file. Open directories along the current
// branch hold one descriptor each, so the depth is bounded by RLIMIT_NOFILE.
absl::StatusOr<int64_t> DirSize(const std::string& path);

}  // namespace sandboxlet
