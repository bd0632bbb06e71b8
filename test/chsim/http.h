// A request parser and response writer that reproduce micro-http, the HTTP/1.1 server inside
// Cloud Hypervisor (CONTRACT §1, §4): Content-Length framing only (Transfer-Encoding is ignored,
// so chunk bytes become the "next request"), header lines of at most 1024 bytes, bodies capped at
// 51200 bytes, `Expect: 100-continue`, and status lines without a reason phrase.
// Thread-safe: no — one parser per connection.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "runtime/base/fd.h"

namespace sandboxlet::chsim {

inline constexpr size_t kMaxHeaderLine = 1024;
inline constexpr size_t kMaxBody = 51200;

struct HttpRequest {
  std::string method;  // GET, PUT, ...
  std::string target;  // "/api/v1/vm.info"
  std::string version;
  bool has_body = false;  // Content-Length > 0
  std::string body;
  std::string raw;            // the bytes of this request exactly as received
  std::vector<UniqueFd> fds;  // SCM_RIGHTS fds that arrived with it
};

class RequestParser {
 public:
  enum class Step {
    kNeedMore,  // no complete request yet
    kRequest,   // *out holds a request
    kContinue,  // headers asked for 100-continue: send the interim response, then call again
    kError,     // *error says why; answer 400 and close the connection
  };

  void Append(const char* data, size_t n) { buffer_.append(data, n); }
  void AddFds(std::vector<UniqueFd> fds);
  // Extracts the next request from the buffered bytes.
  Step Next(HttpRequest* out, std::string* error);

 private:
  std::string buffer_;
  std::vector<UniqueFd> fds_;
  bool continue_sent_ = false;
};

// "HTTP/1.1 <code> \r\n" + Server + Connection headers; Content-Type and Content-Length when a
// body follows, Content-Length: 0 on an empty non-204 answer (v39+).
std::string FormatResponse(int code, const std::string& body);
// The interim answer to `Expect: 100-continue`.
std::string FormatContinue();

}  // namespace sandboxlet::chsim
