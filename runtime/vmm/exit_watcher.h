// ExitWatcher: crash detection for VMM processes. One thread waits with epoll on the pidfds of
// every watched VMM and reports each exit through a callback within milliseconds (DESIGN.md,
// Invariants: "never assume a child exists").
//
// Our own children are reaped by the Reaper they share with their VmmProcess, so a child is
// reaped exactly once whether the watcher or VmmProcess::Stop/WaitExit sees the exit first, and
// both see the same status. An adopted VMM's exit is reported with status_known = false.
//
// Each Watch reports at most one exit, after which the key is no longer watched.
//
// Thread-safe. The callback runs on the watcher thread, never under the watcher's lock: it may
// call Watch/Unwatch. Unwatch called from another thread waits for a callback already running
// for that key to return, so after Unwatch no callback for it is running or will run (so do not
// call Unwatch while holding a lock that the callback takes).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/fd.h"
#include "runtime/vmm/process.h"
#include "runtime/vmm/reaper.h"

namespace sandboxlet::vmm {

class ExitWatcher {
 public:
  using Callback = std::function<void(const VmmExit&)>;

  // Starts the watcher thread. Fails only if the kernel refuses epoll or eventfd.
  static absl::StatusOr<std::unique_ptr<ExitWatcher>> Start(Callback on_exit);
  // Stops the thread; pending exits are not reported.
  ~ExitWatcher();
  ExitWatcher(const ExitWatcher&) = delete;
  ExitWatcher& operator=(const ExitWatcher&) = delete;

  // Watches `process` under `key` (sharing its Reaper). AlreadyExists if `key` is watched.
  absl::Status Watch(const std::string& key, const VmmProcess& process);
  // Watches a process given by its pidfd (the watcher keeps its own duplicate). For
  // `is_child`, the watcher reaps it: the caller must not wait for that child itself.
  absl::Status Watch(const std::string& key, int pidfd, pid_t pid, bool is_child);
  // Stops watching `key`; a no-op if it is not watched (or its exit was already reported).
  void Unwatch(const std::string& key);

  size_t watched() const;

 private:
  struct Entry {
    std::string key;
    UniqueFd pidfd;  // the watcher's own duplicate, registered with epoll
    std::shared_ptr<Reaper> reaper;
  };

  ExitWatcher(Callback on_exit, UniqueFd epoll, UniqueFd wake);
  absl::Status Add(const std::string& key, int pidfd, std::shared_ptr<Reaper> reaper);
  void Run();

  const Callback on_exit_;
  const UniqueFd epoll_;
  const UniqueFd wake_;  // eventfd: wakes epoll_wait for shutdown
  mutable std::mutex mu_;
  std::condition_variable delivered_;
  std::map<uint64_t, Entry> entries_;       // guarded by mu_; by epoll id
  std::map<std::string, uint64_t> by_key_;  // guarded by mu_
  uint64_t next_id_ = 1;                    // guarded by mu_; 0 is the eventfd
  std::optional<std::string> delivering_;   // guarded by mu_; key whose callback is running
  bool stopping_ = false;                   // guarded by mu_
  std::thread thread_;
};

}  // namespace sandboxlet::vmm
