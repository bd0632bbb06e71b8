#include "runtime/snapshot/dir_size.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"

namespace sandboxlet {
namespace {

using ::testing::HasSubstr;

// What the real `du -sB1` (plus `extra` flags) says about `path`.
int64_t Du(const std::string& path, const std::string& extra = "") {
  std::vector<std::string> argv = {"du", "-sB1"};
  if (!extra.empty()) argv.push_back(extra);
  argv.push_back(path);
  absl::StatusOr<CommandResult> r = RunChecked(argv);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return -1;
  return std::stoll(r->out);
}

void WriteBytes(const std::string& path, size_t n, char fill = 'x') {
  ASSERT_TRUE(WriteFileAtomic(path, std::string(n, fill)).ok()) << path;
}

class DirSizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/snapshot-dirsize-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/tree";  // what is measured; root_ also holds things outside it
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override { ASSERT_TRUE(RemoveAll(root_).ok()); }

  void ExpectEqualsDu(const std::string& path) {
    absl::StatusOr<int64_t> size = DirSize(path);
    ASSERT_TRUE(size.ok()) << size.status();
    EXPECT_EQ(*size, Du(path));
  }

  std::string root_;
  std::string dir_;
};

TEST_F(DirSizeTest, EmptyDirectoryCountsItsOwnBlocks) {
  absl::StatusOr<int64_t> size = DirSize(dir_);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_GT(*size, 0);
  EXPECT_EQ(*size, Du(dir_));
}

TEST_F(DirSizeTest, TreeOfSmallFilesAndNestedDirectories) {
  for (int d = 0; d < 5; ++d) {
    std::string sub = dir_ + "/d" + std::to_string(d) + "/inner/deeper";
    ASSERT_TRUE(MakeDirs(sub).ok());
    for (int f = 0; f < 40; ++f) {
      WriteBytes(sub + "/f" + std::to_string(f), static_cast<size_t>(f * 97 + d));
    }
  }
  ExpectEqualsDu(dir_);
}

TEST_F(DirSizeTest, SparseFileCountsAllocatedBlocksOnly) {
  std::string path = dir_ + "/memory-ranges";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, off_t{1} << 30), 0);  // 1 GiB apparent
  std::string mib(1 << 20, 'm');
  for (off_t off : {off_t{0}, off_t{300} << 20, off_t{900} << 20}) {
    ASSERT_EQ(::pwrite(fd, mib.data(), mib.size(), off), static_cast<ssize_t>(mib.size()));
  }
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  absl::StatusOr<int64_t> size = DirSize(dir_);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_GE(*size, int64_t{3} << 20);
  EXPECT_LT(*size, int64_t{16} << 20);  // nowhere near the 1 GiB apparent size
  EXPECT_EQ(*size, Du(dir_));
}

TEST_F(DirSizeTest, HardLinkedInodeCountsOnce) {
  ASSERT_TRUE(MakeDirs(dir_ + "/a").ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/b").ok());
  WriteBytes(dir_ + "/a/big", 1 << 20);
  ASSERT_EQ(::link((dir_ + "/a/big").c_str(), (dir_ + "/b/big").c_str()), 0);
  ASSERT_EQ(::link((dir_ + "/a/big").c_str(), (dir_ + "/b/big2").c_str()), 0);
  absl::StatusOr<int64_t> size = DirSize(dir_);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_LT(*size, int64_t{2} << 20);
  EXPECT_EQ(*size, Du(dir_));
  // A second call counts it again (the set of seen inodes is per call).
  EXPECT_EQ(DirSize(dir_).value_or(-1), *size);
}

TEST_F(DirSizeTest, SymlinksAreNotFollowed) {
  std::string outside = root_ + "/outside";
  ASSERT_TRUE(MakeDirs(outside).ok());
  WriteBytes(outside + "/big", 4 << 20);
  ASSERT_EQ(::symlink((outside + "/big").c_str(), (dir_ + "/to-file").c_str()), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (dir_ + "/to-dir").c_str()), 0);
  // Long enough not to fit in the inode: the link itself owns a block.
  std::string long_target = "/" + std::string(200, 'l');
  ASSERT_EQ(::symlink(long_target.c_str(), (dir_ + "/long").c_str()), 0);
  ASSERT_EQ(::symlink("dangling", (dir_ + "/dangling").c_str()), 0);
  absl::StatusOr<int64_t> size = DirSize(dir_);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_LT(*size, int64_t{1} << 20);
  EXPECT_EQ(*size, Du(dir_));
}

TEST_F(DirSizeTest, RegularFileAndMissingPath) {
  WriteBytes(dir_ + "/file", 10000);
  ExpectEqualsDu(dir_ + "/file");
  absl::StatusOr<int64_t> missing = DirSize(dir_ + "/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_ + "/absent"));
}

TEST_F(DirSizeTest, DoesNotCrossMountPoints) {
  std::string mnt = dir_ + "/mnt";
  ASSERT_TRUE(MakeDirs(mnt).ok());
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=16m") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here: " << std::strerror(errno);
  }
  WriteBytes(mnt + "/inside", 2 << 20);
  WriteBytes(dir_ + "/outside", 5000);
  absl::StatusOr<int64_t> size = DirSize(dir_);
  int64_t du_x = Du(dir_, "-x");
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, du_x);
  EXPECT_LT(*size, int64_t{1} << 20);
}

}  // namespace
}  // namespace sandboxlet
