// Benchmarks runtime/ch/client.cpp: a vmm.ping round trip through ChClient against the CH
// simulator, next to the same request bytes written and read over a raw Unix socket to the same
// simulator. BM_ChClientPing reports `ratio_vs_raw` (client time per call / raw time per call) so
// the client's own overhead is visible. Requires the ch-sim target (CH_SIM_BIN) or $CH_SIM_BIN.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include <benchmark/benchmark.h>

#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/ch/client.h"

namespace sandboxlet::ch {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string SimBin() {
#ifdef CH_SIM_BIN
  return CH_SIM_BIN;
#else
  const char* env = ::getenv("CH_SIM_BIN");
  return env != nullptr ? env : "";
#endif
}

// One simulator (v53) for the whole run.
class SimProcess {
 public:
  static SimProcess& Get() {
    static SimProcess sim;
    return sim;
  }
  bool ready() const { return ready_; }
  const std::string& socket() const { return socket_; }
  ~SimProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

 private:
  SimProcess() {
    std::string bin = SimBin();
    if (bin.empty() || ::access(bin.c_str(), X_OK) != 0) return;
    char tmpl[] = "/tmp/ch_client_bench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    socket_ = dir_ + "/api.sock";
    std::string api = "path=" + socket_;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setenv("CHSIM_VERSION", "53", 1);
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(bin.c_str(), bin.c_str(), "--api-socket", api.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (SteadyClock::now() < deadline) {
      // The socket file appears at bind(), a moment before listen(): wait until it accepts.
      UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      struct sockaddr_un addr = {};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, socket_.c_str(), sizeof(addr.sun_path) - 1);
      if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
        ready_ = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::string dir_, socket_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// Nanoseconds per raw round trip, measured by BM_RawPing (registered first).
double g_raw_ns_per_call = 0;

constexpr char kPingRequest[] =
    "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n";

void BM_RawPing(benchmark::State& state) {
  SimProcess& sim = SimProcess::Get();
  if (!sim.ready()) {
    state.SkipWithError("CH simulator not available");
    return;
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sim.socket().c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    state.SkipWithError("connect failed");
    return;
  }
  std::string buf;
  char chunk[4096];
  auto start = SteadyClock::now();
  for (auto _ : state) {
    if (::send(fd.get(), kPingRequest, sizeof(kPingRequest) - 1, MSG_NOSIGNAL) < 0) {
      state.SkipWithError("send failed");
      return;
    }
    // Minimal framing: head, then Content-Length bytes.
    buf.clear();
    size_t need = std::string::npos;
    while (need == std::string::npos || buf.size() < need) {
      ssize_t n = ::recv(fd.get(), chunk, sizeof(chunk), 0);
      if (n <= 0) {
        state.SkipWithError("recv failed");
        return;
      }
      buf.append(chunk, static_cast<size_t>(n));
      size_t end = buf.find("\r\n\r\n");
      if (need == std::string::npos && end != std::string::npos) {
        size_t cl = buf.find("Content-Length: ");
        need =
            end + 4 + (cl != std::string::npos && cl < end ? std::stoul(buf.substr(cl + 16)) : 0);
      }
    }
    benchmark::DoNotOptimize(buf.data());
  }
  auto elapsed = std::chrono::duration<double, std::nano>(SteadyClock::now() - start).count();
  g_raw_ns_per_call = elapsed / static_cast<double>(state.iterations());
}
BENCHMARK(BM_RawPing);

void BM_ChClientPing(benchmark::State& state) {
  SimProcess& sim = SimProcess::Get();
  if (!sim.ready()) {
    state.SkipWithError("CH simulator not available");
    return;
  }
  ChClientOptions options;
  options.socket_path = sim.socket();
  options.vm_name = "bench/ping";
  options.version = ChVersion::Of(53);
  ChClient client(options);
  auto start = SteadyClock::now();
  for (auto _ : state) {
    absl::StatusOr<PingInfo> ping = client.Ping();
    if (!ping.ok()) {
      state.SkipWithError(std::string(ping.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(ping->version.data());
  }
  auto elapsed = std::chrono::duration<double, std::nano>(SteadyClock::now() - start).count();
  if (g_raw_ns_per_call > 0) {
    state.counters["ratio_vs_raw"] =
        elapsed / static_cast<double>(state.iterations()) / g_raw_ns_per_call;
  }
}
BENCHMARK(BM_ChClientPing);

}  // namespace
}  // namespace sandboxlet::ch

BENCHMARK_MAIN();
