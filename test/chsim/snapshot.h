// Snapshot files as CH writes and reads them (CONTRACT §5): config.json, state.json and
// memory-ranges in an existing empty directory, each created exclusively with mode 0600.
// Guest RAM is modelled as pages the guest "touched" (a deterministic pattern from a per-VM
// seed); memory-ranges is pre-sized to the RAM size and holds those pages, either sparse (v52+,
// holes elsewhere) or dense (v51-, zeros written everywhere). Restore re-reads the pages and
// rejects a file whose size or content does not match state.json.
// Thread-safe: pure functions over the file system.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "test/chsim/events.h"
#include "test/chsim/version.h"

namespace sandboxlet::chsim {

class GuestMemory {
 public:
  static constexpr uint64_t kPageSize = 4096;
  static constexpr uint64_t kMaxTouchedPages = 256;

  GuestMemory(uint64_t size, uint64_t seed) : size_(size), seed_(seed) {}
  static GuestMemory Fresh(uint64_t size);  // a random seed

  uint64_t size() const { return size_; }
  // Offsets of the pages the guest wrote, spread over the whole range.
  std::vector<uint64_t> TouchedPages() const;
  void FillPage(uint64_t offset, char* page) const;

  Json ToJson() const;  // the memory-manager section of state.json
  static absl::StatusOr<GuestMemory> FromJson(const Json& j);

 private:
  uint64_t size_;
  uint64_t seed_;
};

// "file:///dir" → "/dir"; anything else is an error.
absl::StatusOr<std::string> DirFromUrl(const std::string& url);

struct SnapshotWrite {
  std::string dir;
  Json config;  // already serialized for the version (nulls or not)
  Json state;   // must contain snapshots["memory-manager"] == memory.ToJson()
  GuestMemory memory{0, 0};
  bool sparse = true;
  bool inject_enospc = false;  // write part of memory-ranges, then fail with ENOSPC
};
absl::Status WriteSnapshot(const SnapshotWrite& w);

struct SnapshotRead {
  Json config;
  Json state;
  GuestMemory memory{0, 0};
};
// Reads and validates the three files; state.json must come from `version`.
absl::StatusOr<SnapshotRead> ReadSnapshot(const std::string& dir, const ChVersion& version);

}  // namespace sandboxlet::chsim
