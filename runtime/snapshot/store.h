// SnapshotStore: the node's snapshots, one directory per snapshot under `<state>/snapshots`:
// CH's `config.json`, `state.json`, `memory-ranges` (CONTRACT §5), the rootfs as `rootfs.ext4`
// or the CoW diff `rootfs.cow`, and `rootfs.meta` (meta.h) — the Go predecessor's layout
// (seeds/snapshot-local-go.txt).
//
// A snapshot is written into a private temporary directory (`Begin`) and put in place by
// `PendingSnapshot::Commit` with fsyncs and an atomic rename (or an atomic exchange when it
// replaces an earlier snapshot of the same id). So whatever moment the node crashes at,
// `<base>/<id>` is either absent, the complete previous snapshot or the complete new one; a failed
// or incomplete snapshot never replaces a good one. Leftover temporary and trash directories
// from a crash are removed by `RecoverAtStartup`.
//
// Thread-safety: SnapshotStore is thread-safe. Every step that changes what is visible under the
// base directory is a single rename syscall, so concurrent operations on different ids need no
// coordination, and on the same id the last Commit/Remove wins with a complete result. An
// internal mutex guards only the set of temporary directories owned by live PendingSnapshots, so
// RecoverAtStartup never deletes one in use; long fsyncs and deletions run outside it.
// PendingSnapshot is a move-only value, not thread-safe, and must not outlive its store. Use one
// SnapshotStore per base directory per process: RecoverAtStartup only knows its own store's
// in-flight temporary directories.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/snapshot/meta.h"

namespace sandboxlet {

// File names inside a snapshot directory.
inline constexpr char kSnapshotConfigFile[] = "config.json";          // CH, CONTRACT §5
inline constexpr char kSnapshotStateFile[] = "state.json";            // CH, CONTRACT §5
inline constexpr char kSnapshotMemoryRangesFile[] = "memory-ranges";  // CH, CONTRACT §5
inline constexpr char kSnapshotRootfsFile[] = "rootfs.ext4";          // full rootfs copy
inline constexpr char kSnapshotCowFile[] = "rootfs.cow";              // rootfs CoW diff
inline constexpr char kSnapshotMetaFile[] = "rootfs.meta";            // RootfsMeta JSON

struct SnapshotStoreOptions {
  // `<state>/snapshots`; created (mode 0700) by Open if missing.
  std::string base_dir;
  // Test seam for crash consistency. Commit and Remove call it with the name of each step just
  // before doing it; returning false stops the operation there, as a crash would: nothing is
  // cleaned up and the call returns Aborted. Steps of Commit: "fsync-files", "fsync-tmpdir",
  // "rename" (new id) or "exchange" (replacing), "fsync-base", "remove-old" (replacing only).
  // Steps of Remove: "rename-to-trash", "fsync-base", "remove-trash".
  std::function<bool(std::string_view step)> crash_point;
};

class SnapshotStore;

// A snapshot being written. CH's vm.snapshot writes into dir() (CONTRACT §5: an existing, empty
// directory); the caller adds rootfs.ext4 or rootfs.cow and WriteMeta, then Commit. Destroying
// it without a successful Commit removes the temporary directory (Abort).
class PendingSnapshot {
 public:
  PendingSnapshot(PendingSnapshot&& other) noexcept;
  PendingSnapshot& operator=(PendingSnapshot&& other) noexcept;
  PendingSnapshot(const PendingSnapshot&) = delete;
  PendingSnapshot& operator=(const PendingSnapshot&) = delete;
  ~PendingSnapshot();

  const std::string& id() const { return id_; }
  // The temporary directory, `<base>/.tmp-<id>-<random>`; `file://` + dir() is CH's
  // destination_url.
  const std::string& dir() const { return dir_; }
  // dir() + "/" + file, e.g. FilePath(kSnapshotCowFile) for the volume layer.
  std::string FilePath(std::string_view file) const;

  // Writes rootfs.meta into the pending directory.
  absl::Status WriteMeta(const RootfsMeta& meta);

  // Checks that config.json, state.json, memory-ranges, rootfs.meta and rootfs.ext4 or
  // rootfs.cow are present (FailedPrecondition naming the missing ones otherwise; the pending
  // directory is kept so the caller can add them or Abort), fsyncs every file and the directory,
  // then atomically makes it `<base>/<id>`, replacing (and then deleting) any previous snapshot
  // of that id. After success the PendingSnapshot is spent.
  absl::Status Commit();

