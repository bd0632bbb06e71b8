#include "api/openapi.h"

#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/timestamp.pb.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "test/api/fixtures.h"

namespace sandboxlet::api {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(OpenApiTest, SandboxSpecHasEveryFieldWithTypeRangeAndEnum) {
  nlohmann::json schema = OpenApiSchema(Kind::kSandbox);
  EXPECT_EQ(schema["type"], "object");
  EXPECT_EQ(schema["required"], nlohmann::json({"spec"}));
  EXPECT_EQ(schema["properties"]["metadata"], nlohmann::json({{"type", "object"}}));
  const nlohmann::json& spec = schema["properties"]["spec"]["properties"];
  std::vector<std::string> names;
  for (const auto& [name, _] : spec.items()) names.push_back(name);
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("template", "vcpus", "memoryMiB", "diskMiB",
                                                     "power", "restoreFrom", "restartPolicy",
                                                     "ttlSeconds", "network", "env", "nodeName"));
  EXPECT_EQ(spec["template"]["type"], "string");
  EXPECT_EQ(spec["vcpus"]["type"], "integer");
  EXPECT_EQ(spec["vcpus"]["format"], "int32");
  EXPECT_EQ(spec["vcpus"]["minimum"], 1);
  EXPECT_EQ(spec["vcpus"]["maximum"], 256);
  EXPECT_EQ(spec["memoryMiB"]["format"], "int64");
  EXPECT_EQ(spec["memoryMiB"]["minimum"], 64);
  EXPECT_EQ(spec["memoryMiB"]["maximum"], 1048576);
  EXPECT_EQ(spec["diskMiB"]["minimum"], 0);
  EXPECT_FALSE(spec["diskMiB"].contains("maximum"));
  EXPECT_EQ(spec["ttlSeconds"]["minimum"], 0);
  EXPECT_EQ(spec["power"]["type"], "string");
  EXPECT_EQ(spec["power"]["enum"], nlohmann::json({"Running", "Paused", "Hibernated", "Stopped"}));
  EXPECT_EQ(spec["restartPolicy"]["enum"], nlohmann::json({"Always", "OnFailure", "Never"}));
  EXPECT_EQ(spec["network"]["properties"]["enabled"]["type"], "boolean");
  EXPECT_EQ(spec["network"]["properties"]["egress"]["type"], "boolean");
  EXPECT_EQ(spec["env"]["type"], "array");
  EXPECT_EQ(spec["env"]["items"]["required"], nlohmann::json({"name"}));
  EXPECT_EQ(spec["env"]["items"]["properties"]["value"]["type"], "string");
}

TEST(OpenApiTest, StatusEnumsAndTimestamps) {
  nlohmann::json sandbox = OpenApiSchema(Kind::kSandbox)["properties"]["status"]["properties"];
  EXPECT_EQ(sandbox["phase"]["enum"],
            nlohmann::json({"Pending", "Creating", "Running", "Paused", "Hibernating", "Hibernated",
                            "Stopped", "Failed", "Terminating"}));
  EXPECT_EQ(sandbox["startedAt"], (nlohmann::json{{"type", "string"},
                                                  {"format", "date-time"},
                                                  {"description", "When the VM last started."}}));
  const nlohmann::json& condition = sandbox["conditions"]["items"];
  EXPECT_EQ(condition["properties"]["status"]["enum"],
            nlohmann::json({"True", "False", "Unknown"}));
  EXPECT_EQ(condition["required"], nlohmann::json({"type", "status"}));
  nlohmann::json snap = OpenApiSchema(Kind::kSandboxSnapshot)["properties"];
  EXPECT_EQ(snap["status"]["properties"]["phase"]["enum"],
            nlohmann::json({"Pending", "InProgress", "Ready", "Failed"}));
  EXPECT_EQ(snap["status"]["properties"]["sizeBytes"]["format"], "int64");
  EXPECT_EQ(snap["spec"]["required"], nlohmann::json({"sandboxName"}));
}

