#include "runtime/snapshot/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"

namespace sandboxlet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// A CH-like config whose "marker" tells which snapshot a directory holds.
std::string ConfigWithMarker(const std::string& marker) {
  return nlohmann::ordered_json{
      {"cpus", {{"boot_vcpus", 2}}},
      {"memory", {{"size", 1073741824}}},
      {"disks", {{{"path", "/run/sbl/old/rootfs.raw"}, {"id", "_disk0"}}}},
      {"serial", {{"mode", "File"}, {"file", "/run/sbl/old/serial.log"}}},
      {"marker", marker}}
      .dump();
}

// Fills a pending snapshot the way CH (CONTRACT §5) and the volume layer would.
void FillComplete(PendingSnapshot& p, const std::string& marker) {
  ASSERT_TRUE(
      WriteFileAtomic(p.FilePath(kSnapshotConfigFile), ConfigWithMarker(marker), 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(p.FilePath(kSnapshotStateFile), R"({"snapshots":{}})", 0600).ok());
  int fd =
      ::open(p.FilePath(kSnapshotMemoryRangesFile).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, off_t{256} << 20), 0);  // sparse, like CH v52+ shared memory
  ASSERT_EQ(::pwrite(fd, marker.data(), marker.size(), 4096), static_cast<ssize_t>(marker.size()));
  ::close(fd);
  ASSERT_TRUE(WriteFileAtomic(p.FilePath(kSnapshotCowFile), std::string(8192, 'c')).ok());
  ASSERT_TRUE(p.WriteMeta({.base_template = "alpine", .vcpus = 2, .memory_mb = 256}).ok());
}

class SnapshotStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/snapshot-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    base_ = root_ + "/snapshots";
    store_ = OpenStore();
  }
  void TearDown() override {
    for (const std::string& dir : also_remove_) EXPECT_TRUE(RemoveAll(dir).ok()) << dir;
    ASSERT_TRUE(RemoveAll(root_).ok());
  }

  std::unique_ptr<SnapshotStore> OpenStore(
      std::function<bool(std::string_view)> crash_point = nullptr) {
    absl::StatusOr<std::unique_ptr<SnapshotStore>> s =
        SnapshotStore::Open({.base_dir = base_, .crash_point = std::move(crash_point)});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  void CommitSnapshot(SnapshotStore& store, const std::string& id, const std::string& marker) {
    absl::StatusOr<PendingSnapshot> p = store.Begin(id);
    ASSERT_TRUE(p.ok()) << p.status();
    FillComplete(*p, marker);
    absl::Status st = p->Commit();
    ASSERT_TRUE(st.ok()) << st;
  }

  // Which snapshot `id` holds, by its config marker; "" if none is visible.
  std::string MarkerOf(const std::string& id) {
    absl::StatusOr<bool> exists = store_->Exists(id);
    EXPECT_TRUE(exists.ok()) << exists.status();
    if (!exists.ok() || !*exists) return "";
    absl::StatusOr<std::string> config = ReadFile(*store_->ConfigPath(id));
    EXPECT_TRUE(config.ok()) << config.status();
    return nlohmann::json::parse(*config)["marker"].get<std::string>();
  }

  // Entries of the base directory starting with '.', other than "." and "..".
  std::vector<std::string> HiddenEntries() {
    std::vector<std::string> out;
    DIR* d = ::opendir(base_.c_str());
    EXPECT_NE(d, nullptr);
    if (d == nullptr) return out;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != ".." && n[0] == '.') out.push_back(n);
    }
    ::closedir(d);
    return out;
  }

  // The steps an operation passes through, recorded with a hook that never stops it.
  std::vector<std::string> RecordSteps(const std::function<void(SnapshotStore&)>& op) {
    std::vector<std::string> steps;
    auto store = OpenStore([&](std::string_view s) {
      steps.emplace_back(s);
      return true;
    });
    op(*store);
    return steps;
  }

  std::string root_;
  std::string base_;
  std::unique_ptr<SnapshotStore> store_;
  std::vector<std::string> also_remove_;  // outside root_
};

