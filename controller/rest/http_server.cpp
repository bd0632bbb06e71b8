#include "controller/rest/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "Request Entity Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string OpenSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::string PeerAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  }
  return Cat(host, ":", port);
}

}  // namespace

std::string HttpRequest::Header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? "" : it->second;
}

std::string HttpRequest::Query(std::string_view name) const {
  auto it = query.find(std::string(name));
  return it == query.end() ? "" : it->second;
}

bool HttpRequest::HasQuery(std::string_view name) const {
  return query.find(std::string(name)) != query.end();
}

std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::multimap<std::string, std::string> ParseQuery(std::string_view query) {
  std::multimap<std::string, std::string> out;
  for (const std::string& part : Split(query, '&')) {
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key = PercentDecode(std::string_view(part).substr(0, eq), true);
    std::string value =
        eq == std::string::npos ? "" : PercentDecode(std::string_view(part).substr(eq + 1), true);
    out.emplace(std::move(key), std::move(value));
  }
  return out;
}

// One accepted connection: the socket, its TLS session and the bytes read but not yet consumed.
struct HttpServer::Connection {
  UniqueFd fd;
  SSL* ssl = nullptr;  // owned
  std::string remote;
  std::string buffer;  // read ahead (pipelined requests, body bytes)

  ~Connection() {
    if (ssl != nullptr) SSL_free(ssl);
  }