TEST(OpenApiTest, DescriptionsComeFromProtoComments) {
  nlohmann::json schema = OpenApiSchema(Kind::kSandbox);
  EXPECT_EQ(schema["description"], "A microVM run by sandboxlet on a node.");
  EXPECT_EQ(schema["properties"]["spec"]["properties"]["template"]["description"],
            "Base image on the node the root file system is cloned from. Required unless "
            "restoreFrom is set.");
  EXPECT_THAT(
      OpenApiSchema(
          Kind::kSandboxSnapshot)["properties"]["status"]["properties"]["sizeBytes"]["description"]
          .get<std::string>(),
      HasSubstr("allocated blocks"));
}

// The schema for one field as the descriptor says it should be typed.
void ExpectInStep(const Descriptor& type, const nlohmann::json& schema, const std::string& path,
                  bool crd_root);

void ExpectValueInStep(const FieldDescriptor& f, const nlohmann::json& s, const std::string& path) {
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (f.message_type() == google::protobuf::Timestamp::descriptor()) {
        EXPECT_EQ(s["type"], "string") << path;
        EXPECT_EQ(s["format"], "date-time") << path;
      } else {
        ExpectInStep(*f.message_type(), s, path, false);
      }
      return;
    case FieldDescriptor::CPPTYPE_STRING:
      EXPECT_EQ(s["type"], "string") << path;
      return;
    case FieldDescriptor::CPPTYPE_BOOL:
      EXPECT_EQ(s["type"], "boolean") << path;
      return;
    case FieldDescriptor::CPPTYPE_ENUM: {
      EXPECT_EQ(s["type"], "string") << path;
      nlohmann::json want = nlohmann::json::array();
      for (int i = 1; i < f.enum_type()->value_count(); ++i) {
        want.push_back(f.enum_type()->value(i)->name());
      }
      EXPECT_EQ(s["enum"], want) << path;
      return;
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
      EXPECT_EQ(s["type"], "integer") << path;
      EXPECT_EQ(s["format"], f.cpp_type() == FieldDescriptor::CPPTYPE_INT32 ? "int32" : "int64")
          << path;
      return;
    default:
      ADD_FAILURE() << path << ": field type without a schema mapping";
  }
}

void ExpectInStep(const Descriptor& type, const nlohmann::json& schema, const std::string& path,
                  bool crd_root) {
  ASSERT_EQ(schema["type"], "object") << path;
  const nlohmann::json& props = schema["properties"];
  EXPECT_EQ(props.size(), static_cast<size_t>(type.field_count())) << path << ": extra properties";
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& f = *type.field(i);
    std::string child = path + "." + f.json_name();
    ASSERT_TRUE(props.contains(f.json_name())) << child << " missing from the schema";
    const nlohmann::json& s = props[f.json_name()];
    if (crd_root && f.json_name() == "metadata") continue;
    if (f.is_map()) {
      EXPECT_EQ(s["type"], "object") << child;
      ExpectValueInStep(*f.message_type()->map_value(), s["additionalProperties"], child + "[*]");
    } else if (f.is_repeated()) {
      EXPECT_EQ(s["type"], "array") << child;
      ExpectValueInStep(f, s["items"], child + "[*]");
    } else {
      ExpectValueInStep(f, s, child);
    }
  }
}

TEST(OpenApiTest, SchemaStaysInStepWithTheDescriptors) {
  ExpectInStep(DescriptorOf(Kind::kSandbox), OpenApiSchema(Kind::kSandbox), "Sandbox", true);
  ExpectInStep(DescriptorOf(Kind::kSandboxSnapshot), OpenApiSchema(Kind::kSandboxSnapshot),
               "SandboxSnapshot", true);
  ExpectInStep(*v1alpha1::ObjectMeta::descriptor(),
               OpenApiSchemaOf(*v1alpha1::ObjectMeta::descriptor()), "ObjectMeta", false);
  ExpectInStep(*v1alpha1::SandboxList::descriptor(),
               OpenApiSchemaOf(*v1alpha1::SandboxList::descriptor()), "SandboxList", false);
}

// Every node of a structural schema has a type.
void ExpectStructural(const nlohmann::json& s, const std::string& path) {
  ASSERT_TRUE(s.contains("type")) << path;
  if (s.contains("properties")) {
    for (const auto& [name, child] : s["properties"].items())
      ExpectStructural(child, path + "." + name);
  }
  if (s.contains("items")) ExpectStructural(s["items"], path + "[*]");
  if (s.contains("additionalProperties")) ExpectStructural(s["additionalProperties"], path + "[*]");
}

