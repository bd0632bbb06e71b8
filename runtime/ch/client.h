// ChClient: the Cloud Hypervisor HTTP API over its AF_UNIX socket (CONTRACT §1, §3, §4), with a
// small HTTP/1.1 client of its own so that every byte on the wire is under our control.
//
// Wire rules: `Host: localhost` and `Accept: application/json` on every request; requests with a
// body add `Content-Type: application/json` and `Content-Length` (never chunked, CONTRACT §1.7);
// action endpoints (vm.boot, vm.pause, ...) carry no body and no Content-Length at all (CONTRACT
// §1.4). Responses are framed by Content-Length only (missing → empty body, CONTRACT §1.6);
// interim `HTTP/1.1 100` responses are skipped; the reason phrase is optional (CONTRACT §1.8).
// One keep-alive connection is reused. Any malformed, truncated or oversized (> 4 MiB) response
// closes the connection, so the next call starts clean.
//
// Deadlines: each call has one deadline (per-call timeout, else ChClientOptions::default_timeout)
// covering waiting for the client's lock, connect, write and the whole read. Past it the
// connection is closed and the call returns DeadlineExceeded naming the VM and endpoint.
//
// Reconnect rule (never re-send what CH may have executed):
//   1. An idle connection is probed before reuse; if the peer closed it (or sent stray bytes) it
//      is dropped and a new one is opened — nothing was sent, so any request is safe.
//   2. If the first write on a reused connection fails (EPIPE/ECONNRESET) before any byte was
//      accepted, CH received nothing: reconnect once and send again.
//   3. If a reused connection is closed after the request was written but before any byte of
//      the response: ECONNRESET means CH closed it with our request still unread (Linux AF_UNIX
//      semantics), so any request is re-sent once on a new connection; plain EOF means CH had
//      read the request, so only GET requests (vmm.ping, vm.info, vm.counters: no side effects)
//      are re-sent, and a PUT returns Unavailable ("may have been executed and was not
//      re-sent"), because CH may have acted on it before dying.
//   A fresh connection is never retried.
//
// Errors: a non-2xx answer becomes an absl::Status whose message is
//   `vm <name>: <endpoint>: CH <code> <body>` (JSON-array bodies rendered compactly on v47+,
//   text otherwise, long bodies truncated) and whose payload kChHttpStatusPayload holds the code
//   (read it with ChHttpStatus()). Codes: 400 InvalidArgument, 404 NotFound, 405 Unimplemented,
//   409 AlreadyExists, 429 and 503 Unavailable, 500 FailedPrecondition (CH reports wrong-state
//   errors as 500 up to v52, CONTRACT §1.2 — but also genuine failures such as ENOSPC: callers
//   must not branch on the wording, CONTRACT §3), other 4xx InvalidArgument, other codes Internal.
//   Transport failures: cannot connect or peer gone → Unavailable; malformed or oversized
//   response → Internal; past the deadline → DeadlineExceeded.
//
// Thread-safety: thread-safe. Calls on one client are serialized by an internal mutex (CH serves
// one request at a time anyway, CONTRACT §4), so a long call (snapshot, copy-mode restore) makes
// other calls on the same client wait — their own deadline includes that wait. Callers must not
// hold their own global locks across a call.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/fd.h"
#include "runtime/ch/version.h"
#include "runtime/ch/vm_config.h"

namespace sandboxlet::ch {

// Status payload key carrying CH's HTTP status code as decimal text.
inline constexpr char kChHttpStatusPayload[] = "sandboxlet.dev/ch-http-status";

// CH's HTTP status code if `status` came from a non-2xx CH answer, else nullopt.
std::optional<int> ChHttpStatus(const absl::Status& status);

struct ChClientOptions {
  std::string socket_path;
  std::string vm_name;  // e.g. "default/demo"; used in every error message
  ChVersion version;    // selects gated fields and the error-body format
  std::chrono::milliseconds default_timeout{10000};
  // Called once per call after it finishes (outside the client's lock): the endpoint
  // ("vm.pause"), CH's HTTP status (0 on a transport error) and the call's latency.
  std::function<void(std::string_view endpoint, int http_status, std::chrono::nanoseconds latency)>
      observer;
};

// Per-call timeout; nullopt uses ChClientOptions::default_timeout.
using CallTimeout = std::optional<std::chrono::milliseconds>;

class ChClient {
 public:
  explicit ChClient(ChClientOptions options);
  ~ChClient();
  ChClient(const ChClient&) = delete;
  ChClient& operator=(const ChClient&) = delete;

