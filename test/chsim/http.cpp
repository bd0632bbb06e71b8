#include "test/chsim/http.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string_view>

#include "runtime/base/strings.h"

namespace sandboxlet::chsim {
namespace {

constexpr std::string_view kMethods[] = {"GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"};

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

void RequestParser::AddFds(std::vector<UniqueFd> fds) {
  for (UniqueFd& fd : fds) fds_.push_back(std::move(fd));
}

RequestParser::Step RequestParser::Next(HttpRequest* out, std::string* error) {
  // Walk the head line by line; every line (request line included) must fit in 1024 bytes.
  size_t pos = 0;
  std::vector<std::string_view> lines;
  while (true) {
    size_t eol = buffer_.find("\r\n", pos);
    size_t line_len = (eol == std::string::npos ? buffer_.size() : eol) - pos;
    if (line_len > kMaxHeaderLine) {
      *error = Cat("Header line longer than ", kMaxHeaderLine, " bytes");
      return Step::kError;
    }
    if (eol == std::string::npos) return Step::kNeedMore;
    std::string_view line(buffer_.data() + pos, line_len);
    pos = eol + 2;
    if (line.empty()) {
      if (lines.empty()) {
        *error = "Empty request line";
        return Step::kError;
      }
      break;
    }
    lines.push_back(line);
  }
  const size_t head_len = pos;

  std::vector<std::string> parts = Split(lines[0], ' ');
  if (parts.size() != 3 || parts[1].empty() || parts[1][0] != '/') {
    *error = Cat("Invalid request line \"", lines[0], "\"");
    return Step::kError;
  }
  if (std::find(std::begin(kMethods), std::end(kMethods), parts[0]) == std::end(kMethods)) {
    *error = Cat("Unsupported method \"", parts[0], "\"");
    return Step::kError;
  }
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    *error = Cat("Unsupported HTTP version \"", parts[2], "\"");
    return Step::kError;
  }

  size_t content_length = 0;
  bool expect_continue = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == std::string_view::npos || colon == 0) {
      *error = Cat("Invalid header \"", lines[i], "\"");
      return Step::kError;
    }
    std::string name = Lower(Trim(lines[i].substr(0, colon)));
    std::string_view value = Trim(lines[i].substr(colon + 1));
    if (name == "content-length") {
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), content_length);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        *error = Cat("Invalid Content-Length \"", value, "\"");
        return Step::kError;
      }
    } else if (name == "expect") {
      if (Lower(value) != "100-continue") {
        *error = Cat("Unsupported Expect value \"", value, "\"");
        return Step::kError;
      }
      expect_continue = true;
    }
    // Transfer-Encoding is recognised and ignored (CONTRACT §4); all other headers are ignored.
  }
  if (content_length > kMaxBody) {
    *error = Cat("Request payload with size ", content_length, " is larger than the limit of ",
                 kMaxBody, " allowed by server.");
    return Step::kError;
  }
  if (buffer_.size() - head_len < content_length) {
    if (expect_continue && !continue_sent_) {
      continue_sent_ = true;
      return Step::kContinue;
    }
    return Step::kNeedMore;
  }

  const size_t total = head_len + content_length;
  *out = HttpRequest();
  out->method = parts[0];
  out->target = parts[1];
  out->version = parts[2];
  out->has_body = content_length > 0;
  out->body = buffer_.substr(head_len, content_length);
  out->raw = buffer_.substr(0, total);
  out->fds = std::move(fds_);
  fds_.clear();
  buffer_.erase(0, total);
  continue_sent_ = false;
  return Step::kRequest;
}

std::string FormatResponse(int code, const std::string& body) {
  std::string out =
      Cat("HTTP/1.1 ", code, " \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n");
  if (!body.empty()) {
    out += Cat("Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n");
    out += body;
  } else if (code != 204) {
    out += "Content-Length: 0\r\n\r\n";
  } else {
    out += "\r\n";
  }
  return out;
}

std::string FormatContinue() {
  return "HTTP/1.1 100 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n";
}

}  // namespace sandboxlet::chsim
