// `sandboxlet ctl`: a small kubectl-like client of the local gRPC SandboxService on the daemon's
// unix socket.
//
//   sandboxlet ctl get KIND [NAME] [-n NS | -A] [-l SELECTOR] [-o table|yaml|json]
//   sandboxlet ctl apply -f FILE|- [-f ...] [--dry-run] [--validate=Strict|Warn|Ignore]
//   sandboxlet ctl delete KIND NAME [-n NS]      |  sandboxlet ctl delete -f FILE
//   sandboxlet ctl watch KIND [NAME] [-n NS | -A] [-o table|json]
// Common: --socket=PATH (default $SANDBOXLET_SOCKET or /run/sandboxlet/sandboxlet.sock).
// KIND is any name api::ParseKind accepts (sandboxes, sbx, Sandbox, snapshots, sbxsnap, ...).
//
// Thread-safety: runs on the calling thread only.
#pragma once

#include <string>
#include <vector>

namespace sandboxlet::cli {

// Runs the ctl subcommand with its arguments (after "ctl"); returns the process exit code.
// Results go to stdout, errors ("error: ...") and warnings to stderr.
int RunCtl(const std::vector<std::string>& args);

// The ctl part of `sandboxlet --help`.
std::string CtlUsage();

}  // namespace sandboxlet::cli
