// Tests of controller/manifests/manifest_dir.cpp: files added, changed, renamed and removed in a
// real directory (inotify) become store changes; bad files are skipped and named; editors'
// temporary files are ignored.
#include "controller/manifests/manifest_dir.h"

#include <stdlib.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "controller/manifests/apply.h"
#include "runtime/base/fs.h"

namespace sandboxlet::controller {
namespace {

using ::testing::HasSubstr;

std::string SandboxDoc(const std::string& name, int vcpus = 1) {
  return "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: " + name +
         "\nspec:\n  template: base\n  vcpus: " + std::to_string(vcpus) + "\n";
}

class ManifestDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-manifests-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    dir_ = root_ + "/manifests";
    auto store = store::ObjectStore::Open(root_ + "/store.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override {
    if (source_) source_->Stop();
    source_.reset();
    store_.reset();
    (void)RemoveAll(root_);
  }

  void StartSource() {
    ManifestDirectoryOptions options;
    options.dir = dir_;
    options.node_name = "node-a";
    options.limits.max_vcpus = 4;
    options.on_file = [this](const std::string& path, const absl::Status& result) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.emplace_back(path, result);
      cv_.notify_all();
    };
    source_ = std::make_unique<ManifestDirectory>(store_.get(), options);
    ASSERT_TRUE(source_->Start().ok());
  }

  // Writes a file the way a program does (open, write, close: one IN_CLOSE_WRITE).
  void Write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ + "/" + name) << content;
  }

  // Waits for the next result reported for `path` after those already seen.
  absl::Status NextResult(const std::string& path) {
    std::unique_lock<std::mutex> lock(mu_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (true) {
      for (; seen_ < results_.size(); ++seen_) {
        if (results_[seen_].first == path) return results_[seen_++].second;
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        return absl::DeadlineExceededError("no result for " + path);
      }
    }
  }
  std::vector<std::string> ReportedPaths() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& r : results_) out.push_back(r.first);
    return out;
  }

  std::vector<std::string> SandboxNames() {
    std::vector<std::string> names;
    absl::StatusOr<store::ObjectList> list = store_->List("sandboxes", "");
    EXPECT_TRUE(list.ok()) << list.status();
    if (!list.ok()) return names;
    for (const auto& o : list->items) {
      if (!o["metadata"].contains("deletionTimestamp")) {
        names.push_back(o["metadata"]["name"].get<std::string>());
      }
    }
    return names;
  }

  std::string root_, dir_;
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<ManifestDirectory> source_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, absl::Status>> results_;  // guarded by mu_
  size_t seen_ = 0;                                            // guarded by mu_
};

TEST_F(ManifestDirTest, InitialScanAppliesEveryManifestAndAnnotatesOwnership) {
  ASSERT_TRUE(MakeDirs(dir_).ok());
  Write("a.yaml", SandboxDoc("a") + "---\n" + SandboxDoc("b"));
  Write("c.json",
        R"({"apiVersion":"sandboxlet.dev/v1alpha1","kind":"Sandbox","metadata":{"name":"c"},)"
        R"("spec":{"template":"base"}})");
  Write("notes.txt", SandboxDoc("ignored"));
  StartSource();  // the scan completes before Start returns
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("a", "b", "c"));
  auto a = store_->Get("sandboxes", "default", "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)["metadata"]["annotations"][kManifestAnnotation], dir_ + "/a.yaml");
}

TEST_F(ManifestDirTest, AddChangeAndRemoveFilesFollowTheStore) {
  StartSource();  // creates the directory
  ASSERT_TRUE(PathExists(dir_));
  const std::string file = dir_ + "/team.yaml";

  Write("team.yaml", SandboxDoc("one") + "---\n" + SandboxDoc("two"));
  ASSERT_TRUE(NextResult(file).ok());
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("one", "two"));

  // Changed: "one" gets 2 vCPUs, "two" is dropped from the file and so deleted.
  Write("team.yaml", SandboxDoc("one", 2));
  ASSERT_TRUE(NextResult(file).ok());
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("one"));
  EXPECT_EQ((*store_->Get("sandboxes", "default", "one"))["spec"]["vcpus"], 2);

  ASSERT_EQ(::unlink(file.c_str()), 0);
  ASSERT_TRUE(NextResult(file).ok());
  EXPECT_THAT(SandboxNames(), ::testing::IsEmpty());
}

