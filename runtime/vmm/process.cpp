#include "runtime/vmm/process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"
#include "runtime/vmm/cgroup.h"

namespace sandboxlet::vmm {

namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr const char* kMinimalPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// After SIGKILL a process exits as soon as it leaves the kernel; longer means it is stuck in an
// uninterruptible sleep and there is nothing more we can do.
constexpr milliseconds kKillWait{10000};
constexpr milliseconds kMaxShutdownCall{2000};
constexpr milliseconds kMaxPingCall{1000};
constexpr milliseconds kReadyPollInterval{10};
constexpr size_t kStderrTailBytes = 4096;
constexpr size_t kStderrTailLines = 12;
// Removing a VMM's cgroups right after it exited: the kernel may count it for a moment longer.
constexpr milliseconds kCgroupRemovePatience{1000};
constexpr const char* kCgroupProcsName = "cgroup.procs";

std::string Prefix(const std::string& key) { return Cat("vmm ", key); }

std::string JoinPath(const std::string& dir, std::string_view name) {
  if (!dir.empty() && dir.back() == '/') return Cat(dir, name);
  return Cat(dir, "/", name);
}

std::string WallTimeRfc3339(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  struct tm tm;
  ::gmtime_r(&secs, &tm);
  char buf[32];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

int MillisUntil(Steady::time_point deadline) {
  auto left = std::chrono::ceil<milliseconds>(deadline - Steady::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Waits until the process has exited (reaping it if it is our child) or `deadline` passes.
bool WaitGone(Reaper& reaper, Steady::time_point deadline) {
  while (true) {
    if (reaper.Collect()) return true;
    int left = MillisUntil(deadline);
    if (left == 0) return false;
    struct pollfd pfd = {reaper.pidfd(), POLLIN, 0};
    ::poll(&pfd, 1, left);
  }
}

// The last lines of the VMM's stderr, joined with " | ": CH prints its error chain there.
std::string StderrTail(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return "";
  std::string_view s = *text;
  if (s.size() > kStderrTailBytes) s.remove_prefix(s.size() - kStderrTailBytes);
  std::vector<std::string> lines;
  for (const auto& line : Split(s, '\n')) {
    std::string_view t = Trim(line);
    if (!t.empty()) lines.emplace_back(t);
  }
  if (lines.size() > kStderrTailLines) {
    lines.erase(lines.begin(), lines.end() - static_cast<long>(kStderrTailLines));
  }
  return Join(lines, " | ");
}

// Moves an fd to number >= 3 so that the child's dup2 onto 0..2 can never clobber it.
absl::StatusOr<UniqueFd> AboveStdio(UniqueFd fd, std::string_view what) {
  if (fd.get() >= 3) return fd;
  int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return ErrnoStatus(errno, what);
  return UniqueFd(moved);
}

absl::StatusOr<UniqueFd> OpenCloexec(const std::string& path, int flags, int mode,
                                     std::string_view what) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus(errno, Cat(what, " ", path));
  return AboveStdio(UniqueFd(fd), what);
}

// Everything the child needs, computed before fork: between fork and exec the child may only
// make async-signal-safe calls, so it touches nothing but these prepared C strings and fds.
struct ChildPlan {
  struct Bind {
    std::vector<std::string> parents;  // directories to create, outermost first
    std::string source;
    std::string target;
    bool is_dir = false;
    int stage_create = 0;
    int stage_mount = 0;
  };
  std::vector<std::string> stages;  // what failed, by index, for the error report
  int AddStage(std::string what) {
    stages.push_back(std::move(what));
    return static_cast<int>(stages.size() - 1);
  }

  std::vector<std::string> argv_store, env_store;
  std::vector<char*> argv, envp;
  std::vector<Bind> binds;
  std::vector<int> cgroup_fds;    // open cgroup.procs files to write "0" (= the writer) to
  std::vector<int> stage_cgroup;  // by index of cgroup_fds
  int netns_fd = -1, stdin_fd = -1, stderr_fd = -1, report_fd = -1;
  int stage_setsid = 0, stage_setns = 0, stage_unshare = 0, stage_rprivate = 0, stage_stdio = 0,
      stage_chdir = 0, stage_fds = 0, stage_exec = 0;
};

// What the child writes to the report pipe when a step fails.
struct ChildFailure {
  int err;
  int stage;
};

[[noreturn]] void ChildFail(const ChildPlan& plan, int stage) {
  ChildFailure f{errno, stage};
  ssize_t r;
  do {
    r = ::write(plan.report_fd, &f, sizeof(f));
  } while (r < 0 && errno == EINTR);
  ::_exit(127);
}

// Runs in the forked child. Async-signal-safe calls only.
[[noreturn]] void RunChild(const ChildPlan& plan) {
  // Leave sandboxlet's cgroups before anything else: whatever kills them (systemd stopping the
  // unit, the container runtime stopping the pod) must not reach the VMM. "0" is the writer.
  for (size_t i = 0; i < plan.cgroup_fds.size(); ++i) {
    ssize_t w;
    do {
      w = ::write(plan.cgroup_fds[i], "0", 1);
    } while (w < 0 && errno == EINTR);
    if (w != 1) ChildFail(plan, plan.stage_cgroup[i]);
  }
  // Signal dispositions set to SIG_IGN survive exec; give the VMM the defaults, then unblock
  // (the parent blocked everything around fork so no parent handler runs in this child).
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  if (::setsid() < 0) ChildFail(plan, plan.stage_setsid);
  if (plan.netns_fd >= 0 && ::setns(plan.netns_fd, CLONE_NEWNET) != 0) {
    ChildFail(plan, plan.stage_setns);
  }
  if (::unshare(CLONE_NEWNS) != 0) ChildFail(plan, plan.stage_unshare);
  // Without this, our bind mounts would propagate back to the host's (shared) mount tree.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    ChildFail(plan, plan.stage_rprivate);
  }
  for (const auto& b : plan.binds) {
    for (const auto& dir : b.parents) {
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) ChildFail(plan, b.stage_create);
    }
    if (b.is_dir) {
      if (::mkdir(b.target.c_str(), 0755) != 0 && errno != EEXIST) {
        ChildFail(plan, b.stage_create);
      }
    } else {
      int fd = ::open(b.target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) ChildFail(plan, b.stage_create);
      ::close(fd);
    }
    if (::mount(b.source.c_str(), b.target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      ChildFail(plan, b.stage_mount);
    }
  }
  if (::dup2(plan.stdin_fd, 0) < 0 || ::dup2(plan.stderr_fd, 1) < 0 ||
      ::dup2(plan.stderr_fd, 2) < 0) {
    ChildFail(plan, plan.stage_stdio);
  }
  if (::chdir("/") != 0) ChildFail(plan, plan.stage_chdir);
  // Every inherited fd above stdio closes at exec; the report pipe stays usable until then.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) ChildFail(plan, plan.stage_fds);
  ::execve(plan.argv[0], plan.argv.data(), plan.envp.data());
  ChildFail(plan, plan.stage_exec);
}

absl::Status ValidateSpec(const VmmSpec& spec) {
  std::string p = Prefix(spec.key);
  if (spec.key.empty()) return absl::InvalidArgumentError("vmm: spec has no key");
  if (spec.vmm_bin.empty()) return absl::InvalidArgumentError(Cat(p, ": no VMM binary given"));
  if (spec.vm_dir.empty() || spec.vm_dir[0] != '/') {
    return absl::InvalidArgumentError(Cat(p, ": vm dir \"", spec.vm_dir, "\" is not absolute"));
  }
  // CH parses "path=<p>,opt=..." option strings (CONTRACT §2).
  if (spec.vm_dir.find_first_of(",=") != std::string::npos) {
    return absl::InvalidArgumentError(
        Cat(p, ": vm dir ", spec.vm_dir, " contains ',' or '=', which CH cannot parse"));
  }
  if (VmmProcess::ApiSocketPath(spec.vm_dir).size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(Cat(p, ": API socket path ",
                                          VmmProcess::ApiSocketPath(spec.vm_dir),
                                          " is longer than a unix socket path may be"));
  }
  if (!spec.netns.empty()) {
    SBL_RETURN_IF_ERROR(Annotate(ValidatePathComponent(spec.netns, "netns"), p));
  }
  if (spec.verbosity < 0 || spec.verbosity > 3) {
    return absl::InvalidArgumentError(
        Cat(p, ": verbosity ", spec.verbosity, " is outside 0..3 (CONTRACT §2)"));
  }
  for (const auto& b : spec.binds) {
    if (b.source.empty() || b.source[0] != '/' || b.target.empty() || b.target[0] != '/' ||
        b.target == "/") {
      return absl::InvalidArgumentError(Cat(p, ": bind mount \"", b.source, "\" on \"", b.target,
                                            "\": source and target must be absolute paths"));
    }
  }
  for (const auto& e : spec.env) {
    if (e.find('=') == std::string::npos || e[0] == '=') {
      return absl::InvalidArgumentError(Cat(p, ": environment entry \"", e, "\" is not KEY=value"));
    }
  }
  for (const auto& c : spec.cgroup_procs) {
    if (c.empty() || c[0] != '/' || !EndsWith(c, Cat("/", kCgroupProcsName))) {
      return absl::InvalidArgumentError(
          Cat(p, ": cgroup \"", c, "\" is not an absolute path to a ", kCgroupProcsName, " file"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> ParentDirs(const std::string& path) {
  std::vector<std::string> out;
  for (size_t i = 1; i < path.size(); ++i) {
    if (path[i] == '/') out.push_back(path.substr(0, i));
  }
  return out;
}

absl::Status RemoveIfExists(const std::string& path, std::string_view what) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, Cat("remove ", what, " ", path));
  }
  return absl::OkStatus();
}

bool IsSocket(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// Opens the process a record names and proves it is the same process (pid reuse check).
absl::StatusOr<std::shared_ptr<Reaper>> OpenRecorded(const VmmRecord& rec) {
  std::string p = Prefix(rec.key);
  int fd = PidfdOpen(rec.pid);
  if (fd < 0) {
    if (errno == ESRCH) return absl::NotFoundError(Cat(p, ": gone: no process with pid ", rec.pid));
    return ErrnoStatus(errno, Cat(p, ": pidfd_open ", rec.pid));
  }
  UniqueFd pidfd(fd);
  // Read the start time after pidfd_open: if it still matches, the pidfd is the recorded process.
  auto stat = ReadProcStat(rec.pid);
  if (!stat.ok()) {
    if (absl::IsNotFound(stat.status())) {
      return absl::NotFoundError(Cat(p, ": gone: no process with pid ", rec.pid));
    }
    return Annotate(stat.status(), p);
  }
  if (stat->start_time != rec.start_time) {
    return absl::NotFoundError(Cat(p, ": gone: pid ", rec.pid,
                                   " now belongs to another process (start time ", stat->start_time,
                                   ", recorded ", rec.start_time, ")"));
  }
  auto reaper = std::make_shared<Reaper>(std::move(pidfd), rec.pid, stat->ppid == ::getpid());
  // A zombie has exited; if it is our child, Collect reaps it here.
  if (stat->state == 'Z' || reaper->Collect()) {
    reaper->Collect();
    return absl::NotFoundError(Cat(p, ": gone: pid ", rec.pid, " has exited"));
  }
  return reaper;
}

}  // namespace

std::string_view ExitKindName(ExitKind kind) {
  switch (kind) {
    case ExitKind::kGraceful:
      return "graceful";
    case ExitKind::kTerminated:
      return "terminated";
    case ExitKind::kKilled:
      return "killed";
    case ExitKind::kAlreadyGone:
      return "already_gone";
  }
  return "unknown";
}

absl::StatusOr<ProcStat> ParseProcStat(std::string_view text) {
  // "pid (comm) state ppid ... starttime(22) ...": comm may hold spaces and ')', so split after
  // the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string_view::npos) {
    return absl::InvalidArgumentError("/proc stat: no command name in parentheses");
  }
  std::vector<std::string_view> fields;  // fields[0] is field 3 (state)
  std::string_view rest = text.substr(close + 1);
  size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n')) ++i;
    size_t start = i;
    while (i < rest.size() && rest[i] != ' ' && rest[i] != '\n') ++i;
    if (i > start) fields.push_back(rest.substr(start, i - start));
  }
  if (fields.size() < 20) {
    return absl::InvalidArgumentError(Cat("/proc stat: only ", fields.size() + 2, " fields"));
  }
  ProcStat out;
  if (fields[0].size() != 1) return absl::InvalidArgumentError("/proc stat: bad state field");
  out.state = fields[0][0];
  auto parse = [](std::string_view s, auto& v) {
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
  };
  if (!parse(fields[1], out.ppid)) return absl::InvalidArgumentError("/proc stat: bad ppid");
  if (!parse(fields[19], out.start_time)) {
    return absl::InvalidArgumentError("/proc stat: bad start time");
  }
  return out;
}

absl::StatusOr<ProcStat> ReadProcStat(pid_t pid) {
  std::string path = Cat("/proc/", pid, "/stat");
  auto text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return absl::NotFoundError(Cat(path, ": no such process"));
    return text.status();
  }
  auto stat = ParseProcStat(*text);
  if (!stat.ok()) return Annotate(stat.status(), path);
  return stat;
}

std::string VmmProcess::ApiSocketPath(const std::string& vm_dir) {
  return JoinPath(vm_dir, kApiSocketName);
}

VmmProcess::VmmProcess(std::string vm_dir, VmmRecord record, std::shared_ptr<Reaper> reaper)
    : vm_dir_(std::move(vm_dir)), record_(std::move(record)), reaper_(std::move(reaper)) {}

absl::StatusOr<VmmRecord> VmmProcess::ReadRecord(const std::string& vm_dir) {
  std::string path = JoinPath(vm_dir, kRecordName);
  auto text = ReadFile(path);
  if (!text.ok()) return Annotate(text.status(), Cat("vmm record ", path));
  auto corrupt = [&](std::string_view why) {
    return absl::DataLossError(Cat("vmm record ", path, ": corrupt: ", why));
  };
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt("not valid JSON");
  if (!j.is_object()) return corrupt("not a JSON object");
  VmmRecord rec;
  try {
    if (!j.contains("pid") || !j["pid"].is_number_integer()) return corrupt("no integer \"pid\"");
    int64_t pid = j["pid"].get<int64_t>();
    if (pid <= 1 || pid > (int64_t{1} << 22)) return corrupt(Cat("pid ", pid, " out of range"));
    rec.pid = static_cast<pid_t>(pid);
    if (!j.contains("start_time") || !j["start_time"].is_number_unsigned()) {
      return corrupt("no unsigned integer \"start_time\"");
    }
    rec.start_time = j["start_time"].get<uint64_t>();
    auto str = [&](const char* name, std::string& out, bool required) -> bool {
      if (!j.contains(name)) return !required;
      if (!j[name].is_string()) return false;
      out = j[name].get<std::string>();
      return !required || !out.empty();
    };
    if (!str("api_socket", rec.api_socket, true)) return corrupt("no \"api_socket\"");
    if (!str("key", rec.key, true)) return corrupt("no \"key\"");
    if (!str("vmm_bin", rec.vmm_bin, false)) return corrupt("\"vmm_bin\" is not a string");
    if (!str("netns", rec.netns, false)) return corrupt("\"netns\" is not a string");
    if (!str("spawned_at", rec.spawned_at, false)) {
      return corrupt("\"spawned_at\" is not a string");
    }
    if (j.contains("cgroups")) {
      const auto& cg = j["cgroups"];
      if (!cg.is_array()) return corrupt("\"cgroups\" is not an array");
      for (const auto& dir : cg) {
        if (!dir.is_string() || dir.get<std::string>().empty() ||
            dir.get<std::string>()[0] != '/') {
          return corrupt("\"cgroups\" holds something other than absolute paths");
        }
        rec.cgroups.push_back(dir.get<std::string>());
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return corrupt(e.what());
  }
  return rec;
}

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::Spawn(const VmmSpec& spec,
                                                              VmmApiProbe& probe,
                                                              milliseconds ready_timeout) {
  SBL_RETURN_IF_ERROR(ValidateSpec(spec));
  const std::string p = Prefix(spec.key);
  const std::string socket = ApiSocketPath(spec.vm_dir);
  const std::string stderr_path = JoinPath(spec.vm_dir, kStderrName);
  const std::string record_path = JoinPath(spec.vm_dir, kRecordName);

  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(spec.vm_dir, 0700), p));
  // Never start a second VMM over a live one (a restart must not duplicate a running VM).
  if (PathExists(record_path)) {
    auto old = ReadRecord(spec.vm_dir);
    if (old.ok()) {
      auto live = OpenRecorded(*old);
      if (live.ok()) {
        return absl::FailedPreconditionError(Cat(p, ": a VMM (pid ", old->pid, ") recorded in ",
                                                 record_path,
                                                 " is still running; adopt or stop it first"));
      }
    } else {
      log::Warn("replacing unreadable vmm record",
                {{"sandbox", spec.key}, {"error", std::string(old.status().message())}});
    }
  }
  // CH up to v52 fails with EADDRINUSE on an existing socket path (CONTRACT §2).
  SBL_RETURN_IF_ERROR(Annotate(RemoveIfExists(socket, "stale API socket"), p));

  ChildPlan plan;
  plan.argv_store = {spec.vmm_bin,
                     "--api-socket",
                     Cat("path=", socket),
                     "--log-file",
                     JoinPath(spec.vm_dir, kLogName),
                     "--event-monitor",
                     Cat("path=", JoinPath(spec.vm_dir, kEventsName))};
  for (int i = 0; i < spec.verbosity; ++i) plan.argv_store.push_back("-v");
  plan.argv_store.push_back("--seccomp");
  plan.argv_store.push_back(spec.seccomp ? "true" : "false");
  for (const auto& a : spec.extra_args) plan.argv_store.push_back(a);
  for (auto& a : plan.argv_store) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);

