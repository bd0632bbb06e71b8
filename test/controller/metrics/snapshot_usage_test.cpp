#include "controller/metrics/snapshot_usage.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "test/controller/metrics/metrics_test_util.h"

namespace sandboxlet::metrics {
namespace {

using testing::AppendData;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::Sample;
using testing::TempDir;
using testing::WriteSparseFile;
using namespace std::chrono_literals;

int64_t Du(const std::string& dir) {
  auto r = RunChecked({"du", "-sB1", dir});
  if (!r.ok()) return -1;
  return std::strtoll(r->out.c_str(), nullptr, 10);
}

std::string UsageSeries(const std::string& name) {
  return R"(sandboxlet_snapshot_disk_usage_bytes{namespace="default",snapshot=")" + name + R"("})";
}

// A snapshot directory like CH's: a sparse memory-ranges file (1 MiB written of 64 MiB) and
// config.json.
std::string MakeSnapshotDir(const TempDir& tmp, const std::string& name) {
  const std::string dir = tmp.File(name);
  EXPECT_TRUE(MakeDirs(dir).ok());
  EXPECT_TRUE(WriteSparseFile(dir + "/memory-ranges", 1 << 20, 64 << 20));
  EXPECT_TRUE(WriteSparseFile(dir + "/config.json", 1000, 1000));
  return dir;
}

SnapshotUsageOptions Manual(const std::string& fs_path = "") {
  SnapshotUsageOptions o;
  o.background_refresh = false;
  o.filesystem_path = fs_path;
  return o;
}

TEST(SnapshotUsage, SetMeasuresAllocatedBytesLikeDu) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual(tmp.path()));
  const std::string a = MakeSnapshotDir(tmp, "a");
  const std::string b = MakeSnapshotDir(tmp, "b");
  ASSERT_TRUE(AppendData(b + "/config.json", 3 << 20));
  ASSERT_TRUE(tracker.Set("default", "a", a).ok());
  ASSERT_TRUE(tracker.Set("default", "b", b).ok());

  const int64_t du_a = Du(a), du_b = Du(b);
  ASSERT_GT(du_a, 0);
  EXPECT_LT(du_a, 64 << 20) << "the sparse file's hole must not count";
  const std::string text = m.Render();
  EXPECT_EQ(Sample(text, UsageSeries("a")), du_a);
  EXPECT_EQ(Sample(text, UsageSeries("b")), du_b);
  EXPECT_EQ(Sample(text, "sandboxlet_snapshot_disk_usage_total_bytes"), du_a + du_b);
  EXPECT_EQ(tracker.TotalBytes(), du_a + du_b);
  auto free_bytes = Sample(text, "sandboxlet_snapshot_filesystem_free_bytes");
  ASSERT_TRUE(free_bytes.has_value());
  EXPECT_GT(*free_bytes, 0);
}

TEST(SnapshotUsage, GrowthShowsOnlyAfterRefreshNotOnScrape) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual());
  const std::string a = MakeSnapshotDir(tmp, "a");
  ASSERT_TRUE(tracker.Set("default", "a", a).ok());
  const int64_t before = Du(a);

  ASSERT_TRUE(AppendData(a + "/config.json", 2 << 20));
  const int64_t after = Du(a);
  ASSERT_GT(after, before);
  // Scrapes read the measured value; they never walk the directory.
  EXPECT_EQ(Sample(m.Render(), UsageSeries("a")), before);
  EXPECT_EQ(Sample(m.Render(), UsageSeries("a")), before);

  ASSERT_TRUE(tracker.RefreshNow().ok());
  EXPECT_EQ(Sample(m.Render(), UsageSeries("a")), after);
  EXPECT_EQ(Sample(m.Render(), "sandboxlet_snapshot_disk_usage_total_bytes"), after);
}

