#include "runtime/base/fs.h"

#include <sys/stat.h>

#include <cstdlib>

#include <gtest/gtest.h>

namespace sandboxlet {
namespace {

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-fs-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { ASSERT_TRUE(RemoveAll(dir_).ok()); }
  std::string dir_;
};

TEST_F(FsTest, WriteFileAtomicReplacesContentAndLeavesNoTemp) {
  std::string path = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomic(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two", 0600).ok());
  auto content = ReadFile(path);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "two");
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto r = ReadFile(dir_ + "/missing");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FsTest, WriteIntoMissingDirectoryFailsNamingPath) {
  auto st = WriteFileAtomic(dir_ + "/no/such/f", "x");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find(dir_ + "/no/such/f"), std::string::npos);
}

TEST_F(FsTest, MakeDirsAndRemoveAll) {
  ASSERT_TRUE(MakeDirs(dir_ + "/a/b/c").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/a/b/c/f", "x").ok());
  ASSERT_EQ(symlink("/etc", (dir_ + "/a/link").c_str()), 0);
  ASSERT_TRUE(RemoveAll(dir_ + "/a").ok());
  EXPECT_FALSE(PathExists(dir_ + "/a"));
  EXPECT_TRUE(PathExists("/etc/passwd"));    // the symlink was not followed
  EXPECT_TRUE(RemoveAll(dir_ + "/a").ok());  // missing is fine
}

TEST_F(FsTest, MakeDirsOverFileFails) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/file", "x").ok());
  EXPECT_FALSE(MakeDirs(dir_ + "/file").ok());
}

TEST(Dirname, Cases) {
  EXPECT_EQ(Dirname("/a/b"), "/a");
  EXPECT_EQ(Dirname("/a"), "/");
  EXPECT_EQ(Dirname("a"), ".");
}

}  // namespace
}  // namespace sandboxlet
