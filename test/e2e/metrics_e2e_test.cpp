// End-to-end tests of the daemon's observability endpoints against the built `sandboxlet` binary
// with the CH simulator as its VMM: the live /metrics passes `promtool check metrics`, a real
// Prometheus server scraping it sees each snapshot's disk usage equal to `du -sB1` of its
// directory (and the series of a deleted snapshot go stale), and /readyz answers 503 while the
// adoption of running VMs is still under way.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fd.h"
#include "test/e2e/daemon_fixture.h"

namespace sandboxlet {
namespace {

using namespace e2e;  // NOLINT: the fixture's helpers
using ::testing::HasSubstr;

std::string SnapshotDoc(const std::string& name, const std::string& sandbox) {
  return Cat("apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\nmetadata:\n  name: ",
             name, "\nspec:\n  sandboxName: ", sandbox, "\n");
}

bool PhaseIs(const nlohmann::json& j, const std::string& phase) {
  return j.is_object() && j.contains("status") && j["status"].value("phase", "") == phase;
}

// A loopback TCP port free right now (bound by the kernel, then released).
int FreePort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd.get() < 0 || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return -1;
  }
  return ntohs(addr.sin_port);
}

class MetricsE2eTest : public DaemonE2eTest {
 protected:
  void TearDown() override {
    if (prometheus_pid_ > 0) {
      ::kill(prometheus_pid_, SIGKILL);
      ::waitpid(prometheus_pid_, nullptr, 0);
    }
    DaemonE2eTest::TearDown();
  }

  // Applies a Sandbox and waits for it to run.
  void RunSandbox(const std::string& name) {
    ASSERT_NO_FATAL_FAILURE(Apply(SandboxDoc(name)));
    nlohmann::json j = WaitObject("sandboxes", name,
                                  [](const nlohmann::json& o) { return PhaseIs(o, "Running"); });
    ASSERT_TRUE(PhaseIs(j, "Running"));
  }

  // Snapshots `sandbox` as `name`, waits for Ready and returns the snapshot's directory.
  std::string ReadySnapshot(const std::string& name, const std::string& sandbox) {
    Apply(SnapshotDoc(name, sandbox));
    nlohmann::json j = WaitObject("sandboxsnapshots", name, [](const nlohmann::json& o) {
      return PhaseIs(o, "Ready") || PhaseIs(o, "Failed");
    });
    EXPECT_TRUE(PhaseIs(j, "Ready")) << j.dump(2);
    if (!PhaseIs(j, "Ready")) return "";
    std::string uid = j["metadata"].value("uid", "");
    absl::StatusOr<CommandResult> found =
        RunCommand({"find", state_ + "/snapshots", "-maxdepth", "3", "-type", "d", "-name", uid});
    EXPECT_TRUE(found.ok() && !Trim(found->out).empty()) << "no directory for snapshot " << uid;
    if (!found.ok()) return "";
    std::string dir = std::string(Trim(found->out));
    EXPECT_EQ(dir.find('\n'), std::string::npos) << dir;
    return dir;
  }

