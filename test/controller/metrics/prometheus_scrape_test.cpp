// End-to-end with a real Prometheus server (Debian package `prometheus`): it scrapes our
// /metrics every second; snapshot disk usage must match `du -sB1` and a removed snapshot's series
// must go stale.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "controller/metrics/http_server.h"
#include "controller/metrics/snapshot_usage.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "test/controller/metrics/metrics_test_util.h"

extern char** environ;

namespace sandboxlet::metrics {
namespace {

using testing::HttpRequest;
using testing::TempDir;
using testing::WriteSparseFile;
using namespace std::chrono_literals;

constexpr const char* kPrometheus = "/usr/bin/prometheus";

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// A Prometheus server this test started; stopped (only this pid) on destruction.
class PrometheusProcess {
 public:
  bool Start(const TempDir& tmp, int port, int target_port) {
    const std::string config = tmp.File("prometheus.yml");
    const std::string yaml =
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: sandboxlet\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:" +
        std::to_string(target_port) + "']\n";
    if (!WriteFileAtomic(config, yaml).ok()) return false;
    log_ = tmp.File("prometheus.log");
    std::vector<std::string> args = {kPrometheus, "--config.file=" + config,
                                     "--storage.tsdb.path=" + tmp.File("tsdb"),
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    const int rc = posix_spawn(&pid_, kPrometheus, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }
  bool Running() { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string Log() const {
    auto s = ReadFile(log_);
    return s.ok() ? *s : "";
  }
  ~PrometheusProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (::waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

std::string Escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// snapshot label → value of an instant query; nullopt if the query itself failed.
std::optional<std::map<std::string, double>> Query(int port, const std::string& promql) {
  auto resp = HttpRequest("http://127.0.0.1:" + std::to_string(port) +
                          "/api/v1/query?query=" + Escape(promql));
  if (resp.status != 200) return std::nullopt;
  auto j = nlohmann::json::parse(resp.body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
  std::map<std::string, double> out;
  for (const auto& r : j["data"]["result"]) {
    out[r["metric"].value("snapshot", "")] = std::stod(r["value"][1].get<std::string>());
  }
  return out;
}

int64_t Du(const std::string& dir) {
  auto r = RunChecked({"du", "-sB1", dir});
  return r.ok() ? std::strtoll(r->out.c_str(), nullptr, 10) : -1;
}

TEST(PrometheusScrape, SnapshotDiskUsageMatchesDuAndRemovedSeriesGoStale) {
  if (!PathExists(kPrometheus))
    GTEST_SKIP() << "prometheus not installed (apt-get install prometheus)";
  TempDir tmp;
  Metrics metrics;
  Readiness readiness;
  SnapshotUsageOptions so;
  so.background_refresh = false;
  so.filesystem_path = tmp.path();
  SnapshotUsageTracker tracker(&metrics, so);

  // Three snapshots with CH-like sparse memory files of different fill.
  std::map<std::string, std::string> dirs;
  const std::map<std::string, std::pair<size_t, off_t>> shapes = {
      {"alpha", {256 << 10, 512 << 20}}, {"beta", {3 << 20, 1 << 30}}, {"gamma", {4096, 64 << 20}}};
  for (const auto& [name, shape] : shapes) {
    const std::string dir = tmp.File("snapshots/default/" + name);
    ASSERT_TRUE(MakeDirs(dir).ok());
    ASSERT_TRUE(WriteSparseFile(dir + "/memory-ranges", shape.first, shape.second));
    ASSERT_TRUE(WriteSparseFile(dir + "/config.json", 2000, 2000));
    ASSERT_TRUE(tracker.Set("default", name, dir).ok());
    dirs[name] = dir;
  }

  HttpServerOptions ho;
  ho.listen = "127.0.0.1:0";
  auto server = HttpServer::Start(&metrics, &readiness, ho);
  ASSERT_TRUE(server.ok()) << server.status();

  const int prom_port = FreePort();
  ASSERT_GT(prom_port, 0);
  PrometheusProcess prom;
  ASSERT_TRUE(prom.Start(tmp, prom_port, (*server)->port()));

  const auto deadline = std::chrono::steady_clock::now() + 40s;
  std::map<std::string, double> seen;
  while (std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(prom.Running()) << prom.Log();
    auto r = Query(prom_port, "sandboxlet_snapshot_disk_usage_bytes");
    if (r.has_value() && r->size() == dirs.size()) {
      seen = *r;
      break;
    }
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(seen.size(), dirs.size()) << "Prometheus never scraped the usage; log:\n" << prom.Log();
  for (const auto& [name, dir] : dirs) {
    const int64_t du = Du(dir);
    ASSERT_GT(du, 0);
    EXPECT_EQ(seen[name], static_cast<double>(du)) << name;
  }

  tracker.Remove("default", "beta");
  bool stale = false;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = Query(prom_port, R"(sandboxlet_snapshot_disk_usage_bytes{snapshot="beta"})");
    if (r.has_value() && r->empty()) {
      stale = true;
      break;
    }
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(stale) << "the removed snapshot's series is still returned";
  auto rest = Query(prom_port, "sandboxlet_snapshot_disk_usage_bytes");
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->size(), 2u);
  EXPECT_EQ(rest->count("beta"), 0u);
  auto total = Query(prom_port, "sandboxlet_snapshot_disk_usage_total_bytes");
  ASSERT_TRUE(total.has_value() && total->size() == 1);
  EXPECT_EQ(total->begin()->second, static_cast<double>(Du(dirs["alpha"]) + Du(dirs["gamma"])));
}

}  // namespace
}  // namespace sandboxlet::metrics
