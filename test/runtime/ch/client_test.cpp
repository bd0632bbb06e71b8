// Tests runtime/ch/client.cpp: HTTP framing and failure handling against a raw fake server written
// here, then every endpoint against the CH simulator per version, and the exact request bytes.
#include "runtime/ch/client.h"

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
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet::ch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

std::string MakeTempDir(const char* prefix) {
  std::string tmpl = Cat("/tmp/", prefix, ".XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) return "";
  return tmpl;
}

void SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// One request as the fake server received it.
struct Received {
  std::string head;  // request line and headers, without the blank line
  std::string body;
  int fds = 0;         // file descriptors that came with it (SCM_RIGHTS)
  int connection = 0;  // 1-based index of the connection it came on
  std::string RequestLine() const { return head.substr(0, head.find("\r\n")); }
  bool HasHeader(const std::string& name) const {
    return Lower(head).find("\r\n" + Lower(name) + ":") != std::string::npos;
  }
};

// A raw HTTP/1.1 server on a Unix socket: frames requests like micro-http (Content-Length only)
// and lets each test answer with whatever bytes it wants. Connections are served one at a time.
class FakeCh {
 public:
  enum class After { kKeepOpen, kClose };
  using Handler = std::function<After(FakeCh& server, int fd, const Received& request)>;

  explicit FakeCh(Handler handler) : handler_(std::move(handler)) {
    dir_ = MakeTempDir("ch_client_test");
    path_ = dir_ + "/api.sock";
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) std::abort();
    stop_r_.Reset(p[0]);
    stop_w_.Reset(p[1]);
    listen_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_.get(), 16) != 0) {
      std::abort();
    }
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeCh() {
    (void)!::write(stop_w_.get(), "x", 1);
    thread_.join();
    (void)RemoveAll(dir_);
  }

  const std::string& path() const { return path_; }
  int connections() const { return connections_.load(); }
  std::vector<Received> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // For hang faults: blocks the server until the test tears it down.
  void WaitForStop() {
    struct pollfd p = {stop_r_.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  }

 private:
  // Waits for `fd` to be readable; false when the test is ending.
  bool WaitReadable(int fd) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    for (;;) {
      int r = ::poll(p, 2, -1);
      if (r < 0 && errno == EINTR) continue;
      return r > 0 && !(p[1].revents & POLLIN);
    }
  }

  void Serve() {
    for (;;) {
      if (!WaitReadable(listen_.get())) return;
      UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      int index = ++connections_;
      if (!ServeConnection(conn.get(), index)) return;
    }
  }

  // False when the test is ending.
  bool ServeConnection(int fd, int index) {
    std::string buf;
    int fds = 0;
    for (;;) {
      size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos) {
        Received req;
        req.head = buf.substr(0, end);
        size_t length = 0;
        std::string lower = Lower(req.head);
        if (size_t cl = lower.find("\r\ncontent-length:"); cl != std::string::npos) {
          length = std::stoul(req.head.substr(cl + 17));
        }
        if (buf.size() >= end + 4 + length) {
          req.body = buf.substr(end + 4, length);
          buf.erase(0, end + 4 + length);
          req.fds = std::exchange(fds, 0);
          req.connection = index;
          {
            std::lock_guard<std::mutex> lock(mu_);
            requests_.push_back(req);
          }
          if (handler_(*this, fd, req) == After::kClose) return true;
          continue;
        }
      }
      if (!WaitReadable(fd)) return false;
      char data[65536];
      alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
      struct iovec iov = {data, sizeof(data)};
      struct msghdr msg = {};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (n <= 0) return true;
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          int count = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
          for (int i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            ::close(received);
          }
          fds += count;
        }
      }
      buf.append(data, static_cast<size_t>(n));
    }
  }

  Handler handler_;
  std::string dir_, path_;
  UniqueFd listen_, stop_r_, stop_w_;
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::vector<Received> requests_;  // guarded by mu_
  std::thread thread_;
};

