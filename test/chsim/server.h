// The API socket and its connections (CONTRACT §2, §4): per-version bind rules (v52- fail on an
// existing path, v53 takes "<path>.lock" and replaces a stale socket), at most 10 connections,
// keep-alive with pipelined requests answered in order, and one request at a time for the whole
// VMM. Fault rules are applied here, between receiving a request and answering it.
// Thread-safe: no — the whole simulator runs on one thread.
#pragma once

#include <list>
#include <string>

#include "absl/status/status.h"
#include "runtime/base/fd.h"
#include "test/chsim/cli.h"
#include "test/chsim/faults.h"
#include "test/chsim/http.h"
#include "test/chsim/vmm.h"

namespace sandboxlet::chsim {

inline constexpr size_t kMaxConnections = 10;

class ApiServer {
 public:
  // `signal_fd` is a signalfd for SIGTERM/SIGINT, or -1 when they are ignored.
  ApiServer(ChVersion version, Vmm* vmm, Logger* log, FaultSet startup_faults, int signal_fd);

  // Creates (or adopts, for fd=N) the listening socket. Errors carry CH's error chain.
  absl::Status Bind(const EndpointSpec& spec);
  // The socket's path ("" without an API socket), also known for fd=N via getsockname.
  const std::string& socket_path() const { return socket_path_; }

  // Serves until the VMM exits; returns the exit status.
  int Run();

 private:
  struct Connection {
    UniqueFd fd;
    RequestParser parser;
  };
  enum class Outcome { kKeep, kClose, kHang, kExit };

  void Accept();
  // Reads what arrived and answers every complete request in order.
  Outcome Serve(Connection& conn);
  Outcome HandleRequest(Connection& conn, HttpRequest& req);
  FaultSet CurrentFaults();
  void Record(const FaultSet& faults, const HttpRequest& req);
  // Sleeps up to `ms` (forever if negative); true if SIGTERM/SIGINT arrived meanwhile.
  bool WaitForSignal(int ms);

  const ChVersion version_;
  Vmm* vmm_;
  Logger* log_;
  const FaultSet startup_faults_;
  const int signal_fd_;
  std::string socket_path_;
  UniqueFd listener_;
  UniqueFd lock_fd_;  // v53: flock on "<path>.lock", held for the VMM's lifetime
  std::list<Connection> connections_;
  uint64_t requests_received_ = 0;
  bool hung_ = false;  // a `hang` fault stopped all request processing
};

}  // namespace sandboxlet::chsim
