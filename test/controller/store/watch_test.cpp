#include <gtest/gtest.h>

#include <thread>

#include "controller/store/object_store.h"
#include "runtime/base/strings.h"
#include "test/controller/store/temp_dir.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;
using std::chrono::steady_clock;

json Sandbox(const std::string& name, const std::string& ns = "default",
             const std::string& app = "") {
  json obj = {{"metadata", {{"name", name}, {"namespace", ns}}}, {"spec", {{"vcpus", 1}}}};
  if (!app.empty()) obj["metadata"]["labels"] = {{"app", app}};
  return obj;
}

std::string Rv(const json& object) { return object["metadata"]["resourceVersion"]; }

// Waits up to 10 s for the next event; a missing event fails the test.
WatchEvent NextEvent(WatchStream& w) {
  auto e = w.Next(steady_clock::now() + std::chrono::seconds(10));
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *e : WatchEvent{WatchEventType::kError, json()};
}

// Asserts that nothing is queued: Next with a deadline already passed reports DeadlineExceeded.
void ExpectNoEvent(WatchStream& w) {
  auto e = w.Next(steady_clock::now());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDeadlineExceeded)
      << (e.ok() ? Cat(WatchEventTypeName(e->type), " ", e->object.dump()) : "");
}

class WatchTest : public ::testing::Test {
 protected:
  void Open(StoreOptions options = {}) {
    auto store = ObjectStore::Open(dir_.File("store.db"), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void SetUp() override { Open(); }

  json Create(const json& obj) {
    auto created = store_->Create("sandboxes", obj);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : json();
  }
  json Relabel(const std::string& name, const std::string& app) {
    json obj = *store_->Get("sandboxes", "default", name);
    obj["metadata"]["labels"]["app"] = app;
    auto updated = store_->Update("sandboxes", obj);
    EXPECT_TRUE(updated.ok()) << updated.status();
    return updated.ok() ? *updated : json();
  }

  testing::TempDir dir_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(WatchTest, LiveEventsReachEveryWatcherInOrder) {
  auto w1 = store_->Watch("sandboxes", "");
  auto w2 = store_->Watch("sandboxes", "default");
  ASSERT_TRUE(w1.ok() && w2.ok());

  json created = Create(Sandbox("demo"));
  json modified = created;
  modified["spec"]["vcpus"] = 2;
  modified = *store_->Update("sandboxes", modified);
  json status = modified;
  status["status"] = {{"phase", "Running"}};
  status = *store_->UpdateStatus("sandboxes", status);
  auto deleted = store_->Delete("sandboxes", "default", "demo");
  ASSERT_TRUE(deleted.ok());

  for (WatchStream* w : {w1->get(), w2->get()}) {
    WatchEvent e = NextEvent(*w);
    EXPECT_EQ(e.type, WatchEventType::kAdded);
    EXPECT_EQ(e.object, created);
    e = NextEvent(*w);
    EXPECT_EQ(e.type, WatchEventType::kModified);
    EXPECT_EQ(e.object, modified);
    e = NextEvent(*w);
    EXPECT_EQ(e.type, WatchEventType::kModified);
    EXPECT_EQ(e.object["status"]["phase"], "Running");
    e = NextEvent(*w);
    EXPECT_EQ(e.type, WatchEventType::kDeleted);
    EXPECT_EQ(e.object, deleted->object);
    EXPECT_GT(std::stoll(Rv(e.object)), std::stoll(Rv(status)));
    ExpectNoEvent(*w);
  }
}

TEST_F(WatchTest, WatchesSeeOnlyTheirResourceAndNamespace) {
  auto w = store_->Watch("sandboxes", "team");
  ASSERT_TRUE(w.ok());
  Create(Sandbox("a", "default"));
  ASSERT_TRUE(store_->Create("sandboxsnapshots", Sandbox("s", "team")).ok());
  json mine = Create(Sandbox("b", "team"));
  WatchEvent e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object, mine);
  ExpectNoEvent(**w);
}

TEST_F(WatchTest, WatchFromResourceVersionReplaysLaterChanges) {
  json a = Create(Sandbox("a"));
  json b = Create(Sandbox("b"));
  json c = Create(Sandbox("c"));
  ASSERT_TRUE(store_->Delete("sandboxes", "default", "b").ok());

  WatchOptions options;
  options.resource_version = Rv(a);
  auto w = store_->Watch("sandboxes", "", options);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(NextEvent(**w).object, b);
  EXPECT_EQ(NextEvent(**w).object, c);
  WatchEvent del = NextEvent(**w);
  EXPECT_EQ(del.type, WatchEventType::kDeleted);
  EXPECT_EQ(del.object["metadata"]["name"], "b");
  ExpectNoEvent(**w);
  json d = Create(Sandbox("d"));
  EXPECT_EQ(NextEvent(**w).object, d);

  // From the current version: nothing to replay.
  options.resource_version = Rv(d);
  auto now = store_->Watch("sandboxes", "", options);
  ASSERT_TRUE(now.ok());
  ExpectNoEvent(**now);

  options.resource_version = "1000000";
  auto future = store_->Watch("sandboxes", "", options);
  EXPECT_EQ(future.status().code(), absl::StatusCode::kInvalidArgument);
  options.resource_version = "yesterday";
  EXPECT_EQ(store_->Watch("sandboxes", "", options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WatchTest, WatchFromTooOldResourceVersionIsGone) {
  store_.reset();
  StoreOptions small;
  small.watch_history = 3;
  Open(small);
  json first = Create(Sandbox("a"));
  for (int i = 0; i < 4; ++i) Create(Sandbox(Cat("more-", i)));
  WatchOptions options;
  options.resource_version = Rv(first);
  auto w = store_->Watch("sandboxes", "", options);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(std::string(w.status().message()).find(Cat("too old resource version: ", Rv(first))),
            std::string::npos)
      << w.status();

  // History is per resource: churn elsewhere does not expire a quiet resource's history.
  json snap = *store_->Create("sandboxsnapshots", Sandbox("s1"));
  for (int i = 0; i < 5; ++i) Create(Sandbox(Cat("churn-", i)));
  options.resource_version = Rv(snap);
  auto quiet = store_->Watch("sandboxsnapshots", "", options);
  EXPECT_TRUE(quiet.ok()) << quiet.status();
}

TEST_F(WatchTest, SelectorsFilterAndTranslateLabelChanges) {
  WatchOptions options;
  options.labels = *LabelSelector::Parse("app=web");
  auto w = store_->Watch("sandboxes", "", options);
  ASSERT_TRUE(w.ok());

  json web = Create(Sandbox("front", "default", "web"));
  Create(Sandbox("back", "default", "db"));
  WatchEvent e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object, web);
  ExpectNoEvent(**w);

  // front stops matching → DELETED for this watcher; back starts matching → ADDED.
  Relabel("front", "db");
  e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kDeleted);
  EXPECT_EQ(e.object["metadata"]["name"], "front");
  Relabel("back", "web");
  e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object["metadata"]["name"], "back");
  Relabel("front", "cache");  // not matching before nor after
  ExpectNoEvent(**w);

  WatchOptions by_name;
  by_name.fields = *FieldSelector::Parse("metadata.name=back");
  by_name.send_initial_events = true;
  auto named = store_->Watch("sandboxes", "", by_name);
  ASSERT_TRUE(named.ok());
  e = NextEvent(**named);
  EXPECT_EQ(e.object["metadata"]["name"], "back");
  ExpectNoEvent(**named);
}

TEST_F(WatchTest, InitialEventsListExistingObjectsThenGoLive) {
  json a = Create(Sandbox("a"));
  json b = Create(Sandbox("b", "other"));
  WatchOptions options;
  options.send_initial_events = true;
  options.initial_events_end_bookmark = true;
  auto w = store_->Watch("sandboxes", "", options);
  ASSERT_TRUE(w.ok());
  WatchEvent e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object, a);
  e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object, b);
  e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kBookmark);
  EXPECT_EQ(e.object["metadata"]["resourceVersion"], Rv(b));
  EXPECT_EQ(e.object["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
  json c = Create(Sandbox("c"));
  e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kAdded);
  EXPECT_EQ(e.object, c);
}

