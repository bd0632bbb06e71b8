#include "controller/store/object_store.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <thread>

#include "runtime/base/clock.h"
#include "runtime/base/strings.h"
#include "test/controller/store/temp_dir.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;

json Sandbox(const std::string& name, const std::string& ns = "default") {
  return {{"apiVersion", "sandboxlet.dev/v1alpha1"},
          {"kind", "Sandbox"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec", {{"template", "base"}, {"vcpus", 1}}}};
}

int64_t Rv(const json& object) {
  return std::stoll(object["metadata"]["resourceVersion"].get<std::string>());
}

std::string Message(const absl::Status& st) { return std::string(st.message()); }

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    StoreOptions options;
    options.clock = &clock_;
    auto store = ObjectStore::Open(dir_.File("store.db"), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  json MustCreate(const json& object, const std::string& resource = "sandboxes") {
    auto created = store_->Create(resource, object);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : json();
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(ObjectStoreTest, CreateAssignsMetadataAndDropsStatus) {
  json request = Sandbox("demo");
  request["status"] = {{"phase", "Running"}};
  request["metadata"]["uid"] = "forged";
  request["metadata"]["generation"] = 7;
  request["metadata"]["labels"] = {{"app", "web"}};
  json created = MustCreate(request);

  const json& meta = created["metadata"];
  EXPECT_EQ(meta["name"], "demo");
  EXPECT_EQ(meta["namespace"], "default");
  EXPECT_TRUE(std::regex_match(meta["uid"].get<std::string>(),
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                          "[0-9a-f]{12}")))
      << meta["uid"];
  EXPECT_GT(Rv(created), 0);
  EXPECT_EQ(meta["generation"], 1);
  EXPECT_EQ(meta["labels"]["app"], "web");
  // FakeClock's wall clock starts 56 years (of 365 days) after the epoch.
  EXPECT_EQ(meta["creationTimestamp"], "2025-12-18T00:00:00Z");
  EXPECT_FALSE(created.contains("status"));
  EXPECT_EQ(created["spec"]["template"], "base");

  auto got = store_->Get("sandboxes", "default", "demo");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, created);
}

TEST_F(ObjectStoreTest, ResourceVersionIsMonotonicAcrossResources) {
  int64_t last = store_->CurrentResourceVersion();
  for (int i = 0; i < 5; ++i) {
    json a = MustCreate(Sandbox(Cat("sb-", i)));
    json snap = {{"metadata", {{"name", Cat("snap-", i)}, {"namespace", "default"}}},
                 {"spec", {{"sandboxName", Cat("sb-", i)}}}};
    json b = MustCreate(snap, "sandboxsnapshots");
    EXPECT_GT(Rv(a), last);
    EXPECT_GT(Rv(b), Rv(a));
    last = Rv(b);
  }
  auto list = store_->List("sandboxsnapshots", "");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->resource_version, std::to_string(last));
  EXPECT_EQ(list->items.size(), 5u);
}

TEST_F(ObjectStoreTest, CreateRejectsInvalidObjectsNamingTheField) {
  struct Case {
    json object;
    std::string message_part;
  };
  json bad_name = Sandbox("Foo");
  json no_ns = Sandbox("a");
  no_ns["metadata"].erase("namespace");
  json bad_ns = Sandbox("a", "Bad_NS");
  json no_name = Sandbox("");
  json with_rv = Sandbox("a");
  with_rv["metadata"]["resourceVersion"] = "5";
  json bad_label = Sandbox("a");
  bad_label["metadata"]["labels"] = {{"app", "has space"}};
  json bad_finalizers = Sandbox("a");
  bad_finalizers["metadata"]["finalizers"] = {"ok", 3};
  json name_number = Sandbox("a");
  name_number["metadata"]["name"] = 12;
  const Case cases[] = {
      {bad_name, "metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain"},
      {no_ns, "metadata.namespace: Required value"},
      {bad_ns, "metadata.namespace: Invalid value: \"Bad_NS\""},
      {no_name, "metadata.name: Required value"},
      {with_rv, "metadata.resourceVersion: Invalid value: \"5\""},
      {bad_label, "metadata.labels[app]: Invalid value: \"has space\""},
      {bad_finalizers, "metadata.finalizers[1]"},
      {name_number, "metadata.name: Invalid value: must be a string"},
      {json::array(), "must be a JSON object"},
  };
  for (const Case& c : cases) {
    auto created = store_->Create("sandboxes", c.object);
    ASSERT_FALSE(created.ok()) << c.object.dump();
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(Message(created.status()).find(c.message_part), std::string::npos)
        << Message(created.status());
  }
  auto bad_resource = store_->Create("Sand/boxes", Sandbox("a"));
  EXPECT_EQ(bad_resource.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Count("").value(), 0);
}

TEST_F(ObjectStoreTest, CreateOfExistingNameIsAlreadyExists) {
  MustCreate(Sandbox("demo"));
  auto again = store_->Create("sandboxes", Sandbox("demo"));
  ASSERT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(Message(again.status()).find("sandboxes default/demo"), std::string::npos);
  // The same name in another namespace or resource is a different object.
  MustCreate(Sandbox("demo", "other"));
  MustCreate(Sandbox("demo"), "sandboxsnapshots");
}

TEST_F(ObjectStoreTest, GenerateNameAddsARandomSuffix) {
  json request = Sandbox("");
  request["metadata"]["generateName"] = "job-";
  json a = MustCreate(request);
  json b = MustCreate(request);
  std::string name_a = a["metadata"]["name"], name_b = b["metadata"]["name"];
  EXPECT_TRUE(std::regex_match(name_a, std::regex("job-[a-z0-9]{5}"))) << name_a;
  EXPECT_NE(name_a, name_b);
  json bad = Sandbox("");
  bad["metadata"]["generateName"] = "Job-";
  EXPECT_EQ(store_->Create("sandboxes", bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ObjectStoreTest, GetOfMissingObjectIsNotFound) {
  auto got = store_->Get("sandboxes", "default", "nope");
  ASSERT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Message(got.status()).find("sandboxes default/nope"), std::string::npos);
}

TEST_F(ObjectStoreTest, GenerationIsBumpedOnlyBySpecChanges) {
  json obj = MustCreate(Sandbox("demo"));
  obj["metadata"]["labels"] = {{"tier", "gold"}};
  obj["status"] = {{"phase", "Forged"}};
  auto relabeled = store_->Update("sandboxes", obj);
  ASSERT_TRUE(relabeled.ok()) << relabeled.status();
  EXPECT_EQ((*relabeled)["metadata"]["generation"], 1);
  EXPECT_EQ((*relabeled)["metadata"]["labels"]["tier"], "gold");
  EXPECT_GT(Rv(*relabeled), Rv(obj));
  EXPECT_FALSE(relabeled->contains("status")) << "status in an update request must be ignored";

  json next = *relabeled;
  next["spec"]["vcpus"] = 4;
  auto respec = store_->Update("sandboxes", next);
  ASSERT_TRUE(respec.ok()) << respec.status();
  EXPECT_EQ((*respec)["metadata"]["generation"], 2);
  EXPECT_EQ((*respec)["spec"]["vcpus"], 4);
}

TEST_F(ObjectStoreTest, UpdateThatChangesNothingKeepsTheVersion) {
  json obj = MustCreate(Sandbox("demo"));
  int64_t before = store_->CurrentResourceVersion();
  auto same = store_->Update("sandboxes", obj);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, obj);
  EXPECT_EQ(store_->CurrentResourceVersion(), before);
}

TEST_F(ObjectStoreTest, UpdateWithStaleResourceVersionConflicts) {
  json v1 = MustCreate(Sandbox("demo"));
  json v2 = v1;
  v2["spec"]["vcpus"] = 2;
  ASSERT_TRUE(store_->Update("sandboxes", v2).ok());

  json stale = v1;
  stale["spec"]["vcpus"] = 3;
  auto conflict = store_->Update("sandboxes", stale);
  ASSERT_EQ(conflict.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Message(conflict.status()),
            "sandboxes default/demo: conflict: the object has been modified; please apply your "
            "changes to the latest version and try again");

  // An empty resourceVersion is an unconditional update.
  stale["metadata"].erase("resourceVersion");
  auto forced = store_->Update("sandboxes", stale);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ((*forced)["spec"]["vcpus"], 3);

  json garbage = *forced;
  garbage["metadata"]["resourceVersion"] = "abc";
  EXPECT_EQ(store_->Update("sandboxes", garbage).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Update("sandboxes", Sandbox("missing")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ObjectStoreTest, UpdatePreservesImmutableMetadata) {
  json created = MustCreate(Sandbox("demo"));
  clock_.Advance(std::chrono::hours(1));
  json request = created;
  request["metadata"]["creationTimestamp"] = "1999-01-01T00:00:00Z";
  request["metadata"]["generation"] = 42;
  request["metadata"]["deletionTimestamp"] = "1999-01-01T00:00:00Z";
  request["metadata"]["annotations"] = {{"note", "x"}};
  auto updated = store_->Update("sandboxes", request);
  ASSERT_TRUE(updated.ok()) << updated.status();
  const json& meta = (*updated)["metadata"];
  EXPECT_EQ(meta["creationTimestamp"], created["metadata"]["creationTimestamp"]);
  EXPECT_EQ(meta["uid"], created["metadata"]["uid"]);
  EXPECT_EQ(meta["generation"], 1);
  EXPECT_FALSE(meta.contains("deletionTimestamp"));
  EXPECT_EQ(meta["annotations"]["note"], "x");

  json other_uid = *updated;
  other_uid["metadata"]["uid"] = "00000000-0000-4000-8000-000000000000";
  auto rejected = store_->Update("sandboxes", other_uid);
  ASSERT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(rejected.status()).find("metadata.uid"), std::string::npos);
}

TEST_F(ObjectStoreTest, UpdateStatusChangesOnlyStatus) {
  json created = MustCreate(Sandbox("demo"));
  json request = created;
  request["spec"]["vcpus"] = 16;
  request["metadata"]["labels"] = {{"sneaky", "yes"}};
  request["status"] = {{"phase", "Running"}, {"observedGeneration", 1}};
  auto updated = store_->UpdateStatus("sandboxes", request);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ((*updated)["status"]["phase"], "Running");
  EXPECT_EQ((*updated)["spec"], created["spec"]);
  EXPECT_FALSE((*updated)["metadata"].contains("labels"));
  EXPECT_EQ((*updated)["metadata"]["generation"], 1);
  EXPECT_GT(Rv(*updated), Rv(created));

  // The status path honours the resourceVersion precondition too.
  request["status"]["phase"] = "Failed";
  auto stale = store_->UpdateStatus("sandboxes", request);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);

  auto got = store_->Get("sandboxes", "default", "demo");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["status"]["phase"], "Running");

  // And a plain Update keeps the status written through the status path.
  json next = *got;
  next["spec"]["vcpus"] = 2;
  next.erase("status");
  auto after = store_->Update("sandboxes", next);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)["status"]["phase"], "Running");
}

