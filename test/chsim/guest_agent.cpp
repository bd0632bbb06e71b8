#include "test/chsim/guest_agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <list>

#include "runtime/base/strings.h"
#include "test/chsim/chain.h"
#include "test/chsim/http.h"

namespace sandboxlet::chsim {
namespace {

constexpr char kLoopback[] = "lo";

// Adds (add=true) or removes `address`/32 on lo, over rtnetlink. Adding an address that is
// already there, or removing one that is not, is fine.
absl::Status ChangeLoopbackAddress(const std::string& address, bool add) {
  in_addr a{};
  if (::inet_pton(AF_INET, address.c_str(), &a) != 1) {
    return absl::InvalidArgumentError(Cat("\"", address, "\" is not an IPv4 address"));
  }
  unsigned index = ::if_nametoindex(kLoopback);
  if (index == 0) return OsChain(errno, {"Cannot find the loopback interface"});
  UniqueFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!nl.valid()) return OsChain(errno, {"Cannot open a netlink socket"});

  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
    char attrs[2 * RTA_SPACE(sizeof(in_addr))];
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.nh.nlmsg_type = add ? RTM_NEWADDR : RTM_DELADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = AF_INET;
  req.ifa.ifa_prefixlen = 32;
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = index;
  for (unsigned short type : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* rta =
        reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(sizeof(in_addr));
    std::memcpy(RTA_DATA(rta), &a, sizeof(in_addr));
    req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_SPACE(sizeof(in_addr));
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof(kernel)) < 0) {
    return OsChain(errno, {"Cannot send to netlink"});
  }
  char buf[4096];
  ssize_t n = ::recv(nl.get(), buf, sizeof(buf), 0);
  if (n < 0) return OsChain(errno, {"Cannot read the netlink answer"});
  auto* nh = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(nh, static_cast<unsigned>(n)) || nh->nlmsg_type != NLMSG_ERROR) {
    return ChainError({"Unexpected netlink answer"});
  }
  int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
  if (err == 0 || (!add && (err == EADDRNOTAVAIL || err == ENODEV))) return absl::OkStatus();
  return OsChain(err, {Cat(add ? "Cannot add " : "Cannot remove ", address, "/32 on lo")});
}

// Local delivery to an address on lo needs lo up (a new netns starts with it down).
absl::Status EnsureLoopbackUp() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return OsChain(errno, {"Cannot open a socket"});
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, kLoopback, IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return OsChain(errno, {"Cannot read lo flags"});
  if (ifr.ifr_flags & IFF_UP) return absl::OkStatus();
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return OsChain(errno, {"Cannot set lo up"});
  return absl::OkStatus();
}

// The guest's address must never land on the host's own loopback.
absl::Status CheckNotHostNetns() {
  struct stat self {
  }, init{};
  if (::stat("/proc/self/ns/net", &self) != 0 || ::stat("/proc/1/ns/net", &init) != 0) {
    return absl::OkStatus();  // cannot tell (no /proc): trust the caller
  }
  if (self.st_ino == init.st_ino && self.st_dev == init.st_dev) {
    return ChainError({"Refusing to simulate the guest agent in the host's network namespace",
                       "run the VMM inside the sandbox's netns"});
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> Listen(const std::string& address, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return OsChain(errno, {"Cannot open the agent socket"});
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return OsChain(errno, {Cat("Cannot bind the agent to ", address, ":", port)});
  }
  if (::listen(fd.get(), 64) != 0) return OsChain(errno, {"Cannot listen on the agent socket"});
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 1000) <= 0) return;  // a client that reads nothing is dropped
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