  // Removes the temporary directory. Idempotent; a spent PendingSnapshot is left alone.
  absl::Status Abort();

 private:
  friend class SnapshotStore;
  PendingSnapshot(SnapshotStore* store, std::string id, std::string tmp_name, std::string dir)
      : store_(store), id_(std::move(id)), tmp_name_(std::move(tmp_name)), dir_(std::move(dir)) {}

  SnapshotStore* store_ = nullptr;  // null once committed, aborted, crashed or moved from
  std::string id_;
  std::string tmp_name_;  // name of dir() inside the base directory
  std::string dir_;
};

class SnapshotStore {
 public:
  // Creates the base directory if needed. Does not clean up after a crash: call
  // RecoverAtStartup once before use.
  static absl::StatusOr<std::unique_ptr<SnapshotStore>> Open(SnapshotStoreOptions options);

  const std::string& base_dir() const { return options_.base_dir; }

  // Checks a snapshot id: a single path component (ValidatePathComponent) that does not start
  // with '.', so it never names the store's own temporary or trash directories.
  static absl::Status ValidateId(std::string_view id);

  // Paths inside the snapshot directory of `id` (which need not exist). Invalid ids are refused.
  absl::StatusOr<std::string> Path(std::string_view id) const;
  absl::StatusOr<std::string> ConfigPath(std::string_view id) const;
  absl::StatusOr<std::string> StatePath(std::string_view id) const;
  absl::StatusOr<std::string> MemoryRangesPath(std::string_view id) const;
  absl::StatusOr<std::string> RootfsPath(std::string_view id) const;
  absl::StatusOr<std::string> CowPath(std::string_view id) const;
  absl::StatusOr<std::string> MetaPath(std::string_view id) const;

  // Creates a fresh, empty temporary directory (mode 0700) in the base directory to write a
  // snapshot of `id` into.
  absl::StatusOr<PendingSnapshot> Begin(std::string_view id);

  // Whether a complete snapshot of `id` is visible.
  absl::StatusOr<bool> Exists(std::string_view id) const;
  // Ids of the complete snapshots, sorted. Incomplete directories (e.g. hand-made) are skipped.
  absl::StatusOr<std::vector<std::string>> List() const;
  absl::StatusOr<RootfsMeta> ReadMeta(std::string_view id) const;
  // Allocated bytes of the snapshot directory (DirSize).
  absl::StatusOr<int64_t> Size(std::string_view id) const;

  // Makes the snapshot invisible in one rename (to `.trash-<id>-<random>`), fsyncs the base
  // directory, then deletes it. Removing an absent snapshot is OK.
  absl::Status Remove(std::string_view id);

  // Deletes `.tmp-*` and `.trash-*` directories left by a crash (those of live PendingSnapshots
  // are kept) and returns how many were removed.
  absl::StatusOr<int> RecoverAtStartup();

  // Prepares `staging_dir` (created if missing) for CH's vm.restore of snapshot `id` without
  // copying it: state.json and memory-ranges are hard links (a reflink or sparse copy when a link
  // is impossible, e.g. another file system), and config.json is written fresh with every string
  // value equal to a key of `path_rewrites` replaced by the mapped value (CONTRACT §5: disk,
  // serial, vsock paths of the new sandbox). Without an effective rewrite config.json is
  // byte-identical to the snapshot's. Returns the restore source_url, "file://<staging_dir>".
  absl::StatusOr<std::string> StageRestore(
      std::string_view id, const std::string& staging_dir,
      const std::map<std::string, std::string>& path_rewrites) const;

 private:
  friend class PendingSnapshot;
  explicit SnapshotStore(SnapshotStoreOptions options) : options_(std::move(options)) {}

  // Returns Aborted if the crash_point hook stops the operation before `step`.
  absl::Status Step(std::string_view op, std::string_view id, std::string_view step) const;
  absl::Status CommitPending(PendingSnapshot& pending);
  void ForgetPending(const std::string& tmp_name);

  const SnapshotStoreOptions options_;
  mutable std::mutex mu_;
  std::set<std::string> live_tmp_;  // guarded by mu_: temp dir names owned by PendingSnapshots
};

}  // namespace sandboxlet
