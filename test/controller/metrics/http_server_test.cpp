#include "controller/metrics/http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "test/controller/metrics/metrics_test_util.h"

namespace sandboxlet::metrics {
namespace {

using ::testing::HasSubstr;
using testing::HttpRequest;
using ::testing::Not;
using namespace std::chrono_literals;

std::string Url(const HttpServer& s, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(s.port()) + path;
}

std::unique_ptr<HttpServer> StartOrDie(const Metrics* m, const Readiness* r) {
  HttpServerOptions o;
  o.listen = "127.0.0.1:0";
  auto s = HttpServer::Start(m, r, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(HttpServer, HealthzIsOkWhileServing) {
  Metrics m;
  Readiness r;
  r.SetFlag("store", false);  // liveness ignores readiness
  auto s = StartOrDie(&m, &r);
  ASSERT_NE(s, nullptr);
  EXPECT_GT(s->port(), 0);
  auto resp = HttpRequest(Url(*s, "/healthz"));
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, "ok");
}

TEST(HttpServer, ReadyzListsFailingChecksUntilTheyPass) {
  Metrics m;
  Readiness r;
  std::atomic<bool> api_serving{false};
  r.SetFlag("store", true);
  r.SetFlag("adoption", false, "adopting 3 VMs");
  r.AddCheck("api", [&]() -> absl::Status {
    return api_serving ? absl::OkStatus() : absl::UnavailableError("not listening");
  });
  auto s = StartOrDie(&m, &r);
  ASSERT_NE(s, nullptr);

  auto resp = HttpRequest(Url(*s, "/readyz"));
  EXPECT_EQ(resp.status, 503);
  EXPECT_THAT(resp.body, HasSubstr("[+]store ok"));
  EXPECT_THAT(resp.body, HasSubstr("[-]adoption failed: adopting 3 VMs"));
  EXPECT_THAT(resp.body, HasSubstr("[-]api failed: not listening"));
  EXPECT_THAT(resp.body, HasSubstr("readyz check failed"));

  r.SetFlag("adoption", true);
  resp = HttpRequest(Url(*s, "/readyz"));
  EXPECT_EQ(resp.status, 503);
  EXPECT_THAT(resp.body, Not(HasSubstr("[-]adoption")));
  EXPECT_THAT(resp.body, HasSubstr("[-]api failed"));

  api_serving = true;
  resp = HttpRequest(Url(*s, "/readyz"));
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, "ok");
  resp = HttpRequest(Url(*s, "/readyz?verbose"));
  EXPECT_EQ(resp.status, 200);
  EXPECT_THAT(resp.body, HasSubstr("[+]adoption ok"));
  EXPECT_THAT(resp.body, HasSubstr("readyz check passed"));
}

TEST(HttpServer, MetricsServesTheRegistryInTextFormat) {
  Metrics m;
  Readiness r;
  m.SetSandboxesByPhase({{"Running", 7}});
  auto s = StartOrDie(&m, &r);
  ASSERT_NE(s, nullptr);
  auto resp = HttpRequest(Url(*s, "/metrics"));
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.content_type, kExpositionContentType);
  EXPECT_EQ(testing::Sample(resp.body, R"(sandboxlet_sandboxes{phase="Running"})"), 7);
  // Values change between scrapes without restarting anything.
  m.SetSandboxesByPhase({{"Running", 8}});
  EXPECT_EQ(testing::Sample(HttpRequest(Url(*s, "/metrics")).body,
                            R"(sandboxlet_sandboxes{phase="Running"})"),
            8);
}

TEST(HttpServer, OtherPathsAndMethodsAreRefused) {
  Metrics m;
  Readiness r;
  auto s = StartOrDie(&m, &r);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(HttpRequest(Url(*s, "/")).status, 404);
  EXPECT_EQ(HttpRequest(Url(*s, "/metricsx")).status, 404);
  EXPECT_EQ(HttpRequest(Url(*s, "/metrics"), "POST").status, 405);
  EXPECT_EQ(HttpRequest(Url(*s, "/healthz"), "DELETE").status, 405);
}

TEST(HttpServer, BadOrBusyListenAddressIsAClearError) {
  Metrics m;
  Readiness r;
  for (const char* bad : {"9464", "127.0.0.1", "127.0.0.1:99999", "::1:9464", "127.0.0.1:x"}) {
    HttpServerOptions o;
    o.listen = bad;
    auto s = HttpServer::Start(&m, &r, o);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!s.ok()) {
      EXPECT_THAT(std::string(s.status().message()), HasSubstr(bad));
    }
  }
  auto first = StartOrDie(&m, &r);
  ASSERT_NE(first, nullptr);
  HttpServerOptions o;
  o.listen = "127.0.0.1:" + std::to_string(first->port());
  auto second = HttpServer::Start(&m, &r, o);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(o.listen));
}

TEST(HttpServer, Ipv6ListensOrIsRefusedClearly) {
  Metrics m;
  Readiness r;
  HttpServerOptions o;
  o.listen = "[::1]:0";
  auto s = HttpServer::Start(&m, &r, o);
  if (!s.ok()) {
    // civetweb built without IPv6 (Debian's): a clear InvalidArgument, not a bind error.
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("IPv6"));
    return;
  }
  auto resp = HttpRequest("http://[::1]:" + std::to_string((*s)->port()) + "/healthz");
  EXPECT_EQ(resp.status, 200);
}

// promtool (Debian package `prometheus`) parses and lints what /metrics serves.
TEST(HttpServer, PromtoolAcceptsTheExpositionWithoutLintFindings) {
  if (!PathExists("/usr/bin/promtool"))
    GTEST_SKIP() << "promtool not installed (apt-get install prometheus)";
  Metrics m;
  Readiness r;
  m.SetBuildInfo({"0.1.0", "v41.0", "file"});
  m.SetSandboxesByPhase({{"Running", 2}, {"Hibernated", 1}});
  m.SetSnapshotsByPhase({{"Ready", 1}});
  m.SetStoreObjects("sandboxes", 3);
  m.SetSandboxPhase("default", "demo", "Running");
  m.CountVmmExit(VmmExitReason::kShutdown, "default", "demo");
  m.ObserveReconcile("Sandbox", ReconcileResult::kError, 12ms);
  controller::WorkQueueOptions wq;
  m.Instrument("sandboxes", &wq);
  wq.on_add();
  wq.on_start(3ms);
  m.ObserveVmOperation(VmOperation::kSnapshot, 2s);
  m.ObserveChApiRequest("vm.snapshot", 500, 300ms);
  m.SetSnapshotDiskUsage("default", "snap-1", 1 << 20);
  m.SetSnapshotDiskUsageTotal(1 << 20);
  m.SetSnapshotFilesystemFree(int64_t{10} << 30);
  auto s = StartOrDie(&m, &r);
  ASSERT_NE(s, nullptr);
  auto resp = HttpRequest(Url(*s, "/metrics"));
  ASSERT_EQ(resp.status, 200);

  CommandOptions co;
  co.stdin_data = resp.body;
  auto check = RunCommand({"promtool", "check", "metrics"}, co);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->out << check->err;
  EXPECT_EQ(check->out + check->err, "") << "lint findings";
}

}  // namespace
}  // namespace sandboxlet::metrics
