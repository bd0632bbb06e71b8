// The Sandbox reconciler with guest agents: Ready waits for the agent's answer and its /init,
// polling on the fake clock; timeouts, pause/resume, restores and nodes without agents.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "controller/reconcile/sandbox_reconciler.h"
#include "test/controller/reconcile/fixture.h"

namespace sandboxlet::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const json kBase = {{"template", "base"}, {"vcpus", 2}, {"memoryMiB", 256}};
constexpr milliseconds kPoll{500};
constexpr seconds kReadyTimeout{5};
constexpr seconds kSlowPoll{10};

bool Contains(const json& value, const std::string& part) {
  return value.is_string() && value.get<std::string>().find(part) != std::string::npos;
}

class SandboxReconcilerGuestTest : public ReconcileFixture {
 protected:
  void SetUp() override {
    ReconcileFixture::SetUp();
    runtime::GuestAgentOptions agent;
    agent.enabled = true;
    agent.poll_interval = kPoll;
    agent.ready_timeout = kReadyTimeout;
    runtime_.SetGuestAgentSettings(agent);
    RestartReconciler();
  }
  // A new reconciler on the same store and runtime, as after a sandboxlet restart.
  void RestartReconciler() {
    sandboxes_ = std::make_unique<controller::SandboxReconciler>(
        *store_, runtime_, *events_, locks_,
        controller::SandboxReconcilerOptions{
            .clock = &clock_, .guest = &runtime_, .guest_slow_poll_interval = kSlowPoll});
  }
  // Starts `name` with an agent that answers; returns its uid.
  std::string StartReady(const std::string& name, const json& spec = kBase) {
    CreateSandbox(name, spec);
    auto r = Settle(name);
    EXPECT_TRUE(r.error.ok()) << r.error;
    EXPECT_EQ(Condition(name, "Ready")["status"], "True") << Status(name).dump();
    return Uid("sandboxes", name);
  }
};

TEST_F(SandboxReconcilerGuestTest, ReadyOnlyAfterTheAgentAnswers) {
  runtime_.SetGuestAnswers(false);
  CreateSandbox("g", kBase);
  auto r = Settle("g");
  ASSERT_TRUE(r.error.ok()) << r.error;
  const std::string uid = Uid("sandboxes", "g");
  // The VM runs, but nobody inside has answered yet: poll again after poll_interval.
  EXPECT_EQ(Phase("g"), "Running");
  EXPECT_EQ(Condition("g", "VMMRunning")["status"], "True");
  EXPECT_EQ(Condition("g", "Ready")["status"], "False");
  EXPECT_EQ(Condition("g", "Ready")["reason"], "GuestNotReady");
  EXPECT_EQ(Condition("g", "GuestReady")["status"], "False");
  EXPECT_EQ(Condition("g", "GuestReady")["reason"], "WaitingForAgent");
  EXPECT_TRUE(Contains(Condition("g", "GuestReady")["message"], "Connection refused"))
      << Condition("g", "GuestReady");
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, kPoll);
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 1);
  EXPECT_TRUE(runtime_.GuestInits(uid).empty());

  // A pass woken before the interval (its own status write, a resync) does not ask again.
  clock_.Advance(milliseconds(200));
  r = sandboxes_->Reconcile("default", "g");
  ASSERT_TRUE(r.error.ok());
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, milliseconds(300));
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 1);

  clock_.Advance(milliseconds(300));
  r = sandboxes_->Reconcile("default", "g");
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 2);
  EXPECT_EQ(Condition("g", "Ready")["status"], "False");

  runtime_.SetGuestAnswers(true);
  runtime_.SetGuestVersion("1.4.2");
  clock_.Advance(kPoll);
  r = sandboxes_->Reconcile("default", "g");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(Condition("g", "Ready")["status"], "True");
  EXPECT_EQ(Condition("g", "Ready")["reason"], "Running");
  EXPECT_EQ(Condition("g", "GuestReady")["status"], "True");
  EXPECT_EQ(Condition("g", "GuestReady")["reason"], "AgentReady");
  EXPECT_EQ(Condition("g", "GuestInitialized")["status"], "True");
  EXPECT_EQ(Status("g")["guest"]["agentVersion"], "1.4.2");
  EXPECT_FALSE(Event("GuestReady").is_null());

  // Ready stays without asking the agent again on later passes.
  clock_.Advance(seconds(60));
  r = Settle("g");
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 3);
}

