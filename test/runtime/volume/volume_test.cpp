// Backend selection, the clone primitives, base digests and dmsetup/losetup output parsing.
#include "runtime/volume/volume.h"

#include <fcntl.h>
#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/volume/clone.h"
#include "runtime/volume/device_control.h"
#include "runtime/volume/digest.h"
#include "test/runtime/volume/scratch_fs.h"

namespace sandboxlet {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

class VolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("vol");
    ASSERT_FALSE(root_.empty());
  }
  void TearDown() override { (void)RemoveAll(root_); }
  std::string root_;
};

TEST_F(VolumeTest, AutoFallsBackToFilesWithoutDeviceMapper) {
  VolumeOptions options;
  options.state_dir = root_ + "/state";
  options.dm_control_path = root_ + "/no-such-control";
  auto backend = MakeVolumeBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->Name(), "file");

  // A node that exists but is not the dm control device does not answer DM_VERSION.
  std::string fake_control = root_ + "/control";
  ASSERT_TRUE(WriteFileAtomic(fake_control, "").ok());
  std::string reason;
  EXPECT_FALSE(DeviceMapperUsable(fake_control, &reason));
  EXPECT_THAT(reason, HasSubstr("DM_VERSION on " + fake_control));
  EXPECT_FALSE(DeviceMapperUsable(options.dm_control_path, &reason));
  EXPECT_THAT(reason, HasSubstr("open " + options.dm_control_path));
}

TEST_F(VolumeTest, AutoOnThisMachineMatchesTheKernel) {
  std::string reason;
  bool dm = DeviceMapperUsable("/dev/mapper/control", &reason);
  VolumeOptions options;
  options.state_dir = root_ + "/state";
  auto backend = MakeVolumeBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->Name(), dm ? "devicemapper" : "file") << reason;
}

TEST_F(VolumeTest, UnknownBackendIsRefused) {
  VolumeOptions options;
  options.state_dir = root_ + "/state";
  options.backend = "zfs";
  auto backend = MakeVolumeBackend(options);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(backend.status().message(), HasSubstr("\"zfs\""));
}

TEST_F(VolumeTest, SparseCopyKeepsHolesAndContent) {
  std::string src = root_ + "/src.img", dst = root_ + "/dst.img";
  ASSERT_TRUE(testing::WriteSparseImage(src, 32 * kMiB, 5 * kMiB));
  CloneOptions options;
  options.allow_reflink = false;
  auto method = CloneFile(src, dst, options);
  ASSERT_TRUE(method.ok()) << method.status();
  EXPECT_EQ(*method, CloneMethod::kSparseCopy);
  EXPECT_EQ(*ReadFile(dst), *ReadFile(src));
  EXPECT_EQ(testing::FileSize(dst), 32 * kMiB);
  EXPECT_LE(testing::AllocatedBytes(dst), testing::AllocatedBytes(src) + 64 * 1024);
  EXPECT_LT(testing::AllocatedBytes(dst), 6 * kMiB);
  // dst must not exist.
  EXPECT_EQ(CloneFile(src, dst).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(VolumeTest, ZeroSkippingCopyMakesAllocatedZerosHoles) {
  std::string src = root_ + "/dense.img", dst = root_ + "/out.img";
  std::string data(4 * kMiB, '\0');
  data.replace(kMiB, 5, "hello");
  ASSERT_TRUE(WriteFileAtomic(src, data).ok());
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(in, 0);
  ASSERT_GE(out, 0);
  EXPECT_TRUE(CopySkippingZeros(in, out, data.size(), "copy").ok());
  ::close(in);
  ::close(out);
  EXPECT_EQ(*ReadFile(dst), data);
  EXPECT_LE(testing::AllocatedBytes(dst), 64 * 1024u);
}

TEST_F(VolumeTest, DigestNamesContentNotLayout) {
  std::string sparse = root_ + "/sparse.img", dense = root_ + "/dense.img";
  ASSERT_TRUE(testing::WriteSparseImage(sparse, 16 * kMiB, 3 * kMiB));
  auto content = ReadFile(sparse);
  ASSERT_TRUE(content.ok());
  ASSERT_TRUE(WriteFileAtomic(dense, *content).ok());  // same bytes, zeros allocated
  auto a = ComputeBaseDigest(sparse), b = ComputeBaseDigest(dense);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_THAT(*a, ::testing::MatchesRegex("sha256:[0-9a-f]{64}"));
  // One changed byte, or a different size, is another base.
  ASSERT_TRUE(testing::WriteAt(dense, 9 * kMiB, "x"));
  EXPECT_NE(*ComputeBaseDigest(dense), *a);
  ASSERT_EQ(::truncate(sparse.c_str(), 17 * kMiB), 0);
  EXPECT_NE(*ComputeBaseDigest(sparse), *a);
}

TEST_F(VolumeTest, DigestCacheFollowsTheFile) {
  std::string img = root_ + "/base.img";
  ASSERT_TRUE(testing::WriteSparseImage(img, 8 * kMiB, kMiB));
  BaseDigests digests(root_ + "/digests.json");
  auto first = digests.Of(img);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(PathExists(root_ + "/digests.json"));
  // A new instance serves the cached value; a rewritten image (new mtime/ctime) is rehashed.
  BaseDigests again(root_ + "/digests.json");
  EXPECT_EQ(*again.Of(img), *first);
  ASSERT_TRUE(testing::WriteAt(img, 0, "changed"));
  EXPECT_NE(*again.Of(img), *first);
  EXPECT_EQ(*again.Of(img), *ComputeBaseDigest(img));
}

TEST(DeviceControlParse, LosetupJsonAndDmsetupLs) {
  auto loops = ParseLosetupJson(R"j({"loopdevices": [
      {"name":"/dev/loop0", "back-file":"/var/lib/sbl/base.img", "ro":true},
      {"name":"/dev/loop1", "back-file":"/var/lib/sbl/volumes/a/rootfs.cow (deleted)", "ro":"0"}]
})j");
  ASSERT_TRUE(loops.ok());
  ASSERT_EQ(loops->size(), 2u);
  EXPECT_EQ((*loops)[0].back_file, "/var/lib/sbl/base.img");
  EXPECT_TRUE((*loops)[0].read_only);
  EXPECT_EQ((*loops)[1].back_file, "/var/lib/sbl/volumes/a/rootfs.cow");
  EXPECT_FALSE((*loops)[1].read_only);
  EXPECT_TRUE(ParseLosetupJson("")->empty());
  EXPECT_FALSE(ParseLosetupJson("{not json").ok());
  EXPECT_THAT(ParseDmsetupLs("No devices found\n"), ::testing::IsEmpty());
  EXPECT_THAT(ParseDmsetupLs("sbl-a\t(253:0)\nother\t(253:1)\n"),
              ::testing::ElementsAre("sbl-a", "other"));
}

}  // namespace
}  // namespace sandboxlet
