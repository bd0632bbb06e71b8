// Test helpers for controller/metrics: a temp dir, an HTTP GET through libcurl, sparse files and
// reading one sample out of a text exposition.
#pragma once

#include <curl/curl.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

#include "runtime/base/fs.h"

namespace sandboxlet::metrics::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sbl-metrics-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    path_ = p != nullptr ? p : "";
  }
  ~TempDir() {
    if (!path_.empty()) (void)RemoveAll(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct HttpResponse {
  long status = 0;  // 0 = no response
  std::string body;
  std::string content_type;
};

inline size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

inline HttpResponse HttpRequest(const std::string& url, const char* method = "GET") {
  HttpResponse r;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return r;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  if (curl_easy_perform(curl) == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    char* ct = nullptr;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct);
    if (ct != nullptr) r.content_type = ct;
  }
  curl_easy_cleanup(curl);
  return r;
}

// Writes `data_bytes` of data at offset 0 and extends the file to `apparent_bytes` with a hole.
inline bool WriteSparseFile(const std::string& path, size_t data_bytes, off_t apparent_bytes) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::string block(data_bytes, 'x');
  bool ok = ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()) &&
            ::ftruncate(fd, apparent_bytes) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Appends `bytes` of data at the end of the file.
inline bool AppendData(const std::string& path, size_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return false;
  std::string block(bytes, 'y');
  bool ok = ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// The value of the sample whose name and labels are exactly `series` (e.g.
// `sandboxlet_sandboxes{phase="Running"}`), nullopt if absent.
inline std::optional<double> Sample(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

}  // namespace sandboxlet::metrics::testing