  plan.env_store.push_back(kMinimalPath);
  for (const auto& e : spec.env) {
    std::string_view name = std::string_view(e).substr(0, e.find('=') + 1);
    std::erase_if(plan.env_store, [&](const std::string& have) { return StartsWith(have, name); });
    plan.env_store.push_back(e);
  }
  for (auto& e : plan.env_store) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);

  const std::string netns_path = spec.netns.empty() ? "" : Cat("/run/netns/", spec.netns);
  plan.stage_setsid = plan.AddStage("setsid");
  plan.stage_setns = plan.AddStage(Cat("setns ", netns_path));
  plan.stage_unshare = plan.AddStage("unshare mount namespace");
  plan.stage_rprivate = plan.AddStage("make / rprivate");
  plan.stage_stdio = plan.AddStage("redirect stdio");
  plan.stage_chdir = plan.AddStage("chdir /");
  plan.stage_fds = plan.AddStage("close inherited fds");
  plan.stage_exec = plan.AddStage(Cat("exec ", spec.vmm_bin));
  for (const auto& b : spec.binds) {
    struct stat st;
    if (::stat(b.source.c_str(), &st) != 0) {
      return Annotate(ErrnoStatus(errno, Cat("bind mount source ", b.source)), p);
    }
    ChildPlan::Bind bind;
    bind.source = b.source;
    bind.target = b.target;
    while (bind.target.size() > 1 && bind.target.back() == '/') bind.target.pop_back();
    bind.parents = ParentDirs(bind.target);
    bind.is_dir = S_ISDIR(st.st_mode);
    bind.stage_create = plan.AddStage(Cat("create bind target ", bind.target));
    bind.stage_mount = plan.AddStage(Cat("bind mount ", b.source, " on ", bind.target));
    plan.binds.push_back(std::move(bind));
  }
  std::vector<UniqueFd> cgroup_fds;
  std::vector<std::string> cgroup_dirs;
  for (const auto& procs : spec.cgroup_procs) {
    auto fd = OpenCloexec(procs, O_WRONLY, 0, "join cgroup");
    if (!fd.ok()) return Annotate(fd.status(), p);
    plan.cgroup_fds.push_back(fd->get());
    plan.stage_cgroup.push_back(plan.AddStage(Cat("join cgroup ", procs)));
    cgroup_fds.push_back(std::move(*fd));
    cgroup_dirs.push_back(Dirname(procs));
  }

  UniqueFd netns_fd;
  if (!spec.netns.empty()) {
    auto fd = OpenCloexec(netns_path, O_RDONLY, 0, "setns");
    if (!fd.ok()) return Annotate(fd.status(), p);
    netns_fd = std::move(*fd);
  }
  SBL_ASSIGN_OR_RETURN(UniqueFd stdin_fd, OpenCloexec("/dev/null", O_RDONLY, 0, Cat(p, ": open")));
  SBL_ASSIGN_OR_RETURN(
      UniqueFd stderr_fd,
      OpenCloexec(stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600, Cat(p, ": open")));
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return ErrnoStatus(errno, Cat(p, ": pipe"));
  UniqueFd report_r(report[0]);
  SBL_ASSIGN_OR_RETURN(UniqueFd report_w, AboveStdio(UniqueFd(report[1]), Cat(p, ": pipe")));
  plan.netns_fd = netns_fd.get();
  plan.stdin_fd = stdin_fd.get();
  plan.stderr_fd = stderr_fd.get();
  plan.report_fd = report_w.get();

  // Block every signal across fork so that no handler of ours runs in the child before it has
  // reset the dispositions.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::fork();
  if (pid == 0) RunChild(plan);
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return ErrnoStatus(fork_errno, Cat(p, ": fork"));
  report_w.Reset();
  cgroup_fds.clear();
  netns_fd.Reset();
  stdin_fd.Reset();
  stderr_fd.Reset();

  // The child is ours and unreaped, so its pid cannot be reused before pidfd_open.
  int raw_pidfd = PidfdOpen(pid);
  if (raw_pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return ErrnoStatus(err, Cat(p, ": pidfd_open ", pid));
  }
  auto reaper = std::make_shared<Reaper>(UniqueFd(raw_pidfd), pid, /*is_child=*/true);

  // Unwind: kill and reap the child, drop the record and the socket it may have created.
  auto fail = [&](absl::Status status) {
    PidfdSendSignal(reaper->pidfd(), SIGKILL);
    if (!WaitGone(*reaper, Steady::now() + kKillWait)) {
      log::Error("vmm did not exit after SIGKILL", {{"sandbox", spec.key}, {"pid", pid}});
    }
    for (const std::string& path : {record_path, socket}) (void)RemoveIfExists(path, "file");
    if (absl::Status st = RemoveCgroupDirs(cgroup_dirs, kCgroupRemovePatience); !st.ok()) {
      log::Warn("vmm cgroup cleanup", {{"sandbox", spec.key}, {"error", st.message()}});
    }
    return status;
  };

  // The report pipe closes at exec (CLOEXEC) or carries the failed step.
  ChildFailure failure{};
  size_t got = 0;
  while (got < sizeof(failure)) {
    ssize_t n =
        ::read(report_r.get(), reinterpret_cast<char*>(&failure) + got, sizeof(failure) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == sizeof(failure)) {
    std::string stage = failure.stage >= 0 && failure.stage < static_cast<int>(plan.stages.size())
                            ? plan.stages[static_cast<size_t>(failure.stage)]
                            : "start";
    return fail(ErrnoStatus(failure.err, Cat(p, ": ", stage)));
  }

  // Record the VMM before waiting for it: from here on a sandboxlet crash must leave a trace
  // of the process, or it would run on unknown to anyone.
  VmmRecord rec;
  rec.pid = pid;
  rec.api_socket = socket;
  rec.vmm_bin = spec.vmm_bin;
  rec.netns = spec.netns;
  rec.key = spec.key;
  rec.spawned_at = WallTimeRfc3339(std::chrono::system_clock::now());
  rec.cgroups = cgroup_dirs;
  auto stat = ReadProcStat(pid);
  if (!stat.ok()) return fail(Annotate(stat.status(), p));
  rec.start_time = stat->start_time;
  nlohmann::json j = {{"pid", rec.pid},
                      {"start_time", rec.start_time},
                      {"api_socket", rec.api_socket},
                      {"vmm_bin", rec.vmm_bin},
                      {"netns", rec.netns},
                      {"key", rec.key},
                      {"spawned_at", rec.spawned_at}};
  if (!rec.cgroups.empty()) j["cgroups"] = rec.cgroups;
  absl::Status written = WriteFileAtomic(record_path, j.dump(2) + "\n", 0600);
  if (!written.ok()) return fail(Annotate(written, Cat(p, ": write record")));

  // Ready: the socket file exists (the HTTP thread starts first, CONTRACT §2) and ping answers.
  const auto deadline = Steady::now() + ready_timeout;
  std::string last_error = Cat("API socket ", socket, " not created");
  while (true) {
    if (auto exit = reaper->Collect()) {
      std::string tail = StderrTail(stderr_path);
      return fail(absl::FailedPreconditionError(
          Cat(p, ": exited (", DescribeExit(*exit), ") before its API was ready",
              tail.empty() ? std::string() : Cat(": ", tail))));
    }
    int left = MillisUntil(deadline);
    if (left > 0 && IsSocket(socket)) {
      absl::Status ping = probe.Ping(std::min(milliseconds(left), kMaxPingCall));
      if (ping.ok()) break;
      last_error = Cat("vmm.ping: ", ping.message());
      left = MillisUntil(deadline);
    }
    if (left == 0) {
      std::string tail = StderrTail(stderr_path);
      return fail(absl::DeadlineExceededError(
          Cat(p, ": API not ready within ", ready_timeout.count(), "ms: ", last_error,
              tail.empty() ? std::string() : Cat("; stderr: ", tail))));
    }
    // Wakes at once if the VMM exits.
    struct pollfd pfd = {reaper->pidfd(), POLLIN, 0};
    ::poll(&pfd, 1, std::min(left, static_cast<int>(kReadyPollInterval.count())));
  }
  log::Info("vmm started", {{"sandbox", spec.key},
                            {"pid", pid},
                            {"api_socket", socket},
                            {"netns", spec.netns.empty() ? "-" : spec.netns}});
  return std::unique_ptr<VmmProcess>(new VmmProcess(spec.vm_dir, std::move(rec), reaper));
}

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::Attach(const std::string& vm_dir) {
  SBL_ASSIGN_OR_RETURN(VmmRecord rec, ReadRecord(vm_dir));
  SBL_ASSIGN_OR_RETURN(std::shared_ptr<Reaper> reaper, OpenRecorded(rec));
  return std::unique_ptr<VmmProcess>(new VmmProcess(vm_dir, std::move(rec), std::move(reaper)));
}

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::Adopt(const std::string& vm_dir,
                                                              VmmApiProbe& probe,
                                                              milliseconds timeout) {
  SBL_ASSIGN_OR_RETURN(std::unique_ptr<VmmProcess> proc, Attach(vm_dir));
  absl::Status ping = probe.Ping(timeout);
  if (!ping.ok()) {
    return absl::FailedPreconditionError(Cat(Prefix(proc->key()), ": pid ", proc->pid(),
                                             " is alive but its API ", proc->api_socket(),
                                             " does not answer: ", ping.message()));
  }
  log::Info("vmm adopted",
            {{"sandbox", proc->key()}, {"pid", proc->pid()}, {"child", proc->is_child()}});
  return proc;
}

