#include "api/codec.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "test/api/fixtures.h"

namespace sandboxlet::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

bool SameMessage(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

nlohmann::json FirstYamlDoc(std::string_view text) {
  auto docs = ParseYamlDocuments(text);
  EXPECT_TRUE(docs.ok()) << docs.status();
  EXPECT_EQ(docs->size(), 1u);
  return docs->at(0);
}

TEST(CodecTest, FullSandboxRoundTripsThroughYamlWithKubernetesFieldNames) {
  auto decoded = DecodeManifests(testing::kFullSandboxYaml);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 1u);
  const auto& sandbox = std::get<v1alpha1::Sandbox>(decoded->at(0).object);
  EXPECT_EQ(sandbox.spec().memory_mib(), 2048);
  EXPECT_EQ(sandbox.spec().disk_mib(), 4096);
  EXPECT_EQ(sandbox.spec().power(), v1alpha1::SandboxSpec::Paused);
  EXPECT_EQ(sandbox.spec().env(1).value(), "8080");
  EXPECT_FALSE(sandbox.spec().network().egress());
  EXPECT_TRUE(sandbox.spec().network().has_egress());
  EXPECT_EQ(sandbox.status().conditions(0).status(), v1alpha1::Condition::False);
  EXPECT_EQ(sandbox.metadata().creation_timestamp().seconds(), 1714564800);

  auto yaml = EncodeYaml(sandbox);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("memoryMiB: 2048"));
  EXPECT_THAT(*yaml, HasSubstr("diskMiB: 4096"));
  EXPECT_THAT(*yaml, Not(HasSubstr("memoryMib")));
  EXPECT_THAT(*yaml, Not(HasSubstr("memory_mib")));
  // Every field survives: the re-encoded document equals the original one, value for value.
  EXPECT_EQ(FirstYamlDoc(*yaml), FirstYamlDoc(testing::kFullSandboxYaml));

  auto again = DecodeManifests(*yaml);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(SameMessage(std::get<v1alpha1::Sandbox>(again->at(0).object), sandbox));
}

TEST(CodecTest, FullSnapshotRoundTripsThroughJsonWithInt64AsNumbers) {
  auto decoded = DecodeManifests(testing::kFullSnapshotJson);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const auto& snap = std::get<v1alpha1::SandboxSnapshot>(decoded->at(0).object);
  EXPECT_EQ(snap.status().size_bytes(), 1234);
  EXPECT_EQ(snap.status().source().memory_mib(), 2048);

  auto json = ToJson(snap);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json, nlohmann::json::parse(testing::kFullSnapshotJson));
  EXPECT_TRUE((*json)["status"]["sizeBytes"].is_number_integer());
  EXPECT_TRUE((*json)["metadata"]["generation"].is_number_integer());

  auto text = EncodeJson(snap);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(*text, HasSubstr(R"("sizeBytes":1234)"));
  EXPECT_THAT(*text, HasSubstr(R"("memoryMiB":2048)"));
}

TEST(CodecTest, Int64BeyondDoublePrecisionSurvivesTheStoreRepresentation) {
  v1alpha1::SandboxSnapshot snap;
  snap.set_api_version("sandboxlet.dev/v1alpha1");
  snap.set_kind("SandboxSnapshot");
  snap.mutable_metadata()->set_name("big");
  snap.mutable_metadata()->set_generation(9007199254740993);  // 2^53 + 1
  snap.mutable_spec()->set_sandbox_name("x");
  snap.mutable_status()->set_size_bytes(INT64_MAX);
  auto json = ToJson(snap);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["status"]["sizeBytes"].get<int64_t>(), INT64_MAX);
  auto back = DecodeAs<v1alpha1::SandboxSnapshot>(*json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(SameMessage(*back, snap));
}

TEST(CodecTest, EncodedTextListsFieldsInDeclarationOrderAndOmitsDefaults) {
  auto decoded = DecodeManifests(
      "kind: Sandbox\nspec:\n  template: base\nmetadata:\n  name: a\napiVersion: "
      "sandboxlet.dev/v1alpha1\n");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  auto yaml = EncodeYaml(MessageOf(decoded->at(0).object));
  ASSERT_TRUE(yaml.ok());
  EXPECT_EQ(*yaml,
            "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: a\nspec:\n  "
            "template: base\n");
}

