// DaemonConfig: the settings of the `sandboxlet run` daemon, from command-line flags
// (`--flag=value` or `--flag value`) and an optional YAML file (`--config=FILE`, keys are the flag
// names without dashes: `state-dir: /var/lib/sandboxlet`); flags override the file. Defaults work
// standalone on one host. Unknown flags and keys are errors that suggest the closest known name.
// Paths that default relative to another setting (kernel, templates, socket) are resolved after
// both sources are read, so `--state-dir=/x` moves the kernel default to /x/kernel/vmlinux.
//
// Thread-safety: DaemonConfig is a value; the functions are pure except CheckVmmBin (reads the
// file system).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/log.h"

namespace sandboxlet::daemon {

struct DaemonConfig {
  std::string config_file;  // --config; "" = none
  std::string state_dir = "/var/lib/sandboxlet";
  std::string run_dir = "/run/sandboxlet";
  std::string vmm_bin = "cloud-hypervisor";
  std::string kernel;         // "" until resolved: <state-dir>/kernel/vmlinux
  std::string templates_dir;  // "" until resolved: <state-dir>/templates
  std::string manifests;      // "" = no manifests directory
  std::string grpc_socket;    // "" until resolved: <run-dir>/sandboxlet.sock
  std::string api_listen = "127.0.0.1:6443";
  std::string metrics_listen = "127.0.0.1:9464";
  std::string node_name;          // "" until resolved: the host name
  std::string api_token_file;     // bearer token for the REST API; required off loopback
  std::string api_tls_cert_file;  // PEM certificate and key: the REST API speaks TLS when set
  std::string api_tls_key_file;
  std::string network_cidr = "10.200.0.0/16";
  std::string network_prefix = "sbl";   // netns/veth/nft names: <prefix>-<id>, <prefix>v<slot>
  std::string volume_backend = "auto";  // auto | devicemapper | file
  std::string vmm_cgroups = "auto";     // auto | off
  std::string vmm_cgroup_parent = "sandboxlet";
  bool guest_agent = false;
  int guest_agent_port = 49983;
  int workers = 4;
  std::chrono::seconds resync = std::chrono::minutes(5);
  log::Level log_level = log::Level::kInfo;
  log::Format log_format = log::Format::kLogfmt;
  int max_vcpus = 0;  // 0 until resolved: the number of online CPUs

  // Files under state_dir and run_dir the daemon owns.
  std::string StorePath() const { return state_dir + "/store.db"; }
  std::string PidFile() const { return run_dir + "/sandboxlet.pid"; }
};

// One flag as `sandboxlet --help` shows it.
struct FlagInfo {
  std::string name;           // "state-dir"
  std::string value_name;     // "DIR"
  std::string default_value;  // as shown, e.g. "<state-dir>/kernel/vmlinux"
  std::string help;
};
const std::vector<FlagInfo>& Flags();
// The flag list formatted for --help, one flag per line block.
std::string FlagsUsage();

// Parses `args` (the daemon's arguments, without the program name and subcommand), reads the
// --config file when given, and resolves the derived defaults. InvalidArgument for unknown flags
// or keys (with a suggestion), missing or malformed values; the file's errors name the file.
absl::StatusOr<DaemonConfig> ParseConfig(const std::vector<std::string>& args);

// Parses "90s", "5m", "1h30m", "250ms"; a bare number is seconds.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text);

// The known name closest to `name` by edit distance, or "" when nothing is close.
std::string Suggest(std::string_view name, const std::vector<std::string>& known);

// Resolves --vmm-bin to an executable path (a bare name is looked up on PATH).
// FailedPrecondition saying how to fix it (install cloud-hypervisor or pass --vmm-bin) when it is
// missing or not executable.
absl::StatusOr<std::string> CheckVmmBin(const std::string& vmm_bin);

}  // namespace sandboxlet::daemon
