// HttpServer: sandboxlet's observability listener (--metrics-listen, default 127.0.0.1:9464, the
// port OpenTelemetry/Prometheus exporters conventionally use). Serves
//   GET /metrics  the registry in text exposition format 0.0.4 (only reads current values);
//   GET /healthz  200 "ok" while the process serves requests;
//   GET /readyz   200 when every readiness check passes, else 503; the body lists each check
//                 ("[+]store ok" / "[-]adoption failed: ...").
// Built on civetweb (the library prometheus-cpp's own exposer uses), directly, so the three
// endpoints share one listener. HEAD is answered like GET without a body; other methods get 405.
//
// Thread-safe: requests are served on civetweb's worker threads; the destructor stops the
// listener and waits for requests in progress.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controller/metrics/metrics.h"
#include "controller/metrics/readiness.h"

struct mg_context;
struct mg_connection;

namespace sandboxlet::metrics {

inline constexpr std::string_view kDefaultMetricsListen = "127.0.0.1:9464";

struct HttpServerOptions {
  // "host:port" (IPv4; "[v6addr]:port" only if civetweb was built with IPv6, which Debian's is
  // not); port 0 picks a free port (see HttpServer::port()).
  std::string listen = std::string(kDefaultMetricsListen);
  int threads = 4;
};

class HttpServer {
 public:
  // Starts listening. `metrics` and `readiness` must outlive the server. InvalidArgument for a
  // malformed address; Unavailable if the address cannot be bound (with civetweb's reason).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Metrics* metrics,
                                                           const Readiness* readiness,
                                                           HttpServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound TCP port (the chosen one when listening on port 0).
  int port() const { return port_; }

 private:
  HttpServer(const Metrics* metrics, const Readiness* readiness);

  static int HandleMetrics(mg_connection* conn, void* self);
  static int HandleHealthz(mg_connection* conn, void* self);
  static int HandleReadyz(mg_connection* conn, void* self);

  // Connects to our own listener once, to wake civetweb's accept loop.
  void WakeListener() const;

  const Metrics* const metrics_;
  const Readiness* const readiness_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
  std::string wake_host_;
};

}  // namespace sandboxlet::metrics
