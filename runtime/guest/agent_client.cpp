#include "runtime/guest/agent_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>

#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/strings.h"

namespace sandboxlet::guest {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

constexpr size_t kMaxHead = 16 << 10;
constexpr size_t kMaxBody = 1 << 20;
constexpr size_t kMaxShownBody = 200;

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Printable, bounded excerpt of what a peer sent, for messages.
std::string Excerpt(std::string_view data) {
  std::string out;
  for (char c : data.substr(0, kMaxShownBody)) {
    out.push_back(std::isprint(static_cast<unsigned char>(c)) ? c : '.');
  }
  if (data.size() > kMaxShownBody) out += "...";
  return out;
}

int RemainingMs(SteadyTime deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits for `events` on fd until the deadline: OK, DeadlineExceeded, or the poll error.
absl::Status WaitFd(int fd, short events, SteadyTime deadline, const std::string& what) {
  while (true) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, RemainingMs(deadline));
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError(what);
    if (errno != EINTR) return ErrnoStatus(errno, "poll");
  }
}

// Transport errors of an agent that is not (yet) there are Unavailable, whatever errno says.
absl::Status Transport(int err, std::string_view what) {
  absl::Status st = ErrnoStatus(err, what);
  if (st.code() == absl::StatusCode::kDeadlineExceeded) return st;
  return absl::UnavailableError(st.message());
}

// One parsed response; `complete` false while more bytes are needed.
struct Parsed {
  bool complete = false;
  int code = 0;
  std::string body;
  size_t consumed = 0;  // bytes of the buffer this response used (for skipping 1xx)
};

absl::StatusOr<size_t> ParseSize(std::string_view text, int base, const std::string& what) {
  text = Trim(text);
  size_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    return absl::InternalError(Cat("bad ", what, " \"", Excerpt(text), "\""));
  }
  return v;
}

// Decodes a chunked body from `data`; nullopt if incomplete.
absl::StatusOr<std::optional<std::pair<std::string, size_t>>> Dechunk(std::string_view data) {
  std::string body;
  size_t pos = 0;
  while (true) {
    size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (data.size() - pos > 64) return absl::InternalError("chunk size line too long");
      return std::nullopt;
    }
    std::string_view line = data.substr(pos, eol - pos);
    line = line.substr(0, line.find(';'));  // chunk extensions
    SBL_ASSIGN_OR_RETURN(size_t n, ParseSize(line, 16, "chunk size"));
    pos = eol + 2;
    if (n == 0) {
      // Trailers end with an empty line.
      size_t end = data.find("\r\n\r\n", pos - 2);
      if (end == std::string_view::npos) return std::nullopt;
      return std::make_optional(std::make_pair(std::move(body), end + 4));
    }
    if (body.size() + n > kMaxBody) {
      return absl::InternalError(Cat("body larger than ", kMaxBody, " bytes"));
    }
    if (data.size() < pos + n + 2) return std::nullopt;
    body.append(data.substr(pos, n));
    if (data.substr(pos + n, 2) != "\r\n") return absl::InternalError("chunk not ended by CRLF");
    pos += n + 2;
  }
}