TEST(OpenApiTest, SchemasAreStructural) {
  ExpectStructural(OpenApiSchema(Kind::kSandbox), "Sandbox");
  ExpectStructural(OpenApiSchema(Kind::kSandboxSnapshot), "SandboxSnapshot");
}

// A small validator for the subset of OpenAPI the schema uses; returns the problems it finds.
void Check(const nlohmann::json& v, const nlohmann::json& s, const std::string& path,
           std::vector<std::string>* problems) {
  const std::string type = s["type"];
  auto bad = [&](const std::string& why) { problems->push_back(path + ": " + why); };
  if (type == "object") {
    if (!v.is_object()) return bad("not an object");
    for (const auto& [k, item] : v.items()) {
      if (s.contains("properties")) {
        if (!s["properties"].contains(k)) {
          bad("undeclared property " + k);
          continue;
        }
        Check(item, s["properties"][k], path + "." + k, problems);
      } else if (s.contains("additionalProperties")) {
        Check(item, s["additionalProperties"], path + "[" + k + "]", problems);
      }
    }
  } else if (type == "array") {
    if (!v.is_array()) return bad("not an array");
    for (size_t i = 0; i < v.size(); ++i) {
      Check(v[i], s["items"], path + "[" + std::to_string(i) + "]", problems);
    }
  } else if (type == "integer") {
    if (!v.is_number_integer()) return bad("not an integer");
    if (s.contains("minimum") && v.get<int64_t>() < s["minimum"].get<int64_t>()) bad("< minimum");
    if (s.contains("maximum") && v.get<int64_t>() > s["maximum"].get<int64_t>()) bad("> maximum");
  } else if (type == "string") {
    if (!v.is_string()) return bad("not a string");
    if (s.contains("enum") && std::find(s["enum"].begin(), s["enum"].end(), v) == s["enum"].end()) {
      bad("not in enum");
    }
  } else if (type == "boolean") {
    if (!v.is_boolean()) bad("not a boolean");
  }
}

TEST(OpenApiTest, EncodedObjectsConformToTheSchema) {
  auto sandbox = DecodeManifests(testing::kFullSandboxYaml);
  auto snap = DecodeManifests(testing::kFullSnapshotJson);
  ASSERT_TRUE(sandbox.ok() && snap.ok());
  for (const Decoded& d : {sandbox->at(0), snap->at(0)}) {
    auto json = ToJson(d.object);
    ASSERT_TRUE(json.ok());
    std::vector<std::string> problems;
    Check(*json, OpenApiSchema(KindOf(d.object)), std::string(KindName(KindOf(d.object))),
          &problems);
    Check((*json)["metadata"], OpenApiSchemaOf(*v1alpha1::ObjectMeta::descriptor()), "metadata",
          &problems);
    EXPECT_THAT(problems, IsEmpty());
  }
}

TEST(OpenApiTest, CustomResourceDefinitionNamesTheKind) {
  nlohmann::json crd = CustomResourceDefinition(Kind::kSandbox);
  EXPECT_EQ(crd["apiVersion"], "apiextensions.k8s.io/v1");
  EXPECT_EQ(crd["metadata"]["name"], "sandboxes.sandboxlet.dev");
  EXPECT_EQ(crd["spec"]["group"], "sandboxlet.dev");
  EXPECT_EQ(crd["spec"]["scope"], "Namespaced");
  EXPECT_EQ(crd["spec"]["names"]["kind"], "Sandbox");
  EXPECT_EQ(crd["spec"]["names"]["shortNames"], nlohmann::json({"sbx"}));
  const nlohmann::json& version = crd["spec"]["versions"][0];
  EXPECT_EQ(version["name"], "v1alpha1");
  EXPECT_EQ(version["schema"]["openAPIV3Schema"], OpenApiSchema(Kind::kSandbox));
  EXPECT_EQ(version["subresources"]["status"], nlohmann::json::object());
  EXPECT_EQ(CustomResourceDefinition(Kind::kSandboxSnapshot)["metadata"]["name"],
            "sandboxsnapshots.sandboxlet.dev");
}

}  // namespace
}  // namespace sandboxlet::api
