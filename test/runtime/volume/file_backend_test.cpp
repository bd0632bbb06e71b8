// The file backend for real: sparse copies on /tmp's filesystem, reflinks on XFS and btrfs loop
// mounts, ENOSPC on a tiny filesystem, digest checks, and create/remove churn.
#include "runtime/volume/file_backend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/volume/clone.h"
#include "test/runtime/volume/scratch_fs.h"

namespace sandboxlet {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kMiB = 1 << 20;

class FileBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("volfile");
    ASSERT_FALSE(root_.empty());
    base_ = root_ + "/base.img";
    ASSERT_TRUE(testing::WriteSparseImage(base_, 64 * kMiB, 3 * kMiB));
    backend_ = NewBackend(root_ + "/state");
    ASSERT_NE(backend_, nullptr);
  }
  void TearDown() override {
    backend_.reset();
    (void)RemoveAll(root_);
  }

  std::unique_ptr<VolumeBackend> NewBackend(const std::string& state) {
    VolumeOptions options;
    options.state_dir = state;
    options.backend = "file";
    auto b = MakeVolumeBackend(options);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  VolumeSpec Spec(const std::string& id) { return VolumeSpec{id, "default/" + id, base_, 0}; }
  std::string Disk(const std::string& id) {
    return root_ + "/state/volumes/" + id + "/rootfs.ext4";
  }
  std::string Snapshot() {
    std::string dir = root_ + "/snap";
    EXPECT_TRUE(MakeDirs(dir).ok());
    return dir;
  }

  std::string root_, base_;
  std::unique_ptr<VolumeBackend> backend_;
};

TEST_F(FileBackendTest, CreateCopiesTheBaseKeepingItsHoles) {
  auto vol = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(vol.ok()) << vol.status();
  EXPECT_EQ(backend_->Name(), "file");
  EXPECT_EQ(vol->device_path, Disk("sb1"));
  EXPECT_EQ(vol->backend, "file");
  EXPECT_THAT(vol->base_digest, ::testing::StartsWith("sha256:"));
  EXPECT_EQ(*ReadFile(Disk("sb1")), *ReadFile(base_));
  // Allocated blocks follow the base's data (3 MiB), not the apparent size (64 MiB).
  uint64_t base_blocks = testing::AllocatedBytes(base_);
  uint64_t copy_blocks = testing::AllocatedBytes(Disk("sb1"));
  EXPECT_LE(copy_blocks, base_blocks + 64 * 1024);
  EXPECT_GE(copy_blocks + 64 * 1024, base_blocks);
  EXPECT_FALSE(PathExists(Disk("sb1") + ".partial"));
}

TEST_F(FileBackendTest, MinSizeGrowsTheDiskSparsely) {
  VolumeSpec spec = Spec("sb1");
  spec.min_size_bytes = 128 * kMiB;
  ASSERT_TRUE(backend_->Create(spec).ok());
  EXPECT_EQ(testing::FileSize(Disk("sb1")), 128 * kMiB);
  EXPECT_LT(testing::AllocatedBytes(Disk("sb1")), 4 * kMiB);
}

TEST_F(FileBackendTest, OpenAfterRestartFindsTheDisk) {
  auto created = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(created.ok());
  backend_ = NewBackend(root_ + "/state");
  auto opened = backend_->Open(Spec("sb1"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->device_path, created->device_path);
  EXPECT_EQ(opened->base_digest, created->base_digest);
  EXPECT_EQ(backend_->Open(Spec("sb2")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backend_->Create(Spec("sb1")).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(FileBackendTest, CaptureCopySharesNothingTheSandboxCanWrite) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(testing::WriteAt(Disk("sb1"), 10 * kMiB, "before snapshot"));
  std::string snap = Snapshot();
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kCopy).ok());
  std::string captured = *ReadFile(snap + "/rootfs.ext4");
  EXPECT_EQ(captured, *ReadFile(Disk("sb1")));
  ASSERT_TRUE(testing::WriteAt(Disk("sb1"), 10 * kMiB, "AFTER SNAPSHOT!"));
  EXPECT_EQ(*ReadFile(snap + "/rootfs.ext4"), captured);
  EXPECT_EQ(backend_->CaptureInto("sb1", snap, CaptureMode::kCopy).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(FileBackendTest, CaptureMoveHandsTheDiskOverAndRemovesTheVolume) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(testing::WriteAt(Disk("sb1"), 0, "hibernated"));
  std::string snap = Snapshot();
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kMove).ok());
  EXPECT_TRUE(StartsWith(*ReadFile(snap + "/rootfs.ext4"), "hibernated"));
  auto ids = backend_->ListLeftovers();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, IsEmpty());
}

