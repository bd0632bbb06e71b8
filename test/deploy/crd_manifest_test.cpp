// The checked-in CRDs (deploy/crds/, charts/sandboxlet/crds/) are what the proto generates, and
// carry what kubectl and the node agent rely on.
#include "test/deploy/crd_manifest.h"

#include <dirent.h>

#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <algorithm>
#include <cctype>

#include "api/codec.h"
#include "api/openapi.h"
#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/deploy/manifests.h"

namespace sandboxlet::deploy {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;

constexpr char kRegenerate[] =
    "regenerate with `ninja -C <build-dir> sandboxlet-crds` (sandboxlet-crdgen --write-to "
    "<source-dir>) and check in the result";

nlohmann::json LoadCrd(const std::string& dir, api::Kind kind) {
  std::string path = SourcePath(Cat(dir, "/", CrdFileName(kind)));
  absl::StatusOr<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return nullptr;
  absl::StatusOr<std::vector<nlohmann::json>> docs = api::ParseYamlDocuments(*text);
  EXPECT_TRUE(docs.ok()) << path << ": " << docs.status();
  if (!docs.ok() || docs->size() != 1) {
    ADD_FAILURE() << path << ": expected one YAML document";
    return nullptr;
  }
  return (*docs)[0];
}

std::vector<std::string> YamlFilesIn(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (EndsWith(name, ".yaml") || EndsWith(name, ".yml")) names.push_back(name);
  }
  ::closedir(d);
  return names;
}

TEST(CrdManifestTest, CheckedInCrdsAreWhatTheProtoGenerates) {
  for (const std::string& dir : CrdDirs()) {
    std::vector<std::string> want;
    for (api::Kind kind : CrdKinds()) {
      want.push_back(CrdFileName(kind));
      std::string path = SourcePath(Cat(dir, "/", CrdFileName(kind)));
      absl::StatusOr<std::string> text = ReadFile(path);
      ASSERT_TRUE(text.ok()) << path << " is missing: " << kRegenerate;
      EXPECT_TRUE(*text == CrdManifest(kind))
          << path
          << " differs from what api/sandboxlet/v1alpha1/sandbox.proto generates: " << kRegenerate;
    }
    EXPECT_THAT(YamlFilesIn(SourcePath(dir)), UnorderedElementsAreArray(want))
        << dir << " holds CRD files no kind generates";
  }
}

TEST(CrdManifestTest, GeneratorPrintsBothCrds) {
  absl::StatusOr<CommandResult> r = RunCommand({SANDBOXLET_CRDGEN});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << r->err;
  EXPECT_EQ(r->out, Cat(CrdManifest(api::Kind::kSandbox), "---\n",
                        CrdManifest(api::Kind::kSandboxSnapshot)));
  absl::StatusOr<CommandResult> bad = RunCommand({SANDBOXLET_CRDGEN, "--write-to"});
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_THAT(bad->err, ::testing::HasSubstr("usage: sandboxlet-crdgen"));
}

// The schema node at a JSON path like ".status.network.ip"; null when the schema has no such
// field. Under metadata (left to the API server) every path exists.
nlohmann::json SchemaAt(const nlohmann::json& schema, const std::string& json_path) {
  nlohmann::json node = schema;
  for (const std::string& step : Split(json_path.substr(1), '.')) {
    if (node.value("type", "") == "object" && !node.contains("properties")) return node;
    if (!node.contains("properties") || !node["properties"].contains(step)) return nullptr;
    node = node["properties"][step];
  }
  return node;
}

// The column headers `kubectl get` shows without -o wide (it upper-cases the names).
std::vector<std::string> DefaultColumns(const nlohmann::json& version) {
  std::vector<std::string> names;
  for (const nlohmann::json& c : version["additionalPrinterColumns"]) {
    if (c.value("priority", 0) != 0) continue;
    std::string name = c["name"];
    std::transform(name.begin(), name.end(), name.begin(), ::toupper);
    names.push_back(name);
  }
  return names;
}

