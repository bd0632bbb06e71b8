// Test harness for ch-sim: starts the simulator as a child process (optionally inside a network
// namespace) and talks hand-written HTTP to it over a raw AF_UNIX socket — deliberately not the
// project's CH client. Thread-safe: no — one harness object per test.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/base/fd.h"

namespace sandboxlet::chsim::testing {

using Json = nlohmann::ordered_json;

// A directory under /tmp removed (recursively) at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

struct Response {
  bool ok = false;  // a complete response was read
  int code = 0;
  std::string head;  // status line and headers, up to and including the blank line
  std::string body;
  std::optional<size_t> content_length;
  Json json() const;  // body parsed (discarded value if not JSON)
};

// "<METHOD> /api/v1/<endpoint> HTTP/1.1" with Host and, when `body` is set, Content-Length.
std::string Req(std::string_view method, std::string_view endpoint,
                std::optional<std::string_view> body = std::nullopt,
                std::string_view extra_headers = "");

class Conn {
 public:
  explicit Conn(const std::string& socket_path);
  bool connected() const { return fd_.valid(); }
  bool Send(std::string_view data, const std::vector<int>& fds = {});
  // Reads one response (by Content-Length); ok=false on EOF or timeout.
  Response Read(int timeout_ms = 10000);
  // Reads whatever arrives until EOF or timeout; `*eof` tells which.
  std::string ReadUntilEof(int timeout_ms, bool* eof);
  // True if nothing arrives within `timeout_ms` (and the peer did not close).
  bool Silent(int timeout_ms);

 private:
  // Appends received bytes; false on EOF, error or timeout.
  bool Fill(int timeout_ms);
  UniqueFd fd_;
  std::string buf_;
  bool eof_ = false;
};

struct SimSpec {
  int version = 53;               // exported as CHSIM_VERSION (0 = do not set)
  bool api_socket = true;         // adds --api-socket path=<dir>/api.sock
  std::vector<std::string> args;  // further arguments
  std::vector<std::string> env;   // extra KEY=value
  std::string netns;              // run under `ip netns exec <netns>`
  std::vector<int> inherit_fds;   // fds the child keeps
  std::string binary;             // default: the built ch-sim
};

class Sim {
 public:
  Sim(const std::string& dir, SimSpec spec);
  ~Sim();  // SIGKILLs a simulator still running

  // Waits until the API socket answers vmm.ping.
  bool WaitReady(int timeout_ms = 10000);
  // Exit status (128+signal when killed), or nullopt if still running at the deadline.
  std::optional<int> WaitExit(int timeout_ms = 10000);
  bool Running();
  void Signal(int sig);

  Response Call(std::string_view method, std::string_view endpoint,
                std::optional<std::string_view> body = std::nullopt);
  std::string Stdout() const;
  std::string Stderr() const;
  const std::string& sock() const { return sock_; }
  pid_t pid() const { return pid_; }

 private:
  std::string dir_;
  std::string sock_;
  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Runs ch-sim to completion (for --version and startup failures): exit status, stdout, stderr.
struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};
RunResult RunSim(const std::string& dir, SimSpec spec, int timeout_ms = 10000);

// A kernel file and a 64 MiB disk image in `dir`, and a VmConfig using them.
struct VmFiles {
  std::string kernel;
  std::string disk;
};
VmFiles MakeVmFiles(const TempDir& dir, const std::string& disk_name = "disk.img");
Json MinimalConfig(const VmFiles& files, uint64_t memory = 16ull << 20);

// Takes a whole-file OFD write lock on `path`; invalid fd if someone else holds one.
UniqueFd LockFile(const std::string& path);

// A network namespace with a unique name, deleted at destruction.
class NetNs {
 public:
  NetNs();
  ~NetNs();
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  bool Run(const std::vector<std::string>& ip_args);  // `ip -n <ns> <args>`
  bool HasLink(const std::string& ifname);

 private:
  std::string name_;
  bool ok_ = false;
};

std::string FileUrl(const std::string& dir);

}  // namespace sandboxlet::chsim::testing
