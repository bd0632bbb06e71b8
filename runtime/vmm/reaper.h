// Reaper: the single place where a VMM's exit is collected. A VMM can be waited for from two
// places at once — the ExitWatcher thread (crash detection) and VmmProcess::WaitExit/Stop — and a
// child must be reaped exactly once. Both go through the same Reaper: it holds the process's
// pidfd, runs waitid(P_PIDFD) under its mutex at most once successfully, and caches the result
// for every later caller. Because it waits through a pidfd, it can never reap an unrelated
// process that reused the pid.
//
// For an adopted VMM (not our child) there is nothing to reap: the exit is observed as the pidfd
// becoming readable and its status is unknown.
//
// Thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/base/fd.h"

namespace sandboxlet::vmm {

// pidfd_open(2) and pidfd_send_signal(2) through syscall(2): Debian 12's <sys/pidfd.h> lacks C
// linkage for C++. Both return -1 with errno set on failure; the pidfd is O_CLOEXEC.
int PidfdOpen(pid_t pid);
int PidfdSendSignal(int pidfd, int sig);

// How a VMM process ended.
struct VmmExit {
  std::string key;  // "namespace/name" of the sandbox (filled in by whoever reports it)
  pid_t pid = 0;
  bool status_known = false;  // true only for our own children (reaped with waitid)
  int exit_code = -1;         // exit status if it exited normally, else -1
  int signal = 0;             // the signal that killed it, else 0
  std::chrono::system_clock::time_point when;  // when the exit was observed
};

// "exit code 1", "signal 9 (Killed)", "exited (status unknown)".
std::string DescribeExit(const VmmExit& exit);

class Reaper {
 public:
  // Takes ownership of `pidfd`, the pidfd of process `pid`. `is_child` says whether this
  // process is our own child (then Collect reaps it).
  Reaper(UniqueFd pidfd, pid_t pid, bool is_child);
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  // The exit if the process has ended (reaping it if it is our child), else nullopt.
  // Never blocks. After the first exit is collected, every call returns that same exit.
  std::optional<VmmExit> Collect();

  int pidfd() const { return pidfd_.get(); }
  pid_t pid() const { return pid_; }
  bool is_child() const { return is_child_; }

 private:
  const UniqueFd pidfd_;
  const pid_t pid_;
  const bool is_child_;
  std::mutex mu_;
  std::optional<VmmExit> exit_;  // guarded by mu_
};

}  // namespace sandboxlet::vmm
