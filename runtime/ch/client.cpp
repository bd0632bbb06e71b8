#include "runtime/ch/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/cord.h"
#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::ch {
namespace {

using SteadyClock = std::chrono::steady_clock;
using nlohmann::json;

constexpr std::size_t kMaxResponseBody = 4 << 20;   // larger answers are refused
constexpr std::size_t kMaxResponseHead = 64 << 10;  // status line + headers
constexpr std::size_t kMaxBodyInMessage = 512;      // error bodies are cut here in messages
constexpr std::size_t kMaxFdsPerMessage = 253;      // SCM_MAX_FD

// Milliseconds left until `deadline`, rounded up, at least 0.
int MsLeft(SteadyClock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30));
}

// Waits for `events` on fd until the deadline: revents, 0 on timeout.
int WaitFor(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    int r = ::poll(&p, 1, MsLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? POLLERR : 0;
    return p.revents;
  }
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ParseDecimal(std::string_view s, std::uint64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  std::from_chars(s.data(), s.data() + s.size(), *out);
  return true;
}

// Text for a message: control characters become '?', long text is cut.
std::string Printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < kMaxBodyInMessage; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (s.size() > kMaxBodyInMessage) out += Cat("... (", s.size(), " bytes)");
  return out;
}

// Result of looking at the bytes received so far.
struct ParsedResponse {
  enum Kind { kNeedMore, kDone, kError } kind = kNeedMore;
  int status = 0;
  std::string body;
  std::size_t consumed = 0;  // bytes of the buffer the response used
  bool close_after = false;  // the server said Connection: close
  std::string error;
};

// Parses one response (after any interim 1xx responses) from the front of `buf` (CONTRACT §4):
// "HTTP/1.x <code>[ <reason>]", case-insensitive headers, body by Content-Length (missing →
// empty; none at all for 1xx/204/304).
ParsedResponse ParseResponse(std::string_view buf) {
  ParsedResponse r;
  std::size_t pos = 0;
  for (;;) {
    // Garbage is recognised from its first bytes, without waiting for a head that never ends.
    std::string_view start = buf.substr(pos, 7);
    if (start != std::string_view("HTTP/1.").substr(0, start.size())) {
      r.kind = ParsedResponse::kError;
      r.error = Cat("malformed status line \"", Printable(buf.substr(pos, 40)), "\"");
      return r;
    }
    std::size_t end = buf.find("\r\n\r\n", pos);
    if (end == std::string_view::npos) {
      if (buf.size() - pos > kMaxResponseHead) {
        r.kind = ParsedResponse::kError;
        r.error = Cat("response head exceeds ", kMaxResponseHead, " bytes");
      }
      return r;
    }
    std::string_view head = buf.substr(pos, end - pos);
    std::size_t body_start = end + 4;
    std::size_t eol = head.find("\r\n");
    std::string_view status_line = head.substr(0, eol);
    // CONTRACT §1.8: "HTTP/1.1 204 " — the reason phrase may be absent.
    auto fail = [&](std::string why) {
      r.kind = ParsedResponse::kError;
      r.error = std::move(why);
      return r;
    };
    if (status_line.size() < 12 || !StartsWith(status_line, "HTTP/1.") ||
        !std::isdigit(static_cast<unsigned char>(status_line[7])) || status_line[8] != ' ' ||
        (status_line.size() > 12 && status_line[12] != ' ')) {
      return fail(Cat("malformed status line \"", Printable(status_line), "\""));
    }
    int code = 0;
    for (int i = 9; i < 12; ++i) {
      char c = status_line[i];
      if (c < '0' || c > '9') {
        return fail(Cat("malformed status line \"", Printable(status_line), "\""));
      }
      code = code * 10 + (c - '0');
    }
    if (code < 100) return fail(Cat("malformed status code ", code));
    std::optional<std::uint64_t> content_length;
    bool close_after = false;
    std::string_view rest =
        eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
    while (!rest.empty()) {
      std::size_t nl = rest.find("\r\n");
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 2);
      std::size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        return fail(Cat("malformed header line \"", Printable(line), "\""));
      }
      std::string name = LowerAscii(Trim(line.substr(0, colon)));
      std::string_view value = Trim(line.substr(colon + 1));
      if (name == "content-length") {
        std::uint64_t n = 0;
        if (!ParseDecimal(value, &n)) {
          return fail(Cat("malformed Content-Length \"", Printable(value), "\""));
        }
        if (content_length && *content_length != n)
          return fail("conflicting Content-Length headers");
        content_length = n;
      } else if (name == "transfer-encoding" && LowerAscii(value) != "identity") {
        return fail(Cat("unsupported Transfer-Encoding \"", Printable(value), "\""));
      } else if (name == "connection" && LowerAscii(value) == "close") {
        close_after = true;
      }
    }
    if (code < 200) {  // interim (100 Continue): no body, the real answer follows
      pos = body_start;
      continue;
    }
    std::uint64_t length = (code == 204 || code == 304) ? 0 : content_length.value_or(0);
    if (length > kMaxResponseBody) {
      return fail(
          Cat("response body of ", length, " bytes exceeds the ", kMaxResponseBody, "-byte limit"));
    }
    if (buf.size() - body_start < length) return r;  // need more
    r.kind = ParsedResponse::kDone;
    r.status = code;
    r.body = std::string(buf.substr(body_start, length));
    r.consumed = body_start + length;
    r.close_after = close_after;
    return r;
  }
}

