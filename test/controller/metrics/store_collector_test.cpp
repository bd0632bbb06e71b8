#include "controller/metrics/store_collector.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/controller/metrics/metrics_test_util.h"

namespace sandboxlet::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Sample;
using testing::TempDir;

class StoreCollectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::ObjectStore::Open(tmp_.File("store.db"));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  void Put(const std::string& resource, const std::string& name, const std::string& phase) {
    nlohmann::json obj = {{"metadata", {{"namespace", "default"}, {"name", name}}},
                          {"spec", nlohmann::json::object()}};
    auto created = store_->Create(resource, obj);
    ASSERT_TRUE(created.ok()) << created.status();
    if (phase.empty()) return;
    (*created)["status"] = {{"phase", phase}};
    ASSERT_TRUE(store_->UpdateStatus(resource, *created).ok());
  }

  StoreCollectorOptions Manual() {
    StoreCollectorOptions o;
    o.background = false;
    return o;
  }

  TempDir tmp_;
  std::unique_ptr<store::ObjectStore> store_;
  Metrics metrics_;
};

TEST_F(StoreCollectorTest, CountsObjectsByPhaseAndResource) {
  Put("sandboxes", "a", "Running");
  Put("sandboxes", "b", "Running");
  Put("sandboxes", "c", "Hibernated");
  Put("sandboxes", "new", "");
  Put("sandboxsnapshots", "s1", "Ready");
  StoreCollector collector(store_.get(), &metrics_, Manual());
  ASSERT_TRUE(collector.CollectNow().ok());
  const std::string text = metrics_.Render();
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Running"})"), 2);
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Hibernated"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Pending"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_snapshots{phase="Ready"})"), 1);
  EXPECT_EQ(Sample(text, R"(sandboxlet_store_objects{resource="sandboxes"})"), 4);
  EXPECT_EQ(Sample(text, R"(sandboxlet_store_objects{resource="sandboxsnapshots"})"), 1);
  EXPECT_EQ(
      Sample(text,
             R"(sandboxlet_sandbox_phase{namespace="default",phase="Hibernated",sandbox="c"})"),
      1);
}

TEST_F(StoreCollectorTest, ADeletedSandboxLosesItsSeries) {
  Put("sandboxes", "a", "Running");
  Put("sandboxes", "gone", "Stopped");
  StoreCollector collector(store_.get(), &metrics_, Manual());
  ASSERT_TRUE(collector.CollectNow().ok());
  metrics_.CountVmmExit(VmmExitReason::kCrash, "default", "gone");
  ASSERT_THAT(metrics_.Render(), HasSubstr(R"(sandbox="gone")"));

  auto deleted = store_->Delete("sandboxes", "default", "gone");
  ASSERT_TRUE(deleted.ok() && deleted->removed);
  ASSERT_TRUE(collector.CollectNow().ok());
  const std::string text = metrics_.Render();
  EXPECT_THAT(text, Not(HasSubstr(R"(sandbox="gone")")));
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Stopped"})"), 0);
  EXPECT_EQ(Sample(text, R"(sandboxlet_sandboxes{phase="Running"})"), 1);
}

TEST_F(StoreCollectorTest, PagesThroughManyObjects) {
  // More than one page (500) of objects.
  for (int i = 0; i < 613; ++i) Put("sandboxes", "sbx-" + std::to_string(i), "");
  StoreCollector collector(store_.get(), &metrics_, Manual());
  ASSERT_TRUE(collector.CollectNow().ok());
  EXPECT_EQ(Sample(metrics_.Render(), R"(sandboxlet_sandboxes{phase="Pending"})"), 613);
}

}  // namespace
}  // namespace sandboxlet::metrics