TEST_F(WatchTest, PeriodicBookmarksReportProgress) {
  WatchOptions options;
  options.bookmark_interval = std::chrono::milliseconds(20);
  auto w = store_->Watch("sandboxes", "default", options);
  ASSERT_TRUE(w.ok());
  // A change the watcher does not see still moves its progress.
  json elsewhere = Create(Sandbox("x", "elsewhere"));
  WatchEvent e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kBookmark);
  EXPECT_EQ(e.object["metadata"]["resourceVersion"], Rv(elsewhere));
}

TEST_F(WatchTest, StopWakesABlockedConsumer) {
  auto w = store_->Watch("sandboxes", "");
  ASSERT_TRUE(w.ok());
  absl::Status result;
  std::thread consumer(
      [&] { result = (*w)->Next(steady_clock::now() + std::chrono::hours(1)).status(); });
  (*w)->Stop();
  consumer.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled);
  Create(Sandbox("after-stop"));  // publishing to a stopped watch is harmless
  EXPECT_EQ((*w)->Next(steady_clock::now()).status().code(), absl::StatusCode::kCancelled);
}

TEST_F(WatchTest, DeliversToABlockedConsumerFromAnotherThread) {
  auto w = store_->Watch("sandboxes", "");
  ASSERT_TRUE(w.ok());
  std::vector<std::string> names;
  std::thread consumer([&] {
    for (int i = 0; i < 20; ++i) names.push_back(NextEvent(**w).object["metadata"]["name"]);
  });
  for (int i = 0; i < 20; ++i) Create(Sandbox(Cat("n", 100 + i)));
  consumer.join();
  ASSERT_EQ(names.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(names[i], Cat("n", 100 + i));
}

TEST_F(WatchTest, ASlowConsumerIsExpiredWith410) {
  store_.reset();
  StoreOptions options;
  options.watch_queue_limit = 2;
  Open(options);
  auto w = store_->Watch("sandboxes", "");
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 5; ++i) Create(Sandbox(Cat("s", i)));
  WatchEvent e = NextEvent(**w);
  EXPECT_EQ(e.type, WatchEventType::kError);
  EXPECT_EQ(e.object["code"], 410);
  EXPECT_EQ(e.object["reason"], "Expired");
  EXPECT_EQ((*w)->Next(steady_clock::now()).status().code(), absl::StatusCode::kCancelled);
  // Other watches are unaffected.
  auto fresh = store_->Watch("sandboxes", "");
  ASSERT_TRUE(fresh.ok());
  Create(Sandbox("later"));
  EXPECT_EQ(NextEvent(**fresh).object["metadata"]["name"], "later");
}

TEST_F(WatchTest, ClosingTheStoreEndsWatchesAfterQueuedEvents) {
  auto w = store_->Watch("sandboxes", "");
  ASSERT_TRUE(w.ok());
  Create(Sandbox("last"));
  store_.reset();
  EXPECT_EQ(NextEvent(**w).object["metadata"]["name"], "last");
  EXPECT_EQ((*w)->Next(steady_clock::now() + std::chrono::seconds(10)).status().code(),
            absl::StatusCode::kCancelled);
}

TEST_F(WatchTest, AfterReopenOlderVersionsAreGoneAndNewOnesResume) {
  json a = Create(Sandbox("a"));
  json b = Create(Sandbox("b"));
  store_.reset();
  Open();
  WatchOptions options;
  options.resource_version = Rv(a);
  EXPECT_EQ(store_->Watch("sandboxes", "", options).status().code(), absl::StatusCode::kOutOfRange);
  options.resource_version = Rv(b);
  auto w = store_->Watch("sandboxes", "", options);
  ASSERT_TRUE(w.ok()) << w.status();
  json c = Create(Sandbox("c"));
  EXPECT_EQ(NextEvent(**w).object, c);
}

}  // namespace
}  // namespace sandboxlet::store
