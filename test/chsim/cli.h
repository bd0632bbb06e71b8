// The simulator's command line, shaped like Cloud Hypervisor's clap CLI (CONTRACT §2).
// Two stages, as in CH: clap checks option names and arities (errors exit 2), then CH parses the
// option values (errors print the error chain and exit 1). Thread-safe: pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "test/chsim/version.h"

namespace sandboxlet::chsim {

// Raw option values after the clap stage.
struct CommandLine {
  std::optional<std::string> api_socket;
  std::optional<std::string> log_file;
  std::optional<std::string> event_monitor;
  std::optional<std::string> seccomp;
  std::optional<std::string> restore;
  int verbosity = 0;
  bool no_shutdown = false;
  bool landlock = false;
  bool print_version = false;
  bool print_help = false;
};

// `path=<p>`, a bare path, or `fd=<n>` (exactly one of path/fd is set).
struct EndpointSpec {
  std::string path;
  int fd = -1;
};

struct NetFds {
  std::string id;
  std::vector<int> fds;
};

// --restore's value (also the shape of vm.restore's RestoreConfig after version gating).
struct RestoreSpec {
  std::string source_url;
  bool prefault = false;
  std::string memory_restore_mode = "Copy";  // v52+
  bool resume = false;                       // v52+
  std::vector<NetFds> net_fds;
};

// Clap stage. On failure the status message is the full text clap prints on stderr (exit 2).
absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const ChVersion& version);

// Value stage: errors carry a CH error chain (exit 1).
absl::StatusOr<EndpointSpec> ParseEndpointSpec(const std::string& option, const std::string& value);
absl::StatusOr<RestoreSpec> ParseRestoreSpec(const std::string& value, const ChVersion& version);
absl::Status ValidateSeccomp(const std::string& value);

// What `--version` prints (CONTRACT §2), newline-terminated.
std::string VersionText(const ChVersion& version, int verbosity);
std::string HelpText(const ChVersion& version);

}  // namespace sandboxlet::chsim
