#include "controller/rest/managed_fields.h"

#include <gtest/gtest.h>

namespace sandboxlet::rest {
namespace {

using nlohmann::json;

const std::string kGv = "sandboxlet.dev/v1alpha1";
const std::string kTime = "2025-01-01T00:00:00Z";

json Config(int vcpus, json env = json::array()) {
  json c = {{"apiVersion", kGv},
            {"kind", "Sandbox"},
            {"metadata", {{"name", "demo"}, {"labels", {{"app", "demo"}}}}},
            {"spec", {{"template", "ubuntu"}, {"vcpus", vcpus}}}};
  if (!env.empty()) c["spec"]["env"] = env;
  return c;
}

const ManagedFieldsEntry* Entry(const ManagedFields& mf, const std::string& manager,
                                const std::string& op) {
  for (const auto& e : mf.entries()) {
    if (e.manager == manager && e.operation == op) return &e;
  }
  return nullptr;
}

TEST(LeafFieldsTest, TracksSpecAndMetadataLabelsButNotIdentityOrStatus) {
  json o = Config(2, json::parse(R"([{"name":"A","value":"1"}])"));
  o["metadata"]["uid"] = "u";
  o["status"] = {{"phase", "Running"}};
  FieldSet set = LeafFields(o, "");
  EXPECT_EQ(set, (FieldSet{{"f:metadata", "f:labels", "f:app"},
                           {"f:spec", "f:env", R"(k:{"name":"A"})", "f:name"},
                           {"f:spec", "f:env", R"(k:{"name":"A"})", "f:value"},
                           {"f:spec", "f:template"},
                           {"f:spec", "f:vcpus"}}));
  EXPECT_EQ(LeafFields(o, "status"), (FieldSet{{"f:status", "f:phase"}}));
}

TEST(LeafFieldsTest, FieldsV1RoundTrip) {
  FieldSet set = LeafFields(Config(2, json::parse(R"([{"name":"A"}])")), "");
  json v1 = ToFieldsV1(set);
  EXPECT_EQ(v1["f:spec"]["f:vcpus"], json::object());
  EXPECT_TRUE(v1["f:spec"]["f:env"].contains(R"(k:{"name":"A"})"));
  EXPECT_EQ(FromFieldsV1(v1), set);
  EXPECT_EQ(FieldPathString({"f:spec", "f:env", R"(k:{"name":"A"})", "f:value"}),
            R"(.spec.env[name="A"].value)");
}

TEST(ApplyTest, FirstApplyOwnsEveryAppliedField) {
  ManagedFields mf;
  std::vector<ApplyConflict> conflicts;
  absl::StatusOr<json> out =
      mf.Apply(nullptr, Config(2), "kubectl", "", false, kGv, kTime, &conflicts);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["vcpus"], 2);
  const ManagedFieldsEntry* e = Entry(mf, "kubectl", "Apply");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->fields.count({"f:spec", "f:vcpus"}));
  json with_fields = *out;
  mf.ToObject(with_fields);
  EXPECT_EQ(with_fields["metadata"]["managedFields"][0]["manager"], "kubectl");
  EXPECT_EQ(with_fields["metadata"]["managedFields"][0]["fieldsType"], "FieldsV1");
}

TEST(ApplyTest, AnotherManagerChangingAnOwnedFieldConflictsUnlessForced) {
  ManagedFields mf;
  json live = *mf.Apply(nullptr, Config(2), "kubectl", "", false, kGv, kTime, nullptr);
  mf.ToObject(live);

  absl::StatusOr<ManagedFields> reread = ManagedFields::FromObject(live);
  ASSERT_TRUE(reread.ok());
  std::vector<ApplyConflict> conflicts;
  absl::StatusOr<json> out =
      reread->Apply(live, Config(4), "other", "", false, kGv, kTime, &conflicts);
  ASSERT_FALSE(out.ok());
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].manager, "kubectl");
  EXPECT_EQ(FieldPathString(conflicts[0].path), ".spec.vcpus");

  out = reread->Apply(live, Config(4), "other", "", /*force=*/true, kGv, kTime, &conflicts);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["vcpus"], 4);
  EXPECT_FALSE(Entry(*reread, "kubectl", "Apply")->fields.count({"f:spec", "f:vcpus"}));
  EXPECT_TRUE(Entry(*reread, "other", "Apply")->fields.count({"f:spec", "f:vcpus"}));
  // Fields both applied with equal values stay shared.
  EXPECT_TRUE(Entry(*reread, "kubectl", "Apply")->fields.count({"f:spec", "f:template"}));
  EXPECT_TRUE(Entry(*reread, "other", "Apply")->fields.count({"f:spec", "f:template"}));
}