TEST_F(ObjectStoreTest, DeleteWithoutFinalizersRemovesTheObject) {
  json created = MustCreate(Sandbox("demo"));
  auto deleted = store_->Delete("sandboxes", "default", "demo");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_TRUE(deleted->removed);
  EXPECT_GT(Rv(deleted->object), Rv(created));
  EXPECT_EQ(deleted->object["metadata"]["uid"], created["metadata"]["uid"]);
  EXPECT_EQ(store_->Get("sandboxes", "default", "demo").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("sandboxes", "default", "demo").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CurrentResourceVersion(), Rv(deleted->object));
}

TEST_F(ObjectStoreTest, FinalizersKeepADeletedObjectUntilRemoved) {
  json request = Sandbox("demo");
  request["metadata"]["finalizers"] = {"sandboxlet.dev/vm", "sandboxlet.dev/network"};
  json created = MustCreate(request);
  clock_.Advance(std::chrono::seconds(90));

  auto first = store_->Delete("sandboxes", "default", "demo");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->removed);
  const json& meta = first->object["metadata"];
  EXPECT_EQ(meta["deletionTimestamp"], "2025-12-18T00:01:30Z");
  EXPECT_EQ(meta["deletionGracePeriodSeconds"], 0);
  EXPECT_EQ(meta["generation"], 2);

  // Deleting again changes nothing.
  auto second = store_->Delete("sandboxes", "default", "demo");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->object, first->object);

  // No new finalizers while being deleted; deletionTimestamp cannot be cleared by an update.
  json adding = first->object;
  adding["metadata"]["finalizers"].push_back("sandboxlet.dev/new");
  auto forbidden = store_->Update("sandboxes", adding);
  ASSERT_EQ(forbidden.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(forbidden.status()).find("no new finalizers"), std::string::npos);

  json one_left = first->object;
  one_left["metadata"]["finalizers"] = {"sandboxlet.dev/network"};
  one_left["metadata"].erase("deletionTimestamp");
  auto partial = store_->Update("sandboxes", one_left);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ((*partial)["metadata"]["deletionTimestamp"], "2025-12-18T00:01:30Z");
  ASSERT_TRUE(store_->Get("sandboxes", "default", "demo").ok());

  json none_left = *partial;
  none_left["metadata"]["finalizers"] = json::array();
  auto removed = store_->Update("sandboxes", none_left);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(store_->Get("sandboxes", "default", "demo").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CurrentResourceVersion(), Rv(*removed));
}

