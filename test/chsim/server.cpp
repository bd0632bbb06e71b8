#include "test/chsim/server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "runtime/base/strings.h"
#include "test/chsim/chain.h"
#include "test/chsim/devices.h"

namespace sandboxlet::chsim {
namespace {

constexpr char kApiPrefix[] = "/api/v1/";
constexpr size_t kOversizeBody = 5u << 20;

void SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the client went away; nothing to tell it
    off += static_cast<size_t>(n);
  }
}

std::string InjectedBody(const std::string& detail) {
  return Json(std::vector<std::string>{"Error from API", detail}).dump();
}

}  // namespace

ApiServer::ApiServer(ChVersion version, Vmm* vmm, Logger* log, FaultSet startup_faults,
                     int signal_fd)
    : version_(version),
      vmm_(vmm),
      log_(log),
      startup_faults_(std::move(startup_faults)),
      signal_fd_(signal_fd) {}

absl::Status ApiServer::Bind(const EndpointSpec& spec) {
  const std::string what = "Error creating API server";
  if (spec.fd >= 0) {
    int accepting = 0;
    int domain = 0;
    socklen_t len = sizeof(int);
    if (::getsockopt(spec.fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0) {
      return OsChain(errno, {what, Cat("fd=", spec.fd, " is not a socket")});
    }
    len = sizeof(int);
    ::getsockopt(spec.fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
    if (!accepting || domain != AF_UNIX) {
      return ChainError({what, Cat("fd=", spec.fd, " is not a listening AF_UNIX stream socket")});
    }
    struct sockaddr_un addr {};
    socklen_t alen = sizeof(addr);
    if (::getsockname(spec.fd, reinterpret_cast<sockaddr*>(&addr), &alen) == 0 &&
        alen > sizeof(sa_family_t) && addr.sun_path[0] != '\0') {
      socket_path_ = addr.sun_path;
    }
    ::fcntl(spec.fd, F_SETFL, ::fcntl(spec.fd, F_GETFL) | O_NONBLOCK);
    ::fcntl(spec.fd, F_SETFD, FD_CLOEXEC);
    listener_.Reset(spec.fd);
    return absl::OkStatus();
  }
  socket_path_ = spec.path;
  if (version_.AtLeast(53)) {
    // v53: an instance holding "<path>.lock" owns the path; otherwise a leftover socket is stale.
    const std::string lock_path = spec.path + ".lock";
    lock_fd_.Reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_fd_.valid()) return OsChain(errno, {what, Cat("Cannot open \"", lock_path, "\"")});
    if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        return ChainError({what, Cat("API socket \"", spec.path,
                                     "\" is already in use by another running instance")});
      }
      return OsChain(errno, {what, Cat("Cannot lock \"", lock_path, "\"")});
    }
    if (::unlink(spec.path.c_str()) != 0 && errno != ENOENT) {
      return OsChain(errno, {what, Cat("Cannot remove stale socket \"", spec.path, "\"")});
    }
  }
  absl::StatusOr<UniqueFd> fd = BindUnixSocket(spec.path);
  if (!fd.ok()) return Wrap(fd.status(), what);
  listener_ = *std::move(fd);
  return absl::OkStatus();
}

int ApiServer::Run() {
  while (true) {
    std::vector<pollfd> fds;
    if (signal_fd_ >= 0) fds.push_back({signal_fd_, POLLIN, 0});
    const size_t first_conn = fds.size();
    std::vector<Connection*> polled;
    std::vector<int> vm_listeners;
    if (!hung_) {
      for (Connection& c : connections_) {
        fds.push_back({c.fd.get(), POLLIN, 0});
        polled.push_back(&c);
      }
      if (listener_.valid()) fds.push_back({listener_.get(), POLLIN, 0});
      vm_listeners = vmm_->ListenerFds();
      for (int fd : vm_listeners) fds.push_back({fd, POLLIN, 0});
    }
    int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_->Error(Cat("poll: ", OsError(errno)));
      return 1;
    }
    if (signal_fd_ >= 0 && (fds[0].revents & POLLIN)) {
      struct signalfd_siginfo info {};
      ssize_t r = ::read(signal_fd_, &info, sizeof(info));
      (void)r;
      log_->Info(Cat("received signal ", info.ssi_signo, ", shutting down"));
      vmm_->ShutdownForExit();
      return 0;
    }
    if (hung_) continue;
    for (size_t i = 0; i < polled.size(); ++i) {
      if (fds[first_conn + i].revents == 0) continue;
      Outcome outcome = Serve(*polled[i]);
      if (outcome == Outcome::kExit) return 0;
      if (outcome == Outcome::kClose) {
        connections_.remove_if([&](const Connection& c) { return &c == polled[i]; });
      }
      if (outcome == Outcome::kHang) break;  // nothing else is answered from now on
    }
    if (hung_) continue;
    size_t next = first_conn + polled.size();
    if (listener_.valid() && (fds[next++].revents & POLLIN)) Accept();
    for (int fd : vm_listeners) {
      if (fds[next++].revents & POLLIN) {
        // No guest listens behind the vsock/console socket: the connection is dropped.
        UniqueFd conn(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC));
      }
    }
  }
}