std::string Answer(int code, std::string_view body = "", std::string_view extra_headers = "") {
  std::string out = Cat("HTTP/1.1 ", code, " \r\nServer: Cloud Hypervisor API\r\n", extra_headers,
                        "Connection: keep-alive\r\n");
  if (!body.empty()) {
    out += Cat("Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  }
  return out + "\r\n" + std::string(body);
}

constexpr char kPing[] = R"({"build_version":"v48.0","version":"48.0.0","pid":7,"features":[]})";

// Answers ping with a valid body and every other endpoint with 204.
FakeCh::After AnswerOk(FakeCh&, int fd, const Received& r) {
  if (r.RequestLine().find("vmm.ping") != std::string::npos) {
    SendAll(fd, Answer(200, kPing));
  } else {
    SendAll(fd, Answer(204));
  }
  return FakeCh::After::kKeepOpen;
}

ChClientOptions Options(const std::string& socket, int major = 48) {
  ChClientOptions o;
  o.socket_path = socket;
  o.vm_name = "default/demo";
  o.version = ChVersion::Of(major);
  o.default_timeout = 5s;
  return o;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(ChClientWire, StatusLineWithOrWithoutReasonPhrase) {
  int n = 0;
  FakeCh server([&](FakeCh&, int fd, const Received&) {
    const char* lines[] = {"HTTP/1.1 204 \r\n\r\n", "HTTP/1.1 204\r\n\r\n",
                           "HTTP/1.1 204 No Content\r\n\r\n", "http/1.0 204 \r\n\r\n"};
    SendAll(fd, lines[n++ % 4]);
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path()));
  EXPECT_TRUE(client.PauseVm().ok());
  EXPECT_TRUE(client.PauseVm().ok());
  EXPECT_TRUE(client.PauseVm().ok());
  absl::Status lower = client.PauseVm();
  EXPECT_EQ(lower.code(), absl::StatusCode::kInternal) << lower;  // "http/" is not HTTP
}

TEST(ChClientWire, MissingContentLengthIsAnEmptyBodyAndConnectionStaysUsable) {
  FakeCh server([](FakeCh&, int fd, const Received& r) {
    if (r.RequestLine().find("vmm.shutdown") != std::string::npos) {
      SendAll(fd, "HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\n\r\n");  // CONTRACT §1.1
    } else {
      SendAll(fd, Answer(200, kPing));
    }
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path()));
  EXPECT_TRUE(client.ShutdownVmm().ok());
  absl::StatusOr<PingInfo> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->version, "48.0.0");
  EXPECT_EQ(server.connections(), 1);
}

TEST(ChClientWire, InterimContinueIsSkipped) {
  FakeCh server([](FakeCh&, int fd, const Received&) {
    SendAll(fd, "HTTP/1.1 100 \r\n\r\n" + Answer(200, kPing));
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path()));
  absl::StatusOr<PingInfo> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->pid, 7);
}

TEST(ChClientWire, HeadersAreCaseInsensitiveAndBodyMayArriveInPieces) {
  FakeCh server([](FakeCh&, int fd, const Received&) {
    std::string body = kPing;
    SendAll(fd, Cat("HTTP/1.1 200 \r\ncOnTeNt-LeNgTh:   ", body.size(), "  \r\n\r\n"));
    SendAll(fd, body.substr(0, 10));
    SendAll(fd, body.substr(10));
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path()));
  absl::StatusOr<PingInfo> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->build_version, "v48.0");
}

TEST(ChClientWire, KeepAliveReusesOneConnection) {
  FakeCh server(AnswerOk);
  ChClient client(Options(server.path()));
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(client.Ping().ok());
    ASSERT_TRUE(client.ResumeVm().ok());
  }
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.requests().size(), 20u);
}

TEST(ChClientWire, ConcurrentCallsAreSerializedOnOneConnection) {
  FakeCh server(AnswerOk);
  ChClient client(Options(server.path()));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (!client.Ping().ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.requests().size(), 100u);
}