absl::Status VmmProcess::Signal(int sig) {
  if (PidfdSendSignal(reaper_->pidfd(), sig) != 0) {
    return ErrnoStatus(errno, Cat(Prefix(record_.key), ": signal ", sig, " to pid ", record_.pid));
  }
  return absl::OkStatus();
}

bool VmmProcess::WaitUntil(Steady::time_point deadline) { return WaitGone(*reaper_, deadline); }

absl::StatusOr<VmmExit> VmmProcess::WaitExit(Steady::time_point deadline) {
  if (!WaitUntil(deadline)) {
    return absl::DeadlineExceededError(
        Cat(Prefix(record_.key), ": pid ", record_.pid, " still running"));
  }
  VmmExit exit = *reaper_->Collect();
  exit.key = record_.key;
  return exit;
}

void VmmProcess::RemoveRecordAndSocket() {
  // Only while the record is still ours: a later VMM in the same vm_dir owns record and socket.
  auto current = ReadRecord(vm_dir_);
  if (current.ok() && (current->pid != record_.pid || current->start_time != record_.start_time)) {
    return;
  }
  for (const auto& [path, what] : {std::pair{JoinPath(vm_dir_, kRecordName), "record"},
                                   std::pair{record_.api_socket, "API socket"}}) {
    absl::Status st = RemoveIfExists(path, what);
    if (!st.ok()) log::Warn("vmm cleanup", {{"sandbox", record_.key}, {"error", st.ToString()}});
  }
  if (absl::Status st = RemoveCgroupDirs(record_.cgroups, kCgroupRemovePatience); !st.ok()) {
    log::Warn("vmm cgroup cleanup", {{"sandbox", record_.key}, {"error", st.message()}});
  }
}

