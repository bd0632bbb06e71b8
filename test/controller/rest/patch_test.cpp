#include "controller/rest/patch.h"

#include <gtest/gtest.h>

namespace sandboxlet::rest {
namespace {

using nlohmann::json;

// RFC 7386 §3's examples, as a table: target, patch, result.
TEST(MergePatchTest, FollowsRfc7386Examples) {
  struct Case {
    const char* target;
    const char* patch;
    const char* result;
  };
  const Case cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(MergePatch(json::parse(c.target), json::parse(c.patch)), json::parse(c.result))
        << c.target << " + " << c.patch;
  }
}

TEST(MergePatchTest, RemovesALabelAndKeepsTheOthers) {
  json sandbox = {{"metadata", {{"labels", {{"app", "demo"}, {"tier", "web"}}}}},
                  {"spec", {{"vcpus", 2}}}};
  json out = MergePatch(sandbox, {{"metadata", {{"labels", {{"tier", nullptr}}}}}});
  EXPECT_EQ(out["metadata"]["labels"], json({{"app", "demo"}}));
  EXPECT_EQ(out["spec"]["vcpus"], 2);
}

json Doc() { return json::parse(R"({"spec":{"vcpus":2,"env":[{"name":"A"},{"name":"B"}]}})"); }

TEST(JsonPatchTest, AddReplaceRemove) {
  absl::StatusOr<json> out = JsonPatch(Doc(), json::parse(R"([
    {"op":"add","path":"/spec/template","value":"ubuntu"},
    {"op":"replace","path":"/spec/vcpus","value":4},
    {"op":"remove","path":"/spec/env/0"},
    {"op":"add","path":"/spec/env/-","value":{"name":"C"}},
    {"op":"add","path":"/spec/env/0","value":{"name":"Z"}}
  ])"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["template"], "ubuntu");
  EXPECT_EQ((*out)["spec"]["vcpus"], 4);
  EXPECT_EQ((*out)["spec"]["env"], json::parse(R"([{"name":"Z"},{"name":"B"},{"name":"C"}])"));
}

TEST(JsonPatchTest, TestOperationGuardsTheRest) {
  absl::StatusOr<json> ok = JsonPatch(Doc(), json::parse(R"([
    {"op":"test","path":"/spec/vcpus","value":2},
    {"op":"replace","path":"/spec/vcpus","value":3}])"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)["spec"]["vcpus"], 3);

  absl::StatusOr<json> failed = JsonPatch(Doc(), json::parse(R"([
    {"op":"replace","path":"/spec/vcpus","value":3},
    {"op":"test","path":"/spec/vcpus","value":2}])"));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(failed.status().message().find("op 1 (test /spec/vcpus)"), std::string::npos)
      << failed.status();
  EXPECT_NE(failed.status().message().find("value is 3, not 2"), std::string::npos);
}

TEST(JsonPatchTest, MoveAndCopy) {
  absl::StatusOr<json> out = JsonPatch(Doc(), json::parse(R"([
    {"op":"copy","from":"/spec/env/1","path":"/spec/first"},
    {"op":"move","from":"/spec/vcpus","path":"/spec/cpus"}])"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["spec"]["first"], json({{"name", "B"}}));
  EXPECT_EQ((*out)["spec"]["env"].size(), 2u);
  EXPECT_EQ((*out)["spec"]["cpus"], 2);
  EXPECT_FALSE((*out)["spec"].contains("vcpus"));
}

TEST(JsonPatchTest, EscapedPointerTokens) {
  json doc = {{"metadata", {{"labels", {{"sandboxlet.dev/role", "x"}, {"a~b", "y"}}}}}};
  absl::StatusOr<json> out = JsonPatch(doc, json::parse(R"([
    {"op":"remove","path":"/metadata/labels/sandboxlet.dev~1role"},
    {"op":"replace","path":"/metadata/labels/a~0b","value":"z"}])"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)["metadata"]["labels"], json({{"a~b", "z"}}));
}

TEST(JsonPatchTest, ErrorsNameTheOperationAndLeaveTheDocument) {
  struct Case {
    const char* patch;
    const char* expect;
  };
  const Case cases[] = {
      {R"([{"op":"remove","path":"/spec/missing"}])", "no member \"missing\""},
      {R"([{"op":"replace","path":"/spec/env/5","value":1}])", "out of range"},
      {R"([{"op":"add","path":"/spec/env/01","value":1}])", "not an array index"},
      {R"([{"op":"add","path":"/nope/deeper","value":1}])", "no member \"nope\""},
      {R"([{"op":"move","from":"/spec","path":"/spec/inner"}])", "into one of its children"},
      {R"([{"op":"frobnicate","path":"/spec"}])", "unknown operation"},
      {R"([{"op":"add","path":"/spec/x"}])", "missing member \"value\""},
      {R"([{"op":"copy","path":"/spec/x"}])", "missing string member \"from\""},
      {R"([{"op":"add","path":"spec","value":1}])", "must be empty or start with '/'"},
      {R"([{"op":"add","path":"/spec/~2","value":1}])", "'~' must be followed by 0 or 1"},
      {R"({"op":"add"})", "must be an array"},
  };
  for (const Case& c : cases) {
    json doc = Doc();
    absl::StatusOr<json> out = JsonPatch(doc, json::parse(c.patch));
    ASSERT_FALSE(out.ok()) << c.patch;
    EXPECT_NE(out.status().message().find(c.expect), std::string::npos)
        << c.patch << " → " << out.status();
    EXPECT_EQ(doc, Doc());
  }
}

TEST(JsonPatchTest, ReplacingTheRootReplacesTheDocument) {
  absl::StatusOr<json> out =
      JsonPatch(Doc(), json::parse(R"([{"op":"add","path":"","value":[1]}])"));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, json::array({1}));
}

}  // namespace
}  // namespace sandboxlet::rest