  // Waits up to `timeout` for something to read. False on timeout or error.
  bool WaitReadable(std::chrono::milliseconds timeout) {
    if (ssl != nullptr && SSL_pending(ssl) > 0) return true;
    pollfd p{fd.get(), POLLIN, 0};
    int rc;
    do {
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
  }

  // Reads some bytes into `buffer`. False at EOF, error or timeout (SO_RCVTIMEO).
  bool ReadSome() {
    char buf[16384];
    if (ssl != nullptr) {
      int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) return false;
      buffer.append(buf, static_cast<size_t>(n));
      return true;
    }
    ssize_t n;
    do {
      n = ::recv(fd.get(), buf, sizeof(buf), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buffer.append(buf, static_cast<size_t>(n));
    return true;
  }

  bool WriteAll(std::string_view data) {
    while (!data.empty()) {
      if (ssl != nullptr) {
        int n = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      ssize_t n = ::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  bool PeerClosed() {
    pollfd p{fd.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
      char c;
      ssize_t n = ::recv(fd.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      return n == 0;
    }
    return false;
  }
};

namespace {

// The ResponseWriter of one request on a connection.
class ConnectionWriter final : public ResponseWriter {
 public:
  ConnectionWriter(std::function<bool(std::string_view)> write, std::function<bool()> peer_closed,
                   bool close_after)
      : write_(std::move(write)), peer_closed_(std::move(peer_closed)), close_(close_after) {}

  void Send(int status, const HttpHeaders& headers, std::string_view body) override {
    if (started_) return;
    started_ = true;
    std::string head = Head(status, headers);
    head += Cat("Content-Length: ", body.size(), "\r\n\r\n");
    ok_ = write_(head) && write_(body);
  }

  bool StartStream(int status, const HttpHeaders& headers) override {
    if (started_) return false;
    started_ = true;
    streaming_ = true;
    ok_ = write_(Head(status, headers) + "Transfer-Encoding: chunked\r\n\r\n");
    return ok_;
  }

  bool WriteChunk(std::string_view data) override {
    if (!streaming_ || !ok_) return false;
    if (data.empty()) return true;
    char size[32];
    int n = std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    std::string chunk(size, static_cast<size_t>(n));
    chunk.append(data);
    chunk += "\r\n";
    ok_ = write_(chunk);
    return ok_;
  }

  bool PeerClosed() override { return peer_closed_(); }

  // After the handler: ends a stream, or answers 500 when the handler sent nothing.
  void Finish() {
    if (!started_) {
      Send(500, {{"Content-Type", "text/plain"}}, "handler sent no response\n");
      return;
    }
    if (streaming_ && ok_) ok_ = write_("0\r\n\r\n");
  }

  bool ok() const { return ok_; }
  bool close_connection() const { return close_ || streaming_; }

 private:
  std::string Head(int status, const HttpHeaders& headers) const {
    std::string head = Cat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n");
    for (const auto& [name, value] : headers) head += Cat(name, ": ", value, "\r\n");
    if (close_) head += "Connection: close\r\n";
    return head;
  }

  std::function<bool(std::string_view)> write_;
  std::function<bool()> peer_closed_;
  bool close_;
  bool started_ = false;
  bool streaming_ = false;
  bool ok_ = true;
};

enum class ParseResult { kOk, kClosed, kBadRequest, kHeaderTooLarge, kBodyTooLarge };

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(HttpServerOptions options,
                                                               HttpHandler handler) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(options.port);
  int gai = ::getaddrinfo(options.host.empty() ? nullptr : options.host.c_str(), port_text.c_str(),
                          &hints, &res);
  if (gai != 0) {
    return absl::InvalidArgumentError(
        Cat("api listen address ", options.host, ":", options.port, ": ", gai_strerror(gai)));
  }
  UniqueFd fd;
  absl::Status last = absl::UnavailableError("no address");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s.valid()) {
      last = ErrnoStatus(errno, "socket");
      continue;
    }
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(s.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(s.get(), 128) != 0) {
      last = ErrnoStatus(errno, Cat("listen on ", options.host, ":", options.port));
      continue;
    }
    fd = std::move(s);
    break;
  }
  ::freeaddrinfo(res);
  if (!fd.valid()) return last;

  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  int port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  SSL_CTX* ctx = nullptr;
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("api TLS needs both a certificate and a key file");
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) return absl::InternalError(Cat("SSL_CTX_new: ", OpenSslError()));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    if (SSL_CTX_use_certificate_chain_file(ctx, options.tls_cert_file.c_str()) != 1) {
      std::string err = OpenSslError();
      SSL_CTX_free(ctx);
      return absl::InvalidArgumentError(
          Cat("api TLS certificate ", options.tls_cert_file, ": ", err));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, options.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      std::string err = OpenSslError();
      SSL_CTX_free(ctx);
      return absl::InvalidArgumentError(Cat("api TLS key ", options.tls_key_file, ": ", err));
    }
  }
  return std::unique_ptr<HttpServer>(
      new HttpServer(std::move(options), std::move(handler), std::move(fd), port, ctx));
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler, UniqueFd listen_fd, int port,
                       void* ssl_ctx)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      listen_fd_(std::move(listen_fd)),
      port_(port),
      ssl_ctx_(ssl_ctx),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

HttpServer::~HttpServer() {
  Stop();
  if (ssl_ctx_ != nullptr) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
}

void HttpServer::Start() {
  if (accept_thread_.joinable()) return;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  if (accept_thread_.joinable()) accept_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  for (const auto& conn : connections_) ::shutdown(conn->fd.get(), SHUT_RDWR);
  cv_.wait(lock, [this] { return threads_ == 0; });
  listen_fd_.Reset();
}

void HttpServer::AcceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    int rc = ::poll(fds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      log::Error("api server: poll failed", {{"error", std::strerror(errno)}});
      return;
    }
    if (fds[1].revents != 0 || stopping_) return;
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int cfd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (cfd < 0) continue;
    auto conn = std::make_shared<Connection>();
    conn->fd.Reset(cfd);
    conn->remote = PeerAddress(peer);
    timeval tv{static_cast<time_t>(options_.io_timeout.count()), 0};
    ::setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (threads_ >= options_.max_connections) {
        // Plain text even on TLS listeners would be garbage; just close there.
        if (ssl_ctx_ == nullptr) {
          conn->WriteAll(
              "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        continue;
      }
      connections_.insert(conn);
      ++threads_;
    }
    std::thread([this, conn] { Serve(conn); }).detach();
  }
}

void HttpServer::Serve(std::shared_ptr<Connection> conn) {
  // Writes to a peer that went away must fail with EPIPE, not kill the process: OpenSSL writes
  // with write(2), so SIGPIPE is blocked on this thread (it stays pending and is discarded).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto finish = [&] {
    if (conn->ssl != nullptr) SSL_shutdown(conn->ssl);
    std::lock_guard<std::mutex> lock(mu_);
    connections_.erase(conn);
    conn->fd.Reset();
    --threads_;
    cv_.notify_all();
  };

  if (ssl_ctx_ != nullptr) {
    conn->ssl = SSL_new(static_cast<SSL_CTX*>(ssl_ctx_));
    if (conn->ssl == nullptr || SSL_set_fd(conn->ssl, conn->fd.get()) != 1 ||
        SSL_accept(conn->ssl) != 1) {
      log::Debug("api server: TLS handshake failed",
                 {{"peer", conn->remote}, {"error", OpenSslError()}});
      finish();
      return;
    }
  }

  auto write = [&](std::string_view data) { return conn->WriteAll(data); };
  auto peer_closed = [&] { return conn->PeerClosed(); };
  auto send_error = [&](int status, std::string_view text) {
    ConnectionWriter w(write, peer_closed, /*close_after=*/true);
    w.Send(status, {{"Content-Type", "text/plain; charset=utf-8"}}, text);
  };

