// Daemon benchmark: runs the built `sandboxlet` daemon with the CH simulator as its VMM on a
// temporary state directory (own network prefix, CIDR and cgroup parent) and measures, for N
// sandboxes applied in one multi-document manifest through `sandboxlet ctl apply -f`:
//   1. sandboxes/s until all are Running, and p50/p99 of apply→Running per sandbox: from the
//      object's first (ADDED) event on a gRPC Watch to its first Running event, and from
//      creationTimestamp (whole seconds) to that event and to status.startedAt;
//   2. the daemon's RSS with N Running (VMMs excluded) and its CPU while idle;
//   3. a SIGTERM + restart with N running VMMs: time to /readyz 200 and to all Running, checking
//      that no VMM was restarted (same pids, restartCount unchanged);
// then deletes everything and checks that no VMM process and no netns of the prefix is left.
// Prints targets next to measurements; never asserts. Single-threaded except the watch reader.
//
// Usage: daemon_bench [--n=1000] [--idle-seconds=60] [--workers=4]   (needs root)
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "sandboxlet/v1alpha1/sandbox.grpc.pb.h"

extern char** environ;

namespace sandboxlet {
namespace {

using Steady = std::chrono::steady_clock;
using Wall = std::chrono::system_clock;
using v1alpha1::SandboxStatus;

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

Wall::time_point FromProto(const google::protobuf::Timestamp& t) {
  return Wall::time_point(std::chrono::duration_cast<Wall::duration>(
      std::chrono::seconds(t.seconds()) + std::chrono::nanoseconds(t.nanos())));
}

std::string RandomSuffix(int n) {
  static std::mt19937 rng(std::random_device{}());
  const char* chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (int i = 0; i < n; ++i) s += chars[rng() % 36];
  return s;
}

// Nearest-rank percentile of `v` (sorted in place); 0 when empty.
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::vector<std::string> Cmdline(int pid) {
  absl::StatusOr<std::string> raw = ReadFile(Cat("/proc/", pid, "/cmdline"));
  std::vector<std::string> args;
  if (!raw.ok()) return args;
  std::string cur;
  for (char c : *raw) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return args;
}

bool Alive(int pid) {
  absl::StatusOr<std::string> stat = ReadFile(Cat("/proc/", pid, "/stat"));
  if (!stat.ok()) return false;
  size_t close = stat->rfind(')');
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] != 'Z';
}

// Pids of live ch-sim processes whose API socket lies under `dir`.
std::set<int> VmmPids(const std::string& dir) {
  std::set<int> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::vector<std::string> args = Cmdline(pid);
    if (args.empty() || args[0].find("ch-sim") == std::string::npos) continue;
    for (const std::string& a : args) {
      if (a.find(dir) != std::string::npos && Alive(pid)) {
        out.insert(pid);
        break;
      }
    }
  }
  ::closedir(d);
  return out;
}

// VmRSS of `pid` in KiB; -1 when unreadable.
long RssKiB(int pid) {
  absl::StatusOr<std::string> status = ReadFile(Cat("/proc/", pid, "/status"));
  if (!status.ok()) return -1;
  size_t at = status->find("VmRSS:");
  return at == std::string::npos ? -1 : std::atol(status->c_str() + at + 6);
}

// utime+stime of `pid` (all its threads) in clock ticks; -1 when unreadable.
long CpuTicks(int pid) {
  absl::StatusOr<std::string> stat = ReadFile(Cat("/proc/", pid, "/stat"));
  if (!stat.ok()) return -1;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> f = Split(stat->substr(close + 2), ' ');
  // After "pid (comm) ", field 3 (state) is f[0]; utime is field 14 and stime field 15.
  if (f.size() < 13) return -1;
  return std::atol(f[11].c_str()) + std::atol(f[12].c_str());
}

// HTTP status of GET http://127.0.0.1:<port><path>; 0 when nothing answers.
int HttpStatus(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{.tv_sec = 2, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int code = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::string req = Cat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[64] = {};
      ssize_t n = ::read(fd, buf, sizeof buf - 1);
      if (n > 12 && StartsWith(buf, "HTTP/")) code = std::atoi(buf + 9);
    }
  }
  ::close(fd);
  return code;
}