TEST(CodecTest, ExplicitFalseAndZeroWithPresenceArePrinted) {
  auto decoded = DecodeManifests(
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: a}\n"
      "spec: {template: base, vcpus: 0, network: {enabled: false}}\n");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  auto json = ToJson(decoded->at(0).object);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["spec"]["network"]["enabled"], false);
  EXPECT_EQ((*json)["spec"]["vcpus"], 0);
  EXPECT_FALSE((*json)["spec"].contains("diskMiB"));
}

TEST(CodecTest, MultiDocumentYamlDecodesEveryObjectInOrder) {
  std::string text = std::string(testing::kFullSandboxYaml) +
                     "---\n# only a comment\n---\n"
                     "apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\n"
                     "metadata:\n  name: s\nspec:\n  sandboxName: full\n---\n";
  auto decoded = DecodeManifests(text);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ(KindOf(decoded->at(0).object), Kind::kSandbox);
  EXPECT_EQ(KindOf(decoded->at(1).object), Kind::kSandboxSnapshot);
  EXPECT_EQ(MetadataOf(decoded->at(1).object).name(), "s");
}

TEST(CodecTest, ErrorInALaterDocumentNamesTheDocument) {
  std::string text =
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\nmetadata: {name: a}\n"
      "spec: {sandboxName: x}\n---\n"
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: SandboxSnapshot\nmetadata: {name: b}\n"
      "spec: {sandboxNam: x}\n";
  auto decoded = DecodeManifests(text);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message(),
            "document 2: SandboxSnapshot.sandboxlet.dev \"b\" is invalid: spec.sandboxNam: unknown "
            "field; did you mean spec.sandboxName?");
  ASSERT_EQ(FieldErrorsOf(decoded.status()).size(), 1u);
  EXPECT_EQ(FieldErrorsOf(decoded.status())[0].path, "spec.sandboxNam");
}

TEST(CodecTest, KubernetesListsAreExpanded) {
  auto decoded = DecodeManifests(R"(apiVersion: sandboxlet.dev/v1alpha1
kind: SandboxList
metadata: {resourceVersion: "7"}
items:
  - metadata: {name: a}
    spec: {template: base}
  - apiVersion: sandboxlet.dev/v1alpha1
    kind: Sandbox
    metadata: {name: b}
    spec: {template: base}
)");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ(MetadataOf(decoded->at(0).object).name(), "a");
  EXPECT_EQ(MetadataOf(decoded->at(1).object).name(), "b");
}

TEST(CodecTest, WrongApiVersionIsAClearError) {
  auto decoded = DecodeManifests(
      "apiVersion: sandboxlet.dev/v1\nkind: Sandbox\nmetadata: {name: a}\nspec: {template: b}\n");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decoded.status().message(),
            "object \"a\" is invalid: apiVersion: Invalid value: \"sandboxlet.dev/v1\": version "
            "not served; this API serves sandboxlet.dev/v1alpha1");

  auto pod = DecodeManifests("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
  ASSERT_FALSE(pod.ok());
  EXPECT_THAT(pod.status().message(),
              HasSubstr("apiVersion: Invalid value: \"v1\": group/version not served here"));
  EXPECT_THAT(
      pod.status().message(),
      HasSubstr("kind: Unsupported value: \"Pod\": no such kind in sandboxlet.dev/v1alpha1; "
                "supported values: \"Sandbox\", \"SandboxSnapshot\""));
}

TEST(CodecTest, MissingKindIsRequired) {
  auto decoded = DecodeObject(nlohmann::json{{"apiVersion", "sandboxlet.dev/v1alpha1"}});
  ASSERT_FALSE(decoded.ok());
  auto errors = FieldErrorsOf(decoded.status());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].path, "kind");
  EXPECT_EQ(errors[0].type, FieldErrorType::kRequired);
}

TEST(CodecTest, DecodeAsRejectsTheOtherKind) {
  auto json = nlohmann::json::parse(testing::kFullSnapshotJson);
  auto sandbox = DecodeAs<v1alpha1::Sandbox>(json);
  ASSERT_FALSE(sandbox.ok());
  EXPECT_THAT(sandbox.status().message(), HasSubstr("expected Sandbox, got SandboxSnapshot"));
}

TEST(CodecTest, YamlSyntaxErrorsCarryTheLine) {
  auto decoded = DecodeManifests("apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nspec: [\n");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), HasSubstr("yaml: line "));
}