TEST_F(SandboxReconcilerGuestTest, InitCarriesTheIdentityAndEnvOncePerStart) {
  json spec = kBase;
  spec["env"] = json::array({{{"name", "MODE"}, {"value", "batch"}}, {{"name", "EMPTY"}}});
  const std::string uid = StartReady("id", spec);
  std::vector<guest::InitRequest> inits = runtime_.GuestInits(uid);
  ASSERT_EQ(inits.size(), 1u);
  EXPECT_EQ(inits[0].sandbox_id, uid);
  EXPECT_EQ(inits[0].sandbox_namespace, "default");
  EXPECT_EQ(inits[0].name, "id");
  EXPECT_EQ(inits[0].template_name, "base");
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(inits[0].env, (Env{{"MODE", "batch"}, {"EMPTY", ""}}));
  EXPECT_EQ(inits[0].wall_clock, clock_.WallNow());
  EXPECT_EQ(Condition("id", "GuestInitialized")["status"], "True");

  // Further passes and a sandboxlet restart (memory lost, VM adopted) do not init again.
  Settle("id");
  RestartReconciler();
  clock_.Advance(seconds(30));
  auto r = Settle("id");
  EXPECT_TRUE(r.error.ok());
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 1u);
  EXPECT_EQ(Condition("id", "Ready")["status"], "True");

  // A new VM start is a new guest: it is initialised again.
  PatchSpec("id", {{"power", "Stopped"}});
  ASSERT_TRUE(Settle("id").error.ok());
  EXPECT_EQ(Condition("id", "GuestReady")["reason"], "VMNotRunning");
  EXPECT_EQ(Condition("id", "GuestInitialized")["status"], "False");
  EXPECT_FALSE(Status("id").contains("guest"));
  PatchSpec("id", {{"power", "Running"}});
  ASSERT_TRUE(Settle("id").error.ok());
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 2u);
  EXPECT_EQ(Condition("id", "Ready")["status"], "True");
}

TEST_F(SandboxReconcilerGuestTest, ARestoredSandboxIsInitializedWithItsOwnIdentity) {
  const std::string src_uid = StartReady("src");
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  ASSERT_EQ(Snapshot("snap")["status"]["phase"], "Ready");

  CreateSandbox("copy", {{"restoreFrom", "snap"}, {"env", {{{"name", "ROLE"}, {"value", "b"}}}}});
  ASSERT_TRUE(Settle("copy").error.ok());
  const std::string uid = Uid("sandboxes", "copy");
  EXPECT_EQ(Condition("copy", "Ready")["status"], "True");
  std::vector<guest::InitRequest> inits = runtime_.GuestInits(uid);
  ASSERT_EQ(inits.size(), 1u);
  // The restored guest still holds src's identity in memory; /init gives it the new one.
  EXPECT_EQ(inits[0].sandbox_id, uid);
  EXPECT_NE(inits[0].sandbox_id, src_uid);
  EXPECT_EQ(inits[0].name, "copy");
  EXPECT_EQ(inits[0].template_name, "base");  // from the snapshot: the spec leaves it out
  ASSERT_EQ(inits[0].env.size(), 1u);
  EXPECT_EQ(inits[0].env[0].first, "ROLE");
  EXPECT_EQ(runtime_.GuestInits(src_uid).size(), 1u);

  // Waking from hibernation is a restore too.
  PatchSpec("copy", {{"power", "Hibernated"}});
  ASSERT_TRUE(Settle("copy").error.ok());
  ASSERT_EQ(Phase("copy"), "Hibernated");
  PatchSpec("copy", {{"power", "Running"}});
  ASSERT_TRUE(Settle("copy").error.ok());
  EXPECT_EQ(runtime_.CallCount("RestoreFrom"), 2);
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 2u);
  EXPECT_EQ(Condition("copy", "Ready")["status"], "True");
}

TEST_F(SandboxReconcilerGuestTest, AnAgentThatNeverAnswersTimesOutAndIsStillPolledSlowly) {
  runtime_.SetGuestAnswers(false);
  CreateSandbox("mute", kBase);
  auto r = Settle("mute");
  const std::string uid = Uid("sandboxes", "mute");
  // Poll every interval until ready_timeout, never faster.
  Clock::Duration waited{};
  while (Condition("mute", "GuestReady")["reason"] != "AgentTimeout" && waited < seconds(60)) {
    ASSERT_TRUE(r.error.ok()) << r.error;
    ASSERT_TRUE(r.requeue_after.has_value());
    ASSERT_GT(*r.requeue_after, Clock::Duration::zero());
    ASSERT_LE(*r.requeue_after, kPoll);
    clock_.Advance(*r.requeue_after);
    waited += *r.requeue_after;
    r = sandboxes_->Reconcile("default", "mute");
  }
  EXPECT_EQ(waited, kReadyTimeout);
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 11);  // at 0, 0.5s, ..., 5s

  json guest_ready = Condition("mute", "GuestReady");
  EXPECT_EQ(guest_ready["status"], "False");
  EXPECT_TRUE(Contains(guest_ready["message"], "did not answer within 5s")) << guest_ready;
  EXPECT_TRUE(Contains(guest_ready["message"], "GET /health: connect: Connection refused"))
      << guest_ready;
  EXPECT_EQ(Condition("mute", "Ready")["status"], "False");
  EXPECT_EQ(Phase("mute"), "Running");
  json event = Event("GuestTimeout");
  ASSERT_FALSE(event.is_null());
  EXPECT_EQ(event["type"], "Warning");
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, kSlowPoll);

  // Further failures keep the slow pace and post no new event.
  clock_.Advance(kSlowPoll);
  r = sandboxes_->Reconcile("default", "mute");
  EXPECT_EQ(*r.requeue_after, kSlowPoll);
  EXPECT_EQ(Event("GuestTimeout")["count"], 1);

  // The guest comes up late: the next slow poll finds it.
  runtime_.SetGuestAnswers(true);
  clock_.Advance(kSlowPoll);
  r = sandboxes_->Reconcile("default", "mute");
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(Condition("mute", "GuestReady")["status"], "True");
  EXPECT_EQ(Condition("mute", "Ready")["status"], "True");
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 1u);
}

