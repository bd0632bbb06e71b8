// ch-sim: a Cloud Hypervisor simulator for tests (see README.md). It pretends to be
// cloud-hypervisor v48, v52 or v53 (CHSIM_VERSION or an argv[0] ending in -v<N>) and follows
// /work/shared/ch/CONTRACT.md: same command line, HTTP quirks, state machine, error codes,
// snapshot files and exit behaviour, plus fault injection for the runtime's failure paths.
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/strings.h"
#include "test/chsim/chain.h"
#include "test/chsim/cli.h"
#include "test/chsim/events.h"
#include "test/chsim/faults.h"
#include "test/chsim/guest_agent.h"
#include "test/chsim/server.h"
#include "test/chsim/version.h"
#include "test/chsim/vmm.h"

namespace sandboxlet::chsim {
namespace {

int Run(int argc, char** argv) {
  ::umask(077);  // CH's umask: the API socket is owner-only (CONTRACT §2)
  ::signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<ChVersion> version = SelectVersion(argv[0], std::getenv("CHSIM_VERSION"));
  if (!version.ok()) {
    std::fprintf(stderr, "ch-sim: %s\n", std::string(version.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<CommandLine> cl =
      ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc), *version);
  if (!cl.ok()) {
    std::fputs(std::string(cl.status().message()).c_str(), stderr);
    return 2;  // clap's exit status
  }
  if (cl->print_help) {
    std::fputs(HelpText(*version).c_str(), stdout);
    return 0;
  }
  if (cl->print_version) {
    std::fputs(VersionText(*version, cl->verbosity).c_str(), stdout);
    return 0;
  }

  std::string socket_path;  // for v52's removal of the path after a failed start
  auto fatal = [&](const absl::Status& st) {
    PrintFatalChain(ChainOf(st));
    if (version->behaviour == 52 && !socket_path.empty()) ::unlink(socket_path.c_str());
    return 1;
  };

  Logger log;
  log.SetVerbosity(cl->verbosity);
  if (cl->log_file) {
    if (absl::Status st = log.OpenFile(*cl->log_file); !st.ok()) {
      return fatal(ChainError({"Error opening log file", std::string(st.message())}));
    }
  }
  std::optional<EndpointSpec> api;
  if (cl->api_socket) {
    absl::StatusOr<EndpointSpec> spec = ParseEndpointSpec("api-socket", *cl->api_socket);
    if (!spec.ok()) return fatal(spec.status());
    api = *spec;
    socket_path = spec->path;
  }
  if (cl->seccomp) {
    if (absl::Status st = ValidateSeccomp(*cl->seccomp); !st.ok()) return fatal(st);
  }
  std::optional<RestoreSpec> restore;
  if (cl->restore) {
    absl::StatusOr<RestoreSpec> spec = ParseRestoreSpec(*cl->restore, *version);
    if (!spec.ok()) return fatal(spec.status());
    restore = *spec;
  }

  FaultSet faults;
  if (const char* env = std::getenv("CHSIM_FAULTS")) {
    absl::StatusOr<FaultSet> parsed = FaultSet::Parse(env, ';');
    if (!parsed.ok()) {
      return fatal(ChainError({"Invalid CHSIM_FAULTS", std::string(parsed.status().message())}));
    }
    faults = *parsed;
  }
  FaultSet startup = faults;
  if (!socket_path.empty()) {
    absl::StatusOr<FaultSet> from_file = FaultSet::Load(socket_path + ".faults");
    if (!from_file.ok()) {
      return fatal(ChainError({"Invalid fault file", std::string(from_file.status().message())}));
    }
    startup.Append(*from_file);
  }
  if (startup.Has(FaultKind::kFailStart)) {
    return fatal(ChainError({"Failed to start the VMM", "Injected startup failure (fail-start)"}));
  }

  EventMonitor events;
  if (cl->event_monitor) {
    absl::StatusOr<EndpointSpec> spec = ParseEndpointSpec("event-monitor", *cl->event_monitor);
    if (!spec.ok()) return fatal(spec.status());
    absl::Status st = spec->fd >= 0 ? events.AdoptFd(spec->fd) : events.OpenPath(spec->path);
    if (!st.ok())
      return fatal(ChainError({"Error opening event monitor", std::string(st.message())}));
  }

  int signal_fd = -1;
  if (startup.Has(FaultKind::kIgnoreSigterm)) {
    ::signal(SIGTERM, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
  } else {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    signal_fd = ::signalfd(-1, &set, SFD_CLOEXEC);
  }

  events.Emit("vmm", "starting");
  log.Info(Cat("cloud-hypervisor ", version->BuildVersion(), " (ch-sim) starting"));
  Vmm vmm(*version, cl->no_shutdown, &events, &log);
  ApiServer server(*version, &vmm, &log, faults, signal_fd);
  if (api) {
    if (absl::Status st = server.Bind(*api); !st.ok()) return fatal(st);
  }
  {
    GuestAgentConfig agent;
    bool enabled = true;
    if (absl::Status st = ParseGuestAgentEnv(std::getenv("CHSIM_GUEST_AGENT"), &agent, &enabled);
        !st.ok()) {
      return fatal(ChainError({"Invalid CHSIM_GUEST_AGENT", std::string(st.message())}));
    }
    if (enabled) {
      agent.startup_faults = faults;
      if (!server.socket_path().empty()) agent.faults_path = server.socket_path() + ".faults";
      vmm.EnableGuestAgent(std::move(agent));
    }
  }
  if (restore) {
    if (absl::Status st = vmm.RestoreFromCommandLine(*restore); !st.ok()) return fatal(st);
  }
  int code = server.Run();
  events.Emit("vmm", "shutdown");
  return code;
}

}  // namespace
}  // namespace sandboxlet::chsim

int main(int argc, char** argv) { return sandboxlet::chsim::Run(argc, argv); }