TEST_F(FileBackendTest, RestoreChecksTheBaseDigestAndCopiesTheSnapshot) {
  auto vol = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(vol.ok());
  ASSERT_TRUE(testing::WriteAt(Disk("sb1"), kMiB, "state to restore"));
  std::string snap = Snapshot();
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kCopy).ok());

  std::string wrong = "sha256:" + std::string(64, 'f');
  auto refused = backend_->RestoreFrom(Spec("sb2"), snap, wrong);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("volume default/sb2: restore from " + snap));
  EXPECT_THAT(refused.status().message(), HasSubstr("base image " + base_));
  EXPECT_THAT(refused.status().message(), HasSubstr(wrong));
  EXPECT_THAT(refused.status().message(), HasSubstr(vol->base_digest));
  EXPECT_FALSE(PathExists(root_ + "/state/volumes/sb2"));

  auto restored = backend_->RestoreFrom(Spec("sb2"), snap, vol->base_digest);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(*ReadFile(Disk("sb2")), *ReadFile(snap + "/rootfs.ext4"));
  EXPECT_TRUE(PathExists(snap + "/rootfs.ext4"));
}

TEST_F(FileBackendTest, FlattenWritesAReadOnlyBase) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(testing::WriteAt(Disk("sb1"), 20 * kMiB, "installed packages"));
  std::string flat = root_ + "/flat.img";
  ASSERT_TRUE(backend_->Flatten("sb1", flat).ok());
  EXPECT_EQ(*ReadFile(flat), *ReadFile(Disk("sb1")));
  struct stat st;
  ASSERT_EQ(::stat(flat.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444);
  EXPECT_EQ(backend_->Flatten("sb1", flat).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(PathExists(flat + ".partial-sb1"));
}

TEST_F(FileBackendTest, BadInputNamesTheSandboxAndLeavesNothing) {
  VolumeSpec missing = Spec("sb1");
  missing.base_image = root_ + "/nope.img";
  auto r1 = backend_->Create(missing);
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r1.status().message(), HasSubstr("volume default/sb1: create: inspect base image"));
  EXPECT_THAT(r1.status().message(), HasSubstr(missing.base_image));

  VolumeSpec dir = Spec("sb1");
  dir.base_image = root_;
  auto r2 = backend_->Create(dir);
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r2.status().message(), HasSubstr("not a regular file"));

  for (std::string id :
       std::vector<std::string>{"", "..", "a/b", std::string(101, 'a'), "-x", "a b"}) {
    auto r = backend_->Create(Spec(id));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_THAT(r.status().message(), HasSubstr("create: check id")) << id;
  }
  auto ids = backend_->ListLeftovers();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, IsEmpty());
}

TEST_F(FileBackendTest, InterruptedCreateIsReplacedNotReported) {
  // A crash mid-copy leaves a directory with only the .partial file.
  ASSERT_TRUE(MakeDirs(root_ + "/state/volumes/sb1").ok());
  ASSERT_TRUE(WriteFileAtomic(Disk("sb1") + ".partial", "half").ok());
  EXPECT_EQ(backend_->Open(Spec("sb1")).status().code(), absl::StatusCode::kNotFound);
  auto ids = backend_->ListLeftovers();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ::testing::ElementsAre("sb1"));
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  EXPECT_EQ(*ReadFile(Disk("sb1")), *ReadFile(base_));
}