TEST(ChClientWire, ReconnectsAfterServerClosedIdleConnection) {
  FakeCh server([](FakeCh& s, int fd, const Received& r) {
    AnswerOk(s, fd, r);
    return FakeCh::After::kClose;  // close every connection once answered
  });
  ChClient client(Options(server.path()));
  EXPECT_TRUE(client.Ping().ok());
  EXPECT_TRUE(client.PauseVm().ok());  // a PUT: safe, nothing was sent on the dead connection
  EXPECT_TRUE(client.Ping().ok());
  EXPECT_EQ(server.connections(), 3);
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST(ChClientWire, ClosedWithoutAnswerRetriesGetButNeverResendsPut) {
  // On each reused connection, the second request is read and then the connection is closed
  // without an answer (CH died or restarted after reading it).
  int on_connection = 0, last_connection = 0;
  FakeCh server([&](FakeCh& s, int fd, const Received& r) {
    if (r.connection != last_connection) {
      last_connection = r.connection;
      on_connection = 0;
    }
    if (++on_connection == 2) return FakeCh::After::kClose;
    return AnswerOk(s, fd, r);
  });
  ChClient client(Options(server.path()));
  ASSERT_TRUE(client.Ping().ok());
  absl::StatusOr<PingInfo> ping = client.Ping();  // GET: re-sent once on a new connection
  EXPECT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(server.requests().size(), 3u);

  absl::Status pause = client.PauseVm();  // 2nd request on connection 2: PUT, not re-sent
  EXPECT_EQ(pause.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(pause), HasSubstr("vm default/demo: vm.pause:"));
  EXPECT_THAT(Msg(pause), HasSubstr("not re-sent"));
  std::vector<Received> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_THAT(reqs.back().RequestLine(), HasSubstr("vm.pause"));
  EXPECT_FALSE(ChHttpStatus(pause).has_value());

  EXPECT_TRUE(client.PauseVm().ok());  // the next call starts on a fresh connection
}

struct FaultCase {
  const char* name;
  std::function<void(FakeCh&, int)> respond;
  absl::StatusCode code;
  const char* detail;
};

TEST(ChClientWire, BrokenResponsesGiveClearErrorsAndTheNextCallWorks) {
  const std::vector<FaultCase> cases = {
      {"garbage",
       [](FakeCh&, int fd) {
         constexpr char kGarbage[] = "\x00\xff\x13NOT HTTP AT ALL\r\n\r\n";
         SendAll(fd, std::string(kGarbage, sizeof(kGarbage) - 1));
       },
       absl::StatusCode::kInternal, "malformed status line"},
      {"garbage header",
       [](FakeCh&, int fd) { SendAll(fd, "HTTP/1.1 200 \r\nno colon here\r\n\r\n"); },
       absl::StatusCode::kInternal, "malformed header"},
      {"bad content-length",
       [](FakeCh&, int fd) { SendAll(fd, "HTTP/1.1 200 \r\nContent-Length: -5\r\n\r\n"); },
       absl::StatusCode::kInternal, "Content-Length"},
      {"chunked",
       [](FakeCh&, int fd) {
         SendAll(fd, "HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
       },
       absl::StatusCode::kInternal, "Transfer-Encoding"},
      {"truncated body",
       [](FakeCh&, int fd) {
         SendAll(fd, "HTTP/1.1 200 \r\nContent-Length: 100\r\n\r\n{\"version\":");
       },
       absl::StatusCode::kUnavailable, "mid-response"},
      {"close mid-head", [](FakeCh&, int fd) { SendAll(fd, "HTTP/1.1 200 \r\nContent-Le"); },
       absl::StatusCode::kUnavailable, "mid-response"},
      {"close without answer", [](FakeCh&, int) {}, absl::StatusCode::kUnavailable,
       "without answering"},
      {"oversized",
       [](FakeCh&, int fd) {
         SendAll(fd, "HTTP/1.1 200 \r\nContent-Length: 5242880\r\n\r\n");
         SendAll(fd, std::string(100000, ' '));
       },
       absl::StatusCode::kInternal, "exceeds"},
      {"endless head",
       [](FakeCh&, int fd) { SendAll(fd, "HTTP/1.1 200 \r\nX: " + std::string(70000, 'a')); },
       absl::StatusCode::kInternal, "head exceeds"},
  };
  for (const FaultCase& c : cases) {
    SCOPED_TRACE(c.name);
    bool faulted = false;
    FakeCh server([&](FakeCh& s, int fd, const Received& r) {
      if (!faulted) {
        faulted = true;
        c.respond(s, fd);
        return FakeCh::After::kClose;
      }
      return AnswerOk(s, fd, r);
    });
    ChClient client(Options(server.path()));
    absl::StatusOr<PingInfo> ping = client.Ping();
    ASSERT_FALSE(ping.ok());
    EXPECT_EQ(ping.status().code(), c.code) << ping.status();
    EXPECT_THAT(Msg(ping.status()), HasSubstr("vm default/demo: vmm.ping: "));
    EXPECT_THAT(Msg(ping.status()), HasSubstr(c.detail));
    EXPECT_TRUE(client.Ping().ok());  // a fresh connection
  }
}

TEST(ChClientWire, HangIsDeadlineExceededNamingVmAndEndpoint) {
  FakeCh server([](FakeCh& s, int, const Received&) {
    s.WaitForStop();
    return FakeCh::After::kClose;
  });
  ChClient client(Options(server.path()));
  absl::Status s = client.PauseVm(200ms);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vm.pause: "));
}

TEST(ChClientWire, HangMidBodyIsDeadlineExceeded) {
  FakeCh server([](FakeCh& s, int fd, const Received&) {
    SendAll(fd, "HTTP/1.1 200 \r\nContent-Length: 50\r\n\r\n{\"state\"");
    s.WaitForStop();
    return FakeCh::After::kClose;
  });
  ChClient client(Options(server.path()));
  absl::Status s = client.Info(200ms).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vm.info: "));
}

TEST(ChClientWire, WaitingBehindAHungCallRespectsTheDeadline) {
  FakeCh server([](FakeCh& s, int, const Received&) {
    s.WaitForStop();
    return FakeCh::After::kClose;
  });
  ChClient client(Options(server.path()));
  std::atomic<bool> first_done{false};
  std::thread first([&] {
    (void)client.PauseVm(1s);
    first_done = true;
  });
  // Wait until the first call is in flight (the server has its request).
  while (server.requests().empty()) std::this_thread::yield();
  absl::Status s = client.Ping(100ms).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vmm.ping: "));
  EXPECT_FALSE(first_done.load());  // it really was blocked behind the first call
  first.join();
}

TEST(ChClientWire, NoServerIsUnavailableNamingTheSocket) {
  std::string dir = MakeTempDir("ch_client_test");
  ChClient client(Options(dir + "/api.sock"));
  int observed = -1;
  ChClientOptions o = Options(dir + "/api.sock");
  o.observer = [&](std::string_view, int status, std::chrono::nanoseconds) { observed = status; };
  ChClient observed_client(o);
  absl::Status s = observed_client.BootVm();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vm.boot: "));
  EXPECT_THAT(Msg(s), HasSubstr(dir + "/api.sock"));
  EXPECT_EQ(observed, 0);
  (void)RemoveAll(dir);
}

TEST(ChClientErrors, JsonArrayBodyOnV47Plus) {
  FakeCh server([](FakeCh&, int fd, const Received&) {
    SendAll(fd,
            Answer(500, R"(["Error from API","The VM could not be paused","VM is not running"])"));
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path(), 48));
  absl::Status s = client.PauseVm();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      Msg(s),
      R"(vm default/demo: vm.pause: CH 500 ["Error from API","The VM could not be paused","VM is not running"])");
  EXPECT_EQ(ChHttpStatus(s), 500);
}

TEST(ChClientErrors, PlainTextBeforeV47AndRawTextWhenNotJson) {
  FakeCh server([](FakeCh&, int fd, const Received&) {
    SendAll(fd, Answer(500, "Error from API: The VM could not be paused: VM is not running\n"));
    return FakeCh::After::kKeepOpen;
  });
  for (int major : {46, 48}) {
    ChClient client(Options(server.path(), major));
    absl::Status s = client.PauseVm();
    EXPECT_EQ(Msg(s),
              "vm default/demo: vm.pause: CH 500 Error from API: The VM could not be paused: VM "
              "is not running");
  }
}

TEST(ChClientErrors, StatusCodesMapAndLongBodiesAreCut) {
  int code = 0;
  std::string body;
  FakeCh server([&](FakeCh&, int fd, const Received&) {
    SendAll(fd, Answer(code, body));
    return FakeCh::After::kKeepOpen;
  });
  ChClient client(Options(server.path(), 53));
  const std::pair<int, absl::StatusCode> table[] = {{400, absl::StatusCode::kInvalidArgument},
                                                    {404, absl::StatusCode::kNotFound},
                                                    {409, absl::StatusCode::kAlreadyExists},
                                                    {429, absl::StatusCode::kUnavailable},
                                                    {500, absl::StatusCode::kFailedPrecondition},
                                                    {503, absl::StatusCode::kUnavailable},
                                                    {502, absl::StatusCode::kInternal}};
  for (auto [http, want] : table) {
    code = http;
    body = R"(["Error from API"])";
    absl::Status s = client.BootVm();
    EXPECT_EQ(s.code(), want) << http;
    EXPECT_EQ(ChHttpStatus(s), http);
  }
  code = 500;
  body = "[\"" + std::string(100000, 'x') + "\"]";
  absl::Status s = client.BootVm();
  EXPECT_LT(s.message().size(), 1000u);
  EXPECT_THAT(Msg(s), HasSubstr("(100004 bytes)"));
  code = 400;
  body = "";
  EXPECT_EQ(Msg(client.BootVm()), "vm default/demo: vm.boot: CH 400 (empty body)");
  EXPECT_FALSE(ChHttpStatus(absl::InternalError("x")).has_value());
}

TEST(ChClientWire, RequestBytesFollowTheContract) {
  FakeCh server([](FakeCh& s, int fd, const Received& r) {
    if (r.RequestLine().find("vm.add-disk") != std::string::npos) {
      SendAll(fd, Answer(200, R"({"id":"_disk2","bdf":"0000:00:06.0"})"));
      return FakeCh::After::kKeepOpen;
    }
    return AnswerOk(s, fd, r);
  });
  ChClient client(Options(server.path(), 52));
  ASSERT_TRUE(client.BootVm().ok());
  ASSERT_TRUE(client.Snapshot("/var/lib/snap/x").ok());
  DiskConfig disk;
  disk.path = "/dev/loop7";
  absl::StatusOr<std::optional<DeviceInfo>> added = client.AddDisk(disk);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(added->has_value());
  EXPECT_EQ((*added)->id, "_disk2");
  std::vector<Received> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].head,
            "PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nAccept: application/json");
  EXPECT_EQ(reqs[0].body, "");
  std::string snap_body = R"({"destination_url":"file:///var/lib/snap/x"})";
  EXPECT_EQ(reqs[1].head, Cat("PUT /api/v1/vm.snapshot HTTP/1.1\r\nHost: localhost\r\nAccept: "
                              "application/json\r\nContent-Type: application/json\r\n"
                              "Content-Length: ",
                              snap_body.size()));
  EXPECT_EQ(reqs[1].body, snap_body);
  EXPECT_EQ(nlohmann::json::parse(reqs[2].body)["image_type"], "Raw");
}

