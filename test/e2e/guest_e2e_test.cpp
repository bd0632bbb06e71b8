// End-to-end tests of guest agent readiness through the built `sandboxlet` daemon with
// --guest-agent=true: the CH simulator serves a guest agent at the sandbox's guest address inside
// its network namespace, which the daemon reaches through the real DNAT path. A sandbox is Ready
// only once its agent answered; pausing it takes Ready away and resuming gives it back; a sandbox
// whose agent never answers reports GuestReady=False (AgentTimeout) without disturbing the others.
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/e2e/daemon_fixture.h"

namespace sandboxlet {
namespace {

using namespace e2e;  // NOLINT: the fixture's helpers

std::string NetworkSandboxDoc(const std::string& name, const std::string& power) {
  return Cat("apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: ", name,
             "\nspec:\n  template: base\n  vcpus: 1\n  memoryMiB: 64\n  power: ", power,
             "\n  network:\n    enabled: true\n");
}

// The condition `type` of a Sandbox read with `ctl get -o json`; null if absent.
nlohmann::json Condition(const nlohmann::json& sbx, const std::string& type) {
  if (!sbx.is_object() || !sbx.contains("status") || !sbx["status"].contains("conditions")) {
    return nullptr;
  }
  for (const auto& c : sbx["status"]["conditions"]) {
    if (c.value("type", "") == type) return c;
  }
  return nullptr;
}

bool ConditionIs(const nlohmann::json& sbx, const std::string& type, const std::string& status,
                 const std::string& reason = "") {
  nlohmann::json c = Condition(sbx, type);
  return c.is_object() && c.value("status", "") == status &&
         (reason.empty() || c.value("reason", "") == reason);
}

std::string AgentVersion(const nlohmann::json& sbx) {
  if (!sbx.is_object() || !sbx.contains("status") || !sbx["status"].contains("guest")) return "";
  return sbx["status"]["guest"].value("agentVersion", "");
}

class GuestE2eTest : public DaemonE2eTest {
 protected:
  void SetUp() override {
    DaemonE2eTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The VMM binary is a wrapper: while the marker file exists, a newly started VM's guest agent
    // never comes up (the simulator's `agent-never-ready` rule in <api-socket>.faults, written
    // before the simulator starts so no request can slip in before it).
    never_ready_marker_ = dir_ + "/agents-never-ready";
    std::string wrapper = dir_ + "/ch-sim-agent";
    ASSERT_TRUE(WriteFileAtomic(
                    wrapper,
                    Cat("#!/bin/sh\n", "if [ -e ", never_ready_marker_, " ]; then\n", "  prev=''\n",
                        "  for a in \"$@\"; do\n", "    if [ \"$prev\" = --api-socket ]; then\n",
                        "      s=${a#path=}; s=${s%%,*}\n",
                        "      echo agent-never-ready > \"$s.faults\"\n", "    fi\n",
                        "    prev=$a\n", "  done\n", "fi\n", "exec ", CHSIM_BIN, " \"$@\"\n"),
                    0755)
                    .ok());
    vmm_bin_ = wrapper;
    extra_args_ = {"--guest-agent=true"};
  }

  std::string never_ready_marker_;
};

TEST_F(GuestE2eTest, ReadyFollowsTheGuestAgentThroughPauseAndResume) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(Apply(NetworkSandboxDoc("guest-a", "Running")));
  nlohmann::json a = WaitObject("sandboxes", "guest-a", [](const nlohmann::json& o) {
    return ConditionIs(o, "Ready", "True");
  });
  ASSERT_TRUE(ConditionIs(a, "Ready", "True"));
  EXPECT_TRUE(ConditionIs(a, "GuestReady", "True")) << a.dump(2);
  EXPECT_EQ(AgentVersion(a), "chsim-agent/1") << a.dump(2);

  ASSERT_NO_FATAL_FAILURE(Apply(NetworkSandboxDoc("guest-a", "Paused")));
  a = WaitObject("sandboxes", "guest-a", [](const nlohmann::json& o) {
    return o.is_object() && o["status"].value("phase", "") == "Paused" &&
           ConditionIs(o, "Ready", "False");
  });
  EXPECT_TRUE(ConditionIs(a, "Ready", "False")) << a.dump(2);

  ASSERT_NO_FATAL_FAILURE(Apply(NetworkSandboxDoc("guest-a", "Running")));
  a = WaitObject("sandboxes", "guest-a", [](const nlohmann::json& o) {
    return o.is_object() && o["status"].value("phase", "") == "Running" &&
           ConditionIs(o, "Ready", "True");
  });
  EXPECT_TRUE(ConditionIs(a, "Ready", "True")) << a.dump(2);
  EXPECT_TRUE(ConditionIs(a, "GuestReady", "True")) << a.dump(2);

  // A second sandbox whose agent never answers times out (default ready timeout 30 s; there is
  // no flag for it) while the first stays Ready.
  ASSERT_TRUE(WriteFileAtomic(never_ready_marker_, "").ok());
  ASSERT_NO_FATAL_FAILURE(Apply(NetworkSandboxDoc("guest-b", "Running")));
  nlohmann::json b = WaitObject(
      "sandboxes", "guest-b",
      [](const nlohmann::json& o) { return ConditionIs(o, "GuestReady", "False", "AgentTimeout"); },
      std::chrono::seconds(75));
  EXPECT_TRUE(ConditionIs(b, "GuestReady", "False", "AgentTimeout")) << b.dump(2);
  EXPECT_FALSE(ConditionIs(b, "Ready", "True")) << b.dump(2);
  EXPECT_EQ(b["status"].value("phase", ""), "Running");
  a = GetJson("sandboxes", "guest-a");
  EXPECT_TRUE(ConditionIs(a, "Ready", "True")) << a.dump(2);
  EXPECT_TRUE(ConditionIs(a, "GuestReady", "True")) << a.dump(2);

  ASSERT_EQ(Ctl({"delete", "sandboxes", "guest-a", "guest-b"}).exit_code, 0);
  ASSERT_TRUE(WaitNoSandboxes());
  ExpectNothingLeft();
  EXPECT_EQ(StopDaemon(SIGTERM), 0);
}

}  // namespace
}  // namespace sandboxlet