TEST(ApplyTest, SameValueIsNoConflict) {
  ManagedFields mf;
  json live = *mf.Apply(nullptr, Config(2), "kubectl", "", false, kGv, kTime, nullptr);
  std::vector<ApplyConflict> conflicts;
  absl::StatusOr<json> out = mf.Apply(live, Config(2), "other", "", false, kGv, kTime, &conflicts);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(conflicts.empty());
}

TEST(ApplyTest, DroppingAFieldRemovesItUnlessSomeoneElseOwnsIt) {
  ManagedFields mf;
  json first = Config(2, json::parse(R"([{"name":"A","value":"1"},{"name":"B","value":"2"}])"));
  first["metadata"]["labels"]["tier"] = "web";
  json live = *mf.Apply(nullptr, first, "kubectl", "", false, kGv, kTime, nullptr);

  // Another manager (an update) takes the "tier" label.
  json updated = live;
  updated["metadata"]["labels"]["tier"] = "db";
  mf.RecordUpdate(live, updated, "kubectl-label", "", kGv, kTime);
  live = updated;

  // The applier drops env B, the tier label and vcpus.
  json second = Config(2, json::parse(R"([{"name":"A","value":"1"}])"));
  second["spec"].erase("vcpus");
  absl::StatusOr<json> out = mf.Apply(live, second, "kubectl", "", false, kGv, kTime, nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["env"], json::parse(R"([{"name":"A","value":"1"}])"));
  EXPECT_FALSE((*out)["spec"].contains("vcpus"));
  EXPECT_EQ((*out)["metadata"]["labels"]["tier"], "db");
}

TEST(ApplyTest, KeyedListsMergeByName) {
  ManagedFields mf;
  json live = *mf.Apply(nullptr, Config(2, json::parse(R"([{"name":"A","value":"1"}])")), "kubectl",
                        "", false, kGv, kTime, nullptr);
  json other = {{"apiVersion", kGv},
                {"kind", "Sandbox"},
                {"metadata", {{"name", "demo"}}},
                {"spec", {{"env", json::parse(R"([{"name":"B","value":"2"}])")}}}};
  absl::StatusOr<json> out = mf.Apply(live, other, "sidecar", "", false, kGv, kTime, nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["env"],
            json::parse(R"([{"name":"A","value":"1"},{"name":"B","value":"2"}])"));
}

TEST(RecordUpdateTest, UpdatesTakeOwnershipFromAppliers) {
  ManagedFields mf;
  json live = *mf.Apply(nullptr, Config(2), "kubectl", "", false, kGv, kTime, nullptr);
  json next = live;
  next["spec"]["vcpus"] = 8;
  mf.RecordUpdate(live, next, "kubectl-patch", "", kGv, kTime);
  EXPECT_FALSE(Entry(mf, "kubectl", "Apply")->fields.count({"f:spec", "f:vcpus"}));
  ASSERT_NE(Entry(mf, "kubectl-patch", "Update"), nullptr);
  EXPECT_EQ(Entry(mf, "kubectl-patch", "Update")->fields, (FieldSet{{"f:spec", "f:vcpus"}}));
  // Now the applier can set it again only by forcing.
  std::vector<ApplyConflict> conflicts;
  EXPECT_FALSE(mf.Apply(next, Config(2), "kubectl", "", false, kGv, kTime, &conflicts).ok());
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].manager, "kubectl-patch");
}

TEST(ManagedFieldsTest, MalformedManagedFieldsAreRejected) {
  json o = {{"metadata", {{"managedFields", "nope"}}}};
  EXPECT_FALSE(ManagedFields::FromObject(o).ok());
  o["metadata"]["managedFields"] = json::array({1});
  EXPECT_FALSE(ManagedFields::FromObject(o).ok());
}

}  // namespace
}  // namespace sandboxlet::rest
