#include "test/chsim/chsim_test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

extern char** environ;

namespace sandboxlet::chsim::testing {
namespace {

using Clock = std::chrono::steady_clock;

int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max<int>(0, static_cast<int>(left.count()));
}

}  // namespace

TempDir::TempDir() {
  char tmpl[] = "/tmp/chsim-test-XXXXXX";
  path_ = ::mkdtemp(tmpl);
}

TempDir::~TempDir() { (void)RemoveAll(path_); }

Json Response::json() const { return Json::parse(body, nullptr, false); }

std::string Req(std::string_view method, std::string_view endpoint,
                std::optional<std::string_view> body, std::string_view extra_headers) {
  std::string out =
      Cat(method, " /api/v1/", endpoint, " HTTP/1.1\r\nHost: localhost\r\n", extra_headers);
  if (body) {
    out += Cat("Content-Type: application/json\r\nContent-Length: ", body->size(), "\r\n\r\n");
    out += *body;
  } else {
    out += "\r\n";
  }
  return out;
}

Conn::Conn(const std::string& socket_path) {
  fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) fd_.Reset();
}

bool Conn::Send(std::string_view data, const std::vector<int>& fds) {
  size_t off = 0;
  while (off < data.size()) {
    iovec iov{const_cast<char*>(data.data() + off), data.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    if (off == 0 && !fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool Conn::Fill(int timeout_ms) {
  if (eof_) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  char buf[65536];
  ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  buf_.append(buf, static_cast<size_t>(n));
  return true;
}

Response Conn::Read(int timeout_ms) {
  Response r;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill(MsLeft(deadline))) return r;
  }
  r.head = buf_.substr(0, end + 4);
  if (r.head.size() >= 12 && StartsWith(r.head, "HTTP/1.1 "))
    r.code = std::atoi(r.head.c_str() + 9);
  size_t len = 0;
  for (const std::string& line : Split(r.head, '\n')) {
    if (StartsWith(line, "Content-Length: ")) {
      len = std::strtoull(line.c_str() + 16, nullptr, 10);
      r.content_length = len;
    }
  }
  while (buf_.size() < end + 4 + len) {
    if (!Fill(MsLeft(deadline))) return r;
  }
  r.body = buf_.substr(end + 4, len);
  buf_.erase(0, end + 4 + len);
  r.ok = true;
  return r;
}

std::string Conn::ReadUntilEof(int timeout_ms, bool* eof) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!eof_ && MsLeft(deadline) > 0) Fill(MsLeft(deadline));
  *eof = eof_;
  return std::exchange(buf_, std::string());
}

bool Conn::Silent(int timeout_ms) {
  pollfd p{fd_.get(), POLLIN, 0};
  return buf_.empty() && ::poll(&p, 1, timeout_ms) == 0;
}

Sim::Sim(const std::string& dir, SimSpec spec) : dir_(dir) {
  sock_ = dir + "/api.sock";
  out_path_ = Cat(dir, "/sim-", ::getpid(), "-", reinterpret_cast<uintptr_t>(this), ".out");
  err_path_ = out_path_ + ".err";
  std::vector<std::string> argv;
  if (!spec.netns.empty()) argv = {"/usr/sbin/ip", "netns", "exec", spec.netns};
  argv.push_back(spec.binary.empty() ? CHSIM_BIN : spec.binary);
  if (spec.api_socket) {
    argv.push_back("--api-socket");
    argv.push_back("path=" + sock_);
  }
  argv.insert(argv.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!StartsWith(*e, "CHSIM_")) env.emplace_back(*e);
  }
  if (spec.version != 0) env.push_back(Cat("CHSIM_VERSION=", spec.version));
  env.insert(env.end(), spec.env.begin(), spec.env.end());
  std::vector<char*> cargv, cenv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (std::string& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ == 0) {
    int out = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (int fd : spec.inherit_fds) ::fcntl(fd, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
}

Sim::~Sim() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    WaitExit(10000);
  }
}

bool Sim::WaitReady(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (MsLeft(deadline) > 0) {
    if (!Running()) return false;
    if (PathExists(sock_)) {
      Conn c(sock_);
      if (c.connected() && c.Send(Req("GET", "vmm.ping")) && c.Read(MsLeft(deadline)).code == 200) {
        return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

std::optional<int> Sim::WaitExit(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!status_) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (MsLeft(deadline) == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

bool Sim::Running() { return !WaitExit(0).has_value(); }

void Sim::Signal(int sig) {
  if (!status_) ::kill(pid_, sig);
}

Response Sim::Call(std::string_view method, std::string_view endpoint,
                   std::optional<std::string_view> body) {
  Conn c(sock_);
  if (!c.connected() || !c.Send(Req(method, endpoint, body))) return Response();
  return c.Read();
}

std::string Sim::Stdout() const { return ReadFile(out_path_).value_or(""); }
std::string Sim::Stderr() const { return ReadFile(err_path_).value_or(""); }

RunResult RunSim(const std::string& dir, SimSpec spec, int timeout_ms) {
  Sim sim(dir, std::move(spec));
  RunResult r;
  r.status = sim.WaitExit(timeout_ms).value_or(-1);
  r.out = sim.Stdout();
  r.err = sim.Stderr();
  return r;
}

VmFiles MakeVmFiles(const TempDir& dir, const std::string& disk_name) {
  VmFiles f{dir / "vmlinux", dir / disk_name};
  (void)WriteFileAtomic(f.kernel,
                        "\x7f"
                        "ELF simulated kernel");
  int fd = ::open(f.disk.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    (void)::ftruncate(fd, 64 << 20);
    ::close(fd);
  }
  return f;
}

Json MinimalConfig(const VmFiles& files, uint64_t memory) {
  return Json{{"cpus", {{"boot_vcpus", 1}, {"max_vcpus", 2}}},
              {"memory", {{"size", memory}}},
              {"payload", {{"kernel", files.kernel}, {"cmdline", "console=ttyS0"}}},
              {"disks", Json::array({{{"path", files.disk}}})},
              {"console", {{"mode", "Off"}}}};
}

UniqueFd LockFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (!fd.valid() || ::fcntl(fd.get(), F_OFD_SETLK, &fl) != 0) return UniqueFd();
  return fd;
}

NetNs::NetNs() {
  static std::atomic<int> counter{0};
  name_ = Cat("chsim-", ::getpid(), "-", counter++);
  auto r = RunCommand({"ip", "netns", "add", name_});
  ok_ = r.ok() && r->ok();
}

NetNs::~NetNs() {
  if (ok_) (void)RunCommand({"ip", "netns", "delete", name_});
}

bool NetNs::Run(const std::vector<std::string>& ip_args) {
  std::vector<std::string> argv = {"ip", "-n", name_};
  argv.insert(argv.end(), ip_args.begin(), ip_args.end());
  auto r = RunCommand(argv);
  return r.ok() && r->ok();
}

bool NetNs::HasLink(const std::string& ifname) { return Run({"link", "show", "dev", ifname}); }

std::string FileUrl(const std::string& dir) { return "file://" + dir; }

}  // namespace sandboxlet::chsim::testing
