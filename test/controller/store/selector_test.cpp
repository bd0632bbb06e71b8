#include "controller/store/selector.h"

#include <gtest/gtest.h>

#include "runtime/base/strings.h"

namespace sandboxlet::store {
namespace {

using json = nlohmann::json;

struct MatchCase {
  const char* selector;
  json labels;
  bool want;
};

TEST(LabelSelectorTest, MatchesKubernetesSemantics) {
  const MatchCase cases[] = {
      {"", json::object(), true},
      {"", {{"a", "b"}}, true},
      {"a=b", {{"a", "b"}}, true},
      {"a=b", {{"a", "c"}}, false},
      {"a=b", json::object(), false},
      {"a==b", {{"a", "b"}}, true},
      {"a!=b", {{"a", "b"}}, false},
      {"a!=b", {{"a", "c"}}, true},
      {"a!=b", json::object(), true},  // != also matches objects without the key
      {"e in (x,y)", {{"e", "x"}}, true},
      {"e in (x,y)", {{"e", "y"}}, true},
      {"e in (x,y)", {{"e", "z"}}, false},
      {"e in (x,y)", json::object(), false},
      {"f notin (z)", {{"f", "z"}}, false},
      {"f notin (z)", {{"f", "y"}}, true},
      {"f notin (z)", json::object(), true},
      {"g", {{"g", ""}}, true},
      {"g", json::object(), false},
      {"!h", json::object(), true},
      {"!h", {{"h", "1"}}, false},
      {"n>5", {{"n", "6"}}, true},
      {"n>5", {{"n", "5"}}, false},
      {"n>5", {{"n", "six"}}, false},
      {"n<5", {{"n", "-2"}}, true},
      {"a=", {{"a", ""}}, true},
      {"a=", {{"a", "x"}}, false},
      {"example.com/app=web", {{"example.com/app", "web"}}, true},
      {" a = b , e in ( x , y ) ", {{"a", "b"}, {"e", "y"}}, true},
      {"a=b,c!=d,e in (x,y),f notin (z),g,!h",
       {{"a", "b"}, {"c", "c"}, {"e", "x"}, {"f", "y"}, {"g", "1"}},
       true},
      {"a=b,c!=d,e in (x,y),f notin (z),g,!h",
       {{"a", "b"}, {"c", "c"}, {"e", "x"}, {"f", "y"}, {"g", "1"}, {"h", "1"}},
       false},
      {"a=b,c!=d,e in (x,y),f notin (z),g,!h",
       {{"a", "b"}, {"c", "d"}, {"e", "x"}, {"g", "1"}},
       false},
  };
  for (const MatchCase& c : cases) {
    auto sel = LabelSelector::Parse(c.selector);
    ASSERT_TRUE(sel.ok()) << c.selector << ": " << sel.status();
    EXPECT_EQ(sel->Matches(c.labels), c.want)
        << "selector \"" << c.selector << "\" labels " << c.labels.dump();
  }
}

TEST(LabelSelectorTest, RejectsMalformedSelectorsWithClearErrors) {
  struct ErrorCase {
    const char* selector;
    const char* message_part;
  };
  const ErrorCase cases[] = {
      {"a in (x", "expected ',' or ')'"},
      {"a in x", "expected '(' after 'in'"},
      {"a in ()", "value set of 'in' must not be empty"},
      {"a notin ()", "value set of 'notin' must not be empty"},
      {"a=b,", "expected a requirement after ','"},
      {",a", "expected a label key or '!'"},
      {"a b", "expected an operator"},
      {"a=b c", "expected ',' between requirements"},
      {"-a=b", "Invalid value: \"-a\""},
      {"bad_prefix!/a=b", "unexpected \"!\" after key"},
      {"UPPER.example/a=b", "prefix part must be a lowercase RFC 1123 subdomain"},
      {"a=b!", "expected ',' between requirements"},
      {"n>x", "must be an integer"},
      {"n<", "must be an integer"},
      {"!", "expected a label key after '!'"},
      {"a=(b)", "expected a value after '='"},
      {"a=-b", "a label value must be empty or at most 63 characters"},
      {"a in (x,-y)", "Invalid value: \"-y\""},
  };
  for (const ErrorCase& c : cases) {
    auto sel = LabelSelector::Parse(c.selector);
    ASSERT_FALSE(sel.ok()) << "\"" << c.selector << "\" parsed";
    EXPECT_EQ(sel.status().code(), absl::StatusCode::kInvalidArgument);
    std::string msg(sel.status().message());
    EXPECT_NE(msg.find(c.message_part), std::string::npos)
        << "selector \"" << c.selector << "\": " << msg;
    EXPECT_NE(msg.find(Cat("label selector \"", c.selector, "\"")), std::string::npos) << msg;
  }
  std::string long_value(64, 'v');
  EXPECT_FALSE(LabelSelector::Parse("a=" + long_value).ok());
}

TEST(LabelSelectorTest, ToStringParsesBackToTheSameSelector) {
  auto sel = LabelSelector::Parse(" a==b , c!=d,e in (x, y),f notin (z),g,!h,n>3");
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->ToString(), "a=b,c!=d,e in (x,y),f notin (z),g,!h,n>3");
  auto again = LabelSelector::Parse(sel->ToString());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToString(), sel->ToString());
}