// Parses the first response in `buf`. `eof`: the peer closed, so a body framed by the end of
// the connection is complete.
absl::StatusOr<Parsed> ParseResponse(std::string_view buf, bool eof) {
  Parsed p;
  size_t head_end = buf.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (buf.size() > kMaxHead) {
      return absl::InternalError(Cat("response head larger than ", kMaxHead, " bytes"));
    }
    if (eof) {
      if (buf.empty()) return absl::UnavailableError("connection closed before any answer");
      return absl::InternalError(
          Cat("connection closed inside the response head: \"", Excerpt(buf), "\""));
    }
    return p;
  }
  std::vector<std::string> lines = Split(buf.substr(0, head_end), '\n');
  for (auto& l : lines) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
  }
  // "HTTP/1.1 200 OK" (the reason phrase is optional).
  const std::string& status = lines[0];
  if (!StartsWith(status, "HTTP/1.") || status.size() < 12 || status[8] != ' ' ||
      (status.size() > 12 && status[12] != ' ')) {
    return absl::InternalError(Cat("not an HTTP response: \"", Excerpt(status), "\""));
  }
  SBL_ASSIGN_OR_RETURN(size_t code, ParseSize(status.substr(9, 3), 10, "status code"));
  if (code < 100 || code > 599) return absl::InternalError(Cat("bad status code ", code));
  p.code = static_cast<int>(code);
  std::optional<size_t> length;
  bool chunked = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == std::string::npos) {
      return absl::InternalError(Cat("bad header line \"", Excerpt(lines[i]), "\""));
    }
    std::string name = Lower(Trim(std::string_view(lines[i]).substr(0, colon)));
    std::string_view value = Trim(std::string_view(lines[i]).substr(colon + 1));
    if (name == "content-length") {
      SBL_ASSIGN_OR_RETURN(size_t n, ParseSize(value, 10, "Content-Length"));
      if (length && *length != n) return absl::InternalError("conflicting Content-Length headers");
      length = n;
    } else if (name == "transfer-encoding") {
      chunked = Lower(value).find("chunked") != std::string::npos;
    }
  }
  const size_t body_start = head_end + 4;
  std::string_view rest = buf.substr(body_start);
  if (p.code < 200 || p.code == 204 || p.code == 304) {
    p.complete = true;
    p.consumed = body_start;
    return p;
  }
  if (chunked) {
    SBL_ASSIGN_OR_RETURN(auto decoded, Dechunk(rest));
    if (!decoded) {
      if (eof) return absl::InternalError("connection closed inside a chunked body");
      return p;
    }
    p.body = std::move(decoded->first);
    p.consumed = body_start + decoded->second;
    p.complete = true;
    return p;
  }
  if (length) {
    if (*length > kMaxBody) {
      return absl::InternalError(Cat("Content-Length ", *length, " exceeds ", kMaxBody));
    }
    if (rest.size() < *length) {
      if (eof) {
        return absl::InternalError(
            Cat("connection closed after ", rest.size(), " of ", *length, " body bytes"));
      }
      return p;
    }
    p.body = std::string(rest.substr(0, *length));
    p.consumed = body_start + *length;
    p.complete = true;
    return p;
  }
  // No framing: the body ends with the connection.
  if (rest.size() > kMaxBody) return absl::InternalError(Cat("body larger than ", kMaxBody));
  if (!eof) return p;
  p.body = std::string(rest);
  p.consumed = buf.size();
  p.complete = true;
  return p;
}

absl::Status StatusForCode(int code, const std::string& what) {
  if (code >= 500 || code == 429) return absl::UnavailableError(what);
  if (code == 404 || code == 405) return absl::UnimplementedError(what);
  if (code >= 400) return absl::InvalidArgumentError(what);
  return absl::InternalError(what);  // 1xx/3xx as a final answer: not what we asked for
}

std::string Rfc3339Nano(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  time_t tt = static_cast<time_t>(secs);
  struct tm tm {};
  ::gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(frac));
  return buf;
}

}  // namespace

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms < 1000 || ms % 100 != 0) return Cat(ms, "ms");
  if (ms % 1000 == 0) return Cat(ms / 1000, "s");
  return Cat(ms / 1000, ".", (ms % 1000) / 100, "s");
}

std::string InitRequestJson(const InitRequest& r) {
  nlohmann::json env = nlohmann::json::object();
  for (const auto& [k, v] : r.env) env[k] = v;
  nlohmann::json j = {{"sandboxId", r.sandbox_id},
                      {"namespace", r.sandbox_namespace},
                      {"name", r.name},
                      {"template", r.template_name},
                      {"envVars", env},
                      {"timestamp", Rfc3339Nano(r.wall_clock)}};
  // Env values come from users: never let invalid UTF-8 abort the dump.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AgentClient::AgentClient(AgentClientOptions options) : options_(std::move(options)) {}

std::string AgentClient::Endpoint() const {
  if (options_.address.find(':') != std::string::npos) {
    return Cat("[", options_.address, "]:", options_.port);
  }
  return Cat(options_.address, ":", options_.port);
}

std::string AgentClient::Prefix() const {
  return Cat("guest agent of ", options_.sandbox, " at ", Endpoint());
}

absl::StatusOr<AgentClient::Response> AgentClient::Call(const std::string& method,
                                                        const std::string& path,
                                                        const std::string& body,
                                                        std::chrono::milliseconds timeout) const {
  const SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
  const std::string what = Cat(Prefix(), ": ", method, " ", path);
  auto fail = [&](const absl::Status& st) { return Annotate(st, what); };
  auto timed_out = [&](std::string_view stage) {
    return absl::DeadlineExceededError(
        Cat(what, ": no ", stage, " within ", FormatDuration(timeout)));
  };

  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
      ::inet_pton(AF_INET, options_.address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(options_.port);
    addr_len = sizeof(sockaddr_in);
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
             ::inet_pton(AF_INET6, options_.address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(options_.port);
    addr_len = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        Cat(what, ": \"", options_.address, "\" is not an IP address"));
  }

  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fail(ErrnoStatus(errno, "socket"));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    if (errno != EINPROGRESS) return fail(Transport(errno, "connect"));
    absl::Status st = WaitFd(fd.get(), POLLOUT, deadline, "connect");
    if (absl::IsDeadlineExceeded(st)) return timed_out("connection");
    if (!st.ok()) return fail(st);
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(Transport(err, "connect"));
  }

  std::string request = Cat(method, " ", path, " HTTP/1.1\r\nHost: ", Endpoint(),
                            "\r\nUser-Agent: sandboxlet\r\nAccept: application/json\r\n"
                            "Connection: close\r\n");
  if (method != "GET") {
    if (!body.empty()) request += "Content-Type: application/json\r\n";
    request += Cat("Content-Length: ", body.size(), "\r\n");
  }
  request += "\r\n";
  request += body;
  for (size_t off = 0; off < request.size();) {
    ssize_t n = ::send(fd.get(), request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      absl::Status st = WaitFd(fd.get(), POLLOUT, deadline, "send");
      if (absl::IsDeadlineExceeded(st)) return timed_out("room to send the request");
      if (!st.ok()) return fail(st);
      continue;
    }
    return fail(Transport(errno, "send"));
  }

  std::string buf;
  bool eof = false;
  while (true) {
    absl::StatusOr<Parsed> parsed = ParseResponse(buf, eof);
    if (!parsed.ok()) return fail(parsed.status());
    if (parsed->complete) {
      if (parsed->code >= 100 && parsed->code < 200) {  // interim: the final answer follows
        buf.erase(0, parsed->consumed);
        continue;
      }
      return Response{parsed->code, std::move(parsed->body)};
    }
    if (eof) return fail(absl::InternalError("incomplete response"));
    absl::Status st = WaitFd(fd.get(), POLLIN, deadline, "recv");
    if (absl::IsDeadlineExceeded(st)) return timed_out(buf.empty() ? "answer" : "complete answer");
    if (!st.ok()) return fail(st);
    char chunk[16384];
    ssize_t n = ::recv(fd.get(), chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return fail(Transport(errno, "recv"));
    }
    if (n == 0) {
      eof = true;
      continue;
    }
    buf.append(chunk, static_cast<size_t>(n));
    if (buf.size() > kMaxHead + kMaxBody + 4096) {
      return fail(absl::InternalError("response larger than the limit"));
    }
  }
}