TEST_F(ObjectStoreTest, DeletePreconditionsAreChecked) {
  json created = MustCreate(Sandbox("demo"));
  DeletePreconditions wrong_uid{.uid = "00000000-0000-4000-8000-000000000000"};
  auto st = store_->Delete("sandboxes", "default", "demo", wrong_uid);
  ASSERT_EQ(st.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(Message(st.status()).find("UID in precondition"), std::string::npos);
  DeletePreconditions wrong_rv{.resource_version = "999999"};
  EXPECT_EQ(store_->Delete("sandboxes", "default", "demo", wrong_rv).status().code(),
            absl::StatusCode::kAborted);
  DeletePreconditions right{.uid = created["metadata"]["uid"],
                            .resource_version = created["metadata"]["resourceVersion"]};
  EXPECT_TRUE(store_->Delete("sandboxes", "default", "demo", right).ok());
}

TEST_F(ObjectStoreTest, ListFiltersByNamespaceAndSelectors) {
  for (const auto& [name, ns, app] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"a", "default", "web"}, {"b", "default", "db"}, {"c", "team", "web"}}) {
    json obj = Sandbox(name, ns);
    obj["metadata"]["labels"] = {{"app", app}};
    MustCreate(obj);
  }
  auto names = [](const ObjectList& list) {
    std::vector<std::string> out;
    for (const json& item : list.items) {
      out.push_back(Cat(item["metadata"]["namespace"].get<std::string>(), "/",
                        item["metadata"]["name"].get<std::string>()));
    }
    return out;
  };
  auto all = store_->List("sandboxes", "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(names(*all), (std::vector<std::string>{"default/a", "default/b", "team/c"}));

  auto in_default = store_->List("sandboxes", "default");
  ASSERT_TRUE(in_default.ok());
  EXPECT_EQ(names(*in_default), (std::vector<std::string>{"default/a", "default/b"}));

  ListOptions web;
  web.labels = *LabelSelector::Parse("app=web");
  auto webs = store_->List("sandboxes", "", web);
  ASSERT_TRUE(webs.ok());
  EXPECT_EQ(names(*webs), (std::vector<std::string>{"default/a", "team/c"}));

  ListOptions by_name;
  by_name.fields = *FieldSelector::Parse("metadata.name=b");
  auto bs = store_->List("sandboxes", "", by_name);
  ASSERT_TRUE(bs.ok());
  EXPECT_EQ(names(*bs), (std::vector<std::string>{"default/b"}));

  auto other = store_->List("sandboxsnapshots", "");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->items.empty());
}