TEST(LabelSelectorTest, MatchesObjectReadsMetadataLabels) {
  auto sel = LabelSelector::Parse("app=web");
  ASSERT_TRUE(sel.ok());
  EXPECT_TRUE(sel->MatchesObject({{"metadata", {{"labels", {{"app", "web"}}}}}}));
  EXPECT_FALSE(sel->MatchesObject({{"metadata", {{"name", "x"}}}}));
  EXPECT_FALSE(sel->MatchesObject(json::object()));
}

TEST(FieldSelectorTest, MatchesDottedPaths) {
  json obj = {{"metadata", {{"name", "a,b"}, {"namespace", "default"}}},
              {"spec", {{"nodeName", "n1"}, {"vcpus", 2}}}};
  struct Case {
    const char* selector;
    bool want;
  };
  const Case cases[] = {
      {"", true},
      {"metadata.namespace=default", true},
      {"metadata.namespace==other", false},
      {"metadata.name=a\\,b", true},
      {"spec.nodeName!=n1", false},
      {"spec.nodeName!=n2,metadata.namespace=default", true},
      {"spec.vcpus=2", true},
      {"spec.missing=", true},
      {"spec.missing=x", false},
  };
  for (const Case& c : cases) {
    auto sel = FieldSelector::Parse(c.selector);
    ASSERT_TRUE(sel.ok()) << c.selector << ": " << sel.status();
    EXPECT_EQ(sel->Matches(obj), c.want) << c.selector;
  }
}

TEST(FieldSelectorTest, RejectsMalformedSelectors) {
  for (const char* bad : {"metadata.name", "=x", "a..b=c", "a!x", "a=b\\"}) {
    auto sel = FieldSelector::Parse(bad);
    ASSERT_FALSE(sel.ok()) << bad;
    EXPECT_EQ(sel.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(sel.status().message()).find("field selector"), std::string::npos);
  }
}

TEST(LabelValidationTest, KeysAndValuesFollowKubernetesRules) {
  EXPECT_TRUE(ValidateLabelKey("app", "metadata.labels").ok());
  EXPECT_TRUE(ValidateLabelKey("sandboxlet.dev/pool", "metadata.labels").ok());
  EXPECT_TRUE(ValidateLabelKey("A_b.c-D", "metadata.labels").ok());
  EXPECT_FALSE(ValidateLabelKey("", "metadata.labels").ok());
  EXPECT_FALSE(ValidateLabelKey("/a", "metadata.labels").ok());
  EXPECT_FALSE(ValidateLabelKey(std::string(64, 'a'), "metadata.labels").ok());
  absl::Status st = ValidateLabelValue("bad value", "metadata.labels[app]");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("metadata.labels[app]: Invalid value: \"bad value\""),
            std::string::npos);
  EXPECT_TRUE(ValidateLabelValue("", "v").ok());
}

}  // namespace
}  // namespace sandboxlet::store