TEST_F(SandboxReconcilerGuestTest, PausedIsNotReadyAndResumeWaitsForANewAnswer) {
  const std::string uid = StartReady("p");
  PatchSpec("p", {{"power", "Paused"}});
  ASSERT_TRUE(Settle("p").error.ok());
  EXPECT_EQ(Phase("p"), "Paused");
  EXPECT_EQ(Condition("p", "Ready")["status"], "False");
  EXPECT_EQ(Condition("p", "Ready")["reason"], "Paused");
  EXPECT_EQ(Condition("p", "GuestReady")["status"], "False");
  EXPECT_EQ(Condition("p", "GuestReady")["reason"], "VMPaused");
  const int calls = runtime_.GuestHealthCalls(uid);

  runtime_.SetGuestAnswers(false);
  PatchSpec("p", {{"power", "Running"}});
  auto r = Settle("p");
  EXPECT_EQ(runtime_.CallCount("Resume"), 1);
  EXPECT_EQ(Phase("p"), "Running");
  EXPECT_EQ(Condition("p", "Ready")["status"], "False");
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), calls + 1);
  ASSERT_TRUE(r.requeue_after.has_value());

  runtime_.SetGuestAnswers(true);
  clock_.Advance(*r.requeue_after);
  r = sandboxes_->Reconcile("default", "p");
  EXPECT_EQ(Condition("p", "Ready")["status"], "True");
  EXPECT_EQ(Condition("p", "GuestReady")["reason"], "AgentReady");
  // A resumed guest keeps its memory: no second /init.
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 1u);
}

TEST_F(SandboxReconcilerGuestTest, AFailedInitIsRetriedBeforeReady) {
  runtime_.FailNext("GuestInit", absl::UnavailableError("POST /init: connection reset"));
  CreateSandbox("i", kBase);
  auto r = Settle("i");
  const std::string uid = Uid("sandboxes", "i");
  EXPECT_EQ(Condition("i", "GuestReady")["status"], "True");
  EXPECT_EQ(Condition("i", "GuestInitialized")["reason"], "InitFailed");
  EXPECT_EQ(Condition("i", "Ready")["reason"], "GuestNotInitialized");
  EXPECT_TRUE(Contains(Condition("i", "Ready")["message"], "connection reset"));
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, kPoll);

  clock_.Advance(kPoll);
  r = sandboxes_->Reconcile("default", "i");
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(Condition("i", "Ready")["status"], "True");
  EXPECT_EQ(runtime_.GuestInits(uid).size(), 1u);
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 1);  // the answer was kept
}

TEST_F(SandboxReconcilerGuestTest, WithoutANetworkReadyDoesNotWaitForTheAgent) {
  json spec = kBase;
  spec["network"] = {{"enabled", false}};
  const std::string uid = StartReady("offline", spec);
  EXPECT_EQ(Condition("offline", "GuestReady")["status"], "Unknown");
  EXPECT_EQ(Condition("offline", "GuestReady")["reason"], "NoNetwork");
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 0);
}

TEST_F(SandboxReconcilerGuestTest, WithTheAgentDisabledReadyMeansTheVmRuns) {
  runtime_.SetGuestAgentSettings(runtime::GuestAgentOptions{.enabled = false});
  runtime_.SetGuestAnswers(false);
  const std::string uid = StartReady("plain");
  EXPECT_EQ(Condition("plain", "Ready")["reason"], "Running");
  EXPECT_TRUE(Condition("plain", "GuestReady").is_null());
  EXPECT_FALSE(Status("plain").contains("guest"));
  EXPECT_EQ(runtime_.GuestHealthCalls(uid), 0);
  EXPECT_TRUE(runtime_.GuestInits(uid).empty());
}

TEST_F(SandboxReconcilerGuestTest, DisablingTheAgentRemovesTheGuestConditions) {
  const std::string uid = StartReady("was");
  ASSERT_FALSE(Condition("was", "GuestReady").is_null());
  runtime_.SetGuestAgentSettings(runtime::GuestAgentOptions{.enabled = false});
  RestartReconciler();
  ASSERT_TRUE(Settle("was").error.ok());
  EXPECT_TRUE(Condition("was", "GuestReady").is_null());
  EXPECT_TRUE(Condition("was", "GuestInitialized").is_null());
  EXPECT_FALSE(Status("was").contains("guest"));
  EXPECT_EQ(Condition("was", "Ready")["status"], "True");
}

}  // namespace
}  // namespace sandboxlet::testing
