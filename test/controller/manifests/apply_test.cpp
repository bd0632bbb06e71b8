// Tests of controller/manifests/apply.cpp: kubectl-apply semantics over a real store.
#include "controller/manifests/apply.h"

#include <stdlib.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fs.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

class ApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-apply-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto store = store::ObjectStore::Open(dir_ + "/store.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override {
    store_.reset();
    (void)RemoveAll(dir_);
  }
  absl::StatusOr<std::vector<ApplyResult>> Apply(const std::string& text,
                                                 const ApplyOptions& options = {}) {
    return ApplyManifests(*store_, text, options, nullptr);
  }

  std::string dir_;
  std::unique_ptr<store::ObjectStore> store_;
};

TEST_F(ApplyTest, DryRunDefaultsAndValidatesWithoutStoring) {
  ApplyOptions options;
  options.dry_run = true;
  auto r = Apply(
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: d}\n"
      "spec: {template: base}\n",
      options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].action, ApplyAction::kCreated);
  EXPECT_EQ((*r)[0].stored["spec"]["memoryMiB"], 512);
  EXPECT_EQ(store_->Get("sandboxes", "default", "d").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ApplyTest, LabelsAndAnnotationsAreReplacedButSystemAnnotationsStay) {
  ApplyOptions owned;
  owned.annotations[kManifestAnnotation] = "/etc/m/a.yaml";
  ASSERT_TRUE(Apply("apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: s\n"
                    "  labels: {a: '1', b: '2'}\n  annotations: {note: old}\n"
                    "spec: {template: base}\n",
                    owned)
                  .ok());
  auto r = Apply(
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: s\n"
      "  labels: {a: '1'}\nspec: {template: base}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].action, ApplyAction::kConfigured);
  const json& meta = (*r)[0].stored["metadata"];
  EXPECT_EQ(meta["labels"], json({{"a", "1"}}));
  EXPECT_EQ(meta["annotations"], json({{kManifestAnnotation, "/etc/m/a.yaml"}}));
}

TEST_F(ApplyTest, GenerateNameCreatesANewObjectEachTime) {
  const std::string doc =
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata: {generateName: job-}\n"
      "spec: {template: base}\n";
  auto a = Apply(doc);
  auto b = Apply(doc);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)[0].stored["metadata"]["name"], (*b)[0].stored["metadata"]["name"]);
  EXPECT_EQ(store_->List("sandboxes", "")->items.size(), 2u);
}

TEST_F(ApplyTest, NodeLimitTightensValidation) {
  ApplyOptions options;
  options.limits.max_vcpus = 2;
  auto r = Apply(
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: big}\n"
      "spec: {template: base, vcpus: 3}\n",
      options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("spec.vcpus"));
  EXPECT_FALSE(api::FieldErrorsOf(r.status()).empty());
}

}  // namespace
}  // namespace sandboxlet::controller
