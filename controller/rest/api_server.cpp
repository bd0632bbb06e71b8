#include "controller/rest/api_server.h"

#include <arpa/inet.h>

#include "controller/rest/discovery.h"
#include "controller/rest/openapi_doc.h"
#include "controller/rest/router.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

void SendJson(ResponseWriter& w, int code, const nlohmann::json& body,
              const std::vector<std::string>& warnings = {},
              std::string content_type = "application/json") {
  HttpHeaders headers = {{"Content-Type", std::move(content_type)},
                         {"Cache-Control", "no-cache, private"}};
  for (const std::string& warning : warnings) {
    std::string escaped;
    for (char ch : warning) {
      if (ch == '"' || ch == '\\') escaped.push_back('\\');
      escaped.push_back(ch == '\n' || ch == '\r' ? ' ' : ch);
    }
    headers.emplace_back("Warning", Cat("299 - \"", escaped, "\""));
  }
  w.Send(code, headers, body.dump());
}

void SendError(ResponseWriter& w, const ApiError& e) { SendJson(w, e.code, e.ToStatus()); }

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || b.empty()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::Status ParseListenAddress(const std::string& listen, std::string* host, int* port) {
  std::string h, p;
  if (StartsWith(listen, "[")) {
    size_t close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return absl::InvalidArgumentError(
          Cat("api listen address \"", listen, "\": expected [host]:port"));
    }
    h = listen.substr(1, close - 1);
    p = listen.substr(close + 2);
  } else {
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          Cat("api listen address \"", listen, "\": expected host:port"));
    }
    h = listen.substr(0, colon);
    p = listen.substr(colon + 1);
  }
  char* end = nullptr;
  long n = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || n < 0 || n > 65535) {
    return absl::InvalidArgumentError(Cat("api listen address \"", listen, "\": bad port"));
  }
  *host = h;
  *port = static_cast<int>(n);
  return absl::OkStatus();
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(store::ObjectStore& store,
                                                            ApiServerOptions options) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseListenAddress(options.listen, &host, &port); !s.ok()) return s;
  bool tls = !options.tls_cert_file.empty() || !options.tls_key_file.empty();
  if (!IsLoopbackHost(host) && (!tls || options.token_file.empty())) {
    return absl::InvalidArgumentError(
        Cat("api listen address ", options.listen,
            " is not loopback: a TLS certificate and key and a token file are required"));
  }
  std::string token;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile(options.token_file);
    if (!text.ok()) {
      return absl::Status(text.status().code(), Cat("api token file ", options.token_file, ": ",
                                                    text.status().message()));
    }
    std::string first = text->substr(0, text->find('\n'));
    token = std::string(Trim(first));
    if (token.empty()) {
      return absl::InvalidArgumentError(Cat("api token file ", options.token_file, " is empty"));
    }
  }
  Clock& clock = options.clock != nullptr ? *options.clock : *RealClock::Get();
  std::unique_ptr<ApiServer> server(new ApiServer(store, options, token, clock));
  server->host_ = host;
  HttpServerOptions http;
  http.host = host;
  http.port = port;
  http.tls_cert_file = options.tls_cert_file;
  http.tls_key_file = options.tls_key_file;
  http.max_body_bytes = options.max_body_bytes;
  http.max_connections = options.max_connections;
  ApiServer* self = server.get();
  absl::StatusOr<std::unique_ptr<HttpServer>> hs = HttpServer::Create(
      http, [self](const HttpRequest& r, ResponseWriter& w) { self->Serve(r, w); });
  if (!hs.ok()) return hs.status();
  server->http_ = std::move(*hs);
  server->http_->Start();
  log::Info("api server listening",
            {{"url", server->url()}, {"auth", token.empty() ? "none" : "token"}});
  return server;
}

ApiServer::ApiServer(store::ObjectStore& store, ApiServerOptions options, std::string token,
                     Clock& clock)
    : store_(store),
      options_(std::move(options)),
      token_(std::move(token)),
      clock_(clock),
      resources_(store, clock, options_.resources) {}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::Stop() {
  if (http_) http_->Stop();
}

int ApiServer::port() const { return http_ ? http_->port() : 0; }

std::string ApiServer::url() const {
  std::string host = host_.find(':') != std::string::npos ? Cat("[", host_, "]") : host_;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  return Cat(http_ && http_->tls() ? "https" : "http", "://", host, ":", port());
}

