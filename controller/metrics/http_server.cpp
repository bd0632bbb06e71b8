#include "controller/metrics/http_server.h"

#include <civetweb.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>

#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::metrics {
namespace {

// "host:port" / "[v6]:port" with an explicit host and a numeric port.
absl::Status ValidateListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat("metrics listen address \"", listen, "\": ", why,
                                          " (want host:port, e.g. ", kDefaultMetricsListen, ")"));
  };
  if (colon == std::string::npos || colon == 0) return bad("no host:port");
  const std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos ||
      std::atoi(port.c_str()) > 65535) {
    return bad("port must be a number from 0 to 65535");
  }
  if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string::npos) {
    return bad("IPv6 addresses go in brackets");
  }
  if (host.find_first_of(" ,") != std::string::npos) return bad("one address only");
  // Debian's civetweb is built without IPv6 (mg_check_feature bit 8).
  if (host.front() == '[' && mg_check_feature(8) == 0) {
    return bad("IPv6 is not supported by this build's civetweb; listen on an IPv4 address");
  }
  return absl::OkStatus();
}

// The address to connect to for reaching our own listener: the host, or loopback for a wildcard.
std::string WakeHost(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "0.0.0.0") return "127.0.0.1";
  if (host == "::") return "::1";
  return host;
}

int LogCivetweb(const mg_connection*, const char* message) {
  log::Warn("metrics http server", {{"error", message}});
  return 1;  // handled: civetweb prints nothing itself
}

bool IsGetOrHead(mg_connection* conn, bool* head) {
  const char* method = mg_get_request_info(conn)->request_method;
  *head = std::strcmp(method, "HEAD") == 0;
  if (*head || std::strcmp(method, "GET") == 0) return true;
  mg_response_header_start(conn, 405);
  mg_response_header_add(conn, "Allow", "GET, HEAD", -1);
  mg_response_header_add(conn, "Content-Length", "0", -1);
  mg_response_header_send(conn);
  return false;
}

// Returns the status code for civetweb (non-zero = handled).
int Reply(mg_connection* conn, int status, std::string_view content_type, const std::string& body,
          bool head) {
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", std::string(content_type).c_str(), -1);
  mg_response_header_add(conn, "Content-Length", std::to_string(body.size()).c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  if (!head) mg_write(conn, body.data(), body.size());
  return status;
}

}  // namespace

HttpServer::HttpServer(const Metrics* metrics, const Readiness* readiness)
    : metrics_(metrics), readiness_(readiness) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Metrics* metrics,
                                                              const Readiness* readiness,
                                                              HttpServerOptions options) {
  if (absl::Status s = ValidateListen(options.listen); !s.ok()) return s;
  if (options.threads < 1) options.threads = 1;
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });

  std::unique_ptr<HttpServer> server(new HttpServer(metrics, readiness));
  const std::string threads = std::to_string(options.threads);
  const char* config[] = {"listening_ports",
                          options.listen.c_str(),
                          "num_threads",
                          threads.c_str(),
                          "request_timeout_ms",
                          "10000",
                          "enable_keep_alive",
                          "yes",
                          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = LogCivetweb;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = config;
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{};
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(Cat("metrics http server: cannot listen on ", options.listen,
                                      ": ", error_text[0] != '\0' ? error_text : "unknown error"));
  }
  mg_server_port ports[1];
  std::memset(ports, 0, sizeof(ports));
  if (mg_get_server_ports(server->ctx_, 1, ports) < 1 || ports[0].port <= 0) {
    return absl::InternalError(
        Cat("metrics http server: listening on ", options.listen, " but no port reported"));
  }
  server->port_ = ports[0].port;
  server->wake_host_ = WakeHost(options.listen);
  mg_set_request_handler(server->ctx_, "/metrics$", &HttpServer::HandleMetrics, server.get());
  mg_set_request_handler(server->ctx_, "/healthz$", &HttpServer::HandleHealthz, server.get());
  mg_set_request_handler(server->ctx_, "/readyz$", &HttpServer::HandleReadyz, server.get());
  log::Info("metrics http server listening",
            {{"address", options.listen}, {"port", server->port_}});
  return server;
}

HttpServer::~HttpServer() {
  if (ctx_ == nullptr) return;
  // civetweb's accept loop polls the listener with a 2 s timeout before it notices mg_stop; a
  // connection to the listener wakes it, so shutdown takes milliseconds instead.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    mg_stop(ctx_);
    stopped = true;
  });
  while (!stopped) {
    WakeListener();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stopper.join();
}

void HttpServer::WakeListener() const {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(wake_host_.c_str(), std::to_string(port_).c_str(), &hints, &res) != 0) return;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    (void)::connect(fd, ai->ai_addr, ai->ai_addrlen);
    ::close(fd);
    break;
  }
  ::freeaddrinfo(res);
}

int HttpServer::HandleMetrics(mg_connection* conn, void* self) {
  bool head = false;
  if (!IsGetOrHead(conn, &head)) return 405;
  const auto* server = static_cast<const HttpServer*>(self);
  return Reply(conn, 200, kExpositionContentType, server->metrics_->Render(), head);
}

int HttpServer::HandleHealthz(mg_connection* conn, void*) {
  bool head = false;
  if (!IsGetOrHead(conn, &head)) return 405;
  return Reply(conn, 200, "text/plain; charset=utf-8", "ok", head);
}

int HttpServer::HandleReadyz(mg_connection* conn, void* self) {
  bool head = false;
  if (!IsGetOrHead(conn, &head)) return 405;
  const auto* server = static_cast<const HttpServer*>(self);
  Readiness::Result r = server->readiness_->Evaluate();
  const char* query = mg_get_request_info(conn)->query_string;
  const bool verbose =
      query != nullptr && std::string_view(query).find("verbose") != std::string_view::npos;
  // Like kube-apiserver: a bare "ok" when ready, the per-check list when asked or when failing.
  std::string body = r.ready && !verbose ? "ok" : r.report;
  return Reply(conn, r.ready ? 200 : 503, "text/plain; charset=utf-8", body, head);
}

}  // namespace sandboxlet::metrics
