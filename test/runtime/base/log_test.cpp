#include "runtime/base/log.h"

#include <cstdio>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace sandboxlet {
namespace {

std::string Capture(log::Format format, void (*emit)()) {
  char* buf = nullptr;
  size_t len = 0;
  std::FILE* f = open_memstream(&buf, &len);
  log::Configure(log::Level::kInfo, format, f);
  emit();
  std::fclose(f);
  std::string out(buf, len);
  free(buf);
  log::Configure(log::Level::kInfo, log::Format::kLogfmt, stderr);
  return out;
}

TEST(Log, LogfmtQuotesValuesAndCarriesKey) {
  std::string out = Capture(log::Format::kLogfmt, [] {
    log::Info("vm started", {{"sandbox", "default/demo"}, {"pid", 42}, {"msg2", "a \"b\""}});
    log::Debug("hidden");
  });
  EXPECT_NE(
      out.find("level=info msg=\"vm started\" sandbox=default/demo pid=42 msg2=\"a \\\"b\\\"\""),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("hidden"), std::string::npos);
}

TEST(Log, JsonIsParseable) {
  std::string out = Capture(log::Format::kJson, [] {
    log::Warn("snapshot failed", {{"snapshot", "default/s1"}, {"error", "CH 500\n[\"x\"]"}});
  });
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["snapshot"], "default/s1");
  EXPECT_EQ(j["error"], "CH 500\n[\"x\"]");
}

TEST(Log, ParseFlags) {
  log::Level l;
  log::Format f;
  EXPECT_TRUE(log::ParseLevel("debug", &l));
  EXPECT_EQ(l, log::Level::kDebug);
  EXPECT_FALSE(log::ParseLevel("loud", &l));
  EXPECT_TRUE(log::ParseFormat("json", &f));
  EXPECT_FALSE(log::ParseFormat("xml", &f));
}

}  // namespace
}  // namespace sandboxlet
