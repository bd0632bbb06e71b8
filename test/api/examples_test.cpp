// The manifests under examples/ decode, default and validate, and refer to each other.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "api/validation.h"
#include "runtime/base/fs.h"

namespace sandboxlet::api {
namespace {

using ::testing::IsEmpty;

Object LoadExample(const std::string& file) {
  std::string path = std::string(SANDBOXLET_SOURCE_DIR) + "/examples/" + file;
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return v1alpha1::Sandbox();
  auto decoded = DecodeManifests(*text);
  EXPECT_TRUE(decoded.ok()) << path << ": " << decoded.status();
  if (!decoded.ok()) return v1alpha1::Sandbox();
  EXPECT_EQ(decoded->size(), 1u) << path;
  EXPECT_THAT(decoded->at(0).warnings, IsEmpty()) << path;
  Object object = decoded->at(0).object;
  SetDefaults(object);
  std::vector<std::string> problems;
  for (const FieldError& e : Validate(object)) problems.push_back(e.ToString());
  EXPECT_THAT(problems, IsEmpty()) << path;
  return object;
}

TEST(ExamplesTest, SandboxSnapshotAndRestoreAreValidAndLinked) {
  Object sandbox = LoadExample("sandbox.yaml");
  Object snapshot = LoadExample("snapshot.yaml");
  Object restore = LoadExample("restore.yaml");
  ASSERT_EQ(KindOf(sandbox), Kind::kSandbox);
  ASSERT_EQ(KindOf(snapshot), Kind::kSandboxSnapshot);
  ASSERT_EQ(KindOf(restore), Kind::kSandbox);

  const auto& s = std::get<v1alpha1::Sandbox>(sandbox);
  EXPECT_EQ(s.spec().template_(), "base");
  EXPECT_EQ(std::get<v1alpha1::SandboxSnapshot>(snapshot).spec().sandbox_name(),
            s.metadata().name());
  const auto& r = std::get<v1alpha1::Sandbox>(restore);
  EXPECT_EQ(r.spec().restore_from(), MetadataOf(snapshot).name());
  EXPECT_EQ(MetadataOf(snapshot).namespace_(), r.metadata().namespace_());
}

}  // namespace
}  // namespace sandboxlet::api