TEST_F(ObjectStoreTest, ListPagesWithLimitAndContinue) {
  std::set<std::string> want;
  for (int i = 0; i < 25; ++i) {
    std::string ns = i % 2 == 0 ? "alpha" : "beta";
    json obj = Sandbox(Cat("sb-", i / 10, i % 10), ns);
    obj["metadata"]["labels"] = {{"even", i % 2 == 0 ? "yes" : "no"}};
    MustCreate(obj);
    want.insert(Cat(ns, "/", obj["metadata"]["name"].get<std::string>()));
  }
  std::string first_rv = std::to_string(store_->CurrentResourceVersion());

  ListOptions options;
  options.limit = 10;
  std::vector<std::string> seen;
  int pages = 0;
  while (true) {
    auto page = store_->List("sandboxes", "", options);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    EXPECT_LE(page->items.size(), 10u);
    EXPECT_EQ(page->resource_version, first_rv);
    for (const json& item : page->items) {
      seen.push_back(Cat(item["metadata"]["namespace"].get<std::string>(), "/",
                         item["metadata"]["name"].get<std::string>()));
    }
    if (page->continue_token.empty()) break;
    options.continue_token = page->continue_token;
    // A write between pages does not change the reported list version.
    if (pages == 1) MustCreate(Sandbox("zz-late", "gamma"));
  }
  EXPECT_EQ(pages, 3);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  want.insert("gamma/zz-late");
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), want);
  EXPECT_EQ(seen.size(), want.size());

  // A limit with a selector counts matching items; exactly `limit` matches → no continue token.
  ListOptions evens;
  evens.labels = *LabelSelector::Parse("even=yes");
  evens.limit = 13;
  auto page = store_->List("sandboxes", "", evens);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->items.size(), 13u);
  EXPECT_TRUE(page->continue_token.empty());

  // Within one namespace: 12 objects in pages of 5, 5 and 2.
  ListOptions ns_paged;
  ns_paged.limit = 5;
  std::vector<size_t> sizes;
  while (true) {
    auto beta = store_->List("sandboxes", "beta", ns_paged);
    ASSERT_TRUE(beta.ok()) << beta.status();
    sizes.push_back(beta->items.size());
    for (const json& item : beta->items) EXPECT_EQ(item["metadata"]["namespace"], "beta");
    if (beta->continue_token.empty()) break;
    ns_paged.continue_token = beta->continue_token;
    // A token is bound to its namespace.
    EXPECT_EQ(store_->List("sandboxes", "alpha", ns_paged).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{5, 5, 2}));

  ListOptions bogus;
  bogus.continue_token = "not-a-token";
  auto bad = store_->List("sandboxes", "", bogus);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(bad.status()).find("continue"), std::string::npos);
}