  // One instant query to this test's Prometheus: snapshot label → value; nullopt on failure.
  std::optional<std::map<std::string, double>> Query(const std::string& promql) {
    absl::StatusOr<CommandResult> r = RunCommand(
        {"curl", "-s", "-m", "5", "-G", Cat("http://127.0.0.1:", prometheus_port_, "/api/v1/query"),
         "--data-urlencode", "query=" + promql},
        {.timeout = std::chrono::seconds(10)});
    if (!r.ok() || r->exit_code != 0) return std::nullopt;
    nlohmann::json j = nlohmann::json::parse(r->out, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
    std::map<std::string, double> out;
    try {
      for (const auto& series : j["data"]["result"]) {
        out[series["metric"].value("snapshot", "")] =
            std::stod(series["value"][1].get<std::string>());
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
    return out;
  }

  int prometheus_pid_ = -1;
  int prometheus_port_ = -1;
};

int64_t Du(const std::string& dir) {
  absl::StatusOr<CommandResult> r = RunChecked({"du", "-sB1", dir});
  return r.ok() ? std::strtoll(r->out.c_str(), nullptr, 10) : -1;
}

TEST_F(MetricsE2eTest, LiveMetricsPassPromtoolLint) {
  if (!PathExists("/usr/bin/promtool")) GTEST_SKIP() << "promtool not installed (prometheus)";
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(RunSandbox("lint-a"));
  ASSERT_NO_FATAL_FAILURE(RunSandbox("lint-b"));
  ASSERT_FALSE(ReadySnapshot("lint-snap", "lint-a").empty());

  int port = MetricsPort();
  ASSERT_GT(port, 0);
  // Per-sandbox series come from a periodic store collection (docs/metrics.md): wait for them so
  // the page linted carries every kind of series.
  std::string body;
  auto deadline = Clock::now() + std::chrono::seconds(40);
  while (Clock::now() < deadline) {
    auto [code, page] = HttpGet(port, "/metrics");
    ASSERT_EQ(code, 200);
    body = page;
    if (body.find("sandboxlet_sandbox_phase{") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_THAT(body, HasSubstr("sandboxlet_snapshot_disk_usage_bytes{"));
  EXPECT_THAT(body, HasSubstr("sandboxlet_sandbox_phase{"));
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/metrics.txt", body).ok());
  absl::StatusOr<CommandResult> lint =
      RunCommand({"sh", "-c", Cat("promtool check metrics < ", dir_, "/metrics.txt")});
  ASSERT_TRUE(lint.ok());
  EXPECT_EQ(lint->exit_code, 0) << lint->out << lint->err;
  EXPECT_EQ(lint->out + lint->err, "");

  ASSERT_EQ(Ctl({"delete", "sandboxsnapshots", "lint-snap"}).exit_code, 0);
  ASSERT_EQ(Ctl({"delete", "sandboxes", "lint-a", "lint-b"}).exit_code, 0);
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

TEST_F(MetricsE2eTest, PrometheusSeesSnapshotUsageEqualToDuAndDeletedSeriesGoStale) {
  if (!PathExists("/usr/bin/prometheus")) GTEST_SKIP() << "prometheus not installed";
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(RunSandbox("prom-a"));
  ASSERT_NO_FATAL_FAILURE(RunSandbox("prom-b"));
  std::map<std::string, std::string> dirs = {{"snap-a", ReadySnapshot("snap-a", "prom-a")},
                                             {"snap-b", ReadySnapshot("snap-b", "prom-b")}};
  for (const auto& [name, dir] : dirs) ASSERT_FALSE(dir.empty()) << name;

  int target = MetricsPort();
  ASSERT_GT(target, 0);
  prometheus_port_ = FreePort();
  ASSERT_GT(prometheus_port_, 0);
  ASSERT_TRUE(
      WriteFileAtomic(dir_ + "/prometheus.yml",
                      Cat("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n",
                          "scrape_configs:\n  - job_name: sandboxlet\n",
                          "    static_configs:\n      - targets: ['127.0.0.1:", target, "']\n"))
          .ok());
  prometheus_pid_ = Spawn({"/usr/bin/prometheus", "--config.file=" + dir_ + "/prometheus.yml",
                           "--storage.tsdb.path=" + dir_ + "/tsdb",
                           Cat("--web.listen-address=127.0.0.1:", prometheus_port_)},
                          dir_ + "/prometheus.log");
  ASSERT_GT(prometheus_pid_, 0);

  auto deadline = Clock::now() + std::chrono::seconds(45);
  std::map<std::string, double> seen;
  while (Clock::now() < deadline) {
    ASSERT_EQ(::waitpid(prometheus_pid_, nullptr, WNOHANG), 0)
        << "prometheus exited: " << ReadFile(dir_ + "/prometheus.log").value_or("");
    auto r = Query("sandboxlet_snapshot_disk_usage_bytes");
    if (r.has_value() && r->size() == dirs.size()) {
      seen = *r;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(seen.size(), dirs.size()) << "Prometheus never scraped both snapshots";
  for (const auto& [name, dir] : dirs) {
    int64_t du = Du(dir);
    ASSERT_GT(du, 0) << dir;
    EXPECT_EQ(seen[name], static_cast<double>(du)) << name << " in " << dir;
  }

  ASSERT_EQ(Ctl({"delete", "sandboxsnapshots", "snap-b"}).exit_code, 0);
  bool stale = false;
  while (Clock::now() < deadline + std::chrono::seconds(30)) {
    auto r = Query("sandboxlet_snapshot_disk_usage_bytes");
    if (r.has_value() && !r->contains("snap-b")) {
      EXPECT_TRUE(r->contains("snap-a")) << "the other snapshot's series went away too";
      stale = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(stale) << "the deleted snapshot's series never went stale";

  ASSERT_EQ(Ctl({"delete", "sandboxsnapshots", "snap-a"}).exit_code, 0);
  ASSERT_EQ(Ctl({"delete", "sandboxes", "prom-a", "prom-b"}).exit_code, 0);
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

TEST_F(MetricsE2eTest, ReadyzIsNotReadyUntilAdoptionFinishes) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(RunSandbox("adopt-me"));
  nlohmann::json sbx = GetJson("sandboxes", "adopt-me");
  std::string uid = sbx["metadata"].value("uid", "");
  ASSERT_FALSE(uid.empty());
  int status = StopDaemon(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  // The VM keeps running; its simulator reads this file before each API request, so the next
  // daemon's adoption ping is slow.
  std::string faults = Cat(state_, "/vms/", uid, "/api.sock.faults");
  ASSERT_TRUE(PathExists(Cat(state_, "/vms/", uid, "/api.sock"))) << "no api socket for " << uid;
  ASSERT_TRUE(WriteFileAtomic(faults, "delay vmm.ping 3000\n").ok());

  daemon_pid_ = Spawn(DaemonArgs(), dir_ + "/daemon.log");
  ASSERT_GT(daemon_pid_, 0);
  // The metrics listener comes up before adoption; wait for this run's "metrics serving" line.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  bool saw_not_ready = false, saw_ready = false;
  std::string not_ready_body;
  while (Clock::now() < deadline && !saw_ready) {
    ASSERT_EQ(::waitpid(daemon_pid_, nullptr, WNOHANG), 0) << "the daemon exited";
    absl::StatusOr<std::string> log = ReadFile(dir_ + "/daemon.log");
    size_t runs = 0;
    for (size_t at = 0;
         log.ok() && (at = log->find("msg=\"metrics serving\"", at)) != std::string::npos; ++at) {
      ++runs;
    }
    if (runs >= 2) {
      auto [code, body] = HttpGet(MetricsPort(), "/readyz");
      if (code == 503) {
        saw_not_ready = true;
        not_ready_body = body;
      } else if (code == 200) {
        saw_ready = true;
      }
    }
    if (!saw_ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(saw_not_ready) << "/readyz never answered 503 while the ping was delayed";
  EXPECT_THAT(not_ready_body, HasSubstr("[-]adoption"));
  EXPECT_TRUE(saw_ready) << "/readyz never became ready after adoption";
  EXPECT_EQ(HttpGet(MetricsPort(), "/readyz").first, 200);

  ASSERT_TRUE(RemoveAll(faults).ok());
  // Wait for the API socket too, then clean up through the daemon.
  ASSERT_NO_FATAL_FAILURE(WaitSocket());
  EXPECT_EQ(GetJson("sandboxes", "adopt-me")["status"].value("phase", ""), "Running");
  ASSERT_EQ(Ctl({"delete", "sandboxes", "adopt-me"}).exit_code, 0);
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

}  // namespace
}  // namespace sandboxlet