TEST(CrdManifestTest, SandboxCrdHasColumnsNamesAndNodeFieldSelector) {
  for (const std::string& dir : CrdDirs()) {
    nlohmann::json crd = LoadCrd(dir, api::Kind::kSandbox);
    ASSERT_TRUE(crd.is_object());
    EXPECT_EQ(crd["metadata"]["name"], "sandboxes.sandboxlet.dev");
    EXPECT_EQ(crd["spec"]["scope"], "Namespaced");
    EXPECT_EQ(crd["spec"]["names"]["shortNames"], nlohmann::json({"sbx"}));
    EXPECT_EQ(crd["spec"]["names"]["categories"], nlohmann::json({"sandboxlet"}));
    nlohmann::json version = crd["spec"]["versions"][0];
    EXPECT_EQ(version["name"], "v1alpha1");
    EXPECT_EQ(version["subresources"]["status"], nlohmann::json::object());
    // `kubectl get sbx` (kubectl upper-cases the names; NAME comes first on its own).
    EXPECT_THAT(DefaultColumns(version), ElementsAre("PHASE", "IP", "VCPUS", "MEMORY", "AGE"));
    // The agent watches its node's sandboxes with the field selector spec.nodeName=<node>.
    EXPECT_EQ(version["selectableFields"],
              nlohmann::json::parse(R"([{"jsonPath":".spec.nodeName"}])"));
    nlohmann::json schema = version["schema"]["openAPIV3Schema"];
    EXPECT_EQ(SchemaAt(schema, ".spec.nodeName")["type"], "string");
    for (const nlohmann::json& c : version["additionalPrinterColumns"]) {
      EXPECT_FALSE(SchemaAt(schema, c["jsonPath"]).is_null())
          << dir << ": column " << c["name"] << " points at " << c["jsonPath"]
          << ", which the schema does not have";
    }
  }
}

TEST(CrdManifestTest, SnapshotCrdHasColumnsAndNames) {
  for (const std::string& dir : CrdDirs()) {
    nlohmann::json crd = LoadCrd(dir, api::Kind::kSandboxSnapshot);
    ASSERT_TRUE(crd.is_object());
    EXPECT_EQ(crd["metadata"]["name"], "sandboxsnapshots.sandboxlet.dev");
    EXPECT_EQ(crd["spec"]["names"]["shortNames"], nlohmann::json({"sbxsnap"}));
    EXPECT_EQ(crd["spec"]["names"]["categories"], nlohmann::json({"sandboxlet"}));
    nlohmann::json version = crd["spec"]["versions"][0];
    EXPECT_EQ(version["subresources"]["status"], nlohmann::json::object());
    EXPECT_THAT(DefaultColumns(version), ElementsAre("SANDBOX", "PHASE", "SIZE", "AGE"));
    nlohmann::json schema = version["schema"]["openAPIV3Schema"];
    for (const nlohmann::json& c : version["additionalPrinterColumns"]) {
      EXPECT_FALSE(SchemaAt(schema, c["jsonPath"]).is_null())
          << dir << ": column " << c["name"] << " points at " << c["jsonPath"];
    }
  }
}

// Every field of the proto message, recursively, has a property of its JSON name in `schema`.
// (Types, enums and ranges are checked against the descriptors by
// api_OpenApiTest.SchemaStaysInStepWithTheDescriptors; here the checked-in file is the subject.)
void ExpectEveryField(const google::protobuf::Descriptor& type, const nlohmann::json& schema,
                      const std::string& path, std::vector<std::string>* missing) {
  for (int i = 0; i < type.field_count(); ++i) {
    const google::protobuf::FieldDescriptor& f = *type.field(i);
    std::string child = Cat(path, ".", f.json_name());
    if (!schema.contains("properties") || !schema["properties"].contains(f.json_name())) {
      missing->push_back(child);
      continue;
    }
    nlohmann::json s = schema["properties"][f.json_name()];
    if (f.is_map() || f.cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE ||
        f.message_type()->full_name() == "google.protobuf.Timestamp" || child == ".metadata") {
      continue;
    }
    ExpectEveryField(*f.message_type(), f.is_repeated() ? s["items"] : s, child, missing);
  }
}

TEST(CrdManifestTest, SchemaHasEveryFieldOfTheProto) {
  for (const std::string& dir : CrdDirs()) {
    for (api::Kind kind : CrdKinds()) {
      nlohmann::json crd = LoadCrd(dir, kind);
      ASSERT_TRUE(crd.is_object());
      nlohmann::json schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
      std::vector<std::string> missing;
      ExpectEveryField(api::DescriptorOf(kind), schema, "", &missing);
      EXPECT_THAT(missing, ::testing::IsEmpty())
          << dir << "/" << CrdFileName(kind) << " lacks proto fields: " << kRegenerate;
      EXPECT_EQ(schema, api::OpenApiSchema(kind)) << kRegenerate;
    }
  }
}

}  // namespace
}  // namespace sandboxlet::deploy
