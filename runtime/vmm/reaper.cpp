#include "runtime/vmm/reaper.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/strings.h"

namespace sandboxlet::vmm {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::string DescribeExit(const VmmExit& exit) {
  if (!exit.status_known) return "exited (status unknown)";
  if (exit.signal != 0) return Cat("signal ", exit.signal, " (", ::strsignal(exit.signal), ")");
  return Cat("exit code ", exit.exit_code);
}

Reaper::Reaper(UniqueFd pidfd, pid_t pid, bool is_child)
    : pidfd_(std::move(pidfd)), pid_(pid), is_child_(is_child) {}

std::optional<VmmExit> Reaper::Collect() {
  std::lock_guard<std::mutex> lock(mu_);
  if (exit_) return exit_;
  VmmExit exit;
  exit.pid = pid_;
  if (is_child_) {
    siginfo_t info;
    std::memset(&info, 0, sizeof(info));
    int r;
    do {
      r = ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && info.si_pid == 0) return std::nullopt;  // still running
    if (r == 0) {
      exit.status_known = true;
      if (info.si_code == CLD_EXITED) {
        exit.exit_code = info.si_status;
      } else {
        exit.signal = info.si_status;
      }
    }
    // r < 0 (ECHILD): someone outside this Reaper reaped it (for example SIGCHLD set to SIG_IGN):
    // the process is gone but its status is lost.
  } else {
    struct pollfd pfd = {pidfd_.get(), POLLIN, 0};
    int r;
    do {
      r = ::poll(&pfd, 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return std::nullopt;
  }
  exit.when = std::chrono::system_clock::now();
  exit_ = exit;
  return exit_;
}

}  // namespace sandboxlet::vmm
