// AgentClient: the host's side of the guest agent, the program inside a sandbox's microVM that
// the platform talks to (successor of the seed's envdclient). Cloud Hypervisor has no metadata
// service, so what the guest must know — its sandbox id, namespace/name, template, environment,
// the wall clock — reaches it through the agent's `POST /init`; before a snapshot the agent is
// told to quiesce (`POST /snapshot/prepare`), and after a restore it is initialised again.
//
// The agent listens on the guest address inside the sandbox's netns; the host reaches it at the
// sandbox's host-routable slot address, which the netns DNATs to the guest (see
// runtime/network/sandbox_network.h). So the client is given the slot address and a port.
//
// Wire: HTTP/1.1 over TCP, one connection per request (`Connection: close`), requests with a
// body carry Content-Length (never chunked); responses are framed by Content-Length, chunked
// encoding, or the end of the connection; 1xx interim answers are skipped. Heads over 16 KiB and
// bodies over 1 MiB are refused.
//
// Errors name the sandbox, the agent's address and the request, e.g.
//   `guest agent of default/x at 10.200.0.3:49983: GET /health: connect: Connection refused`.
// Codes: cannot connect, connection reset/closed, or a 5xx/429 answer → Unavailable (the agent
// may not be up yet); past the call's timeout → DeadlineExceeded; malformed or oversized answer
// → Internal; 4xx → InvalidArgument (404/405 → Unimplemented: an agent without that endpoint).
//
// Thread-safety: thread-safe; calls share no state (each opens its own connection).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/clock.h"

namespace sandboxlet::guest {

inline constexpr uint16_t kDefaultAgentPort = 49983;

struct AgentClientOptions {
  std::string address;  // IPv4 or IPv6 literal: the sandbox's slot address
  uint16_t port = kDefaultAgentPort;
  std::string sandbox;                              // "namespace/name", for messages
  std::chrono::milliseconds timeout{5000};          // Health and Init, per call
  std::chrono::milliseconds prepare_timeout{1000};  // PrepareSnapshot (best effort, short)
  Clock* clock = nullptr;                           // WaitReady's waits; null = RealClock
};

struct AgentHealth {
  std::string version;  // the agent's self-reported version ("" if it reports none)
};

// What `POST /init` tells the guest. JSON: {"sandboxId", "namespace", "name", "template",
// "envVars": {k: v}, "timestamp": RFC 3339 UTC with nanoseconds}.
struct InitRequest {
  std::string sandbox_id;  // the Sandbox's uid
  std::string sandbox_namespace;
  std::string name;
  std::string template_name;
  std::vector<std::pair<std::string, std::string>> env;  // later duplicates win
  std::chrono::system_clock::time_point wall_clock;      // the guest sets its clock from it
};

// The JSON body of InitRequest (exposed for tests and logs).
std::string InitRequestJson(const InitRequest& request);

class AgentClient {
 public:
  explicit AgentClient(AgentClientOptions options);

  // `GET /health` → 200 with {"version": ".."} (or 204, no version). One attempt, bounded by
  // `timeout` (default: options.timeout).
  absl::StatusOr<AgentHealth> Health(
      std::optional<std::chrono::milliseconds> timeout = std::nullopt) const;

  // Polls Health every `poll_interval` until it answers or `within` has passed; each attempt is
  // bounded by `per_attempt_timeout` (and by what is left of `within`). Past the deadline:
  // DeadlineExceeded "guest agent of <sandbox> at <addr>:<port> did not answer within 30s: <last
  // error>".
  absl::StatusOr<AgentHealth> WaitReady(std::chrono::milliseconds within,
                                        std::chrono::milliseconds poll_interval,
                                        std::chrono::milliseconds per_attempt_timeout) const;

  // `POST /init` with InitRequestJson → 2xx (the agent answers 204).
  absl::Status Init(const InitRequest& request,
                    std::optional<std::chrono::milliseconds> timeout = std::nullopt) const;

  // `POST /snapshot/prepare` → 2xx, within options.prepare_timeout. Best effort: callers log a
  // failure and snapshot anyway.
  absl::Status PrepareSnapshot() const;

  // "<address>:<port>" ("[v6]:port" for IPv6).
  std::string Endpoint() const;

 private:
  struct Response {
    int code = 0;
    std::string body;
  };
  absl::StatusOr<Response> Call(const std::string& method, const std::string& path,
                                const std::string& body, std::chrono::milliseconds timeout) const;
  std::string Prefix() const;  // "guest agent of <sandbox> at <endpoint>"

  const AgentClientOptions options_;
};

// "30s", "1.5s", "250ms": durations in messages.
std::string FormatDuration(std::chrono::milliseconds d);

}  // namespace sandboxlet::guest