TEST_F(ManifestDirTest, RenamesAreApplyAndRemove) {
  StartSource();
  // An atomic write via rename (as editors and config tools do) applies the file once.
  std::string staging = root_ + "/staged.yaml";
  std::ofstream(staging) << SandboxDoc("moved");
  ASSERT_EQ(::rename(staging.c_str(), (dir_ + "/moved.yaml").c_str()), 0);
  ASSERT_TRUE(NextResult(dir_ + "/moved.yaml").ok());
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("moved"));

  // Moved out of the directory: its objects go.
  ASSERT_EQ(::rename((dir_ + "/moved.yaml").c_str(), staging.c_str()), 0);
  ASSERT_TRUE(NextResult(dir_ + "/moved.yaml").ok());
  EXPECT_THAT(SandboxNames(), ::testing::IsEmpty());
}

TEST_F(ManifestDirTest, BadFileIsSkippedByNameAndOthersStillApply) {
  ASSERT_TRUE(MakeDirs(dir_).ok());
  Write("bad.yaml",
        "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: x}\n"
        "spec: {template: base, vcpus: 99}\n");
  Write("good.yaml", SandboxDoc("good"));
  StartSource();
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("good"));
  std::map<std::string, std::string> errors = source_->FileErrors();
  ASSERT_EQ(errors.count(dir_ + "/bad.yaml"), 1u);
  EXPECT_THAT(errors[dir_ + "/bad.yaml"], HasSubstr("spec.vcpus"));
  EXPECT_EQ(errors.count(dir_ + "/good.yaml"), 0u);

  // The error is posted as a Warning Event naming the file.
  auto events = store_->List("events", "");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->items.size(), 1u);
  EXPECT_EQ(events->items[0]["type"], "Warning");
  EXPECT_THAT(events->items[0]["message"].get<std::string>(), HasSubstr(dir_ + "/bad.yaml"));

  // Unparseable YAML written later is reported the same way; the good file's objects stay.
  Write("broken.yaml", "kind: [unclosed\n");
  absl::Status s = NextResult(dir_ + "/broken.yaml");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(source_->FileErrors(), ::testing::Contains(::testing::Key(dir_ + "/broken.yaml")));
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("good"));

  // A good file that turns bad keeps its objects as last applied; fixing it clears the error.
  Write("good.yaml", "not: [a manifest\n");
  EXPECT_FALSE(NextResult(dir_ + "/good.yaml").ok());
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("good"));
  Write("bad.yaml", SandboxDoc("x", 2));
  ASSERT_TRUE(NextResult(dir_ + "/bad.yaml").ok());
  EXPECT_EQ(source_->FileErrors().count(dir_ + "/bad.yaml"), 0u);
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("good", "x"));
}

TEST_F(ManifestDirTest, EditorTemporaryFilesAreIgnored) {
  StartSource();
  Write(".team.yaml.swp", SandboxDoc("swap"));
  Write("team.yaml~", SandboxDoc("backup"));
  Write("4913", SandboxDoc("vimprobe"));
  Write(".#team.yaml", SandboxDoc("lock"));
  Write("team.yaml", SandboxDoc("real"));
  // Events arrive in order: once the real file is done, the temporary ones were seen and skipped.
  ASSERT_TRUE(NextResult(dir_ + "/team.yaml").ok());
  EXPECT_THAT(ReportedPaths(), ::testing::ElementsAre(dir_ + "/team.yaml"));
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("real"));
}

TEST_F(ManifestDirTest, FilesRemovedWhileStoppedAreCleanedAtTheNextStart) {
  StartSource();
  Write("keep.yaml", SandboxDoc("keep"));
  ASSERT_TRUE(NextResult(dir_ + "/keep.yaml").ok());
  Write("gone.yaml", SandboxDoc("gone"));
  ASSERT_TRUE(NextResult(dir_ + "/gone.yaml").ok());
  source_->Stop();
  ASSERT_EQ(::unlink((dir_ + "/gone.yaml").c_str()), 0);

  // Objects applied by other clients, without the annotation, are not the directory's.
  ASSERT_TRUE(ApplyManifests(*store_, SandboxDoc("by-hand"), {}, nullptr).ok());

  StartSource();
  EXPECT_THAT(SandboxNames(), ::testing::ElementsAre("by-hand", "keep"));
}

TEST(ManifestNameTest, OnlyVisibleYamlAndJsonFiles) {
  EXPECT_TRUE(ManifestDirectory::IsManifestName("a.yaml"));
  EXPECT_TRUE(ManifestDirectory::IsManifestName("a.yml"));
  EXPECT_TRUE(ManifestDirectory::IsManifestName("a.json"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName(".a.yaml"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName(".a.yaml.swp"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName("a.yaml~"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName("a.yaml.tmp"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName("..data"));
  EXPECT_FALSE(ManifestDirectory::IsManifestName("4913"));
}

}  // namespace
}  // namespace sandboxlet::controller