TEST_F(FileBackendTest, ThousandCreateRemoveCyclesLeaveNothingBehind) {
  std::string small = root_ + "/small.img";
  ASSERT_TRUE(testing::WriteSparseImage(small, 256 * 1024, 64 * 1024));
  for (int i = 0; i < 1000; ++i) {
    std::string id = Cat("cycle-", i % 7);
    VolumeSpec spec{id, "default/" + id, small, 0};
    auto vol = backend_->Create(spec);
    ASSERT_TRUE(vol.ok()) << i << ": " << vol.status();
    ASSERT_TRUE(backend_->Remove(id).ok()) << i;
  }
  auto ids = backend_->ListLeftovers();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, IsEmpty());
  // Only the digest cache remains in the volumes directory.
  auto entries = RunChecked({"ls", "-A", root_ + "/state/volumes"});
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->out, "digests.json\n");
}

TEST_F(FileBackendTest, FullDiskDuringCloneIsAClearErrorAndLeavesNothing) {
  auto small = testing::ScratchFs::Make(root_, "ext4", 16);
  if (!small.ok()) GTEST_SKIP() << "cannot mount a small ext4: " << small.status();
  auto backend = NewBackend((*small)->path() + "/state");
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(testing::WriteSparseImage(base_, 64 * kMiB, 32 * kMiB));
  auto vol = backend->Create(Spec("sb1"));
  ASSERT_EQ(vol.status().code(), absl::StatusCode::kResourceExhausted) << vol.status();
  EXPECT_THAT(vol.status().message(), HasSubstr("volume default/sb1: create: copy " + base_));
  EXPECT_THAT(vol.status().message(), HasSubstr("No space left on device"));
  EXPECT_FALSE(PathExists((*small)->path() + "/state/volumes/sb1"));
  auto ids = backend->ListLeftovers();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, IsEmpty());
}

// Reflink filesystems: cloning a 256 MiB disk copies no data.
class ReflinkTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("volreflink");
    ASSERT_FALSE(root_.empty());
  }
  void TearDown() override {
    fs_.reset();
    (void)RemoveAll(root_);
  }
  std::string root_;
  std::unique_ptr<testing::ScratchFs> fs_;
};

TEST_P(ReflinkTest, CreateAndCaptureShareExtents) {
  std::string type = GetParam();
  if (type == "btrfs" && ::access("/usr/sbin/mkfs.btrfs", X_OK) != 0 &&
      ::access("/sbin/mkfs.btrfs", X_OK) != 0) {
    GTEST_SKIP() << "mkfs.btrfs is not installed";
  }
  auto fs = testing::ScratchFs::Make(root_, type, 700);
  if (!fs.ok()) GTEST_SKIP() << "cannot mount " << type << ": " << fs.status();
  fs_ = std::move(*fs);
  std::string base = fs_->path() + "/base.img";
  ASSERT_TRUE(testing::WriteSparseImage(base, 512 * kMiB, 256 * kMiB));
  fs_->Sync();

  VolumeOptions options;
  options.state_dir = fs_->path() + "/state";
  options.backend = "file";
  auto backend = MakeVolumeBackend(options);
  ASSERT_TRUE(backend.ok());

  uint64_t before = fs_->UsedBytes();
  auto vol = (*backend)->Create(VolumeSpec{"sb1", "default/sb1", base, 0});
  ASSERT_TRUE(vol.ok()) << vol.status();
  std::string snap = fs_->path() + "/snap";
  ASSERT_TRUE(MakeDirs(snap).ok());
  ASSERT_TRUE((*backend)->CaptureInto("sb1", snap, CaptureMode::kCopy).ok());
  fs_->Sync();
  uint64_t grown = fs_->UsedBytes() - before;
  EXPECT_LT(grown, 16 * kMiB) << "two 256 MiB clones should share extents, used " << grown;
  EXPECT_TRUE(testing::SameContent(vol->device_path, base));
  EXPECT_TRUE(testing::SameContent(snap + "/rootfs.ext4", base));

  // The clone primitive itself reflinked (no silent fallback to a copy).
  auto method = CloneFile(base, fs_->path() + "/clone.img");
  ASSERT_TRUE(method.ok()) << method.status();
  EXPECT_EQ(*method, CloneMethod::kReflink);
}

INSTANTIATE_TEST_SUITE_P(Filesystems, ReflinkTest, ::testing::Values("xfs", "btrfs"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace sandboxlet