absl::StatusOr<ExitKind> VmmProcess::Stop(VmmApiProbe& probe, milliseconds grace) {
  const std::string p = Prefix(record_.key);
  auto finish = [&](ExitKind kind) {
    RemoveRecordAndSocket();
    log::Info("vmm stopped",
              {{"sandbox", record_.key}, {"pid", record_.pid}, {"how", ExitKindName(kind)}});
    return kind;
  };
  if (reaper_->Collect()) return finish(ExitKind::kAlreadyGone);

  absl::Status shutdown = probe.ShutdownVmm(std::min(grace, kMaxShutdownCall));
  if (shutdown.ok() && WaitUntil(Steady::now() + grace)) return finish(ExitKind::kGraceful);
  if (!shutdown.ok()) {
    log::Warn("vmm.shutdown failed; sending SIGTERM",
              {{"sandbox", record_.key}, {"error", std::string(shutdown.message())}});
  }
  // Exited on its own while the shutdown call failed: nothing we did ended it.
  if (reaper_->Collect()) return finish(ExitKind::kAlreadyGone);

  // CONTRACT §2: SIGTERM shuts the VM down and exits 0.
  if (Signal(SIGTERM).ok() && WaitUntil(Steady::now() + grace)) {
    return finish(ExitKind::kTerminated);
  }
  if (reaper_->Collect()) return finish(ExitKind::kTerminated);
  log::Warn("vmm ignored SIGTERM; sending SIGKILL",
            {{"sandbox", record_.key}, {"pid", record_.pid}});
  (void)Signal(SIGKILL);
  if (WaitUntil(Steady::now() + kKillWait)) return finish(ExitKind::kKilled);
  return absl::InternalError(
      Cat(p, ": pid ", record_.pid, " still running ", kKillWait.count(), "ms after SIGKILL"));
}

}  // namespace sandboxlet::vmm