class Bench {
 public:
  Bench(int n, int idle_seconds, int workers)
      : n_(n), idle_seconds_(idle_seconds), workers_(workers) {}

  ~Bench() { Cleanup(); }

  bool Setup() {
    char tmpl[] = "/tmp/sbl-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return Fail("mkdtemp failed");
    dir_ = tmpl;
    state_ = dir_ + "/state";
    socket_ = dir_ + "/run/sandboxlet.sock";
    prefix_ = "b" + RandomSuffix(5);
    std::mt19937 rng(std::random_device{}());
    cidr_ = Cat("10.", 64 + rng() % 128, ".0.0/16");
    if (!MakeDirs(state_ + "/templates/base").ok() || !MakeDirs(state_ + "/kernel").ok()) {
      return Fail("cannot create " + state_);
    }
    // Any file serves the simulator as a raw disk; the kernel is a stand-in it never boots.
    if (!WriteFileAtomic(state_ + "/templates/base/rootfs.ext4", std::string(1 << 20, '\0')).ok() ||
        !WriteFileAtomic(state_ + "/kernel/vmlinux", "not a kernel\n").ok()) {
      return Fail("cannot write the template");
    }
    // Many VMMs and sockets: let the daemon (and its children) use the hard file limit.
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
      lim.rlim_cur = lim.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &lim);
    }
    return true;
  }

  bool StartDaemon() {
    log_offset_ = 0;
    if (absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log"); log.ok()) {
      log_offset_ = log->size();
    }
    std::vector<std::string> args = {SANDBOXLET_BIN,
                                     "run",
                                     "--state-dir=" + state_,
                                     "--run-dir=" + dir_ + "/run",
                                     "--vmm-bin=" CHSIM_BIN,
                                     "--api-listen=",
                                     "--metrics-listen=127.0.0.1:0",
                                     "--network-prefix=" + prefix_,
                                     "--vmm-cgroup-parent=sandboxlet-" + prefix_,
                                     "--network-cidr=" + cidr_,
                                     Cat("--workers=", workers_)};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    std::string log = dir_ + "/daemon.log";
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return Fail(Cat("spawn ", SANDBOXLET_BIN, ": ", std::strerror(rc)));
    daemon_pid_ = pid;
    return true;
  }

  // Waits until the daemon answers List on its socket.
  bool WaitSocket(std::chrono::seconds timeout) {
    auto deadline = Steady::now() + timeout;
    while (Steady::now() < deadline) {
      if (PathExists(socket_)) {
        stub_ = v1alpha1::SandboxService::NewStub(
            grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
        grpc::ClientContext ctx;
        ctx.set_deadline(Wall::now() + std::chrono::seconds(5));
        v1alpha1::ListRequest request;
        request.set_kind("Sandbox");
        v1alpha1::ListResponse response;
        if (stub_->List(&ctx, request, &response).ok()) return true;
      }
      if (::waitpid(daemon_pid_, nullptr, WNOHANG) != 0) {
        daemon_pid_ = -1;
        return Fail("the daemon exited at startup; see " + dir_ + "/daemon.log");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return Fail("the daemon's socket did not answer in time");
  }

  // The port of the metrics listener from the "metrics serving" line of the current run's log.
  int MetricsPort() {
    absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log");
    if (!log.ok() || log->size() < log_offset_) return -1;
    size_t at = log->find("msg=\"metrics serving\"", log_offset_);
    if (at == std::string::npos) return -1;
    size_t port = log->find(" port=", at);
    return port == std::string::npos ? -1 : std::atoi(log->c_str() + port + 6);
  }

  std::vector<v1alpha1::Sandbox> Sandboxes(std::string* version = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Wall::now() + std::chrono::seconds(30));
    v1alpha1::ListRequest request;
    request.set_kind("Sandbox");
    v1alpha1::ListResponse response;
    std::vector<v1alpha1::Sandbox> out;
    grpc::Status s = stub_->List(&ctx, request, &response);
    if (!s.ok()) {
      std::cerr << "List: " << s.error_message() << "\n";
      return out;
    }
    if (version != nullptr) *version = response.resource_version();
    for (const auto& o : response.items()) out.push_back(o.sandbox());
    return out;
  }

  // Phase 1: apply N sandboxes in one manifest and time them to Running.
  bool ApplyAll() {
    std::string manifest;
    for (int i = 0; i < n_; ++i) {
      manifest += Cat(i ? "---\n" : "", "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\n",
                      "metadata:\n  name: sbx-", i,
                      "\nspec:\n  template: base\n  vcpus: 1\n  memoryMiB: 64\n");
    }
    manifest_ = dir_ + "/sandboxes.yaml";
    if (!WriteFileAtomic(manifest_, manifest).ok()) return Fail("cannot write the manifest");

    // Watch from the current store version so that no event after it can be missed.
    std::string version;
    Sandboxes(&version);
    grpc::ClientContext watch_ctx;
    v1alpha1::WatchRequest watch_req;
    watch_req.set_kind("Sandbox");
    watch_req.set_resource_version(version);
    std::unique_ptr<grpc::ClientReader<v1alpha1::WatchEvent>> reader =
        stub_->Watch(&watch_ctx, watch_req);
    std::mutex mu;
    std::map<std::string, Wall::time_point> first_seen;     // guarded by mu
    std::map<std::string, Wall::time_point> first_running;  // guarded by mu
    std::string watch_error;                                // guarded by mu
    Steady::time_point last_running{};                      // guarded by mu
    std::thread watcher([&] {
      v1alpha1::WatchEvent ev;
      while (reader->Read(&ev)) {
        if (ev.type() == v1alpha1::WatchEvent::ERROR) {
          std::lock_guard<std::mutex> lock(mu);
          watch_error = ev.message();
          break;
        }
        const v1alpha1::Sandbox& s = ev.object().sandbox();
        std::lock_guard<std::mutex> lock(mu);
        first_seen.emplace(s.metadata().name(), Wall::now());
        if (s.status().phase() != SandboxStatus::Running) continue;
        if (first_running.emplace(s.metadata().name(), Wall::now()).second) {
          last_running = Steady::now();
        }
      }
    });

    Steady::time_point t0 = Steady::now();
    absl::StatusOr<CommandResult> applied =
        RunCommand({SANDBOXLET_BIN, "ctl", "apply", "-f", manifest_, "--socket=" + socket_},
                   {.timeout = std::chrono::seconds(600)});
    Steady::time_point t_applied = Steady::now();
    bool ok = applied.ok() && applied->exit_code == 0;
    if (!ok) {
      std::cerr << "ctl apply failed: "
                << (applied.ok() ? applied->err : applied.status().ToString()) << "\n";
    }
    // Wait (on the watch) until every sandbox was seen Running, or the deadline.
    auto deadline = Steady::now() + std::chrono::seconds(120 + n_ / 5);
    size_t seen = 0;
    while (ok && Steady::now() < deadline) {
      if (!DaemonAlive()) break;
      {
        std::lock_guard<std::mutex> lock(mu);
        seen = first_running.size();
        if (seen >= static_cast<size_t>(n_) || !watch_error.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    watch_ctx.TryCancel();
    watcher.join();
    (void)reader->Finish();

    std::vector<v1alpha1::Sandbox> all = Sandboxes();
    // creationTimestamp and startedAt carry whole seconds, so the latency from them overstates by
    // up to 1 s; the first watch event of each object (its ADDED) is the precise start.
    std::vector<double> observed, from_added, started;
    for (const auto& s : all) {
      Wall::time_point created = FromProto(s.metadata().creation_timestamp());
      auto it = first_running.find(s.metadata().name());
      if (it != first_running.end()) {
        observed.push_back(std::chrono::duration<double>(it->second - created).count());
        auto added = first_seen.find(s.metadata().name());
        if (added != first_seen.end()) {
          from_added.push_back(std::chrono::duration<double>(it->second - added->second).count());
        }
      }
      if (s.status().has_started_at()) {
        started.push_back(
            std::chrono::duration<double>(FromProto(s.status().started_at()) - created).count());
      }
    }
    double total = Seconds((seen > 0 ? last_running : Steady::now()) - t0);
    std::printf("\n== 1. apply %d sandboxes in one manifest (ctl apply -f) ==\n", n_);
    if (!watch_error.empty()) std::printf("watch ended early: %s\n", watch_error.c_str());
    std::printf("ctl apply returned after            %8.3f s\n", Seconds(t_applied - t0));
    std::printf("all Running (watch) after           %8.3f s  (%zu/%d seen Running)\n", total, seen,
                n_);
    Row("throughput until all Running", ">= 100 /s", n_ / total, " /s",
        seen == static_cast<size_t>(n_) && n_ / total >= 100);
    double a50 = Percentile(from_added, 50), a99 = Percentile(from_added, 99);
    Row("ADDED->Running p50 (watch)", "", a50, " s", true);
    Row("ADDED->Running p99 (watch)", "<= 2 s", a99, " s", !from_added.empty() && a99 <= 2.0);
    Row("ADDED->Running max (watch)", "", from_added.empty() ? 0 : from_added.back(), " s", true);
    double p50 = Percentile(observed, 50), p99 = Percentile(observed, 99);
    Row("creationTimestamp->Running p50", "", p50, " s", true);
    Row("creationTimestamp->Running p99", "<= 2 s", p99, " s", !observed.empty() && p99 <= 2.0);
    double s50 = Percentile(started, 50), s99 = Percentile(started, 99);
    Row("creationTimestamp->startedAt p50", "", s50, " s", true);
    Row("creationTimestamp->startedAt p99", "", s99, " s", true);
    return ok && seen == static_cast<size_t>(n_);
  }

  // Phase 2: RSS with N running and CPU over the idle window.
  void Footprint() {
    std::printf("\n== 2. daemon footprint with %d Running ==\n", n_);
    long rss = RssKiB(daemon_pid_);
    Row("daemon VmRSS (VMMs excluded)", "<= 100 MiB", rss / 1024.0, " MiB",
        rss >= 0 && rss <= 100 * 1024);
    size_t fds = 0;
    if (DIR* d = ::opendir(Cat("/proc/", daemon_pid_, "/fd").c_str()); d != nullptr) {
      while (dirent* e = ::readdir(d)) fds += e->d_name[0] != '.' ? 1 : 0;
      ::closedir(d);
    }
    std::printf("daemon open fds                      %zu (%.2f per sandbox)\n", fds,
                static_cast<double>(fds) / n_);
    long ticks0 = CpuTicks(daemon_pid_);
    Steady::time_point t0 = Steady::now();
    std::this_thread::sleep_for(std::chrono::seconds(idle_seconds_));
    long ticks1 = CpuTicks(daemon_pid_);
    double secs = Seconds(Steady::now() - t0);
    double pct = 100.0 * static_cast<double>(ticks1 - ticks0) /
                 static_cast<double>(::sysconf(_SC_CLK_TCK)) / secs;
    Row(Cat("daemon CPU idle over ", idle_seconds_, " s"), "< 1 % core", pct, " %", pct < 1.0);
    long rss_after = RssKiB(daemon_pid_);
    Row("daemon VmRSS after idle", "<= 100 MiB", rss_after / 1024.0, " MiB",
        rss_after >= 0 && rss_after <= 100 * 1024);
  }

  // Phase 3: SIGTERM, restart, adoption.
  bool Restart() {
    std::printf("\n== 3. restart with %d running VMMs ==\n", n_);
    std::map<std::string, std::pair<int, int>> before;  // name → {vmm pid, restartCount}
    for (const auto& s : Sandboxes()) {
      before[s.metadata().name()] = {s.status().vmm().pid(), s.status().restart_count()};
    }
    std::set<int> vmms_before = VmmPids(dir_);
    Steady::time_point t_term = Steady::now();
    ::kill(daemon_pid_, SIGTERM);
    int status = 0;
    ::waitpid(daemon_pid_, &status, 0);
    daemon_pid_ = -1;
    stub_.reset();
    Steady::time_point t_exited = Steady::now();
    std::printf("daemon exited after SIGTERM in      %8.3f s (exit status %d)\n",
                Seconds(t_exited - t_term), WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    std::set<int> vmms_down = VmmPids(dir_);
    std::printf("VMMs alive while the daemon is down  %zu of %zu\n", vmms_down.size(),
                vmms_before.size());

    Steady::time_point t0 = Steady::now();
    if (!StartDaemon()) return false;
    // /readyz: the metrics port is in the log once the listener is up.
    Steady::time_point t_ready{};
    auto deadline = Steady::now() + std::chrono::seconds(120);
    int port = -1;
    while (Steady::now() < deadline) {
      if (port < 0) port = MetricsPort();
      if (port > 0 && HttpStatus(port, "/readyz") == 200) {
        t_ready = Steady::now();
        break;
      }
      if (::waitpid(daemon_pid_, nullptr, WNOHANG) != 0) {
        daemon_pid_ = -1;
        return Fail("the daemon exited during the restart; see " + dir_ + "/daemon.log");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (t_ready == Steady::time_point{}) return Fail("/readyz never answered 200");
    if (!WaitSocket(std::chrono::seconds(60))) return false;
    // Every Sandbox Running with a VMM pid.
    Steady::time_point t_running{};
    std::vector<v1alpha1::Sandbox> all;
    while (Steady::now() < deadline) {
      all = Sandboxes();
      size_t running = 0;
      for (const auto& s : all) {
        if (s.status().phase() == SandboxStatus::Running && s.status().vmm().pid() > 0) ++running;
      }
      if (all.size() == static_cast<size_t>(n_) && running == all.size()) {
        t_running = Steady::now();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    double ready = Seconds(t_ready - t0);
    Row("start -> /readyz 200 (adopted)", "<= 2 s", ready, " s", ready <= 2.0);
    double running = t_running == Steady::time_point{} ? -1 : Seconds(t_running - t0);
    Row("start -> all Running", "<= 2 s", running, " s", running >= 0 && running <= 2.0);
    size_t same = 0, restarted = 0;
    for (const auto& s : all) {
      auto it = before.find(s.metadata().name());
      if (it == before.end()) continue;
      if (s.status().vmm().pid() == it->second.first) ++same;
      if (s.status().restart_count() != it->second.second) ++restarted;
    }
    std::set<int> vmms_after = VmmPids(dir_);
    std::printf("sandboxes with the same VMM pid      %zu of %d\n", same, n_);
    std::printf("sandboxes whose restartCount grew    %zu\n", restarted);
    std::printf("ch-sim processes before/after        %zu / %zu (identical set: %s)\n",
                vmms_before.size(), vmms_after.size(), vmms_before == vmms_after ? "yes" : "no");
    return true;
  }

  // Deletes everything, stops the daemon, and reports what is left.
  void DeleteAll() {
    std::printf("\n== cleanup ==\n");
    Steady::time_point t0 = Steady::now();
    absl::StatusOr<CommandResult> deleted =
        RunCommand({SANDBOXLET_BIN, "ctl", "delete", "-f", manifest_, "--socket=" + socket_},
                   {.timeout = std::chrono::seconds(600)});
    if (!deleted.ok() || deleted->exit_code != 0) {
      std::cerr << "ctl delete failed: "
                << (deleted.ok() ? deleted->err : deleted.status().ToString()) << "\n";
    }
    auto deadline = Steady::now() + std::chrono::seconds(120 + n_ / 5);
    size_t left = 0;
    while (Steady::now() < deadline && DaemonAlive()) {
      left = Sandboxes().size();
      if (left == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (daemon_pid_ > 0) {
      std::printf("delete %d -> none left               %8.3f s (%zu left)\n", n_,
                  Seconds(Steady::now() - t0), left);
    } else {
      std::printf("the daemon is not running: nothing deleted through it\n");
    }
    if (daemon_pid_ > 0) {
      ::kill(daemon_pid_, SIGTERM);
      ::waitpid(daemon_pid_, nullptr, 0);
      daemon_pid_ = -1;
    }
    std::printf("ch-sim processes left                %zu\n", VmmPids(dir_).size());
    absl::StatusOr<CommandResult> netns = RunCommand({"ip", "netns", "list"});
    size_t ns = 0;
    if (netns.ok()) {
      for (const std::string& line : Split(netns->out, '\n')) {
        if (StartsWith(line, prefix_ + "-")) ++ns;
      }
    }
    std::printf("netns of prefix %s left          %zu\n", prefix_.c_str(), ns);
  }

 private:
  // False (with the daemon's wait status and log tail on stderr) once the daemon has exited.
  bool DaemonAlive() {
    if (daemon_pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(daemon_pid_, &status, WNOHANG) == 0) return true;
    daemon_pid_ = -1;
    std::cerr << "daemon_bench: the daemon died: "
              << (WIFSIGNALED(status) ? Cat("signal ", WTERMSIG(status))
                                      : Cat("exit ", WEXITSTATUS(status)))
              << "\n";
    if (absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log"); log.ok()) {
      std::cerr << "--- daemon log (tail) ---\n"
                << (log->size() > 4000 ? log->substr(log->size() - 4000) : *log) << "\n";
    }
    return false;
  }

  static void Row(const std::string& what, const std::string& target, double value,
                  const std::string& unit, bool met) {
    std::printf("%-36s %-12s %10.3f%-4s %s\n", what.c_str(), target.c_str(), value, unit.c_str(),
                target.empty() ? "" : (met ? "meets" : "MISSES"));
  }

  bool Fail(const std::string& what) {
    std::cerr << "daemon_bench: " << what << "\n";
    return false;
  }

  // Kills whatever is left of the run (daemon, VMMs, network, cgroups) and removes the dir.
  void Cleanup() {
    if (dir_.empty()) return;
    if (daemon_pid_ > 0) {
      ::kill(daemon_pid_, SIGKILL);
      ::waitpid(daemon_pid_, nullptr, 0);
    }
    for (int pid : VmmPids(dir_)) ::kill(pid, SIGKILL);
    const std::string& p = prefix_;
    std::string script =
        Cat("for n in $(ip netns list | awk '{print $1}' | grep '^", p,
            "-'); do ip netns delete $n; done;",
            "for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^", p,
            "v'); do ip link delete $l; done;", "nft delete table ip ", p, " 2>/dev/null;",
            "for d in /sys/fs/cgroup/sandboxlet-", p, " /sys/fs/cgroup/*/sandboxlet-", p, ";",
            " do [ -d $d ] && rmdir $d/* $d 2>/dev/null; done; true");
    (void)RunCommand({"sh", "-c", script}, {.timeout = std::chrono::seconds(600)});
    if (::getenv("DAEMON_BENCH_KEEP") == nullptr) (void)RemoveAll(dir_);
  }

  const int n_, idle_seconds_, workers_;
  std::string dir_, state_, socket_, prefix_, cidr_, manifest_;
  size_t log_offset_ = 0;
  int daemon_pid_ = -1;
  std::unique_ptr<v1alpha1::SandboxService::Stub> stub_;
};

int Main(int argc, char** argv) {
  int n = 1000, idle = 60, workers = 4;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (StartsWith(a, "--n=")) {
      n = std::atoi(a.c_str() + 4);
    } else if (StartsWith(a, "--idle-seconds=")) {
      idle = std::atoi(a.c_str() + 15);
    } else if (StartsWith(a, "--workers=")) {
      workers = std::atoi(a.c_str() + 10);
    } else {
      std::cerr << "usage: daemon_bench [--n=1000] [--idle-seconds=60] [--workers=4]\n";
      return 2;
    }
  }
  if (n <= 0 || idle < 0 || workers <= 0) {
    std::cerr << "daemon_bench: --n and --workers must be positive, --idle-seconds >= 0\n";
    return 2;
  }
  if (::geteuid() != 0) {
    std::cerr << "daemon_bench: needs root (network namespaces, nftables)\n";
    return 2;
  }
  std::printf("daemon_bench: N=%d, idle window %d s, --workers=%d, VMM = CH simulator\n", n, idle,
              workers);
  std::printf("%-36s %-12s %14s\n", "metric", "target", "measured");
  Bench bench(n, idle, workers);
  if (!bench.Setup() || !bench.StartDaemon() || !bench.WaitSocket(std::chrono::seconds(30))) {
    return 1;
  }
  bool converged = bench.ApplyAll();
  if (converged) {
    bench.Footprint();
    bench.Restart();
  } else {
    std::printf("not all sandboxes reached Running; skipping footprint and restart\n");
  }
  bench.DeleteAll();
  return converged ? 0 : 1;
}

}  // namespace
}  // namespace sandboxlet

int main(int argc, char** argv) { return sandboxlet::Main(argc, argv); }
