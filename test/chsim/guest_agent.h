// The guest agent a booted guest would run, played by the simulator so that the runtime's agent
// client is exercised over the real network path (host → slot address → DNAT in the sandbox's
// netns → guest address). No guest runs behind tap0, so while the VM is Running the simulator
// (which CH runs inside the sandbox's netns) adds the guest's address as a /32 on the netns
// loopback and serves the agent's HTTP endpoints there; while Paused, and once the VM is gone,
// the address is removed and nothing answers — packets to the guest then go to tap0, where no
// one reads them, as with a frozen guest. The address is what a guest learns from its kernel
// command line (`ip=<guest>::<gw>:<mask>::eth0:off`); a VM without a net device or without a
// static ip= has no agent. The simulator refuses to add the address in the host's (pid 1's)
// network namespace. A VMM killed with SIGKILL leaves the address behind; the next VMM in that
// netns takes it over.
//
// Endpoints: GET /health → 200 {"version":"chsim-agent/1"}; POST /init (a JSON object) → 204,
// kept as the last init; POST /snapshot/prepare → 204 (counted); GET /debug/init → the last init
// body (404 before any); GET /debug/prepare → {"count": n}. The last init and the count are guest
// state: they go into state.json and come back with a restore. Every answer closes the connection.
//
// Faults (CHSIM_FAULTS and the fault file, re-read per agent request): `agent-never-ready`
// resets every connection; `agent-slow <ms>` waits before answering; `agent-fail <code>` answers
// <code> to every non-debug endpoint.
//
// Thread-safety: Start/Stop/State/LoadState/Forget are called from the simulator's main thread;
// the agent serves on a thread of its own (a guest does not wait for the VMM's API thread). mu_
// guards the guest state shared between them.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "runtime/base/fd.h"
#include "test/chsim/events.h"
#include "test/chsim/faults.h"

namespace sandboxlet::chsim {

inline constexpr uint16_t kDefaultGuestAgentPort = 49983;
inline constexpr char kGuestAgentVersion[] = "chsim-agent/1";

struct GuestAgentConfig {
  uint16_t port = kDefaultGuestAgentPort;
  std::string address;  // overrides the address from the cmdline ("" = from the cmdline)
  FaultSet startup_faults;
  std::string faults_path;  // "<api-socket>.faults"; "" = none
};

// CHSIM_GUEST_AGENT (may be null): unset → the defaults; "off" → *enabled=false; "<port>" or
// "<ipv4>:<port>" (the address then replaces the one from the cmdline).
absl::Status ParseGuestAgentEnv(const char* value, GuestAgentConfig* config, bool* enabled);

// The client address of a kernel `ip=<client>:<server>:<gw>:<mask>:<host>:<dev>:<autoconf>`
// argument; "" when there is none or it is not a static IPv4 address (ip=dhcp, ip=off).
std::string GuestAddressFromCmdline(const std::string& cmdline);

class GuestAgent {
 public:
  GuestAgent(GuestAgentConfig config, Logger* log);
  ~GuestAgent();  // Stop()
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  const GuestAgentConfig& config() const { return config_; }

  // Adds `address`/32 to the netns loopback and starts answering there. No-op if serving.
  absl::Status Start(const std::string& address);
  // Stops answering (closing every connection) and removes the address. Idempotent.
  void Stop();
  bool serving() const { return thread_.joinable(); }

  // Guest state for state.json: {"last_init": <object or null>, "prepare_count": n}.
  Json State() const;
  void LoadState(const Json& state);
  void Forget();  // a fresh boot: no init, no prepare

 private:
  void Serve(int listener, int wake);
  std::string Answer(const std::string& method, const std::string& target, const std::string& body,
                     int wake);

  const GuestAgentConfig config_;
  Logger* log_;
  std::string address_;  // while serving
  UniqueFd wake_w_;      // closed by Stop() to end the serving thread
  std::thread thread_;

  mutable std::mutex mu_;
  Json last_init_;              // guarded by mu_; null before any /init
  uint64_t prepare_count_ = 0;  // guarded by mu_
};

}  // namespace sandboxlet::chsim