void ApiServer::Accept() {
  while (true) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd.valid()) return;
    if (connections_.size() >= kMaxConnections) {
      SendAll(fd.get(), FormatResponse(503, R"({ "error": "Too many open connections" })"));
      continue;  // closed by UniqueFd
    }
    connections_.push_back(Connection{std::move(fd), RequestParser()});
  }
}

ApiServer::Outcome ApiServer::Serve(Connection& conn) {
  char buf[65536];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
  iovec iov{buf, sizeof(buf)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(conn.fd.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return Outcome::kKeep;
  if (n <= 0) return Outcome::kClose;
  std::vector<UniqueFd> received;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received.emplace_back(fd);
    }
  }
  conn.parser.AddFds(std::move(received));
  conn.parser.Append(buf, static_cast<size_t>(n));

  while (true) {
    HttpRequest req;
    std::string error;
    switch (conn.parser.Next(&req, &error)) {
      case RequestParser::Step::kNeedMore:
        return Outcome::kKeep;
      case RequestParser::Step::kContinue:
        SendAll(conn.fd.get(), FormatContinue());
        continue;
      case RequestParser::Step::kError:
        // micro-http answers 400 with a plain-text reason; the connection is then unusable.
        log_->Warn(Cat("HTTP parse error: ", error));
        SendAll(conn.fd.get(), FormatResponse(400, error));
        return Outcome::kClose;
      case RequestParser::Step::kRequest: {
        Outcome outcome = HandleRequest(conn, req);
        if (outcome != Outcome::kKeep) return outcome;
        continue;
      }
    }
  }
}

FaultSet ApiServer::CurrentFaults() {
  FaultSet faults = startup_faults_;
  if (!socket_path_.empty()) {
    absl::StatusOr<FaultSet> from_file = FaultSet::Load(socket_path_ + ".faults");
    if (from_file.ok()) {
      faults.Append(*from_file);
    } else {
      log_->Error(Cat("ignoring fault file: ", from_file.status().message()));
    }
  }
  return faults;
}

void ApiServer::Record(const FaultSet& faults, const HttpRequest& req) {
  for (const FaultRule& rule : faults.OfKind(FaultKind::kRecord)) {
    UniqueFd fd(::open(rule.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd.valid()) {
      log_->Error(Cat("record ", rule.path, ": ", OsError(errno)));
      continue;
    }
    std::string frame =
        Cat("--- request ", requests_received_, " ", req.raw.size(), "\n", req.raw, "\n");
    size_t off = 0;
    while (off < frame.size()) {
      ssize_t w = ::write(fd.get(), frame.data() + off, frame.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
  }
}

bool ApiServer::WaitForSignal(int ms) {
  pollfd p{signal_fd_, POLLIN, 0};
  while (true) {
    int n = ::poll(&p, signal_fd_ >= 0 ? 1 : 0, ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

ApiServer::Outcome ApiServer::HandleRequest(Connection& conn, HttpRequest& req) {
  ++requests_received_;
  const FaultSet faults = CurrentFaults();
  Record(faults, req);
  const std::string endpoint =
      StartsWith(req.target, kApiPrefix) ? req.target.substr(sizeof(kApiPrefix) - 1) : req.target;
  const int fd = conn.fd.get();

  if (const FaultRule* r = faults.Find(FaultKind::kDelay, endpoint)) {
    if (WaitForSignal(r->value)) {
      vmm_->ShutdownForExit();
      return Outcome::kExit;
    }
  }
  if (faults.Find(FaultKind::kCrash, endpoint)) {
    log_->Error(Cat("fault: crash on ", endpoint));
    ::kill(::getpid(), SIGKILL);
  }
  if (faults.Find(FaultKind::kHang, endpoint)) {
    log_->Error(Cat("fault: hang on ", endpoint));
    hung_ = true;
    return Outcome::kHang;
  }
  if (faults.Find(FaultKind::kClose, endpoint)) return Outcome::kClose;
  if (faults.Find(FaultKind::kGarbage, endpoint)) {
    SendAll(fd, std::string("\x16\x03\x01\x00\xff garbage, not HTTP \x00\x01\x02\r\n", 30));
    return Outcome::kClose;
  }
  if (faults.Find(FaultKind::kTruncate, endpoint)) {
    SendAll(fd,
            "HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n"
            "Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"config\":{\"cpus\":");
    return Outcome::kClose;
  }
  if (const FaultRule* r = faults.Find(FaultKind::kFail, endpoint)) {
    SendAll(fd, FormatResponse(r->value, InjectedBody("Injected failure")));
    return Outcome::kKeep;
  }
  if (faults.Find(FaultKind::kOversize, endpoint)) {
    const std::string head = R"({"padding":")";
    const std::string tail = R"("})";
    std::string body = head + std::string(kOversizeBody - head.size() - tail.size(), 'x') + tail;
    SendAll(fd, FormatResponse(200, body));
    return Outcome::kKeep;
  }
  const bool enospc = endpoint == "vm.snapshot" && faults.Find(FaultKind::kEnospc, endpoint);
  ApiResponse resp = vmm_->Handle(req, enospc);
  SendAll(fd, FormatResponse(resp.code, resp.body));
  return resp.exit_after ? Outcome::kExit : Outcome::kKeep;
}

}  // namespace sandboxlet::chsim