absl::StatusOr<AgentHealth> AgentClient::Health(
    std::optional<std::chrono::milliseconds> timeout) const {
  const std::string what = Cat(Prefix(), ": GET /health");
  SBL_ASSIGN_OR_RETURN(Response r, Call("GET", "/health", "", timeout.value_or(options_.timeout)));
  if (r.code == 204) return AgentHealth{};
  if (r.code != 200) {
    return StatusForCode(r.code, Cat(what, ": HTTP ", r.code, " \"", Excerpt(r.body), "\""));
  }
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object()) {
    return absl::InternalError(
        Cat(what, ": answer is not a JSON object: \"", Excerpt(r.body), "\""));
  }
  AgentHealth h;
  if (auto it = j.find("version"); it != j.end()) {
    if (!it->is_string()) {
      return absl::InternalError(Cat(what, ": \"version\" is not a string: ", Excerpt(it->dump())));
    }
    h.version = it->get<std::string>();
  }
  return h;
}

absl::StatusOr<AgentHealth> AgentClient::WaitReady(
    std::chrono::milliseconds within, std::chrono::milliseconds poll_interval,
    std::chrono::milliseconds per_attempt_timeout) const {
  Clock* clock = options_.clock ? options_.clock : RealClock::Get();
  const Clock::TimePoint deadline = clock->Now() + within;
  absl::Status last = absl::DeadlineExceededError("no attempt was made");
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock->Now());
    if (left.count() <= 0) break;
    absl::StatusOr<AgentHealth> h = Health(std::min(per_attempt_timeout, left));
    if (h.ok()) return h;
    last = h.status();
    Clock::TimePoint next = std::min(deadline, clock->Now() + poll_interval);
    clock->SleepUntil(next);
  }
  return absl::DeadlineExceededError(
      Cat(Prefix(), " did not answer within ", FormatDuration(within), ": ", last.message()));
}

absl::Status AgentClient::Init(const InitRequest& request,
                               std::optional<std::chrono::milliseconds> timeout) const {
  SBL_ASSIGN_OR_RETURN(Response r, Call("POST", "/init", InitRequestJson(request),
                                        timeout.value_or(options_.timeout)));
  if (r.code < 200 || r.code > 299) {
    return StatusForCode(
        r.code, Cat(Prefix(), ": POST /init: HTTP ", r.code, " \"", Excerpt(r.body), "\""));
  }
  return absl::OkStatus();
}

absl::Status AgentClient::PrepareSnapshot() const {
  SBL_ASSIGN_OR_RETURN(Response r, Call("POST", "/snapshot/prepare", "", options_.prepare_timeout));
  if (r.code < 200 || r.code > 299) {
    return StatusForCode(r.code, Cat(Prefix(), ": POST /snapshot/prepare: HTTP ", r.code, " \"",
                                     Excerpt(r.body), "\""));
  }
  return absl::OkStatus();
}

}  // namespace sandboxlet::guest