TEST(SnapshotUsage, RemoveDropsTheSeriesAndTheTotal) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual());
  ASSERT_TRUE(tracker.Set("default", "a", MakeSnapshotDir(tmp, "a")).ok());
  ASSERT_TRUE(tracker.Set("default", "b", MakeSnapshotDir(tmp, "b")).ok());
  const int64_t b_bytes = *tracker.Bytes("default", "b");
  tracker.Remove("default", "a");
  tracker.Remove("default", "a");  // twice: no-op
  const std::string text = m.Render();
  EXPECT_THAT(text, Not(HasSubstr(R"(snapshot="a")")));
  EXPECT_EQ(Sample(text, "sandboxlet_snapshot_disk_usage_total_bytes"), b_bytes);
  EXPECT_EQ(tracker.Bytes("default", "a"), std::nullopt);
  // A refresh does not bring it back.
  ASSERT_TRUE(tracker.RefreshNow().ok());
  EXPECT_THAT(m.Render(), Not(HasSubstr(R"(snapshot="a")")));
}

TEST(SnapshotUsage, SetOfAMissingDirectoryFailsNamingTheSnapshot) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual());
  absl::Status s = tracker.Set("default", "ghost", tmp.File("nope"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("snapshot default/ghost"));
  EXPECT_THAT(m.Render(), Not(HasSubstr("ghost")));
  EXPECT_EQ(tracker.Set("", "x", tmp.path()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SnapshotUsage, RefreshKeepsTheLastValueOfAVanishedDirectoryAndReportsIt) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual());
  const std::string a = MakeSnapshotDir(tmp, "a");
  ASSERT_TRUE(tracker.Set("default", "a", a).ok());
  const int64_t bytes = *tracker.Bytes("default", "a");
  ASSERT_TRUE(RemoveAll(a).ok());
  absl::Status s = tracker.RefreshNow();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("default/a"));
  EXPECT_EQ(Sample(m.Render(), UsageSeries("a")), bytes);
}

TEST(SnapshotUsage, BackgroundRefreshRunsAtTheIntervalOnTheClock) {
  TempDir tmp;
  Metrics m;
  FakeClock clock;
  SnapshotUsageOptions o;
  o.clock = &clock;
  o.refresh_interval = 60s;
  SnapshotUsageTracker tracker(&m, o);
  const std::string a = MakeSnapshotDir(tmp, "a");
  ASSERT_TRUE(tracker.Set("default", "a", a).ok());
  ASSERT_TRUE(AppendData(a + "/config.json", 1 << 20));
  const int64_t grown = Du(a);

  clock.Advance(30s);
  EXPECT_EQ(tracker.Refreshes(), 0u);
  EXPECT_NE(tracker.Bytes("default", "a"), grown);
  clock.Advance(30s);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (tracker.Refreshes() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_GE(tracker.Refreshes(), 1u);
  EXPECT_EQ(Sample(m.Render(), UsageSeries("a")), grown);
}

TEST(SnapshotUsage, ConcurrentSetRemoveRefreshAndScrapesStayConsistent) {
  TempDir tmp;
  Metrics m;
  SnapshotUsageTracker tracker(&m, Manual());
  const std::string dir = MakeSnapshotDir(tmp, "a");
  const int64_t bytes = Du(dir);
  std::atomic<bool> stop{false};
  std::thread refresher([&] {
    while (!stop) (void)tracker.RefreshNow();
  });
  std::thread scraper([&] {
    while (!stop) (void)m.Render();
  });
  for (int round = 0; round < 200; ++round) {
    const std::string name = "s" + std::to_string(round % 7);
    ASSERT_TRUE(tracker.Set("default", name, dir).ok());
    if (round % 3 == 0) tracker.Remove("default", name);
  }
  stop = true;
  refresher.join();
  scraper.join();
  // Whatever interleaving happened, the series and the total describe exactly what is left.
  const std::string text = m.Render();
  int64_t sum = 0;
  for (int i = 0; i < 7; ++i) {
    const std::string name = "s" + std::to_string(i);
    auto b = tracker.Bytes("default", name);
    EXPECT_EQ(Sample(text, UsageSeries(name)),
              b.has_value() ? std::optional<double>(bytes) : std::nullopt)
        << name;
    if (b.has_value()) sum += *b;
  }
  EXPECT_EQ(Sample(text, "sandboxlet_snapshot_disk_usage_total_bytes"), sum);
  EXPECT_EQ(tracker.TotalBytes(), sum);
}

}  // namespace
}  // namespace sandboxlet::metrics
