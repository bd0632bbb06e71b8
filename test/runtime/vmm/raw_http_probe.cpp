#include "test/runtime/vmm/raw_http_probe.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/strings.h"

namespace sandboxlet::vmm::testing {

absl::Status RawHttpProbe::Ping(std::chrono::milliseconds timeout) {
  return Call("GET", "vmm.ping", timeout);
}

absl::Status RawHttpProbe::ShutdownVmm(std::chrono::milliseconds timeout) {
  return Call("PUT", "vmm.shutdown", timeout);
}

absl::Status RawHttpProbe::Call(const char* method, const char* endpoint,
                                std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string what = Cat(method, " ", endpoint);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoStatus(errno, Cat(what, ": socket"));
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(Cat(what, ": socket path too long"));
  }
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, Cat(what, ": connect ", socket_path_));
  }
  // Wait for `events` on the socket until the deadline.
  auto wait = [&](short events) -> absl::Status {
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError(Cat(what, ": timed out"));
    struct pollfd pfd = {fd.get(), events, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) return ErrnoStatus(errno, Cat(what, ": poll"));
    if (r == 0) return absl::DeadlineExceededError(Cat(what, ": timed out"));
    return absl::OkStatus();
  };
  // No body, so no Content-Length: CH's no-body actions reject any body (CONTRACT §1.4).
  std::string request = Cat(method, " /api/v1/", endpoint, " HTTP/1.1\r\nHost: localhost\r\n",
                            "Accept: application/json\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      SBL_RETURN_IF_ERROR(wait(POLLOUT));
    } else {
      return ErrnoStatus(errno, Cat(what, ": send"));
    }
  }
  // Read the head and a Content-Length body (the server never closes, CONTRACT §1.6).
  std::string in;
  while (true) {
    size_t head_end = in.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      // Skip an interim 100 answer (CONTRACT §4).
      if (StartsWith(in, "HTTP/1.1 100")) {
        in.erase(0, head_end + 4);
        continue;
      }
      std::string head = in.substr(0, head_end);
      size_t length = 0;
      for (const auto& line : Split(head, '\n')) {
        std::string_view l = Trim(line);
        if (l.size() > 15 &&
            (StartsWith(l, "Content-Length:") || StartsWith(l, "content-length:"))) {
          std::string_view v = Trim(l.substr(15));
          if (std::from_chars(v.data(), v.data() + v.size(), length).ec != std::errc()) {
            return absl::InternalError(Cat(what, ": bad Content-Length"));
          }
        }
      }
      if (in.size() >= head_end + 4 + length) {
        if (!StartsWith(head, "HTTP/1.") || head.size() < 12) {
          return absl::InternalError(Cat(what, ": not an HTTP answer"));
        }
        int code = std::atoi(head.substr(9, 3).c_str());
        if (code != 200) {
          return absl::UnavailableError(
              Cat(what, ": HTTP ", code, " ", in.substr(head_end + 4, length)));
        }
        return absl::OkStatus();
      }
    }
    char buf[4096];
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return absl::UnavailableError(Cat(what, ": connection closed before an answer"));
    } else if (errno == EAGAIN || errno == EINTR) {
      SBL_RETURN_IF_ERROR(wait(POLLIN));
    } else {
      return ErrnoStatus(errno, Cat(what, ": recv"));
    }
  }
}

}  // namespace sandboxlet::vmm::testing
