// ApiServer: the node's local Kubernetes-style REST API, so that an unmodified kubectl manages
// Sandboxes and SandboxSnapshots with no cluster. It serves, over HttpServer:
//   /version, /healthz, /livez, /readyz; discovery (/api, /api/v1, /apis, /apis/sandboxlet.dev,
//   /apis/sandboxlet.dev/v1alpha1, aggregated v2 and v2beta1); OpenAPI (/openapi/v3 and its
//   group document, /openapi/v2 as JSON); and the resources of router.h (resource_handler.h).
// Answers are JSON (Tables when asked, watch streams chunked); errors are Status objects.
//
// Security: on a loopback address the API is open to local users (like a unix socket with
// permissive mode — bind it to loopback only on single-user hosts). Bound to any other address
// it requires TLS (certificate + key files) and a bearer token (from a file), and Create refuses
// to start without them. With a token configured every request but /healthz, /livez and /readyz
// must carry `Authorization: Bearer <token>` (401 otherwise).
//
// Thread-safety: Start/Stop from the owner; requests are served on connection threads.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "api/validation.h"
#include "controller/rest/http_server.h"
#include "controller/rest/resource_handler.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"

namespace sandboxlet::rest {

struct ApiServerOptions {
  std::string listen = "127.0.0.1:6443";  // host:port, "[::1]:6443"; port 0 = ephemeral
  std::string token_file;                 // bearer token (first line); required off loopback
  std::string tls_cert_file;              // PEM; TLS when set (required off loopback)
  std::string tls_key_file;
  size_t max_body_bytes = 3 << 20;  // kube-apiserver's default request limit
  int max_connections = 256;
  std::string sandboxlet_version = "0.1.0";
  ResourceHandlerOptions resources;
  Clock* clock = nullptr;  // null = RealClock::Get()
};

class ApiServer {
 public:
  // Validates the options, reads the token, binds and starts serving.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(store::ObjectStore& store,
                                                          ApiServerOptions options);
  ~ApiServer();  // Stop()
  void Stop();

  int port() const;
  // "https://127.0.0.1:6443" / "http://127.0.0.1:43123", for kubeconfigs and logs.
  std::string url() const;

 private:
  ApiServer(store::ObjectStore& store, ApiServerOptions options, std::string token, Clock& clock);
  void Serve(const HttpRequest& request, ResponseWriter& writer);
  void ServeNonResource(const HttpRequest& request, ResponseWriter& writer);

  store::ObjectStore& store_;
  const ApiServerOptions options_;
  const std::string token_;
  Clock& clock_;
  std::string host_;  // as given in listen, without brackets
  ResourceHandler resources_;
  std::unique_ptr<HttpServer> http_;
};

// Splits "host:port" / "[v6]:port". InvalidArgument when malformed.
absl::Status ParseListenAddress(const std::string& listen, std::string* host, int* port);
// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

}  // namespace sandboxlet::rest
