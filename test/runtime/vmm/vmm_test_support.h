// Shared helpers for the vmm tests: a unique temporary directory, process inspection, and a
// recorder for ExitWatcher callbacks.
// Not thread-safe.
#pragma once

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/vmm/exit_watcher.h"

namespace sandboxlet::vmm::testing {

inline std::string MakeTempDir() {
  char tmpl[] = "/tmp/sbl-vmm-XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir ? std::string(dir) : std::string();
}

inline ino_t InodeOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

// True if one of our children is a zombie (exited and never reaped).
inline bool HaveZombieChild() {
  siginfo_t info = {};
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;  // no children
  return info.si_pid != 0;
}

// Collects ExitWatcher callbacks and lets a test wait for them with a deadline.
class ExitRecorder {
 public:
  void Record(const VmmExit& exit) {
    std::lock_guard<std::mutex> lock(mu_);
    exits_.push_back(exit);
    cv_.notify_all();
  }
  // Waits until `n` exits were reported (10 s at most) and returns them.
  std::vector<VmmExit> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return exits_.size() >= n; });
    return exits_;
  }
  std::vector<VmmExit> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return exits_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<VmmExit> exits_;
};

}  // namespace sandboxlet::vmm::testing