void ApiServer::Serve(const HttpRequest& req, ResponseWriter& writer) {
  const bool health = req.path == "/healthz" || req.path == "/livez" || req.path == "/readyz";
  if (!token_.empty() && !health) {
    std::string auth = req.Header("authorization");
    std::string_view presented;
    if (StartsWith(auth, "Bearer ")) presented = Trim(std::string_view(auth).substr(7));
    if (!ConstantTimeEquals(presented, token_)) {
      SendError(writer, Unauthorized());
      return;
    }
  }
  if (req.body_too_large) {
    SendError(writer, TooLarge(options_.max_body_bytes));
    return;
  }
  RequestInfo info = ParseRequestInfo(req);
  if (!info.is_resource) {
    ServeNonResource(req, writer);
    return;
  }
  const ResourceType* type = FindResourceType(info.group, info.version, info.resource);
  if (type == nullptr) {
    SendError(writer, NotFoundPath(req.path));
    return;
  }
  std::optional<ApiResponse> r = resources_.Handle(req, info, *type, writer);
  if (r.has_value()) SendJson(writer, r->code, r->body, r->warnings);
  log::Debug("api request", {{"method", req.method},
                             {"path", req.target},
                             {"code", r.has_value() ? r->code : 200},
                             {"peer", req.remote}});
}

void ApiServer::ServeNonResource(const HttpRequest& req, ResponseWriter& writer) {
  if (req.method != "GET" && req.method != "HEAD") {
    SendError(writer, MethodNotAllowed(req.method, req.path));
    return;
  }
  const std::string& p = req.path;
  std::string accept = req.Header("accept");
  if (p == "/healthz" || p == "/livez" || p == "/readyz") {
    writer.Send(200, {{"Content-Type", "text/plain; charset=utf-8"}}, "ok");
    return;
  }
  if (p == "/version" || p == "/version/") {
    SendJson(writer, 200, VersionInfo(options_.sandboxlet_version));
    return;
  }
  if (p == "/api" || p == "/api/" || p == "/apis" || p == "/apis/") {
    bool core = StartsWith(p, "/api") && !StartsWith(p, "/apis");
    std::string version = AggregatedDiscoveryVersion(accept);
    if (!version.empty()) {
      SendJson(writer, 200, AggregatedDiscovery(core, version), {},
               AggregatedDiscoveryContentType(version));
    } else if (core) {
      std::string host = req.Header("host");
      SendJson(writer, 200, LegacyApiVersions(host.empty() ? url() : host));
    } else {
      SendJson(writer, 200, LegacyApiGroupList());
    }
    return;
  }
  std::vector<std::string> parts;
  for (const std::string& s : Split(p, '/')) {
    if (!s.empty()) parts.push_back(s);
  }
  if (parts.size() == 2 && parts[0] == "api") {
    if (std::optional<nlohmann::json> list = ApiResourceList("", parts[1])) {
      SendJson(writer, 200, *list);
      return;
    }
  } else if (parts.size() == 2 && parts[0] == "apis") {
    if (std::optional<nlohmann::json> group = LegacyApiGroup(parts[1])) {
      SendJson(writer, 200, *group);
      return;
    }
  } else if (parts.size() == 3 && parts[0] == "apis") {
    if (std::optional<nlohmann::json> list = ApiResourceList(parts[1], parts[2])) {
      SendJson(writer, 200, *list);
      return;
    }
  } else if (p == "/openapi/v3" || p == "/openapi/v3/") {
    SendJson(writer, 200, OpenApiV3Index());
    return;
  } else if (StartsWith(p, "/openapi/v3/")) {
    if (const nlohmann::json* doc =
            OpenApiV3Document(p.substr(std::string("/openapi/v3/").size()))) {
      SendJson(writer, 200, *doc);
      return;
    }
  } else if (p == "/openapi/v2" || p == "/openapi/v2/") {
    // Only JSON: a client that accepts nothing else (kubectl asks for protobuf first, then
    // JSON) gets 406.
    bool json_ok = accept.empty() || accept.find("application/json") != std::string::npos ||
                   accept.find("*/*") != std::string::npos;
    if (!json_ok) {
      SendError(writer, NotAcceptable("OpenAPI v2 is served as JSON only"));
      return;
    }
    SendJson(writer, 200, OpenApiV2Document());
    return;
  }
  SendError(writer, NotFoundPath(p));
}

}  // namespace sandboxlet::rest
