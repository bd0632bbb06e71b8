// AgentClient against a scripted TCP server on 127.0.0.1: what it sends, how it reads answers,
// and how it fails on refusals, garbage, truncation, oversize bodies and hangs.
#include "runtime/guest/agent_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/base/fd.h"
#include "runtime/base/strings.h"

namespace sandboxlet::guest {
namespace {

using std::chrono::milliseconds;

bool Contains(const absl::Status& st, std::string_view text) {
  return std::string(st.message()).find(text) != std::string::npos;
}

// Accepts connections, reads each request (head + Content-Length body), records it and lets
// `answer` reply on the socket. An answer of kHang keeps the connection open, silent, until the
// server is destroyed.
class FakeAgent {
 public:
  static constexpr char kHang[] = "<hang>";
  static constexpr char kClose[] = "<close>";

  explicit FakeAgent(std::function<std::string(int n, const std::string& request)> answer)
      : answer_(std::move(answer)) {
    listener_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(::listen(listener_.get(), 16), 0);
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_r_.Reset(p[0]);
    stop_w_.Reset(p[1]);
    thread_ = std::thread([this] { Loop(); });
  }
  ~FakeAgent() {
    stop_w_.Reset();  // wakes the loop and any hanging answer
    thread_.join();
  }

  uint16_t port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  bool Stopped(int timeout_ms) {
    pollfd p{stop_r_.get(), POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) > 0;
  }

  void Loop() {
    for (int n = 0;; ++n) {
      pollfd p[2] = {{stop_r_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      ::poll(p, 2, -1);
      if (p[0].revents) return;
      UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      std::string req = ReadRequest(conn.get());
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(req);
      }
      std::string out = answer_(n, req);
      if (out == kHang) {
        if (Stopped(-1)) return;
      }
      if (out == kClose) continue;
      size_t off = 0;
      while (off < out.size()) {
        ssize_t w = ::send(conn.get(), out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
    }
  }

  std::string ReadRequest(int fd) {
    std::string buf;
    char chunk[4096];
    while (true) {
      size_t head = buf.find("\r\n\r\n");
      if (head != std::string::npos) {
        size_t want = 0;
        size_t cl = buf.find("Content-Length: ");
        if (cl != std::string::npos && cl < head) want = std::stoul(buf.substr(cl + 16));
        if (buf.size() >= head + 4 + want) return buf;
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return buf;
      ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return buf;
      buf.append(chunk, static_cast<size_t>(n));
    }
  }

  std::function<std::string(int, const std::string&)> answer_;
  UniqueFd listener_, stop_r_, stop_w_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;  // guarded by mu_
};

std::string Http(int code, const std::string& body, const std::string& extra = "") {
  return Cat("HTTP/1.1 ", code, " X\r\nContent-Type: application/json\r\n", extra,
             "Content-Length: ", body.size(), "\r\n\r\n", body);
}

AgentClient ClientFor(uint16_t port, milliseconds timeout = milliseconds(2000)) {
  AgentClientOptions o;
  o.address = "127.0.0.1";
  o.port = port;
  o.sandbox = "default/x";
  o.timeout = timeout;
  o.prepare_timeout = milliseconds(300);
  return AgentClient(o);
}

TEST(AgentClientTest, HealthParsesVersionAndSendsAPlainGet) {
  FakeAgent agent([](int, const std::string&) { return Http(200, R"({"version":"0.1.5"})"); });
  auto h = ClientFor(agent.port()).Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "0.1.5");
  auto reqs = agent.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_TRUE(StartsWith(reqs[0], "GET /health HTTP/1.1\r\n")) << reqs[0];
  EXPECT_NE(reqs[0].find(Cat("Host: 127.0.0.1:", agent.port(), "\r\n")), std::string::npos);
  EXPECT_EQ(reqs[0].find("Content-Length"), std::string::npos);
}

TEST(AgentClientTest, HealthAcceptsNoContentChunkedAndInterimAnswers) {
  FakeAgent agent([](int n, const std::string&) -> std::string {
    if (n == 0) return "HTTP/1.1 204 No Content\r\n\r\n";
    if (n == 1) {
      return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "b\r\n{\"version\":\r\n8;ext=1\r\n\"chunky\"\r\n1\r\n}\r\n0\r\n\r\n";
    }
    // No framing: the body ends with the connection; an interim 100 first.
    return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{\"version\":\"eof\"}";
  });
  AgentClient c = ClientFor(agent.port());
  auto h = c.Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "");
  h = c.Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "chunky");
  h = c.Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "eof");
}

TEST(AgentClientTest, GarbageAndMalformedAnswersAreClearErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x16\x03\x01\x00\xff garbage\r\n\r\n", 17), "not an HTTP response"},
      {Http(200, "<html>hi</html>"), "not a JSON object"},
      {Http(200, R"({"version":7})"), "\"version\" is not a string"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ver", "connection closed after 5 of 100"},
      {"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "bad Content-Length"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "exceeds"},
      {"HTTP/1.1 2", "connection closed inside the response head"},
      {FakeAgent::kClose, "connection closed before any answer"},
  };
  for (const auto& [answer, want] : cases) {
    FakeAgent agent([&](int, const std::string&) { return answer; });
    auto h = ClientFor(agent.port()).Health();
    ASSERT_FALSE(h.ok()) << want;
    EXPECT_TRUE(Contains(h.status(), want)) << h.status();
    EXPECT_TRUE(Contains(
        h.status(), Cat("guest agent of default/x at 127.0.0.1:", agent.port(), ": GET /health: ")))
        << h.status();
  }
}

TEST(AgentClientTest, ErrorAnswersMapToCodes) {
  FakeAgent agent([](int n, const std::string&) {
    return n == 0 ? Http(503, R"({"message":"starting"})") : Http(404, "no such page");
  });
  AgentClient c = ClientFor(agent.port());
  auto h = c.Health();
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  EXPECT_TRUE(Contains(h.status(), "HTTP 503")) << h.status();
  EXPECT_TRUE(Contains(h.status(), "starting")) << h.status();
  absl::Status st = c.Init(InitRequest{});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_TRUE(Contains(st, "POST /init: HTTP 404")) << st;
}

TEST(AgentClientTest, RefusedConnectionIsUnavailable) {
  uint16_t port;
  {
    FakeAgent gone([](int, const std::string&) { return std::string(); });
    port = gone.port();
  }  // the listener is closed: connecting is refused
  auto h = ClientFor(port).Health();
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kUnavailable) << h.status();
  EXPECT_TRUE(Contains(h.status(), "connect: ")) << h.status();
}

TEST(AgentClientTest, HangingAgentEndsAtTheDeadline) {
  FakeAgent agent([](int, const std::string&) { return std::string(FakeAgent::kHang); });
  auto h = ClientFor(agent.port(), milliseconds(200)).Health();
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDeadlineExceeded) << h.status();
  EXPECT_TRUE(Contains(h.status(), "GET /health: no answer within 200ms")) << h.status();
}

TEST(AgentClientTest, InitSendsTheIdentityEnvAndClock) {
  FakeAgent agent([](int, const std::string&) { return std::string("HTTP/1.1 204 \r\n\r\n"); });
  InitRequest r;
  r.sandbox_id = "0b6c-uid";
  r.sandbox_namespace = "team-a";
  r.name = "demo";
  r.template_name = "python";
  r.env = {{"A", "1"}, {"B", "two words"}, {"A", "3"}};
  r.wall_clock =
      std::chrono::system_clock::time_point(std::chrono::nanoseconds(1700000000123456789LL));
  ASSERT_TRUE(ClientFor(agent.port()).Init(r).ok());
  auto reqs = agent.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_TRUE(StartsWith(reqs[0], "POST /init HTTP/1.1\r\n")) << reqs[0];
  std::string body = reqs[0].substr(reqs[0].find("\r\n\r\n") + 4);
  EXPECT_NE(reqs[0].find(Cat("Content-Length: ", body.size(), "\r\n")), std::string::npos);
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["sandboxId"], "0b6c-uid");
  EXPECT_EQ(j["namespace"], "team-a");
  EXPECT_EQ(j["name"], "demo");
  EXPECT_EQ(j["template"], "python");
  EXPECT_EQ(j["envVars"], nlohmann::json({{"A", "3"}, {"B", "two words"}}));
  EXPECT_EQ(j["timestamp"], "2023-11-14T22:13:20.123456789Z");
}

TEST(AgentClientTest, PrepareSnapshotIsBoundedByItsShortTimeout) {
  FakeAgent agent([](int n, const std::string&) {
    return n == 0 ? std::string("HTTP/1.1 204 \r\n\r\n") : std::string(FakeAgent::kHang);
  });
  AgentClient c = ClientFor(agent.port(), milliseconds(60000));
  EXPECT_TRUE(c.PrepareSnapshot().ok());
  absl::Status st = c.PrepareSnapshot();
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_TRUE(Contains(st, "POST /snapshot/prepare: no answer within 300ms")) << st;
  ASSERT_EQ(agent.requests().size(), 2u);
  EXPECT_NE(agent.requests()[0].find("Content-Length: 0\r\n"), std::string::npos);
}

TEST(AgentClientTest, WaitReadyPollsUntilTheAgentAnswers) {
  FakeAgent agent([](int n, const std::string&) {
    return n < 3 ? Http(503, "booting") : Http(200, R"({"version":"v"})");
  });
  auto h =
      ClientFor(agent.port()).WaitReady(milliseconds(20000), milliseconds(10), milliseconds(1000));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, "v");
  EXPECT_EQ(agent.requests().size(), 4u);
}

