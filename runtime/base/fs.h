// File-system primitives with durability: every write that must survive a crash goes through
// WriteFileAtomic (temp file, fsync, rename, fsync of the directory). Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to `path` so that after a crash the file holds either its old content or the
// new one, never a mix: writes "<path>.tmp-<random>", fsyncs it, renames it over `path` and
// fsyncs the parent directory.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data, int mode = 0644);

// fsync of a file or a directory by path.
absl::Status FsyncPath(const std::string& path);
// fsync of the directory that holds `path`.
absl::Status FsyncParent(const std::string& path);

// mkdir -p with `mode` for the directories it creates.
absl::Status MakeDirs(const std::string& path, int mode = 0755);

// rm -rf that does not follow symlinks and does not cross into other mounts. A missing path is OK.
absl::Status RemoveAll(const std::string& path);

bool PathExists(const std::string& path);

// Parent directory of a path ("/a/b" → "/a").
std::string Dirname(const std::string& path);

}  // namespace sandboxlet