TEST(ChClientWire, RestorePassesNetFdsWithTheRequest) {
  FakeCh server(AnswerOk);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd a(p[0]), b(p[1]);
  RestoreConfig r;
  r.source_url = "file:///snap/a";
  r.net_fds.push_back({"net0", {a.get(), b.get()}});
  {
    ChClient client(Options(server.path(), 48));
    ASSERT_TRUE(client.Restore(r).ok());
  }
  {
    ChClient old(Options(server.path(), 39));  // no net_fds before v40: neither JSON nor fds
    ASSERT_TRUE(old.Restore(r).ok());
  }
  std::vector<Received> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].fds, 2);
  EXPECT_EQ(nlohmann::json::parse(reqs[0].body)["net_fds"][0]["num_fds"], 2);
  EXPECT_EQ(reqs[1].fds, 0);
  EXPECT_FALSE(nlohmann::json::parse(reqs[1].body).contains("net_fds"));
}

TEST(ChClientWire, InvalidRequestsNeverReachCH) {
  FakeCh server(AnswerOk);
  ChClient client(Options(server.path(), 53));
  VmConfig c;
  c.payload.kernel = "/k";
  c.net.push_back(NetConfig{});
  c.net[0].ip = "10.0.0.1";
  absl::Status s = client.CreateVm(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vm.create: net[0].mask"));

  c.net.clear();
  c.payload.cmdline = std::string(60000, 'a');  // CONTRACT §1.7: 51200 bytes at most
  s = client.CreateVm(c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("51200"));

  EXPECT_EQ(client.Snapshot("relative/dir").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.Resize({}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.RemoveDevice("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(server.requests().empty());
}

TEST(ChClientWire, ObserverSeesEveryCall) {
  FakeCh server([](FakeCh& s, int fd, const Received& r) {
    if (r.RequestLine().find("vm.pause") != std::string::npos) {
      SendAll(fd, Answer(500, R"(["no"])"));
      return FakeCh::After::kKeepOpen;
    }
    return AnswerOk(s, fd, r);
  });
  std::vector<std::pair<std::string, int>> seen;
  ChClientOptions o = Options(server.path());
  o.observer = [&](std::string_view ep, int status, std::chrono::nanoseconds latency) {
    EXPECT_GE(latency.count(), 0);
    seen.emplace_back(std::string(ep), status);
  };
  ChClient client(o);
  (void)client.Ping();
  (void)client.PauseVm();
  (void)client.BootVm();
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, int>>{
                      {"vmm.ping", 200}, {"vm.pause", 500}, {"vm.boot", 204}}));
}

// ---------------------------------------------------------------------------------------------
// Against the CH simulator (test/chsim).

// The simulator binary: the build's ch-sim, or $CH_SIM_BIN when the test is built without it.
std::string SimBin() {
#ifdef CH_SIM_BIN
  return CH_SIM_BIN;
#else
  const char* env = ::getenv("CH_SIM_BIN");
  return env != nullptr ? env : "";
#endif
}

bool Accepts(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

// A running simulator process; killed and reaped on destruction.
class Sim {
 public:
  Sim(int major, std::string faults = "") {
    dir_ = MakeTempDir("ch_client_sim");
    socket_ = dir_ + "/api.sock";
    std::string bin = SimBin();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setenv("CHSIM_VERSION", std::to_string(major).c_str(), 1);
      if (!faults.empty()) ::setenv("CHSIM_FAULTS", faults.c_str(), 1);
      std::string api = "path=" + socket_;
      std::string log = dir_ + "/sim.log";
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(bin.c_str(), bin.c_str(), "--api-socket", api.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Sim() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    (void)RemoveAll(dir_);
  }
  // Polls for the socket (CONTRACT §2) up to 10 s, until it accepts connections: the socket
  // file appears at bind(), a moment before listen().
  bool WaitReady() {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Accepts(socket_)) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  std::string Log() {
    absl::StatusOr<std::string> s = ReadFile(dir_ + "/sim.log");
    return s.ok() ? *s : "";
  }
  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

class ChClientSim : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (SimBin().empty() || ::access(SimBin().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "the CH simulator (target ch-sim) is not built";
    }
  }
  int major() const { return GetParam(); }
  ChVersion version() const { return ChVersion::Of(GetParam()); }

  VmConfig Config(const std::string& dir) {
    VmConfig c;
    std::string kernel = dir + "/vmlinux";
    std::ofstream(kernel) << "kernel";
    std::string disk = dir + "/rootfs.ext4";
    std::ofstream(disk) << std::string(4096, '\0');
    c.payload.kernel = kernel;
    c.payload.cmdline = "console=ttyS0 root=/dev/vda";
    c.cpus = {2, 2};
    c.memory.size = 64ull << 20;
    DiskConfig d;
    d.path = disk;
    c.disks.push_back(d);
    return c;
  }
};

TEST_P(ChClientSim, PingReportsVersion) {
  Sim sim(major());
  ASSERT_TRUE(sim.WaitReady()) << sim.Log();
  ChClient client(Options(sim.socket(), major()));
  absl::StatusOr<PingInfo> ping = client.Ping();
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_TRUE(StartsWith(ping->version, Cat(major(), "."))) << ping->version;
  EXPECT_TRUE(ping->pid.has_value());
}

TEST_P(ChClientSim, LifecycleSuccessAndWrongStateErrors) {
  Sim sim(major());
  ASSERT_TRUE(sim.WaitReady()) << sim.Log();
  ChClient client(Options(sim.socket(), major()));

  // Before vm.create: boot and info fail, 404 on v53 (CONTRACT §1.2), 500 before.
  int not_created = version().NotCreatedIs404() ? 404 : 500;
  absl::Status boot = client.BootVm();
  EXPECT_EQ(ChHttpStatus(boot), not_created) << boot;
  EXPECT_THAT(Msg(boot), HasSubstr("vm default/demo: vm.boot: CH "));
  EXPECT_EQ(ChHttpStatus(client.Info().status()), not_created);
  EXPECT_EQ(ChHttpStatus(client.RebootVm()), not_created);

  ASSERT_TRUE(client.CreateVm(Config(sim.dir())).ok());
  absl::Status again = client.CreateVm(Config(sim.dir()));
  EXPECT_EQ(ChHttpStatus(again), 500) << again;

  absl::StatusOr<VmInfo> info = client.Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, VmState::kCreated);
  EXPECT_EQ(info->config["cpus"]["boot_vcpus"], 2);

  // Pause of a Created VM: 500 on every version (CONTRACT §3).
  absl::Status pause = client.PauseVm();
  EXPECT_EQ(ChHttpStatus(pause), 500) << pause;
  EXPECT_EQ(pause.code(), absl::StatusCode::kFailedPrecondition);
  if (version().JsonArrayErrors()) {
    EXPECT_THAT(Msg(pause), HasSubstr("CH 500 [\""));
  }
  EXPECT_EQ(ChHttpStatus(client.Counters().status()), 500);

  ASSERT_TRUE(client.BootVm().ok());
  EXPECT_EQ(client.Info()->state, VmState::kRunning);
  absl::StatusOr<nlohmann::json> counters = client.Counters();
  ASSERT_TRUE(counters.ok()) << counters.status();
  EXPECT_TRUE(counters->is_object());
  EXPECT_EQ(ChHttpStatus(client.ResumeVm()), 500);  // not Paused
  ASSERT_TRUE(client.PauseVm().ok());
  EXPECT_EQ(client.Info()->state, VmState::kPaused);
  EXPECT_EQ(ChHttpStatus(client.PauseVm()), 500);  // already Paused
  ASSERT_TRUE(client.ResumeVm().ok());
  EXPECT_TRUE(client.RebootVm().ok());
  EXPECT_EQ(client.Info()->state, VmState::kRunning);

  ResizeRequest resize;
  resize.desired_vcpus = 2;
  absl::Status rs = client.Resize(resize);
  EXPECT_TRUE(rs.ok()) << rs;

  ASSERT_TRUE(client.ShutdownVm().ok());
  EXPECT_EQ(client.Info()->state, VmState::kCreated);  // CONTRACT §1.3
  EXPECT_TRUE(client.DeleteVm().ok());
  EXPECT_TRUE(client.DeleteVm().ok());                // idempotent
  EXPECT_EQ(ChHttpStatus(client.ShutdownVm()), 500);  // no VM
}

TEST_P(ChClientSim, SnapshotAndRestore) {
  Sim sim(major());
  ASSERT_TRUE(sim.WaitReady()) << sim.Log();
  ChClient client(Options(sim.socket(), major()));
  ASSERT_TRUE(client.CreateVm(Config(sim.dir())).ok());
  ASSERT_TRUE(client.BootVm().ok());
  std::string snap = sim.dir() + "/snap";
  ASSERT_EQ(::mkdir(snap.c_str(), 0700), 0);

  absl::Status running = client.Snapshot(snap);  // VM must be Paused (CONTRACT §5)
  EXPECT_EQ(ChHttpStatus(running), 500) << running;
  ASSERT_TRUE(client.PauseVm().ok());
  absl::Status s = client.Snapshot(snap, 30s);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(PathExists(snap + "/config.json"));
  EXPECT_TRUE(PathExists(snap + "/state.json"));
  EXPECT_EQ(client.Info()->state, VmState::kPaused);
  absl::Status twice = client.Snapshot(snap);  // non-empty directory
  EXPECT_EQ(ChHttpStatus(twice), 500) << twice;

  RestoreConfig restore;
  restore.source_url = "file://" + snap;
  restore.resume = true;
  absl::Status exists = client.Restore(restore);  // a VM is already there
  EXPECT_FALSE(exists.ok());
  ASSERT_TRUE(client.DeleteVm().ok());

  absl::Status r = client.Restore(restore, 30s);
  ASSERT_TRUE(r.ok()) << r;
  // resume is only understood from v52; older CH leaves the restored VM Paused.
  EXPECT_EQ(client.Info()->state, version().RestoreResume() ? VmState::kRunning : VmState::kPaused);
}

TEST_P(ChClientSim, HotplugDisk) {
  Sim sim(major());
  ASSERT_TRUE(sim.WaitReady()) << sim.Log();
  ChClient client(Options(sim.socket(), major()));
  DiskConfig extra;
  extra.path = sim.dir() + "/extra.img";
  std::ofstream(extra.path) << std::string(4096, '\0');
  extra.id = "extra";

  absl::Status before_config = client.AddDisk(extra).status();  // no VM config yet
  EXPECT_EQ(ChHttpStatus(before_config), version().NotCreatedIs404() ? 404 : 500);

  ASSERT_TRUE(client.CreateVm(Config(sim.dir())).ok());
  absl::StatusOr<std::optional<DeviceInfo>> cold = client.AddDisk(extra);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_FALSE(cold->has_value());  // 204 before boot
  ASSERT_TRUE(client.BootVm().ok());

  DiskConfig hot = extra;
  hot.path = sim.dir() + "/hot.img";
  std::ofstream(hot.path) << std::string(4096, '\0');
  hot.id = "hot";
  absl::StatusOr<std::optional<DeviceInfo>> added = client.AddDisk(hot);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_TRUE(added->has_value());  // 200 with the device after boot
  EXPECT_EQ((*added)->id, "hot");
  EXPECT_FALSE((*added)->bdf.empty());
  EXPECT_TRUE(client.RemoveDevice("hot").ok());
  EXPECT_FALSE(client.RemoveDevice("no-such-device").ok());
}

TEST_P(ChClientSim, PowerButtonAndVmmShutdown) {
  Sim sim(major());
  ASSERT_TRUE(sim.WaitReady()) << sim.Log();
  ChClient client(Options(sim.socket(), major()));
  EXPECT_EQ(ChHttpStatus(client.PowerButton()), 500);  // no VM
  ASSERT_TRUE(client.CreateVm(Config(sim.dir())).ok());
  ASSERT_TRUE(client.BootVm().ok());
  EXPECT_TRUE(client.PowerButton().ok());
  Sim sim2(major());
  ASSERT_TRUE(sim2.WaitReady()) << sim2.Log();
  ChClient client2(Options(sim2.socket(), major()));
  EXPECT_TRUE(client2.ShutdownVmm().ok());  // 200 with an empty body (CONTRACT §1.1)
  // The VMM is gone: the next call fails cleanly.
  absl::Status after = client2.Ping(2s).status();
  EXPECT_FALSE(after.ok());
  EXPECT_THAT(Msg(after), HasSubstr("vm default/demo: vmm.ping: "));
}

TEST_P(ChClientSim, InjectedFaultsGiveClearErrors) {
  struct Case {
    const char* rule;
    bool (*check)(const absl::Status&);
  };
  const Case cases[] = {
      {"garbage vmm.ping",
       [](const absl::Status& s) { return s.code() == absl::StatusCode::kInternal; }},
      {"truncate vmm.ping",
       [](const absl::Status& s) {
         return s.code() == absl::StatusCode::kUnavailable ||
                s.code() == absl::StatusCode::kDeadlineExceeded;
       }},
      {"oversize vmm.ping",
       [](const absl::Status& s) { return s.code() == absl::StatusCode::kInternal; }},
      {"close vmm.ping",
       [](const absl::Status& s) { return s.code() == absl::StatusCode::kUnavailable; }},
      {"hang vmm.ping",
       [](const absl::Status& s) { return s.code() == absl::StatusCode::kDeadlineExceeded; }},
      {"crash vmm.ping",
       [](const absl::Status& s) { return s.code() == absl::StatusCode::kUnavailable; }},
      {"fail vmm.ping 503", [](const absl::Status& s) { return ChHttpStatus(s) == 503; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.rule);
    Sim sim(major(), c.rule);
    ASSERT_TRUE(sim.WaitReady()) << sim.Log();
    ChClient client(Options(sim.socket(), major()));
    absl::Status s = client.Ping(500ms).status();
    EXPECT_TRUE(c.check(s)) << s;
    EXPECT_THAT(Msg(s), HasSubstr("vm default/demo: vmm.ping: "));
  }
}

TEST_P(ChClientSim, RecordedRequestsAreByteExact) {
  std::string dir = MakeTempDir("ch_client_rec");
  std::string record = dir + "/requests";
  {
    Sim sim(major(), "record " + record);
    ASSERT_TRUE(sim.WaitReady()) << sim.Log();
    ChClient client(Options(sim.socket(), major()));
    ASSERT_TRUE(client.Ping().ok());
    ASSERT_TRUE(client.CreateVm(Config(sim.dir())).ok());
    ASSERT_TRUE(client.BootVm().ok());
    ASSERT_TRUE(client.PauseVm().ok());
  }
  absl::StatusOr<std::string> text = ReadFile(record);
  ASSERT_TRUE(text.ok()) << text.status();
  // "--- request <n> <byte-count>\n<bytes>\n" per request.
  std::vector<std::string> requests;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    ASSERT_NE(nl, std::string::npos);
    std::istringstream header(text->substr(pos, nl - pos));
    std::string dashes, word;
    size_t index = 0, count = 0;
    header >> dashes >> word >> index >> count;
    ASSERT_EQ(dashes, "---");
    ASSERT_EQ(word, "request");
    ASSERT_LE(nl + 1 + count, text->size());
    requests.push_back(text->substr(nl + 1, count));
    pos = nl + 1 + count + 1;
  }
  ASSERT_EQ(requests.size(), 4u);
  const std::string prefix = "Host: localhost\r\nAccept: application/json\r\n";
  EXPECT_EQ(requests[0], "GET /api/v1/vmm.ping HTTP/1.1\r\n" + prefix + "\r\n");
  EXPECT_EQ(requests[2], "PUT /api/v1/vm.boot HTTP/1.1\r\n" + prefix + "\r\n");
  EXPECT_EQ(requests[3], "PUT /api/v1/vm.pause HTTP/1.1\r\n" + prefix + "\r\n");
  std::string body = ToJson(Config(dir), version()).dump();
  const std::string& create = requests[1];
  size_t head_end = create.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  EXPECT_EQ(create.substr(0, head_end + 4),
            Cat("PUT /api/v1/vm.create HTTP/1.1\r\n", prefix,
                "Content-Type: application/json\r\nContent-Length: ", create.size() - head_end - 4,
                "\r\n\r\n"));
  EXPECT_THAT(Lower(create), Not(HasSubstr("transfer-encoding")));
  nlohmann::json sent = nlohmann::json::parse(create.substr(head_end + 4));
  EXPECT_EQ(sent.dump().find("null"), std::string::npos);
  EXPECT_EQ(sent["disks"][0].contains("image_type"), version().ImageTypeField());
  (void)RemoveAll(dir);
}

INSTANTIATE_TEST_SUITE_P(Versions, ChClientSim, ::testing::Values(48, 52, 53),
                         [](const auto& info) { return Cat("v", info.param); });

}  // namespace
}  // namespace sandboxlet::ch
