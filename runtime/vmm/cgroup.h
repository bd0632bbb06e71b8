// VMM cgroups: every VMM runs in a cgroup of its own, outside sandboxlet's, so that stopping
// sandboxlet's systemd unit (KillMode=control-group) or its DaemonSet container (the runtime
// kills every process of the container's cgroup) does not kill the VMs with it — the invariant
// "a sandboxlet restart never kills or duplicates a running VM" (DESIGN.md).
//
// Layout, with the defaults root=/sys/fs/cgroup and parent=sandboxlet:
//   cgroup v2:  /sys/fs/cgroup/sandboxlet/vm-<uid>
//   cgroup v1:  /sys/fs/cgroup/<hierarchy>/sandboxlet/vm-<uid> in EVERY v1 hierarchy mounted
//               directly under the root (cpu, cpuacct, memory, pids, name=systemd, but also
//               freezer and devices, which container runtimes use to find and kill a
//               container's processes), plus the unified cgroup2 hierarchy of a hybrid host
//               (where systemd tracks its units).
// Only membership is managed: no controller is enabled and no limit is set. On v1 a new cpuset
// cgroup is given its parent's cpus and mems, without which no process can join it.
//
// Use: VmmCgroups::Open at startup (detects, creates the parent, logs the choice; when cgroups
// are unusable it says so — VMs will then die with sandboxlet — and every call becomes a no-op),
// Prepare(uid) before a spawn → the cgroup.procs paths for VmmSpec::cgroup_procs (the child
// joins them before exec), Remove(uid) once the VMM is gone, ListLeftovers() when reclaiming.
//
// What a deployment needs (docs/deploy.md, "VMs across restarts: cgroups"): the host's cgroup
// file system writable at `root` (a DaemonSet: privileged, hostPath /sys/fs/cgroup read-write),
// and on cgroup v2 the host's cgroup namespace (on a cgroup2 mounted with nsdelegate, as
// systemd mounts it, the kernel refuses to move a process into a cgroup outside the writer's
// cgroup namespace; Open's join probe catches that and disables cgroups with the reason).
//
// Thread-safety: a VmmCgroups is immutable after Open; its methods may be called from several
// threads, but calls for one uid must be serialized by the caller (the sandbox's lock).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet::vmm {

enum class CgroupVersion { kNone, kV1, kV2 };
std::string_view CgroupVersionName(CgroupVersion version);  // "none", "v1", "v2"

struct VmmCgroupOptions {
  std::string root = "/sys/fs/cgroup";
  // The directory (in each hierarchy) that holds the VMMs' cgroups: one per sandboxlet instance.
  std::string parent = "sandboxlet";
  // Where cgroup mounts are listed (v1 hierarchies are the cgroup mounts directly under root).
  std::string mounts_file = "/proc/self/mounts";
  // How long Remove retries rmdir while the kernel still counts an exited process (EBUSY).
  std::chrono::milliseconds remove_patience{1000};
  // Open proves that a process can join: a short-lived child moves into a probe cgroup
  // (<parent>/probe-<pid>) in every hierarchy. Off only for directories that merely look like
  // a cgroup file system (tests).
  bool verify_join = true;
};

struct CgroupDetection {
  CgroupVersion version = CgroupVersion::kNone;
  std::string reason;  // why this version, or why none
  // Hierarchy roots the VMMs join: {root} on v2; each v1 hierarchy (and the unified one).
  std::vector<std::string> hierarchies;
  // A usable setup that will still not keep VMs alive (e.g. a private cgroup namespace).
  std::string warning;
};

class VmmCgroups {
 public:
  static constexpr const char* kLeafPrefix = "vm-";

  // Looks at `options.root` without changing anything: v2 if it holds cgroup.controllers, v1 if
  // cgroup hierarchies are mounted directly under it, none otherwise or if it is not writable.
  static CgroupDetection Detect(const VmmCgroupOptions& options);

  // Detect, create the parent directory in every hierarchy, and (verify_join) move a short-lived
  // child through a probe cgroup; logs the outcome. Never fails: when cgroups are unusable the
  // result is disabled, with the reason logged as a warning.
  static std::unique_ptr<VmmCgroups> Open(VmmCgroupOptions options);
  // Cgroups turned off on purpose (`why` is logged).
  static std::unique_ptr<VmmCgroups> Disabled(std::string why);

  bool enabled() const { return detection_.version != CgroupVersion::kNone; }
  const CgroupDetection& detection() const { return detection_; }
  const VmmCgroupOptions& options() const { return options_; }

  // The VMM's cgroup directories (one per hierarchy); empty when disabled.
  absl::StatusOr<std::vector<std::string>> Dirs(const std::string& uid) const;

  // Creates the VMM's cgroup directories (existing ones are reused) and returns the cgroup.procs
  // files the VMM must join; empty when disabled. On failure nothing it created is left.
  absl::StatusOr<std::vector<std::string>> Prepare(const std::string& uid) const;

  // Removes the VMM's cgroup directories; a missing one is fine. Fails (naming the directory)
  // if a process is still in one after `remove_patience`.
  absl::Status Remove(const std::string& uid) const;

  // uids whose cgroup exists under the parent with no process in it (in any hierarchy).
  absl::StatusOr<std::vector<std::string>> ListLeftovers() const;

 private:
  VmmCgroups(VmmCgroupOptions options, CgroupDetection detection)
      : options_(std::move(options)), detection_(std::move(detection)) {}

  const VmmCgroupOptions options_;
  const CgroupDetection detection_;
};

// rmdir of each cgroup directory, retried for up to `patience` while the kernel answers EBUSY (a
// process that has just exited may still be counted); ENOENT counts as removed. Used by Remove
// and by VmmProcess::Stop, which removes the cgroups recorded in vmm.json.
absl::Status RemoveCgroupDirs(const std::vector<std::string>& dirs,
                              std::chrono::milliseconds patience);

// Pids listed in a cgroup.procs file (live members of that cgroup). A missing file is empty.
absl::StatusOr<std::vector<int>> ReadCgroupProcs(const std::string& procs_path);

}  // namespace sandboxlet::vmm
