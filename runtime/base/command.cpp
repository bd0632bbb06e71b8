#include "runtime/base/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/strings.h"

extern char** environ;

namespace sandboxlet {

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::vector<std::string> parts;
  for (const auto& a : argv) {
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`*?") == std::string::npos;
    parts.push_back(plain ? a : Cat("'", a, "'"));
  }
  return Join(parts, " ");
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("run: empty command");
  int in_pipe[2], out_pipe[2], err_pipe[2], exec_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd exec_r(exec_pipe[0]), exec_w(exec_pipe[1]);

  // Build argv/envp before fork: the child may only call async-signal-safe functions.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    bool replaced = false;
    for (const auto& o : options.env) {
      auto eq = o.find('=');
      if (eq != std::string::npos &&
          kv.substr(0, eq + 1) == std::string_view(o).substr(0, eq + 1)) {
        replaced = true;
      }
    }
    if (!replaced) env_store.emplace_back(kv);
  }
  for (const auto& o : options.env) env_store.push_back(o);
  std::vector<char*> cenv;
  for (auto& e : env_store) cenv.push_back(e.data());
  cenv.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(errno, Cat("fork for ", argv[0]));
  if (pid == 0) {
    ::dup2(in_r.get(), 0);
    ::dup2(out_w.get(), 1);
    ::dup2(err_w.get(), 2);
    // Nothing else of ours leaks into the program: without this it would inherit every fd the
    // caller did not mark close-on-exec (and a program that select()s aborts past FD_SETSIZE).
    // The exec-failure pipe moves to fd 3 (close-on-exec) and everything above it is closed.
    if (exec_w.get() != 3) ::dup2(exec_w.get(), 3);
    ::fcntl(3, F_SETFD, FD_CLOEXEC);
    ::syscall(SYS_close_range, 4U, ~0U, 0U);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(cargv[0], cargv.data(), cenv.data());
    int err = errno;
    (void)!::write(3, &err, sizeof(err));
    ::_exit(127);
  }
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();
  exec_w.Reset();

  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(exec_r.get(), &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  if (n == sizeof(exec_errno)) {
    ::waitpid(pid, nullptr, 0);
    return ErrnoStatus(exec_errno, Cat("run ", argv[0]));
  }

  // Feed stdin and drain stdout/stderr with poll until both close or the deadline passes.
  ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  std::string_view to_write = options.stdin_data;
  if (to_write.empty()) in_w.Reset();
  CommandResult result;
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  bool timed_out = false;
  while (out_r.valid() || err_r.valid()) {
    struct pollfd fds[3];
    int nfds = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_r.valid()) {
      fds[nfds] = {out_r.get(), POLLIN, 0};
      out_i = nfds++;
    }
    if (err_r.valid()) {
      fds[nfds] = {err_r.get(), POLLIN, 0};
      err_i = nfds++;
    }
    if (in_w.valid()) {
      fds[nfds] = {in_w.get(), POLLOUT, 0};
      in_i = nfds++;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int r = ::poll(fds, nfds, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char buf[16384];
    auto drain = [&](int idx, UniqueFd& fd, std::string& sink) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      ssize_t got = ::read(fd.get(), buf, sizeof(buf));
      if (got > 0)
        sink.append(buf, static_cast<size_t>(got));
      else if (got == 0 || errno != EINTR)
        fd.Reset();
    };
    drain(out_i, out_r, result.out);
    drain(err_i, err_r, result.err);
    if (in_i >= 0 && (fds[in_i].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = ::write(in_w.get(), to_write.data(), to_write.size());
      if (w > 0) to_write.remove_prefix(static_cast<size_t>(w));
      if (w < 0 && errno != EAGAIN && errno != EINTR) to_write = {};
      if (to_write.empty()) in_w.Reset();
    }
  }
  in_w.Reset();
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(
        Cat(ShellJoin(argv), ": still running after ", options.timeout.count(), " ms, killed"));
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  return result;
}

absl::StatusOr<CommandResult> RunChecked(const std::vector<std::string>& argv,
                                         const CommandOptions& options) {
  absl::StatusOr<CommandResult> r = RunCommand(argv, options);
  if (!r.ok()) return r.status();
  if (!r->ok()) {
    std::string why =
        r->term_signal ? Cat("killed by signal ", r->term_signal) : Cat("exit ", r->exit_code);
    std::string err = r->err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return absl::InternalError(Cat(ShellJoin(argv), ": ", why, err.empty() ? "" : ": ", err));
  }
  return r;
}

}  // namespace sandboxlet
