// The simulated VMM: the VM state machine and the API endpoints of CONTRACT §3, with per-version
// status codes and JSON-array error bodies (v47+). A VM that is booted or restored holds real
// host resources (locked disk images, open taps, the vsock socket, console outputs) so that the
// runtime meets the same conflicts as with CH. Thread-safe: no — CH serves one request at a time
// (CONTRACT §4) and so does the simulator's single thread.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "test/chsim/cli.h"
#include "test/chsim/devices.h"
#include "test/chsim/events.h"
#include "test/chsim/guest_agent.h"
#include "test/chsim/http.h"
#include "test/chsim/snapshot.h"
#include "test/chsim/version.h"

namespace sandboxlet::chsim {

struct ApiResponse {
  int code = 200;
  std::string body;         // empty = no body
  bool exit_after = false;  // the VMM exits (status 0) once the answer is written
};

class Vmm {
 public:
  Vmm(ChVersion version, bool no_shutdown, EventMonitor* events, Logger* log);
  ~Vmm();

  // Handles one request for "/api/v1/<endpoint>". `inject_enospc` makes vm.snapshot run out of
  // space while writing memory-ranges.
  ApiResponse Handle(HttpRequest& request, bool inject_enospc);

  // `--restore` at startup; errors carry the chain to print.
  absl::Status RestoreFromCommandLine(const RestoreSpec& spec);

  // Simulates the guest agent of VMs with a network and a static ip= (guest_agent.h). Call once,
  // before a VM is booted or restored.
  void EnableGuestAgent(GuestAgentConfig config);

  // SIGTERM/SIGINT: shut the VM down before the VMM exits.
  void ShutdownForExit();

  // Listening sockets the VM owns (vsock, console sockets): the main loop accepts and drops
  // connections on them, as no guest listens.
  std::vector<int> ListenerFds() const;

 private:
  struct Device {
    std::string id;
    std::string type;  // "disk", "net", "vsock"
    std::string bdf;
    std::vector<UniqueFd> fds;
  };
  struct Vm {
    bool paused = false;
    bool power_off_pending = false;
    GuestMemory memory{0, 0};
    std::vector<Device> devices;
    ConsoleSink serial;
    ConsoleSink console;
    int next_slot = 1;
    std::chrono::steady_clock::time_point running_since;
    std::chrono::milliseconds ran{0};
    UniqueFd memory_source;     // OnDemand restore keeps memory-ranges open
    std::string agent_address;  // where the guest agent answers while Running; "" = no agent
  };
  using Endpoint = absl::StatusOr<ApiResponse> (Vmm::*)(HttpRequest&);
  struct BuildOptions {
    bool restoring = false;
    std::optional<GuestMemory> memory;
    std::map<std::string, std::string> macs;               // device id → guest MAC (restore)
    std::map<std::string, std::vector<UniqueFd>> tap_fds;  // net id → fds passed by the caller
  };

  absl::StatusOr<ApiResponse> Ping(HttpRequest&);
  absl::StatusOr<ApiResponse> VmmShutdown(HttpRequest&);
  absl::StatusOr<ApiResponse> Create(HttpRequest&);
  absl::StatusOr<ApiResponse> Boot(HttpRequest&);
  absl::StatusOr<ApiResponse> Pause(HttpRequest&);
  absl::StatusOr<ApiResponse> Resume(HttpRequest&);
  absl::StatusOr<ApiResponse> Shutdown(HttpRequest&);
  absl::StatusOr<ApiResponse> Reboot(HttpRequest&);
  absl::StatusOr<ApiResponse> PowerButton(HttpRequest&);
  absl::StatusOr<ApiResponse> Delete(HttpRequest&);
  absl::StatusOr<ApiResponse> Nmi(HttpRequest&);
  absl::StatusOr<ApiResponse> Info(HttpRequest&);
  absl::StatusOr<ApiResponse> Counters(HttpRequest&);
  absl::StatusOr<ApiResponse> Snapshot(HttpRequest&);
  absl::StatusOr<ApiResponse> Restore(HttpRequest&);
  absl::StatusOr<ApiResponse> AddDisk(HttpRequest&);
  absl::StatusOr<ApiResponse> AddNet(HttpRequest&);
  absl::StatusOr<ApiResponse> RemoveDevice(HttpRequest&);
  absl::StatusOr<ApiResponse> Resize(HttpRequest&);
  absl::StatusOr<ApiResponse> NotSimulated(HttpRequest&);

  // Opens every device of `config` (assigning ids) and returns the running VM.
  absl::StatusOr<std::unique_ptr<Vm>> BuildVm(Json& config, BuildOptions options);
  absl::Status OpenDiskDevice(Vm& vm, Json& disk, const Json& config);
  absl::Status OpenNetDevice(Vm& vm, Json& net, BuildOptions& options);
  absl::Status DoRestore(const Json& restore_config, std::vector<UniqueFd> fds);
  static std::string NextBdf(Vm& vm);  // the next free PCI slot on segment 0
  std::string NextDeviceId(const Json& config, const std::string& prefix);
  void WriteConsole(const std::string& text);
  void BootMessages();
  void SetPaused(bool paused);
  // Starts or stops the guest agent to match the VM's state (Running: answering).
  void SyncGuestAgent();
  void PowerOff();
  void DestroyVm(const char* event);
  uint64_t MemorySize() const;
  Json DeviceTree() const;

  const ChVersion version_;
  const bool no_shutdown_;
  EventMonitor* events_;
  Logger* log_;
  std::optional<Json> config_;  // normalized VmConfig (nulls kept), absent = no VM created
  std::unique_ptr<Vm> vm_;      // booted or restored VM
  unsigned device_counter_ = 0;
  bool inject_enospc_ = false;         // for the request being handled
  std::unique_ptr<GuestAgent> agent_;  // null: no guest agent is simulated
};

}  // namespace sandboxlet::chsim
