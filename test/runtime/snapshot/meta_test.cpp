#include "runtime/snapshot/meta.h"

#include <stdlib.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"

namespace sandboxlet {
namespace {

using ::testing::HasSubstr;

TEST(RootfsMetaTest, RoundTripKeepsEveryField) {
  RootfsMeta meta{.base_template = "ubuntu-22.04",
                  .template_id = "tpl-7",
                  .vcpus = 4,
                  .memory_mb = 2048,
                  .base_digest = "sha256:abc"};
  absl::StatusOr<RootfsMeta> back = ParseRootfsMeta(MarshalRootfsMeta(meta), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, meta);
}

TEST(RootfsMetaTest, WritesTheGoSeedsBytes) {
  // What Go's json.Marshal produced for the seed's struct.
  EXPECT_EQ(
      MarshalRootfsMeta(
          {.base_template = "ubuntu-22.04", .template_id = "tpl-7", .vcpus = 2, .memory_mb = 1024}),
      R"({"base_template":"ubuntu-22.04","template_id":"tpl-7","vcpus":2,"memory_mb":1024})");
  // omitempty on template_id, vcpus, memory_mb (and the new base_digest); not on base_template.
  EXPECT_EQ(MarshalRootfsMeta({.base_template = "alpine"}), R"({"base_template":"alpine"})");
  EXPECT_EQ(MarshalRootfsMeta({}), R"({"base_template":""})");
}

TEST(RootfsMetaTest, ReadsGoSeedFilesWithUnknownFieldsAndNulls) {
  absl::StatusOr<RootfsMeta> meta = ParseRootfsMeta(
      R"({"base_template":"alpine","template_id":null,"vcpus":1,"future_field":{"x":[1,2]},
          "memory_mb":256})",
      "rootfs.meta");
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(*meta, (RootfsMeta{.base_template = "alpine", .vcpus = 1, .memory_mb = 256}));

  absl::StatusOr<RootfsMeta> minimal = ParseRootfsMeta(R"({"base_template":"alpine"})", "x");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->vcpus, 0);
  EXPECT_EQ(minimal->template_id, "");
}

TEST(RootfsMetaTest, CorruptContentIsAnErrorNamingTheFile) {
  const char* kFile = "/state/snapshots/ns_demo/rootfs.meta";
  for (const char* bad : {"", "{", "[]", "\"alpine\"", R"({"base_template":3})", R"({"vcpus":"2"})",
                          R"({"vcpus":2.5})", R"({"vcpus":2.0})", R"({"memory_mb":99999999999})"}) {
    absl::StatusOr<RootfsMeta> meta = ParseRootfsMeta(bad, kFile);
    ASSERT_FALSE(meta.ok()) << bad;
    EXPECT_EQ(meta.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(meta.status().message(), HasSubstr(kFile)) << bad;
  }
  EXPECT_THAT(ParseRootfsMeta(R"({"vcpus":"2"})", kFile).status().message(), HasSubstr("vcpus"));
}

TEST(RootfsMetaTest, FileWriteAndRead) {
  char tmpl[] = "/tmp/snapshot-meta-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::string path = dir + "/rootfs.meta";
  RootfsMeta meta{.base_template = "debian", .vcpus = 2};
  ASSERT_TRUE(WriteRootfsMeta(path, meta).ok());
  absl::StatusOr<RootfsMeta> back = ReadRootfsMeta(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, meta);

  absl::StatusOr<RootfsMeta> missing = ReadRootfsMeta(dir + "/nope.meta");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir + "/nope.meta"));

  ASSERT_TRUE(WriteFileAtomic(path, "{garbage").ok());
  EXPECT_THAT(ReadRootfsMeta(path).status().message(), HasSubstr(path));
  ASSERT_TRUE(RemoveAll(dir).ok());
}

}  // namespace
}  // namespace sandboxlet