TEST(CodecTest, DuplicateYamlKeysAreErrors) {
  auto decoded = ParseYamlDocuments("spec:\n  vcpus: 1\n  vcpus: 2\n");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), HasSubstr("line 3: duplicate key \"spec.vcpus\""));
}

TEST(CodecTest, BadJsonIsAnError) {
  auto decoded = DecodeManifests("{\"apiVersion\": ");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), HasSubstr("json: "));
}

TEST(CodecTest, YamlScalarsFollowTheCoreSchema) {
  auto docs = ParseYamlDocuments(
      "a: 12\nb: \"12\"\nc: true\nd: yes\ne: ~\nf: 0x1f\ng: -7\nh: 1.5\ni: !!str 3\nj: ''\n");
  ASSERT_TRUE(docs.ok()) << docs.status();
  nlohmann::json want = {{"a", 12}, {"b", "12"}, {"c", true}, {"d", "yes"}, {"e", nullptr},
                         {"f", 31}, {"g", -7},   {"h", 1.5},  {"i", "3"},   {"j", ""}};
  EXPECT_EQ(docs->at(0), want);
}

TEST(CodecTest, EncodedYamlQuotesStringsThatWouldReadBackAsOtherTypes) {
  nlohmann::json j = {{"labels", {{"true", "false"}, {"n", "12"}, {"e", ""}, {"y", "yes"}}},
                      {"s", "a: b # not a comment"},
                      {"m", "line one\nline two"},
                      {"x", nlohmann::json::array()},
                      {"o", nlohmann::json::object()},
                      {"num", -3},
                      {"flag", false}};
  std::string yaml = EncodeYaml(j);
  EXPECT_THAT(yaml, HasSubstr("\"true\": \"false\""));
  EXPECT_THAT(yaml, HasSubstr("\"y\": \"yes\""));  // YAML 1.1 readers take y for a boolean
  auto back = ParseYamlDocuments(yaml);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(back->at(0), j) << yaml;
}

TEST(CodecTest, InvalidTimestampIsReportedWithItsPath) {
  auto decoded = DecodeManifests(
      "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\n"
      "metadata: {name: a, creationTimestamp: yesterday}\nspec: {template: base}\n");
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(),
              HasSubstr("metadata.creationTimestamp: Invalid value: \"yesterday\": must be an RFC "
                        "3339 time"));
}

TEST(CodecTest, DecodeMessageReadsAnyApiType) {
  v1alpha1::SandboxSpec spec;
  std::vector<std::string> warnings;
  absl::Status s =
      DecodeMessage(nlohmann::json{{"template", "base"}, {"memoryMiB", 1024}, {"colour", "red"}},
                    spec, {FieldValidation::kWarn}, &warnings);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(spec.memory_mib(), 1024);
  EXPECT_THAT(warnings, ElementsAre("colour: unknown field"));

  s = DecodeMessage(nlohmann::json{{"vcpus", "two"}}, spec);
  EXPECT_EQ(s.message(),
            "SandboxSpec is invalid: vcpus: Invalid value: \"two\": must be an integer");
}

TEST(CodecTest, ObjectsConvertToAndFromTheGrpcOneof) {
  auto decoded = DecodeManifests(testing::kFullSnapshotJson);
  ASSERT_TRUE(decoded.ok());
  v1alpha1::Object proto = ToProto(decoded->at(0).object);
  EXPECT_TRUE(proto.has_snapshot());
  auto back = FromProto(proto);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(KeyOf(*back), "team-a/snap-1");
  EXPECT_FALSE(FromProto(v1alpha1::Object()).ok());
}

TEST(KindTest, ParsesWhatUsersType) {
  for (const char* name :
       {"Sandbox", "sandbox", "sandboxes", "sbx", "SBX", "sandboxes.sandboxlet.dev"}) {
    auto kind = ParseKind(name);
    ASSERT_TRUE(kind.ok()) << name;
    EXPECT_EQ(*kind, Kind::kSandbox) << name;
  }
  for (const char* name : {"SandboxSnapshot", "sandboxsnapshots", "sbxsnap"}) {
    auto kind = ParseKind(name);
    ASSERT_TRUE(kind.ok()) << name;
    EXPECT_EQ(*kind, Kind::kSandboxSnapshot) << name;
  }
  auto bad = ParseKind("pods");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown kind \"pods\""));
}

}  // namespace
}  // namespace sandboxlet::api
