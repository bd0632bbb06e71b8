// ManifestDirectory: the manifests-directory source (like kubelet's static pods). Every
// `*.yaml`, `*.yml` and `*.json` file of one directory is decoded (multi-document) and applied to
// the store, its objects annotated `sandboxlet.dev/manifest: <path of the file>` so that the
// directory knows what it owns:
//  - a file written (IN_CLOSE_WRITE) or moved in (IN_MOVED_TO) is applied again; objects it
//    created earlier and no longer contains are deleted;
//  - a file removed (IN_DELETE) or moved away (IN_MOVED_FROM) deletes the objects it created;
//  - a bad file (unparseable, invalid, rejected by the store) is reported by name — an error log
//    line and a Warning Event — and skipped; its objects stay as last applied and every other
//    file is still applied;
//  - hidden files (editors' `.x.swp`, `.#x`, kubelet ConfigMap `..data` entries) and other names
//    (`x.yaml~`, `4913`) are ignored; a `..data` swap (a ConfigMap update) or an inotify queue
//    overflow triggers a full rescan, and so does a periodic timer, which also retries objects
//    whose apply failed;
//  - at Start, a full scan runs before Start returns, and objects annotated with a file of this
//    directory that no longer exists are deleted.
//
// Thread-safety: Start/Stop from one thread. One watcher thread does all store writes, so files
// are processed one at a time in event order. FileErrors() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "api/validation.h"
#include "controller/store/object_store.h"
#include "runtime/base/fd.h"

namespace sandboxlet::controller {

struct ManifestDirectoryOptions {
  std::string dir;  // absolute path; created if missing
  api::ValidationLimits limits;
  std::string node_name;  // reported as the Events' source host and involved Node
  std::chrono::milliseconds rescan_interval = std::chrono::minutes(1);
  // Called on the watcher thread after each file was processed: OK when its objects were applied
  // (or removed, for a file that is gone), the error otherwise. For tests and metrics.
  std::function<void(const std::string& path, const absl::Status& result)> on_file;
};

class ManifestDirectory {
 public:
  ManifestDirectory(store::ObjectStore* store, ManifestDirectoryOptions options);
  ~ManifestDirectory();
  ManifestDirectory(const ManifestDirectory&) = delete;
  ManifestDirectory& operator=(const ManifestDirectory&) = delete;

  // Creates the directory if needed, starts watching it, applies every file (bad files are
  // reported, not fatal) and starts the watcher thread. Errors only when the directory cannot be
  // created or watched.
  absl::Status Start();
  // Stops the watcher thread. Objects stay in the store. Idempotent.
  void Stop();

  // Files currently skipped because of an error: path → message.
  std::map<std::string, std::string> FileErrors() const;

  // True for the names the directory applies: *.yaml, *.yml, *.json, not hidden.
  static bool IsManifestName(const std::string& name);

 private:
  void Run();
  void Rescan();
  void SyncFile(const std::string& path);
  // Deletes objects annotated with `path` except those in `keep` ("resource/ns/name").
  absl::Status RemoveObjectsOf(const std::string& path, const std::set<std::string>& keep);
  void Report(const std::string& path, const absl::Status& result);
  void PostEvent(const std::string& path, const std::string& message);

  store::ObjectStore* const store_;
  const ManifestDirectoryOptions options_;

  UniqueFd inotify_;
  UniqueFd wake_;  // eventfd that ends Run()
  std::thread thread_;

  mutable std::mutex mu_;
  std::map<std::string, std::string> errors_;  // guarded by mu_
};

}  // namespace sandboxlet::controller