absl::StatusCode CodeForHttp(int status) {
  switch (status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 404:
      return absl::StatusCode::kNotFound;
    case 405:
      return absl::StatusCode::kUnimplemented;
    case 409:
      return absl::StatusCode::kAlreadyExists;
    case 429:
    case 503:
      return absl::StatusCode::kUnavailable;
    case 500:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return status >= 400 && status < 500 ? absl::StatusCode::kInvalidArgument
                                           : absl::StatusCode::kInternal;
  }
}

}  // namespace

std::optional<int> ChHttpStatus(const absl::Status& status) {
  auto payload = status.GetPayload(kChHttpStatusPayload);
  if (!payload) return std::nullopt;
  std::string text(*payload);
  int code = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return code;
}

ChClient::ChClient(ChClientOptions options) : options_(std::move(options)) {}
ChClient::~ChClient() = default;

void ChClient::Disconnect() {
  std::lock_guard<std::timed_mutex> lock(mu_);
  conn_.Reset();
}

std::string ChClient::Prefix(std::string_view endpoint) const {
  return Cat("vm ", options_.vm_name, ": ", endpoint, ": ");
}

absl::Status ChClient::TransportError(absl::StatusCode code, std::string_view endpoint,
                                      std::string_view why) const {
  return absl::Status(code, Cat(Prefix(endpoint), why));
}

absl::Status ChClient::HttpError(std::string_view endpoint, int status,
                                 std::string_view body) const {
  std::string rendered;
  std::string_view text = Trim(body);
  if (text.empty()) {
    rendered = "(empty body)";
  } else if (options_.version.JsonArrayErrors()) {
    // CONTRACT §3: v47+ error bodies are a JSON array of strings, outermost first.
    json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    rendered = j.is_discarded() ? Printable(text)
                                : Printable(j.dump(-1, ' ', false, json::error_handler_t::replace));
  } else {
    rendered = Printable(text);  // Display (v38+) or Debug (v37-) text
  }
  absl::Status s(CodeForHttp(status), Cat(Prefix(endpoint), "CH ", status, " ", rendered));
  s.SetPayload(kChHttpStatusPayload, absl::Cord(Cat(status)));
  return s;
}