// Many writers doing read-modify-write with retry on conflict lose no increment: optimistic
// concurrency serializes them.
TEST_F(ObjectStoreTest, ConcurrentReadModifyWriteLosesNoUpdate) {
  json obj = Sandbox("counter");
  obj["spec"]["count"] = 0;
  MustCreate(obj);
  constexpr int kThreads = 4, kIncrements = 25;
  std::atomic<int> conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIncrements; ++i) {
        while (true) {
          auto cur = store_->Get("sandboxes", "default", "counter");
          ASSERT_TRUE(cur.ok());
          json next = *cur;
          next["spec"]["count"] = next["spec"]["count"].get<int>() + 1;
          auto st = store_->Update("sandboxes", next);
          if (st.ok()) break;
          ASSERT_EQ(st.status().code(), absl::StatusCode::kAborted) << st.status();
          ++conflicts;
        }
        // Unrelated creates interleave with the updates.
        ASSERT_TRUE(store_->Create("sandboxes", Sandbox(Cat("t", t, "-", i))).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto final_obj = store_->Get("sandboxes", "default", "counter");
  ASSERT_TRUE(final_obj.ok());
  EXPECT_EQ((*final_obj)["spec"]["count"], kThreads * kIncrements);
  EXPECT_EQ((*final_obj)["metadata"]["generation"], 1 + kThreads * kIncrements);
  EXPECT_EQ(store_->Count("sandboxes").value(), 1 + kThreads * kIncrements);

  auto list = store_->List("sandboxes", "");
  ASSERT_TRUE(list.ok());
  std::set<int64_t> versions;
  for (const json& item : list->items) versions.insert(Rv(item));
  EXPECT_EQ(versions.size(), list->items.size()) << "two objects share a resourceVersion";
}

}  // namespace
}  // namespace sandboxlet::store