TEST_F(SnapshotStoreTest, BeginGivesAPrivateEmptyDirectoryInTheBase) {
  absl::StatusOr<PendingSnapshot> p = store_->Begin("default_demo");
  ASSERT_TRUE(p.ok()) << p.status();
  struct stat st;
  ASSERT_EQ(::stat(p->dir().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(Dirname(p->dir()), base_);
  EXPECT_EQ(::rmdir(p->dir().c_str()), 0) << "not empty";  // CH needs it empty
  ASSERT_EQ(::mkdir(p->dir().c_str(), 0700), 0);
  EXPECT_THAT(*store_->List(), IsEmpty());
  EXPECT_FALSE(*store_->Exists("default_demo"));
}

TEST_F(SnapshotStoreTest, CommitMakesTheSnapshotVisible) {
  CommitSnapshot(*store_, "default_demo", "v1");
  EXPECT_THAT(*store_->List(), ElementsAre("default_demo"));
  EXPECT_EQ(MarkerOf("default_demo"), "v1");
  absl::StatusOr<RootfsMeta> meta = store_->ReadMeta("default_demo");
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(*meta, (RootfsMeta{.base_template = "alpine", .vcpus = 2, .memory_mb = 256}));
  EXPECT_EQ(*store_->CowPath("default_demo"), base_ + "/default_demo/rootfs.cow");
  EXPECT_TRUE(PathExists(*store_->CowPath("default_demo")));
  EXPECT_THAT(HiddenEntries(), IsEmpty());
}

TEST_F(SnapshotStoreTest, ReplacingKeepsOnlyTheNewSnapshot) {
  CommitSnapshot(*store_, "default_demo", "old");
  CommitSnapshot(*store_, "default_demo", "new");
  EXPECT_EQ(MarkerOf("default_demo"), "new");
  EXPECT_THAT(*store_->List(), ElementsAre("default_demo"));
  EXPECT_THAT(HiddenEntries(), IsEmpty());
}

TEST_F(SnapshotStoreTest, IncompleteSnapshotIsRefusedAndTheOldOneKept) {
  CommitSnapshot(*store_, "default_demo", "old");
  {
    absl::StatusOr<PendingSnapshot> p = store_->Begin("default_demo");
    ASSERT_TRUE(p.ok()) << p.status();
    // CH failed half-way: config only, no state, no rootfs.
    ASSERT_TRUE(WriteFileAtomic(p->FilePath(kSnapshotConfigFile), ConfigWithMarker("new")).ok());
    ASSERT_TRUE(p->WriteMeta({.base_template = "alpine"}).ok());
    absl::Status st = p->Commit();
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(st.message(), HasSubstr("default_demo"));
    EXPECT_THAT(st.message(), HasSubstr("state.json"));
    EXPECT_THAT(st.message(), HasSubstr("memory-ranges"));
    EXPECT_THAT(st.message(), HasSubstr("rootfs.ext4 or rootfs.cow"));
    EXPECT_THAT(st.message(), Not(HasSubstr("config.json")));
    EXPECT_EQ(MarkerOf("default_demo"), "old");
  }
  // Dropping the refused pending snapshot removed its directory.
  EXPECT_THAT(HiddenEntries(), IsEmpty());
  EXPECT_EQ(MarkerOf("default_demo"), "old");
  EXPECT_THAT(*store_->List(), ElementsAre("default_demo"));
}

TEST_F(SnapshotStoreTest, DroppedOrAbortedPendingSnapshotLeavesNothing) {
  {
    absl::StatusOr<PendingSnapshot> p = store_->Begin("a");
    ASSERT_TRUE(p.ok());
    FillComplete(*p, "x");
  }
  absl::StatusOr<PendingSnapshot> p = store_->Begin("b");
  ASSERT_TRUE(p.ok());
  FillComplete(*p, "x");
  ASSERT_TRUE(p->Abort().ok());
  EXPECT_FALSE(PathExists(p->dir()));
  EXPECT_EQ(p->Commit().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(HiddenEntries(), IsEmpty());
  EXPECT_THAT(*store_->List(), IsEmpty());
}

TEST_F(SnapshotStoreTest, UnsafeIdsAreRefused) {
  for (std::string id : {"", ".", "..", "../etc", "a/b", "/abs", ".hidden", ".tmp-x-123456"}) {
    absl::StatusOr<PendingSnapshot> p = store_->Begin(id);
    ASSERT_FALSE(p.ok()) << id;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_THAT(p.status().message(), HasSubstr("snapshot id")) << id;
    EXPECT_FALSE(store_->Path(id).ok()) << id;
    EXPECT_FALSE(store_->MetaPath(id).ok()) << id;
    EXPECT_FALSE(store_->Exists(id).ok()) << id;
    EXPECT_FALSE(store_->Remove(id).ok()) << id;
    EXPECT_FALSE(store_->StageRestore(id, root_ + "/stage", {}).ok()) << id;
  }
  EXPECT_THAT(store_->Begin("a/b").status().message(), HasSubstr("'/'"));
  EXPECT_THAT(store_->Begin(".hidden").status().message(), HasSubstr("must not start with '.'"));
  EXPECT_THAT(store_->Begin("").status().message(), HasSubstr("empty"));
  EXPECT_THAT(HiddenEntries(), IsEmpty());
}

TEST_F(SnapshotStoreTest, LongIdsStillGetValidTemporaryNames) {
  std::string id(255, 'n');
  CommitSnapshot(*store_, id, "long");
  EXPECT_THAT(*store_->List(), ElementsAre(id));
}

TEST_F(SnapshotStoreTest, ListShowsOnlyCompleteSnapshots) {
  CommitSnapshot(*store_, "good", "g");
  ASSERT_TRUE(MakeDirs(base_ + "/half").ok());  // e.g. left by the Go predecessor
  ASSERT_TRUE(WriteFileAtomic(base_ + "/half/config.json", "{}").ok());
  ASSERT_TRUE(WriteFileAtomic(base_ + "/stray-file", "x").ok());
  EXPECT_THAT(*store_->List(), ElementsAre("good"));
  EXPECT_FALSE(*store_->Exists("half"));
  EXPECT_FALSE(*store_->Exists("stray-file"));
  EXPECT_FALSE(*store_->Exists("absent"));
}

TEST_F(SnapshotStoreTest, RemoveMakesItDisappearAndIsIdempotent) {
  CommitSnapshot(*store_, "a", "1");
  CommitSnapshot(*store_, "b", "2");
  ASSERT_TRUE(store_->Remove("a").ok());
  EXPECT_THAT(*store_->List(), ElementsAre("b"));
  EXPECT_FALSE(PathExists(base_ + "/a"));
  EXPECT_TRUE(store_->Remove("a").ok());
  EXPECT_THAT(HiddenEntries(), IsEmpty());
}

TEST_F(SnapshotStoreTest, SizeIsAllocatedBlocksLikeDu) {
  CommitSnapshot(*store_, "a", "1");
  absl::StatusOr<int64_t> size = store_->Size("a");
  ASSERT_TRUE(size.ok()) << size.status();
  absl::StatusOr<CommandResult> du = RunChecked({"du", "-sB1", base_ + "/a"});
  ASSERT_TRUE(du.ok()) << du.status();
  EXPECT_EQ(*size, std::stoll(du->out));
  EXPECT_LT(*size, int64_t{1} << 20);  // memory-ranges is 256 MiB apparent but sparse
  EXPECT_EQ(store_->Size("absent").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotStoreTest, ReadMetaOfCorruptMetaNamesTheFile) {
  absl::StatusOr<PendingSnapshot> p = store_->Begin("a");
  ASSERT_TRUE(p.ok());
  FillComplete(*p, "1");
  ASSERT_TRUE(WriteFileAtomic(p->FilePath(kSnapshotMetaFile), "{\"vcpus\": \"two\"").ok());
  ASSERT_TRUE(p->Commit().ok());
  absl::StatusOr<RootfsMeta> meta = store_->ReadMeta("a");
  ASSERT_FALSE(meta.ok());
  EXPECT_THAT(meta.status().message(), HasSubstr(base_ + "/a/rootfs.meta"));
}

// ---- crash consistency ----

TEST_F(SnapshotStoreTest, CrashAtEachCommitStepOfANewSnapshot) {
  std::vector<std::string> steps = RecordSteps([&](SnapshotStore& s) {
    CommitSnapshot(s, "probe", "p");
    ASSERT_TRUE(s.Remove("probe").ok());
  });
  ASSERT_THAT(steps, ElementsAre("fsync-files", "fsync-tmpdir", "rename", "fsync-base",
                                 "rename-to-trash", "fsync-base", "remove-trash"));
  const size_t kCommitSteps = 4;
  for (size_t crash_at = 0; crash_at <= kCommitSteps; ++crash_at) {
    SCOPED_TRACE("crash before step " + std::to_string(crash_at));
    ASSERT_TRUE(RemoveAll(base_).ok());
    {
      size_t seen = 0;
      auto crashing = OpenStore([&](std::string_view) { return seen++ != crash_at; });
      absl::StatusOr<PendingSnapshot> p = crashing->Begin("default_demo");
      ASSERT_TRUE(p.ok());
      FillComplete(*p, "new");
      absl::Status st = p->Commit();
      if (crash_at < kCommitSteps) {
        EXPECT_EQ(st.code(), absl::StatusCode::kAborted) << st;
        EXPECT_THAT(st.message(), HasSubstr(steps[crash_at]));
      } else {
        EXPECT_TRUE(st.ok()) << st;
      }
    }
    // The "restarted" process.
    store_ = OpenStore();
    bool renamed = crash_at > 2;  // the rename is step 2
    // Before recovery nothing partial is visible.
    EXPECT_EQ(MarkerOf("default_demo"), renamed ? "new" : "");
    absl::StatusOr<int> recovered = store_->RecoverAtStartup();
    ASSERT_TRUE(recovered.ok()) << recovered.status();
    EXPECT_EQ(*recovered, renamed ? 0 : 1);
    EXPECT_EQ(MarkerOf("default_demo"), renamed ? "new" : "");
    EXPECT_EQ(store_->List()->size(), renamed ? 1u : 0u);
    EXPECT_THAT(HiddenEntries(), IsEmpty());
  }
}

TEST_F(SnapshotStoreTest, CrashAtEachCommitStepWhenReplacing) {
  std::vector<std::string> steps = RecordSteps([&](SnapshotStore& s) {
    CommitSnapshot(s, "probe", "1");
    CommitSnapshot(s, "probe", "2");
  });
  ASSERT_THAT(steps,
              ElementsAre("fsync-files", "fsync-tmpdir", "rename", "fsync-base", "fsync-files",
                          "fsync-tmpdir", "exchange", "fsync-base", "remove-old"));
  const size_t kCommitSteps = 5;
  for (size_t crash_at = 0; crash_at <= kCommitSteps; ++crash_at) {
    SCOPED_TRACE("crash before step " + std::to_string(crash_at));
    ASSERT_TRUE(RemoveAll(base_).ok());
    store_ = OpenStore();
    CommitSnapshot(*store_, "default_demo", "old");
    {
      size_t seen = 0;
      auto crashing = OpenStore([&](std::string_view) { return seen++ != crash_at; });
      absl::StatusOr<PendingSnapshot> p = crashing->Begin("default_demo");
      ASSERT_TRUE(p.ok());
      FillComplete(*p, "new");
      absl::Status st = p->Commit();
      if (crash_at < kCommitSteps) {
        EXPECT_EQ(st.code(), absl::StatusCode::kAborted) << st;
        EXPECT_THAT(st.message(), HasSubstr(steps[4 + crash_at]));
      } else {
        EXPECT_TRUE(st.ok()) << st;
      }
    }
    store_ = OpenStore();
    const char* expected = crash_at > 2 ? "new" : "old";  // the exchange is step 2
    // A complete snapshot is visible at every moment, before and after recovery.
    EXPECT_EQ(MarkerOf("default_demo"), expected);
    EXPECT_THAT(*store_->List(), ElementsAre("default_demo"));
    absl::StatusOr<int> recovered = store_->RecoverAtStartup();
    ASSERT_TRUE(recovered.ok()) << recovered.status();
    // Until remove-old has run, the temporary directory holds the new or the old snapshot.
    EXPECT_EQ(*recovered, crash_at < kCommitSteps ? 1 : 0);
    EXPECT_EQ(MarkerOf("default_demo"), expected);
    EXPECT_THAT(*store_->List(), ElementsAre("default_demo"));
    EXPECT_THAT(HiddenEntries(), IsEmpty());
  }
}

TEST_F(SnapshotStoreTest, CrashAtEachRemoveStep) {
  const size_t kRemoveSteps = 3;  // rename-to-trash, fsync-base, remove-trash
  for (size_t crash_at = 0; crash_at <= kRemoveSteps; ++crash_at) {
    SCOPED_TRACE("crash before step " + std::to_string(crash_at));
    ASSERT_TRUE(RemoveAll(base_).ok());
    store_ = OpenStore();
    CommitSnapshot(*store_, "default_demo", "old");
    {
      size_t seen = 0;
      auto crashing = OpenStore([&](std::string_view) { return seen++ != crash_at; });
      absl::Status st = crashing->Remove("default_demo");
      EXPECT_EQ(st.code(),
                crash_at < kRemoveSteps ? absl::StatusCode::kAborted : absl::StatusCode::kOk);
    }
    store_ = OpenStore();
    const char* expected = crash_at == 0 ? "old" : "";
    EXPECT_EQ(MarkerOf("default_demo"), expected);
    absl::StatusOr<int> recovered = store_->RecoverAtStartup();
    ASSERT_TRUE(recovered.ok()) << recovered.status();
    EXPECT_EQ(*recovered, (crash_at == 0 || crash_at == kRemoveSteps) ? 0 : 1);
    EXPECT_EQ(MarkerOf("default_demo"), expected);
    EXPECT_EQ(store_->List()->size(), crash_at == 0 ? 1u : 0u);
    EXPECT_THAT(HiddenEntries(), IsEmpty());
  }
}

TEST_F(SnapshotStoreTest, RecoveryKeepsSnapshotsBeingWritten) {
  absl::StatusOr<PendingSnapshot> p = store_->Begin("a");
  ASSERT_TRUE(p.ok());
  absl::StatusOr<int> recovered = store_->RecoverAtStartup();
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 0);
  ASSERT_TRUE(PathExists(p->dir()));
  FillComplete(*p, "x");
  ASSERT_TRUE(p->Commit().ok());
  EXPECT_EQ(MarkerOf("a"), "x");
}

TEST_F(SnapshotStoreTest, ConcurrentCommitsOfDifferentIdsWithRecoveryRunning) {
  constexpr int kThreads = 4, kPerThread = 5;
  std::atomic<bool> done{false};
  std::thread recoverer([&] {
    while (!done.load()) EXPECT_TRUE(store_->RecoverAtStartup().ok());
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string id = "s" + std::to_string(t) + "-" + std::to_string(i);
        CommitSnapshot(*store_, id, id);
        CommitSnapshot(*store_, id, id + "-again");  // replace as well
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  recoverer.join();
  EXPECT_EQ(store_->List()->size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(MarkerOf("s3-4"), "s3-4-again");
  EXPECT_THAT(HiddenEntries(), IsEmpty());
}

// ---- StageRestore ----

ino_t Inode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST_F(SnapshotStoreTest, StageRestoreLinksAndRewritesOnlyDifferingPaths) {
  CommitSnapshot(*store_, "default_demo", "m");
  std::string stage = root_ + "/stage";
  absl::StatusOr<std::string> url = store_->StageRestore(
      "default_demo", stage,
      {{"/run/sbl/old/rootfs.raw", "/run/sbl/new/rootfs.raw"},
       {"/run/sbl/old/serial.log", "/run/sbl/old/serial.log"},  // same path: no change
       {"/not/in/config", "/elsewhere"}});
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(*url, "file://" + stage);
  for (const char* f : {kSnapshotStateFile, kSnapshotMemoryRangesFile}) {
    EXPECT_EQ(Inode(stage + "/" + f), Inode(base_ + "/default_demo/" + f)) << f;
  }
  std::string expected = ConfigWithMarker("m");
  expected.replace(expected.find("/run/sbl/old/rootfs.raw"), 23, "/run/sbl/new/rootfs.raw");
  EXPECT_EQ(*ReadFile(stage + "/config.json"), expected);  // same key order, one value changed
  EXPECT_NE(Inode(stage + "/config.json"), Inode(base_ + "/default_demo/config.json"));
  // The snapshot itself is untouched.
  EXPECT_EQ(*ReadFile(base_ + "/default_demo/config.json"), ConfigWithMarker("m"));

  // Staging again over the same directory (a retried restore) replaces the files.
  url = store_->StageRestore("default_demo", stage, {});
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(*ReadFile(stage + "/config.json"), ConfigWithMarker("m"));
}

TEST_F(SnapshotStoreTest, StageRestoreWithoutEffectiveRewriteIsByteIdentical) {
  absl::StatusOr<PendingSnapshot> p = store_->Begin("a");
  ASSERT_TRUE(p.ok());
  FillComplete(*p, "m");
  // Odd spacing and key order that a re-serialisation would change.
  const std::string config =
      "{ \"z\": 1,\n  \"disks\": [ {\"path\": \"/d/rootfs.raw\"} ],  \"a\": 1.50 }\n";
  ASSERT_TRUE(WriteFileAtomic(p->FilePath(kSnapshotConfigFile), config).ok());
  ASSERT_TRUE(p->Commit().ok());
  std::string stage = root_ + "/stage";
  ASSERT_TRUE(store_->StageRestore("a", stage, {{"/d/rootfs.raw", "/d/rootfs.raw"}}).ok());
  EXPECT_EQ(*ReadFile(stage + "/config.json"), config);
}

TEST_F(SnapshotStoreTest, StageRestoreOfCorruptOrMissingSnapshotNamesIt) {
  absl::StatusOr<PendingSnapshot> p = store_->Begin("broken");
  ASSERT_TRUE(p.ok());
  FillComplete(*p, "m");
  ASSERT_TRUE(WriteFileAtomic(p->FilePath(kSnapshotConfigFile), "{\"cpus\": ").ok());
  ASSERT_TRUE(p->Commit().ok());
  absl::StatusOr<std::string> url = store_->StageRestore("broken", root_ + "/stage", {});
  ASSERT_FALSE(url.ok());
  EXPECT_THAT(url.status().message(), HasSubstr("snapshot broken"));
  EXPECT_THAT(url.status().message(), HasSubstr("config.json"));

  url = store_->StageRestore("absent", root_ + "/stage", {});
  EXPECT_EQ(url.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(url.status().message(), HasSubstr("snapshot absent"));

  EXPECT_EQ(store_->StageRestore("broken", "relative/stage", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SnapshotStoreTest, StageRestoreAcrossFileSystemsCopiesKeepingHoles) {
  struct stat tmp_st, shm_st;
  ASSERT_EQ(::stat(base_.c_str(), &tmp_st), 0);
  if (::stat("/dev/shm", &shm_st) != 0 || shm_st.st_dev == tmp_st.st_dev) {
    GTEST_SKIP() << "no second file system at /dev/shm";
  }
  char tmpl[] = "/dev/shm/snapshot-stage-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string stage = tmpl;
  also_remove_.push_back(stage);
  CommitSnapshot(*store_, "a", "cross");
  absl::StatusOr<std::string> url = store_->StageRestore("a", stage + "/s", {});
  ASSERT_TRUE(url.ok()) << url.status();
  std::string src = base_ + "/a/memory-ranges", dst = stage + "/s/memory-ranges";
  EXPECT_EQ(*ReadFile(dst), *ReadFile(src));
  struct stat st;
  ASSERT_EQ(::stat(dst.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, off_t{256} << 20);
  EXPECT_LT(st.st_blocks * 512, int64_t{1} << 20);  // holes kept
  EXPECT_EQ(*ReadFile(stage + "/s/state.json"), *ReadFile(base_ + "/a/state.json"));
}

}  // namespace
}  // namespace sandboxlet