absl::Status ChClient::Connect(SteadyClock::time_point deadline) {
  conn_.Reset();
  const std::string& path = options_.socket_path;
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(Cat("API socket path \"", path, "\" is empty or longer than ",
                                          sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return absl::InternalError(Cat("socket: ", std::strerror(errno)));
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      // The listen backlog is full (CH busy or hung): retry until the deadline.
      if (SteadyClock::now() >= deadline) {
        return absl::DeadlineExceededError(
            Cat("connect ", path, ": listen backlog full until the deadline"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (err == EINPROGRESS) {
      if (WaitFor(fd.get(), POLLOUT, deadline) == 0) {
        return absl::DeadlineExceededError(Cat("connect ", path, ": no answer by the deadline"));
      }
      socklen_t len = sizeof(err);
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0) break;
    }
    std::string why = Cat("connect ", path, ": ", std::strerror(err));
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(why);
    // ENOENT/ECONNREFUSED: the VMM is not (or no longer) serving.
    return absl::UnavailableError(why);
  }
  conn_ = std::move(fd);
  return absl::OkStatus();
}

bool ChClient::IdleConnectionUsable() {
  // An idle keep-alive connection has nothing to read; EOF, an error or stray bytes mean it is
  // unusable (reconnect rule 1).
  struct pollfd p = {conn_.get(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return true;
  conn_.Reset();
  return false;
}

absl::StatusOr<ChClient::Response> ChClient::Exchange(const Request& request,
                                                      const std::string& bytes,
                                                      SteadyClock::time_point deadline, bool reused,
                                                      Failure* failure) {
  *failure = Failure::kFatal;
  const std::string_view ep = request.endpoint;
  auto fatal = [&](absl::StatusCode code, std::string why) {
    conn_.Reset();
    return TransportError(code, ep, why);
  };
  auto deadline_error = [&](std::string_view during) {
    return fatal(absl::StatusCode::kDeadlineExceeded,
                 Cat("no answer from CH within the deadline (", during, "; connection closed)"));
  };

  // Write the whole request; fds go with its first bytes.
  std::size_t off = 0;
  while (off < bytes.size()) {
    if (WaitFor(conn_.get(), POLLOUT, deadline) == 0) return deadline_error("sending the request");
    ssize_t n;
    if (off == 0 && !request.fds.empty()) {
      struct iovec iov = {const_cast<char*>(bytes.data()), bytes.size()};
      std::vector<char> control(CMSG_SPACE(sizeof(int) * request.fds.size()));
      struct msghdr msg = {};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * request.fds.size());
      std::memcpy(CMSG_DATA(cmsg), request.fds.data(), sizeof(int) * request.fds.size());
      n = ::sendmsg(conn_.get(), &msg, MSG_NOSIGNAL);
    } else {
      n = ::send(conn_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    }
    if (n < 0) {
      int err = errno;
      if (err == EINTR || err == EAGAIN) continue;
      if ((err == EPIPE || err == ECONNRESET) && reused && off == 0) {
        *failure = Failure::kRetryable;  // rule 2: CH received nothing
      }
      return fatal(absl::StatusCode::kUnavailable,
                   Cat("sending the request: ", std::strerror(err)));
    }
    off += static_cast<std::size_t>(n);
  }

  // Read until one complete response is parsed.
  std::string buf;
  char chunk[65536];
  for (;;) {
    if (!buf.empty()) {
      ParsedResponse parsed = ParseResponse(buf);
      if (parsed.kind == ParsedResponse::kError) {
        return fatal(absl::StatusCode::kInternal, Cat("bad response from CH: ", parsed.error));
      }
      if (parsed.kind == ParsedResponse::kDone) {
        // Bytes beyond the response were never asked for: the stream is out of step.
        if (parsed.consumed != buf.size() || parsed.close_after) conn_.Reset();
        *failure = Failure::kNone;
        return Response{parsed.status, std::move(parsed.body)};
      }
    }
    if (WaitFor(conn_.get(), POLLIN, deadline) == 0) {
      return deadline_error(buf.empty() ? "waiting for the response"
                                        : Cat("after ", buf.size(), " bytes of the response"));
    }
    ssize_t n = ::recv(conn_.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0 && errno != ECONNRESET) {
      return fatal(absl::StatusCode::kUnavailable,
                   Cat("reading the response: ", std::strerror(errno)));
    }
    if (n <= 0) {  // EOF or reset
      if (buf.empty()) {
        // Rule 3. On AF_UNIX, closing a socket with unread data gives its peer ECONNRESET,
        // while EOF means CH had read everything we sent: only then may it have acted.
        bool unread = n < 0;
        bool get = std::string_view(request.method) == "GET";
        if (reused && (unread || get)) *failure = Failure::kRetryable;
        return fatal(absl::StatusCode::kUnavailable,
                     get || unread ? "CH closed the connection without answering"
                                   : "CH closed the connection without answering; the request "
                                     "may have been executed and was not re-sent");
      }
      return fatal(absl::StatusCode::kUnavailable,
                   Cat("CH closed the connection mid-response after ", buf.size(), " bytes"));
    }
    buf.append(chunk, static_cast<std::size_t>(n));
  }
}

absl::StatusOr<ChClient::Response> ChClient::Call(const Request& request, CallTimeout timeout) {
  const auto start = SteadyClock::now();
  const std::chrono::milliseconds budget = timeout.value_or(options_.default_timeout);
  const auto deadline = start + budget;
  absl::StatusOr<Response> result = [&]() -> absl::StatusOr<Response> {
    // CONTRACT §1.7, §4: always Content-Length, never chunked; no body at all on actions.
    std::string bytes = Cat(request.method, " /api/v1/", request.endpoint,
                            " HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if (request.body) {
      if (request.body->size() > options_.version.MaxRequestBody()) {
        return TransportError(
            absl::StatusCode::kInvalidArgument, request.endpoint,
            Cat("request body of ", request.body->size(), " bytes exceeds CH's limit of ",
                options_.version.MaxRequestBody(), " bytes"));
      }
      bytes += Cat("Content-Type: application/json\r\nContent-Length: ", request.body->size(),
                   "\r\n\r\n", *request.body);
    } else {
      bytes += "\r\n";
    }
    std::unique_lock<std::timed_mutex> lock(mu_, std::defer_lock);
    if (!lock.try_lock_until(deadline)) {
      return TransportError(absl::StatusCode::kDeadlineExceeded, request.endpoint,
                            Cat("another call on this VM's API socket did not finish within ",
                                budget.count(), " ms"));
    }
    absl::StatusOr<Response> r;
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = conn_.valid() && IdleConnectionUsable();
      if (!reused) {
        absl::Status s = Connect(deadline);
        if (!s.ok()) return Annotate(s, Cat("vm ", options_.vm_name, ": ", request.endpoint));
      }
      Failure failure = Failure::kFatal;
      r = Exchange(request, bytes, deadline, reused, &failure);
      if (r.ok() || failure != Failure::kRetryable) break;
    }
    return r;
  }();
  int http_status = result.ok() ? result->status : 0;
  if (result.ok() && (result->status < 200 || result->status >= 300)) {
    result = HttpError(request.endpoint, result->status, result->body);
  }
  if (options_.observer) {
    options_.observer(request.endpoint, http_status, SteadyClock::now() - start);
  }
  return result;
}

absl::Status ChClient::Action(std::string_view endpoint, CallTimeout timeout) {
  return Call(Request{"PUT", endpoint, std::nullopt, {}}, timeout).status();
}

absl::Status ChClient::PutJson(std::string_view endpoint, const json& body, CallTimeout timeout,
                               std::vector<int> fds) {
  return Call(Request{"PUT", endpoint, body.dump(), std::move(fds)}, timeout).status();
}

absl::StatusOr<PingInfo> ChClient::Ping(CallTimeout timeout) {
  SBL_ASSIGN_OR_RETURN(Response r, Call(Request{"GET", "vmm.ping", std::nullopt, {}}, timeout));
  absl::StatusOr<PingInfo> info = ParsePingInfo(r.body);
  if (!info.ok())
    return absl::InternalError(Cat("vm ", options_.vm_name, ": ", info.status().message()));
  return info;
}

absl::Status ChClient::ShutdownVmm(CallTimeout timeout) { return Action("vmm.shutdown", timeout); }

absl::Status ChClient::CreateVm(const VmConfig& config, CallTimeout timeout) {
  if (absl::Status s = ValidateVmConfig(config); !s.ok()) {
    return Annotate(s, Cat("vm ", options_.vm_name, ": vm.create"));
  }
  return PutJson("vm.create", ToJson(config, options_.version), timeout);
}

absl::Status ChClient::BootVm(CallTimeout timeout) { return Action("vm.boot", timeout); }
absl::Status ChClient::PauseVm(CallTimeout timeout) { return Action("vm.pause", timeout); }
absl::Status ChClient::ResumeVm(CallTimeout timeout) { return Action("vm.resume", timeout); }
absl::Status ChClient::ShutdownVm(CallTimeout timeout) { return Action("vm.shutdown", timeout); }
absl::Status ChClient::RebootVm(CallTimeout timeout) { return Action("vm.reboot", timeout); }
absl::Status ChClient::PowerButton(CallTimeout timeout) {
  return Action("vm.power-button", timeout);
}
absl::Status ChClient::DeleteVm(CallTimeout timeout) { return Action("vm.delete", timeout); }

absl::StatusOr<VmInfo> ChClient::Info(CallTimeout timeout) {
  SBL_ASSIGN_OR_RETURN(Response r, Call(Request{"GET", "vm.info", std::nullopt, {}}, timeout));
  absl::StatusOr<VmInfo> info = ParseVmInfo(r.body);
  if (!info.ok())
    return absl::InternalError(Cat("vm ", options_.vm_name, ": ", info.status().message()));
  return info;
}

absl::StatusOr<json> ChClient::Counters(CallTimeout timeout) {
  SBL_ASSIGN_OR_RETURN(Response r, Call(Request{"GET", "vm.counters", std::nullopt, {}}, timeout));
  json j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError(
        Cat(Prefix("vm.counters"), "response is not a JSON object: ", Printable(r.body)));
  }
  return j;
}

absl::Status ChClient::Snapshot(const std::string& destination_dir, CallTimeout timeout) {
  absl::StatusOr<std::string> url = FileUrl(destination_dir);
  if (!url.ok()) return Annotate(url.status(), Cat("vm ", options_.vm_name, ": vm.snapshot"));
  return PutJson("vm.snapshot", json{{"destination_url", *url}}, timeout);
}

absl::Status ChClient::Restore(const RestoreConfig& config, CallTimeout timeout) {
  if (absl::Status s = ValidateRestoreConfig(config); !s.ok()) {
    return Annotate(s, Cat("vm ", options_.vm_name, ": vm.restore"));
  }
  std::vector<int> fds;
  if (options_.version.RestoreNetFds()) {  // below v40 net_fds is not sent, nor are the fds
    for (const RestoreNetFds& n : config.net_fds) fds.insert(fds.end(), n.fds.begin(), n.fds.end());
  }
  if (fds.size() > kMaxFdsPerMessage) {
    return absl::InvalidArgumentError(Cat(Prefix("vm.restore"), "restore.net_fds: ", fds.size(),
                                          " fds exceed the limit of ", kMaxFdsPerMessage));
  }
  return PutJson("vm.restore", ToJson(config, options_.version), timeout, std::move(fds));
}

absl::StatusOr<std::optional<DeviceInfo>> ChClient::AddDisk(const DiskConfig& disk,
                                                            CallTimeout timeout) {
  if (absl::Status s = ValidateDiskConfig(disk); !s.ok()) {
    return Annotate(s, Cat("vm ", options_.vm_name, ": vm.add-disk"));
  }
  SBL_ASSIGN_OR_RETURN(
      Response r,
      Call(Request{"PUT", "vm.add-disk", ToJson(disk, options_.version).dump(), {}}, timeout));
  // CONTRACT §3: 204 before boot, 200 with {"id","bdf"} after.
  if (r.status == 204 || r.body.empty()) return std::optional<DeviceInfo>();
  absl::StatusOr<DeviceInfo> info = ParseDeviceInfo(r.body);
  if (!info.ok()) {
    return absl::InternalError(Cat(Prefix("vm.add-disk"), info.status().message()));
  }
  return std::optional<DeviceInfo>(*std::move(info));
}

absl::Status ChClient::RemoveDevice(const std::string& id, CallTimeout timeout) {
  if (id.empty()) {
    return absl::InvalidArgumentError(Cat(Prefix("vm.remove-device"), "id: empty"));
  }
  return PutJson("vm.remove-device", json{{"id", id}}, timeout);
}

absl::Status ChClient::Resize(const ResizeRequest& request, CallTimeout timeout) {
  if (absl::Status s = ValidateResizeRequest(request); !s.ok()) {
    return Annotate(s, Cat("vm ", options_.vm_name, ": vm.resize"));
  }
  return PutJson("vm.resize", ToJson(request), timeout);
}

}  // namespace sandboxlet::ch