const char* Reason(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

// The agent speaks ordinary HTTP/1.1 (not CH's micro-http dialect).
std::string Response(int code, const std::string& body) {
  std::string out = Cat("HTTP/1.1 ", code, " ", Reason(code), "\r\nConnection: close\r\n");
  if (code != 204) {
    out += Cat("Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  }
  out += "\r\n";
  if (code != 204) out += body;
  return out;
}

std::string Message(const std::string& text) { return Json({{"message", text}}).dump(); }

// True if `wake` became readable (or hung up) within `ms`: the agent is being stopped.
bool Woken(int wake, int ms) {
  pollfd p{wake, POLLIN, 0};
  while (true) {
    int n = ::poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

}  // namespace

absl::Status ParseGuestAgentEnv(const char* value, GuestAgentConfig* config, bool* enabled) {
  *enabled = true;
  if (value == nullptr || *value == '\0') return absl::OkStatus();
  std::string v = value;
  if (v == "off") {
    *enabled = false;
    return absl::OkStatus();
  }
  std::string port = v;
  if (size_t colon = v.rfind(':'); colon != std::string::npos) {
    std::string address = v.substr(0, colon);
    in_addr a{};
    if (::inet_pton(AF_INET, address.c_str(), &a) != 1) {
      return absl::InvalidArgumentError(
          Cat("CHSIM_GUEST_AGENT=\"", v, "\": \"", address, "\" is not an IPv4 address"));
    }
    config->address = address;
    port = v.substr(colon + 1);
  }
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 ||
      p > 65535) {
    return absl::InvalidArgumentError(
        Cat("CHSIM_GUEST_AGENT=\"", v, "\": expected off, <port> or <ipv4>:<port>"));
  }
  config->port = static_cast<uint16_t>(p);
  return absl::OkStatus();
}

std::string GuestAddressFromCmdline(const std::string& cmdline) {
  std::string found;
  for (const std::string& word : Split(cmdline, ' ')) {
    if (!StartsWith(word, "ip=")) continue;
    std::string client = Split(std::string_view(word).substr(3), ':')[0];
    in_addr a{};
    found = ::inet_pton(AF_INET, client.c_str(), &a) == 1 ? client : "";  // the last ip= wins
  }
  return found;
}

GuestAgent::GuestAgent(GuestAgentConfig config, Logger* log)
    : config_(std::move(config)), log_(log) {}

GuestAgent::~GuestAgent() { Stop(); }

absl::Status GuestAgent::Start(const std::string& address) {
  if (serving()) return absl::OkStatus();
  const std::string what = "Cannot start the guest agent";
  if (absl::Status st = CheckNotHostNetns(); !st.ok()) return Wrap(st, what);
  if (absl::Status st = EnsureLoopbackUp(); !st.ok()) return Wrap(st, what);
  if (absl::Status st = ChangeLoopbackAddress(address, true); !st.ok()) return Wrap(st, what);
  absl::StatusOr<UniqueFd> listener = Listen(address, config_.port);
  if (!listener.ok()) {
    (void)ChangeLoopbackAddress(address, false);
    return Wrap(listener.status(), what);
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    (void)ChangeLoopbackAddress(address, false);
    return OsChain(errno, {what, "pipe"});
  }
  UniqueFd wake_r(p[0]);
  wake_w_.Reset(p[1]);
  address_ = address;
  // The thread owns the listener and the read end; Stop() closes the write end to end it.
  thread_ = std::thread([this, l = listener->Release(), w = wake_r.Release()] {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals belong to the main thread
    Serve(l, w);
  });
  log_->Info(Cat("guest agent answering at ", address, ":", config_.port));
  return absl::OkStatus();
}

void GuestAgent::Stop() {
  if (!serving()) return;
  wake_w_.Reset();
  thread_.join();
  if (absl::Status st = ChangeLoopbackAddress(address_, false); !st.ok()) {
    log_->Error(Cat("guest agent: ", Join(ChainOf(st), ": ")));
  }
  log_->Info(Cat("guest agent stopped answering at ", address_, ":", config_.port));
  address_.clear();
}

Json GuestAgent::State() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Json{{"last_init", last_init_}, {"prepare_count", prepare_count_}};
}

void GuestAgent::LoadState(const Json& state) {
  std::lock_guard<std::mutex> lock(mu_);
  last_init_ = state.is_object() && state.contains("last_init") && state["last_init"].is_object()
                   ? state["last_init"]
                   : Json();
  prepare_count_ = state.is_object() && state.contains("prepare_count") &&
                           state["prepare_count"].is_number_unsigned()
                       ? state["prepare_count"].get<uint64_t>()
                       : 0;
}

void GuestAgent::Forget() {
  std::lock_guard<std::mutex> lock(mu_);
  last_init_ = Json();
  prepare_count_ = 0;
}

void GuestAgent::Serve(int listener_fd, int wake_fd) {
  UniqueFd listener(listener_fd), wake(wake_fd);
  struct Connection {
    UniqueFd fd;
    RequestParser parser;
  };
  std::list<Connection> conns;
  while (true) {
    std::vector<pollfd> fds = {{wake.get(), POLLIN, 0}, {listener.get(), POLLIN, 0}};
    for (Connection& c : conns) fds.push_back({c.fd.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents) return;  // Stop(): connections close with the list
    size_t i = 2;
    for (auto it = conns.begin(); it != conns.end(); ++i) {
      if (fds[i].revents == 0) {
        ++it;
        continue;
      }
      char buf[16384];
      ssize_t n = ::recv(it->fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        ++it;
        continue;
      }
      if (n <= 0) {
        it = conns.erase(it);
        continue;
      }
      it->parser.Append(buf, static_cast<size_t>(n));
      HttpRequest req;
      std::string error;
      RequestParser::Step step = it->parser.Next(&req, &error);
      if (step == RequestParser::Step::kContinue) {
        SendAll(it->fd.get(), "HTTP/1.1 100 Continue\r\n\r\n");
        step = it->parser.Next(&req, &error);
      }
      if (step == RequestParser::Step::kNeedMore) {
        ++it;
        continue;
      }
      std::string out = step == RequestParser::Step::kError
                            ? Response(400, Message(error))
                            : Answer(req.method, req.target, req.body, wake.get());
      if (out.empty()) return;  // stopped while answering slowly
      SendAll(it->fd.get(), out);
      it = conns.erase(it);  // one request per connection
    }
    if (fds[1].revents & POLLIN) {
      while (true) {
        UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!conn.valid()) break;
        FaultSet faults = config_.startup_faults;
        if (!config_.faults_path.empty()) {
          if (absl::StatusOr<FaultSet> f = FaultSet::Load(config_.faults_path); f.ok()) {
            faults.Append(*f);
          }
        }
        if (faults.Has(FaultKind::kAgentNeverReady)) {
          // The agent is not up: the guest's kernel resets the connection.
          linger l{1, 0};
          ::setsockopt(conn.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
          continue;
        }
        conns.push_back(Connection{std::move(conn), RequestParser()});
      }
    }
  }
}

std::string GuestAgent::Answer(const std::string& method, const std::string& target,
                               const std::string& body, int wake) {
  FaultSet faults = config_.startup_faults;
  if (!config_.faults_path.empty()) {
    absl::StatusOr<FaultSet> f = FaultSet::Load(config_.faults_path);
    if (f.ok()) {
      faults.Append(*f);
    } else {
      log_->Error(Cat("guest agent: ignoring fault file: ", f.status().message()));
    }
  }
  const bool debug = StartsWith(target, "/debug/");
  if (!debug) {
    for (const FaultRule& r : faults.OfKind(FaultKind::kAgentSlow)) {
      if (Woken(wake, r.value)) return "";
    }
    for (const FaultRule& r : faults.OfKind(FaultKind::kAgentFail)) {
      return Response(r.value, Message("injected failure (agent-fail)"));
    }
  }
  auto expect = [&](const char* m) { return method == m; };
  if (target == "/health") {
    if (!expect("GET")) return Response(405, Message("method not allowed"));
    return Response(200, Json({{"version", kGuestAgentVersion}}).dump());
  }
  if (target == "/init") {
    if (!expect("POST")) return Response(405, Message("method not allowed"));
    Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return Response(400, Message("init body must be a JSON object"));
    std::lock_guard<std::mutex> lock(mu_);
    last_init_ = std::move(j);
    return Response(204, "");
  }
  if (target == "/snapshot/prepare") {
    if (!expect("POST")) return Response(405, Message("method not allowed"));
    std::lock_guard<std::mutex> lock(mu_);
    ++prepare_count_;
    return Response(204, "");
  }
  if (target == "/debug/init") {
    if (!expect("GET")) return Response(405, Message("method not allowed"));
    std::lock_guard<std::mutex> lock(mu_);
    if (last_init_.is_null()) return Response(404, Message("not initialised"));
    return Response(200, last_init_.dump());
  }
  if (target == "/debug/prepare") {
    if (!expect("GET")) return Response(405, Message("method not allowed"));
    std::lock_guard<std::mutex> lock(mu_);
    return Response(200, Json({{"count", prepare_count_}}).dump());
  }
  return Response(404, Message(Cat("no such endpoint ", target)));
}

}  // namespace sandboxlet::chsim
