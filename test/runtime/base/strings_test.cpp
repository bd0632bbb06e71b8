#include "runtime/base/strings.h"

#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace sandboxlet {
namespace {

TEST(Cat, MixesTypes) {
  std::string_view sv = "ns";
  absl::Status st = absl::InternalError("boom");
  EXPECT_EQ(Cat(sv, "/", std::string("x"), ": ", 42, " ", -1, " ", true, " ", st.message()),
            "ns/x: 42 -1 true boom");
}

TEST(Split, KeepsEmpty) {
  auto parts = Split("a,,b", ',');
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1], "");
  EXPECT_EQ(Join(parts, "|"), "a||b");
  EXPECT_EQ(Trim("  x \n"), "x");
  EXPECT_TRUE(StartsWith("cloud-hypervisor v48", "cloud-"));
  EXPECT_TRUE(EndsWith("ch-sim-v48", "-v48"));
}

}  // namespace
}  // namespace sandboxlet
