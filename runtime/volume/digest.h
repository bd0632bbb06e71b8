// Base image digests: the identity a snapshot's CoW diff is bound to (recorded in rootfs.meta and
// checked on restore). Digest = "sha256:<hex>" of the image's size followed by, for every 4 KiB
// block that is not all zeros, its offset and its bytes. That names content rather than layout (a
// copy with different holes digests the same) and skips holes without reading them.
//
// Hashing a large image takes seconds, so BaseDigests caches results in a JSON file keyed by the
// image's path and (dev, inode, size, mtime_ns, ctime_ns): any replacement or in-place change of
// the image changes the key, so a stale digest is never served.
//
// Thread-safety: BaseDigests is thread-safe; hashing runs outside its lock.
#pragma once

#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace sandboxlet {

// Hashes the image at path (no cache).
absl::StatusOr<std::string> ComputeBaseDigest(const std::string& path);

class BaseDigests {
 public:
  // cache_path: the JSON cache file (created on first store; a corrupt one is ignored).
  explicit BaseDigests(std::string cache_path) : cache_path_(std::move(cache_path)) {}

  // The digest of the image at path, from the cache when its key matches.
  absl::StatusOr<std::string> Of(const std::string& path);

 private:
  void LoadLocked();

  const std::string cache_path_;
  std::mutex mu_;
  bool loaded_ = false;   // guarded by mu_
  nlohmann::json cache_;  // guarded by mu_: {path: {dev, ino, size, mtime_ns, ctime_ns, digest}}
};

}  // namespace sandboxlet
