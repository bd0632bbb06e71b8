// The VMM process layer: starts a Cloud Hypervisor process for one sandbox, knows when its API
// is ready, stops it with escalation, and re-attaches to it after a sandboxlet restart.
//
// A VMM is started in a new session (it outlives sandboxlet), inside the sandbox's network
// namespace and a private mount namespace in which the sandbox's paths are bind-mounted at stable
// targets, so a snapshot taken under one sandbox restores under another (DESIGN.md, Runtime).
// Everything that must survive a sandboxlet restart is in the on-disk record <vm_dir>/vmm.json.
//
// This layer never talks HTTP itself: it reaches the VMM's API through VmmApiProbe, which
// runtime/vm implements on top of the CH client.
//
// Thread-safety: a VmmProcess may be used from several threads (its exit is collected through a
// thread-safe Reaper), but Stop should be called by one owner, under the sandbox's lock.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/vmm/reaper.h"

namespace sandboxlet::vmm {

// What the process layer needs from the VMM's API socket; runtime/vm adapts the CH client to it.
// Implementations must honour the timeout: the VMM answers one request at a time (CONTRACT §4),
// so a busy VMM can stall any call.
class VmmApiProbe {
 public:
  virtual ~VmmApiProbe() = default;
  // GET /api/v1/vmm.ping answered 200.
  virtual absl::Status Ping(std::chrono::milliseconds timeout) = 0;
  // PUT /api/v1/vmm.shutdown answered 200 (CONTRACT §1.1); the VMM then exits.
  virtual absl::Status ShutdownVmm(std::chrono::milliseconds timeout) = 0;
};

struct BindMount {
  std::string source;  // host path (file or directory); must exist
  std::string target;  // path as the VMM sees it; created (with parents) if absent
};

struct VmmSpec {
  std::string vmm_bin;           // path of the cloud-hypervisor binary
  std::string vm_dir;            // host directory <state>/vms/<uid>; created 0700
  std::string key;               // "namespace/name", for messages and logs
  std::string netns;             // named network namespace under /run/netns; "" = the caller's
  std::vector<BindMount> binds;  // applied in order in the VMM's private mount namespace
  std::vector<std::string> extra_args;  // appended to the command line, e.g. --restore ...
  int verbosity = 1;                    // number of -v flags (CONTRACT §2)
  bool seccomp = true;
  std::vector<std::string> env;  // "KEY=value" added to the VMM's minimal environment
  // cgroup.procs files of the VMM's own cgroups (VmmCgroups::Prepare, runtime/vmm/cgroup.h).
  // The child joins them first thing after fork, before exec, so the VMM never runs in
  // sandboxlet's cgroup and is not killed with it. Their directories go into the record; Stop
  // (and a Spawn that fails after fork) removes them once the VMM is gone. Empty: the VMM stays
  // in sandboxlet's cgroup.
  std::vector<std::string> cgroup_procs;
};

// How Stop ended the VMM.
enum class ExitKind {
  kGraceful,     // exited after vmm.shutdown
  kTerminated,   // exited after SIGTERM
  kKilled,       // needed SIGKILL
  kAlreadyGone,  // had exited before Stop was called
};
std::string_view ExitKindName(ExitKind kind);  // "graceful", "terminated", "killed", "already_gone"

// The contents of <vm_dir>/vmm.json.
struct VmmRecord {
  pid_t pid = 0;
  uint64_t start_time = 0;  // field 22 of /proc/<pid>/stat (clock ticks since boot)
  std::string api_socket;
  std::string vmm_bin;
  std::string netns;
  std::string key;
  std::string spawned_at;            // RFC 3339 UTC wall time
  std::vector<std::string> cgroups;  // cgroup directories the VMM joined ("cgroups", optional)
};

class VmmProcess {
 public:
  // File names inside vm_dir.
  static constexpr const char* kApiSocketName = "api.sock";
  static constexpr const char* kLogName = "ch.log";
  static constexpr const char* kEventsName = "events.log";
  static constexpr const char* kStderrName = "vmm.stderr";
  static constexpr const char* kRecordName = "vmm.json";