TEST(AgentClientTest, WaitReadyGivesUpAtTheDeadlineWithTheLastError) {
  FakeAgent agent([](int, const std::string&) { return Http(500, "kaput"); });
  auto h =
      ClientFor(agent.port()).WaitReady(milliseconds(300), milliseconds(20), milliseconds(100));
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDeadlineExceeded) << h.status();
  EXPECT_TRUE(Contains(h.status(), Cat("guest agent of default/x at 127.0.0.1:", agent.port(),
                                       " did not answer within 300ms: ")))
      << h.status();
  EXPECT_TRUE(Contains(h.status(), "HTTP 500 \"kaput\"")) << h.status();
  EXPECT_GE(agent.requests().size(), 1u);
}

TEST(AgentClientTest, BadAddressIsInvalidArgument) {
  AgentClientOptions o;
  o.address = "not-an-ip";
  o.sandbox = "default/x";
  auto h = AgentClient(o).Health();
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << h.status();
  EXPECT_TRUE(Contains(h.status(), "\"not-an-ip\" is not an IP address")) << h.status();
}

TEST(AgentClientTest, DurationsReadNaturally) {
  EXPECT_EQ(FormatDuration(milliseconds(30000)), "30s");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1.5s");
  EXPECT_EQ(FormatDuration(milliseconds(250)), "250ms");
  EXPECT_EQ(FormatDuration(milliseconds(1234)), "1234ms");
}

}  // namespace
}  // namespace sandboxlet::guest
