// sandboxlet: the node agent (`sandboxlet run`), its local client (`sandboxlet ctl`), a
// kubeconfig for kubectl against the node's REST API (`sandboxlet kubeconfig`) and `version`.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "api/object.h"
#include "cmd/sandboxlet/ctl.h"
#include "controller/daemon/config.h"
#include "controller/daemon/daemon.h"
#include "controller/rest/kubeconfig.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet {
namespace {

std::string Usage() {
  return Cat(
      "sandboxlet runs Sandbox objects as Cloud Hypervisor microVMs on this node.\n\n"
      "usage:\n"
      "  sandboxlet [run] [flags]          run the node agent (the daemon)\n",
      cli::CtlUsage(),
      "  sandboxlet kubeconfig [flags]     print a kubeconfig for kubectl against the REST API\n"
      "                                    (takes the daemon's flags: --api-listen, --config, "
      "...)\n"
      "  sandboxlet version                print the version\n\n"
      "daemon flags (--flag=value or --flag value; also settable in --config FILE):\n",
      daemon::FlagsUsage());
}

int Run(const std::vector<std::string>& args) {
  absl::StatusOr<daemon::DaemonConfig> config = daemon::ParseConfig(args);
  if (!config.ok()) {
    std::cerr << "sandboxlet: " << config.status().message() << "\n";
    return 2;
  }
  // Signals are taken by one thread with sigwait; every other thread (started by the daemon)
  // inherits the blocked mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  daemon::Daemon d(*config);
  std::thread signals([&d, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    d.RequestStop();
  });
  absl::Status started = d.Start();
  if (!started.ok()) {
    std::cerr << "sandboxlet: " << started.message() << "\n";
    d.RequestStop();
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
    return 1;
  }
  d.WaitForStopRequest();
  signals.join();
  d.Stop();
  return 0;
}

int PrintKubeconfig(const std::vector<std::string>& args) {
  absl::StatusOr<daemon::DaemonConfig> config = daemon::ParseConfig(args);
  if (!config.ok()) {
    std::cerr << "sandboxlet kubeconfig: " << config.status().message() << "\n";
    return 2;
  }
  if (config->api_listen.empty()) {
    std::cerr << "sandboxlet kubeconfig: the REST API is disabled (--api-listen is empty)\n";
    return 1;
  }
  std::string host_port = config->api_listen;
  // A wildcard listener is reached through loopback from this host.
  if (StartsWith(host_port, "0.0.0.0:")) host_port = "127.0.0.1" + host_port.substr(7);
  if (StartsWith(host_port, "[::]:")) host_port = "[::1]" + host_port.substr(4);
  bool tls = !config->api_tls_cert_file.empty();
  std::string token, ca;
  if (!config->api_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadFile(config->api_token_file);
    if (!t.ok()) {
      std::cerr << "sandboxlet kubeconfig: --api-token-file: " << t.status().message() << "\n";
      return 1;
    }
    token = std::string(Trim(Split(*t, '\n')[0]));
  }
  if (tls) {
    absl::StatusOr<std::string> pem = ReadFile(config->api_tls_cert_file);
    if (!pem.ok()) {
      std::cerr << "sandboxlet kubeconfig: --api-tls-cert-file: " << pem.status().message() << "\n";
      return 1;
    }
    ca = *pem;
  }
  std::cout << rest::Kubeconfig(Cat(tls ? "https://" : "http://", host_port), token, ca);
  return 0;
}

}  // namespace
}  // namespace sandboxlet

int main(int argc, char** argv) {
  using namespace sandboxlet;
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command = args.empty() ? "run" : args[0];
  if (command == "-h" || command == "--help" || command == "help") {
    std::cout << Usage();
    return 0;
  }
  if (command == "version" || command == "--version") {
    std::cout << "sandboxlet " << daemon::kVersion << " (API " << api::kApiVersion << ")\n";
    return 0;
  }
  if (StartsWith(command, "-")) return Run(args);  // flags only: run
  std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
  for (const std::string& a : rest) {
    if ((a == "-h" || a == "--help") && command != "ctl") {
      std::cout << Usage();
      return 0;
    }
  }
  if (command == "run") return Run(rest);
  if (command == "ctl") return cli::RunCtl(rest);
  if (command == "kubeconfig") return PrintKubeconfig(rest);
  std::cerr << "sandboxlet: unknown command \"" << command
            << "\": expected run, ctl, kubeconfig or version (sandboxlet --help)\n";
  return 2;
}
