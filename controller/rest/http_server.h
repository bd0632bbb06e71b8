// HttpServer: the small HTTP/1.1 server under the local Kubernetes-style REST API. One thread per
// connection (bounded), keep-alive, request bodies by Content-Length or chunked transfer coding
// with a size limit (413), responses with Content-Length or streamed with chunked transfer coding
// (watches), optional TLS (OpenSSL, certificate chain + private key files). It knows nothing of
// Kubernetes: a Handler gets a parsed request and a ResponseWriter.
//
// Thread-safety: Start/Stop from one owner thread. The handler runs concurrently on connection
// threads and must be thread-safe. A ResponseWriter belongs to its connection's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/fd.h"

namespace sandboxlet::rest {

// Header names are lower-cased; the first value of a repeated header wins except where noted.
struct HttpRequest {
  std::string method;                             // "GET", "POST", ...
  std::string target;                             // as sent: path + "?" + query
  std::string path;                               // percent-decoded path, without the query
  std::multimap<std::string, std::string> query;  // decoded query parameters
  std::map<std::string, std::string> headers;     // lower-case name → value
  std::string body;
  // The body exceeded HttpServerOptions::max_body_bytes and was not read (body is empty): the
  // handler should answer 413; the connection is closed afterwards.
  bool body_too_large = false;
  std::string remote;  // peer address, for logs

  std::string Header(std::string_view name) const;  // "" when absent; `name` lower-case
  std::string Query(std::string_view name) const;   // first value or ""
  bool HasQuery(std::string_view name) const;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// How a handler answers. Either Send() once, or StartStream() then WriteChunk()* (the stream is
// ended when the handler returns).
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void Send(int status, const HttpHeaders& headers, std::string_view body) = 0;
  // Sends the status line and headers with Transfer-Encoding: chunked. False if the peer is gone.
  virtual bool StartStream(int status, const HttpHeaders& headers) = 0;
  // One chunk, flushed at once. False when the peer is gone (the handler should return).
  virtual bool WriteChunk(std::string_view data) = 0;
  // True when the peer closed its end (checked without blocking); for long streams.
  virtual bool PeerClosed() = 0;
};

using HttpHandler = std::function<void(const HttpRequest&, ResponseWriter&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";   // IPv4 or IPv6 literal, or "localhost"
  int port = 0;                     // 0 = an ephemeral port (see HttpServer::port())
  std::string tls_cert_file;        // PEM chain; TLS when set (with tls_key_file)
  std::string tls_key_file;         // PEM private key
  size_t max_body_bytes = 3 << 20;  // larger request bodies get 413
  size_t max_header_bytes = 64 << 10;
  int max_connections = 256;              // beyond this, new connections get 503 and are closed
  std::chrono::seconds idle_timeout{90};  // keep-alive connection without a request
  std::chrono::seconds io_timeout{30};    // one read/write making no progress
};

class HttpServer {
 public:
  // Binds and listens (errors: address in use, bad TLS files, ...); serving starts at Start().
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(HttpServerOptions options,
                                                            HttpHandler handler);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void Start();
  // Stops accepting, shuts every connection down (streams end), waits for their threads.
  void Stop();

  int port() const { return port_; }
  bool tls() const { return ssl_ctx_ != nullptr; }

 private:
  struct Connection;
  HttpServer(HttpServerOptions options, HttpHandler handler, UniqueFd listen_fd, int port,
             void* ssl_ctx);
  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> conn);

  const HttpServerOptions options_;
  const HttpHandler handler_;
  UniqueFd listen_fd_;
  const int port_;
  void* ssl_ctx_;     // SSL_CTX*, owned; null without TLS
  UniqueFd wake_fd_;  // eventfd that ends AcceptLoop's poll

  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::shared_ptr<Connection>> connections_;  // guarded by mu_
  int threads_ = 0;                                    // guarded by mu_; live connection threads
};

// Percent-decoding of a URL component ('+' is a space only when `plus_is_space`).
std::string PercentDecode(std::string_view s, bool plus_is_space);
// "a=1&b=x%20y" → {{"a","1"},{"b","x y"}}.
std::multimap<std::string, std::string> ParseQuery(std::string_view query);

}  // namespace sandboxlet::rest