  const ChClientOptions& options() const { return options_; }

  // GET vmm.ping.
  absl::StatusOr<PingInfo> Ping(CallTimeout timeout = std::nullopt);
  // PUT vmm.shutdown: the VMM process exits (answers 200 with an empty body, CONTRACT §1.1).
  absl::Status ShutdownVmm(CallTimeout timeout = std::nullopt);

  // PUT vm.create after ValidateVmConfig; the body is ToJson(config, version).
  absl::Status CreateVm(const VmConfig& config, CallTimeout timeout = std::nullopt);
  absl::Status BootVm(CallTimeout timeout = std::nullopt);
  absl::Status PauseVm(CallTimeout timeout = std::nullopt);
  absl::Status ResumeVm(CallTimeout timeout = std::nullopt);
  // The VM object is destroyed: vm.info then reports Created (CONTRACT §1.3).
  absl::Status ShutdownVm(CallTimeout timeout = std::nullopt);
  absl::Status RebootVm(CallTimeout timeout = std::nullopt);
  absl::Status PowerButton(CallTimeout timeout = std::nullopt);
  // Idempotent; shuts the VM down first.
  absl::Status DeleteVm(CallTimeout timeout = std::nullopt);

  // GET vm.info.
  absl::StatusOr<VmInfo> Info(CallTimeout timeout = std::nullopt);
  // GET vm.counters: {"<device id>": {"<counter>": N, ..}, ..}.
  absl::StatusOr<nlohmann::json> Counters(CallTimeout timeout = std::nullopt);

  // PUT vm.snapshot to file://<destination_dir>; the directory must be absolute, exist and be
  // empty, and the VM Paused (CONTRACT §5). The VM stays Paused.
  absl::Status Snapshot(const std::string& destination_dir, CallTimeout timeout = std::nullopt);
  // PUT vm.restore; the fds of config.net_fds travel with the request (SCM_RIGHTS, v40+). Below
  // v52 `resume` is not sent and the VM stays Paused (see vm_config.h).
  absl::Status Restore(const RestoreConfig& config, CallTimeout timeout = std::nullopt);

  // PUT vm.add-disk: nullopt before boot (204), the new device after boot (200).
  absl::StatusOr<std::optional<DeviceInfo>> AddDisk(const DiskConfig& disk,
                                                    CallTimeout timeout = std::nullopt);
  absl::Status RemoveDevice(const std::string& id, CallTimeout timeout = std::nullopt);
  absl::Status Resize(const ResizeRequest& request, CallTimeout timeout = std::nullopt);

  // Closes the kept-alive connection (the next call reconnects).
  void Disconnect();

 private:
  struct Response {
    int status = 0;
    std::string body;
  };
  struct Request {
    const char* method;
    std::string_view endpoint;
    std::optional<std::string> body;  // nullopt: no body, no Content-Length
    std::vector<int> fds;             // passed with the request head (SCM_RIGHTS)
  };

  // Sends the request, reads the answer and turns non-2xx into an error status.
  absl::StatusOr<Response> Call(const Request& request, CallTimeout timeout);
  absl::Status Action(std::string_view endpoint, CallTimeout timeout);
  absl::Status PutJson(std::string_view endpoint, const nlohmann::json& body, CallTimeout timeout,
                       std::vector<int> fds = {});

  // One attempt on the current connection; see the reconnect rule above.
  enum class Failure { kNone, kRetryable, kFatal };
  absl::StatusOr<Response> Exchange(const Request& request, const std::string& bytes,
                                    std::chrono::steady_clock::time_point deadline, bool reused,
                                    Failure* failure);
  absl::Status Connect(std::chrono::steady_clock::time_point deadline);
  bool IdleConnectionUsable();

  std::string Prefix(std::string_view endpoint) const;
  absl::Status TransportError(absl::StatusCode code, std::string_view endpoint,
                              std::string_view why) const;
  absl::Status HttpError(std::string_view endpoint, int status, std::string_view body) const;

  const ChClientOptions options_;
  std::timed_mutex mu_;  // serializes calls; guards conn_
  UniqueFd conn_;        // guarded by mu_; kept alive between calls
};

}  // namespace sandboxlet::ch