  while (!stopping_) {
    // Wait for the next request (keep-alive idle time), then read its head.
    size_t head_end;
    bool closed = false;
    bool first_read = true;
    while ((head_end = conn->buffer.find("\r\n\r\n")) == std::string::npos) {
      if (conn->buffer.size() > options_.max_header_bytes) break;
      if (first_read && conn->buffer.empty() &&
          !conn->WaitReadable(
              std::chrono::duration_cast<std::chrono::milliseconds>(options_.idle_timeout))) {
        closed = true;
        break;
      }
      first_read = false;
      if (!conn->ReadSome()) {
        closed = true;
        break;
      }
    }
    if (closed || stopping_) break;
    if (head_end == std::string::npos) {
      send_error(431, "request header too large\n");
      break;
    }

    HttpRequest req;
    req.remote = conn->remote;
    std::string_view head(conn->buffer.data(), head_end);
    size_t line_end = head.find("\r\n");
    std::string_view line = head.substr(0, line_end);
    std::vector<std::string> parts = Split(line, ' ');
    if (parts.size() != 3 || !StartsWith(parts[2], "HTTP/1.")) {
      send_error(400, "malformed request line\n");
      break;
    }
    req.method = parts[0];
    req.target = parts[1];
    bool http10 = parts[2] == "HTTP/1.0";
    bool bad_header = false;
    if (line_end != std::string_view::npos) {
      std::string_view rest = head.substr(line_end + 2);
      for (const std::string& h : Split(rest, '\n')) {
        std::string_view hv = Trim(h);
        if (hv.empty()) continue;
        size_t colon = hv.find(':');
        if (colon == std::string_view::npos || colon == 0) {
          bad_header = true;
          break;
        }
        std::string name = Lower(Trim(hv.substr(0, colon)));
        std::string value(Trim(hv.substr(colon + 1)));
        auto [it, inserted] = req.headers.emplace(name, value);
        if (!inserted) it->second += ", " + value;
      }
    }
    if (bad_header) {
      send_error(400, "malformed header\n");
      break;
    }
    conn->buffer.erase(0, head_end + 4);

    size_t q = req.target.find('?');
    req.path = PercentDecode(std::string_view(req.target).substr(0, q), false);
    if (q != std::string::npos) req.query = ParseQuery(std::string_view(req.target).substr(q + 1));

    std::string connection = Lower(req.Header("connection"));
    bool close_after = http10 ? connection.find("keep-alive") == std::string::npos
                              : connection.find("close") != std::string::npos;

    // Body.
    std::string te = Lower(req.Header("transfer-encoding"));
    std::string cl = req.Header("content-length");
    bool expect_continue = Lower(req.Header("expect")) == "100-continue";
    if (!te.empty() && te != "identity") {
      if (te != "chunked") {
        send_error(501, "unsupported transfer encoding\n");
        break;
      }
      if (expect_continue && !conn->WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) break;
      bool ok = true, too_large = false;
      while (true) {
        size_t eol;
        while ((eol = conn->buffer.find("\r\n")) == std::string::npos) {
          if (conn->buffer.size() > 1024 || !conn->ReadSome()) {
            ok = false;
            break;
          }
        }
        if (!ok) break;
        size_t size = std::strtoull(conn->buffer.substr(0, eol).c_str(), nullptr, 16);
        conn->buffer.erase(0, eol + 2);
        if (req.body.size() + size > options_.max_body_bytes) {
          too_large = true;
          break;
        }
        while (conn->buffer.size() < size + 2) {
          if (!conn->ReadSome()) {
            ok = false;
            break;
          }
        }
        if (!ok) break;
        req.body.append(conn->buffer, 0, size);
        conn->buffer.erase(0, size + 2);
        if (size == 0) break;  // trailers are not supported: the empty line follows at once
      }
      if (too_large) {
        req.body.clear();
        req.body_too_large = true;
        ConnectionWriter w(write, peer_closed, /*close_after=*/true);
        handler_(req, w);
        w.Finish();
        break;
      }
      if (!ok) break;
    } else if (!cl.empty()) {
      char* end = nullptr;
      unsigned long long n = std::strtoull(cl.c_str(), &end, 10);
      if (end == cl.c_str() || *end != '\0') {
        send_error(400, "malformed Content-Length\n");
        break;
      }
      if (n > options_.max_body_bytes) {
        // The body is not read: the handler answers 413 and the connection is closed.
        req.body_too_large = true;
        ConnectionWriter w(write, peer_closed, /*close_after=*/true);
        handler_(req, w);
        w.Finish();
        break;
      }
      if (expect_continue && !conn->WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) break;
      bool ok = true;
      while (conn->buffer.size() < n) {
        if (!conn->ReadSome()) {
          ok = false;
          break;
        }
      }
      if (!ok) break;
      req.body = conn->buffer.substr(0, n);
      conn->buffer.erase(0, n);
    }

    ConnectionWriter writer(write, peer_closed, close_after);
    handler_(req, writer);
    writer.Finish();
    if (!writer.ok() || writer.close_connection()) break;
  }
  finish();
}

}  // namespace sandboxlet::rest
