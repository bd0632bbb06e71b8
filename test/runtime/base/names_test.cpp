#include "runtime/base/names.h"

#include <gtest/gtest.h>

namespace sandboxlet {
namespace {

TEST(Dns1123, Labels) {
  EXPECT_TRUE(IsDns1123Label("demo"));
  EXPECT_TRUE(IsDns1123Label("a-1"));
  EXPECT_TRUE(IsDns1123Label(std::string(63, 'a')));
  EXPECT_FALSE(IsDns1123Label(std::string(64, 'a')));
  EXPECT_FALSE(IsDns1123Label(""));
  EXPECT_FALSE(IsDns1123Label("Demo"));
  EXPECT_FALSE(IsDns1123Label("-a"));
  EXPECT_FALSE(IsDns1123Label("a-"));
  EXPECT_FALSE(IsDns1123Label("a.b"));
  EXPECT_FALSE(IsDns1123Label("../etc"));
}

TEST(Dns1123, Subdomains) {
  EXPECT_TRUE(IsDns1123Subdomain("a.b-c.d"));
  EXPECT_FALSE(IsDns1123Subdomain("a..b"));
  EXPECT_FALSE(IsDns1123Subdomain(".a"));
  EXPECT_FALSE(IsDns1123Subdomain("a/b"));
}

TEST(PathComponent, RefusesEscapes) {
  EXPECT_TRUE(ValidatePathComponent("snap-1", "snapshot").ok());
  for (const char* bad : {"", ".", "..", "../x", "a/b", "a\nb"}) {
    auto st = ValidatePathComponent(bad, "snapshot");
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(st.message()).find("snapshot"), std::string::npos);
  }
  auto joined = JoinUnder("/state/snapshots/", "x", "snapshot");
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(*joined, "/state/snapshots/x");
  EXPECT_FALSE(JoinUnder("/state", "..", "snapshot").ok());
}

}  // namespace
}  // namespace sandboxlet
