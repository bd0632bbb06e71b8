// Test support for the REST API tests: a temporary store + ApiServer, and a small libcurl
// client that returns status, headers and body (and can stop a stream at a marker).
#pragma once

#include <curl/curl.h>
#include <stdlib.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "controller/rest/api_server.h"
#include "controller/store/object_store.h"
#include "runtime/base/fs.h"

namespace sandboxlet::rest::testing {

struct HttpResult {
  long code = 0;
  std::multimap<std::string, std::string> headers;  // lower-case names
  std::string body;
  CURLcode curl = CURLE_OK;
  long connects = 0;  // new connections curl opened for this request
  nlohmann::json Json() const { return nlohmann::json::parse(body, nullptr, false); }
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct HttpCall {
  std::string method = "GET";
  std::string path;
  std::string body;
  std::vector<std::string> headers;  // "Name: value"
  long timeout_ms = 10000;
  // Called with the body received so far; returning true stops the transfer (streams).
  std::function<bool(const std::string&)> stop_when;
  std::string ca_file;  // for https
};

class HttpClient {
 public:
  explicit HttpClient(std::string base) : base_(std::move(base)), curl_(curl_easy_init()) {}
  ~HttpClient() { curl_easy_cleanup(curl_); }

  HttpResult Do(const HttpCall& call) {
    HttpResult r;
    struct Sink {
      HttpResult* r;
      const HttpCall* call;
      bool stopped = false;
    } sink{&r, &call};
    curl_easy_reset(curl_);
    std::string url = base_ + call.path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, call.method.c_str());
    if (call.method == "HEAD") curl_easy_setopt(curl_, CURLOPT_NOBODY, 1L);
    if (!call.body.empty() || call.method == "POST" || call.method == "PUT" ||
        call.method == "PATCH") {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, call.body.data());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(call.body.size()));
    }
    curl_slist* list = nullptr;
    for (const std::string& h : call.headers) list = curl_slist_append(list, h.c_str());
    list = curl_slist_append(list, "Expect:");
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, call.timeout_ms);
    if (!call.ca_file.empty()) curl_easy_setopt(curl_, CURLOPT_CAINFO, call.ca_file.c_str());
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(
        curl_, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* user) -> size_t {
          auto* s = static_cast<Sink*>(user);
          s->r->body.append(data, size * n);
          if (s->call->stop_when && s->call->stop_when(s->r->body)) {
            s->stopped = true;
            return 0;
          }
          return size * n;
        });
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(
        curl_, CURLOPT_HEADERFUNCTION,
        +[](char* data, size_t size, size_t n, void* user) -> size_t {
          auto* res = static_cast<HttpResult*>(user);
          std::string line(data, size * n);
          size_t colon = line.find(':');
          if (colon != std::string::npos) {
            std::string name = line.substr(0, colon);
            for (char& c : name) c = static_cast<char>(std::tolower(c));
            std::string value = line.substr(colon + 1);
            while (!value.empty() && (value.back() == '\r' || value.back() == '\n'))
              value.pop_back();
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            res->headers.emplace(name, value);
          }
          return size * n;
        });
    r.curl = curl_easy_perform(curl_);
    if (sink.stopped) r.curl = CURLE_OK;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_getinfo(curl_, CURLINFO_NUM_CONNECTS, &r.connects);
    curl_slist_free_all(list);
    return r;
  }

  HttpResult Get(const std::string& path, std::vector<std::string> headers = {}) {
    HttpCall c;
    c.path = path;
    c.headers = std::move(headers);
    return Do(c);
  }
  HttpResult Send(const std::string& method, const std::string& path, const std::string& body,
                  const std::string& content_type = "application/json") {
    HttpCall c;
    c.method = method;
    c.path = path;
    c.body = body;
    c.headers = {"Content-Type: " + content_type};
    return Do(c);
  }

 private:
  std::string base_;
  CURL* curl_;
};

// A unique temporary directory, removed on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sandboxlet-rest-XXXXXX";
    char* p = mkdtemp(tmpl);
    EXPECT_NE(p, nullptr);
    path_ = p != nullptr ? p : "/tmp";
  }
  ~TempDir() { (void)RemoveAll(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A store on a temporary file and an API server in front of it.
struct ServerUnderTest {
  explicit ServerUnderTest(ApiServerOptions options = {}, store::StoreOptions store_options = {}) {
    auto s = store::ObjectStore::Open(dir.path() + "/store.db", store_options);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return;
    store = std::move(*s);
    if (options.listen == "127.0.0.1:6443") options.listen = "127.0.0.1:0";
    auto srv = ApiServer::Start(*store, options);
    EXPECT_TRUE(srv.ok()) << srv.status();
    if (srv.ok()) server = std::move(*srv);
  }
  ~ServerUnderTest() {
    if (server) server->Stop();
  }
  TempDir dir;
  std::unique_ptr<store::ObjectStore> store;
  std::unique_ptr<ApiServer> server;
};

inline nlohmann::json SandboxJson(const std::string& name, int vcpus = 2) {
  return {{"apiVersion", "sandboxlet.dev/v1alpha1"},
          {"kind", "Sandbox"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"labels", {{"app", name}}}}},
          {"spec", {{"template", "ubuntu"}, {"vcpus", vcpus}}}};
}

inline const std::string kSandboxes = "/apis/sandboxlet.dev/v1alpha1/namespaces/default/sandboxes";

}  // namespace sandboxlet::rest::testing