  // <vm_dir>/api.sock: where a VmmApiProbe for this VM must connect.
  static std::string ApiSocketPath(const std::string& vm_dir);

  // Starts the VMM and waits until its API socket exists and `probe.Ping` succeeds, at most
  // `ready_timeout`. Refuses (FailedPrecondition) if vm_dir's record names a VMM that is still
  // alive. On any failure the child is killed and reaped, and the error says why, including the
  // tail of the VMM's stderr if it exited (CH prints its error chain there, CONTRACT §2).
  static absl::StatusOr<std::unique_ptr<VmmProcess>> Spawn(const VmmSpec& spec, VmmApiProbe& probe,
                                                           std::chrono::milliseconds ready_timeout);

  // Re-attaches to the VMM recorded in <vm_dir>/vmm.json without talking to its API: NotFound
  // (saying why) if that process is gone or its pid now belongs to another process; a corrupt
  // record is an error naming the file.
  static absl::StatusOr<std::unique_ptr<VmmProcess>> Attach(const std::string& vm_dir);

  // Attach, then `probe.Ping` within `timeout`: FailedPrecondition if the process is alive but
  // its API does not answer (the caller decides; to kill it, Attach and Stop).
  static absl::StatusOr<std::unique_ptr<VmmProcess>> Adopt(const std::string& vm_dir,
                                                           VmmApiProbe& probe,
                                                           std::chrono::milliseconds timeout);

  // Reads and validates <vm_dir>/vmm.json.
  static absl::StatusOr<VmmRecord> ReadRecord(const std::string& vm_dir);

  // Destroying a VmmProcess leaves the VMM running (it must survive sandboxlet). A child that is
  // still running should stay watched by an ExitWatcher, which shares the Reaper and reaps it.
  ~VmmProcess() = default;
  VmmProcess(const VmmProcess&) = delete;
  VmmProcess& operator=(const VmmProcess&) = delete;

  // vmm.shutdown (timeout min(grace, 2s)) → wait up to `grace` → SIGTERM → wait `grace` →
  // SIGKILL → wait. Once the process is gone, removes the record, the API socket and the
  // recorded cgroups (a cgroup that cannot be removed is logged, not an error).
  absl::StatusOr<ExitKind> Stop(VmmApiProbe& probe, std::chrono::milliseconds grace);

  // Waits until the VMM has exited (reaping it if it is our child) or `deadline` passes
  // (DeadlineExceeded). Returns the same exit to every caller, the ExitWatcher included.
  absl::StatusOr<VmmExit> WaitExit(std::chrono::steady_clock::time_point deadline);

  // Sends `sig` through the pidfd (never to a reused pid). NotFound once the process is gone.
  absl::Status Signal(int sig);

  pid_t pid() const { return record_.pid; }
  const std::string& api_socket() const { return record_.api_socket; }
  const std::string& vm_dir() const { return vm_dir_; }
  const std::string& key() const { return record_.key; }
  const VmmRecord& record() const { return record_; }
  bool is_child() const { return reaper_->is_child(); }
  int pidfd() const { return reaper_->pidfd(); }
  // Shared with ExitWatcher so that exactly one of them reaps the child.
  const std::shared_ptr<Reaper>& reaper() const { return reaper_; }

 private:
  VmmProcess(std::string vm_dir, VmmRecord record, std::shared_ptr<Reaper> reaper);

  // Waits for exit until `deadline`; true if it exited.
  bool WaitUntil(std::chrono::steady_clock::time_point deadline);
  void RemoveRecordAndSocket();

  const std::string vm_dir_;
  const VmmRecord record_;
  const std::shared_ptr<Reaper> reaper_;
};

// Field 22 (starttime) and field 3 (state) of /proc/<pid>/stat, plus the parent pid (field 4).
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  uint64_t start_time = 0;
};
// Parses the text of a /proc/<pid>/stat file (the command name may contain spaces and ')').
absl::StatusOr<ProcStat> ParseProcStat(std::string_view text);
absl::StatusOr<ProcStat> ReadProcStat(pid_t pid);

}  // namespace sandboxlet::vmm
