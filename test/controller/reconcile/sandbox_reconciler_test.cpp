#include "controller/reconcile/sandbox_reconciler.h"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test/controller/reconcile/fixture.h"

namespace sandboxlet::testing {
namespace {

using std::chrono::seconds;

const json kBase = {{"template", "base"}, {"vcpus", 2}, {"memoryMiB", 256}};

class SandboxReconcilerTest : public ReconcileFixture {};

TEST_F(SandboxReconcilerTest, StartsTheVmAndReportsItRunning) {
  CreateSandbox("demo", kBase);
  std::string phase_during_start;
  runtime_.SetCallHook([&](const std::string& op, const std::string&) {
    if (op == "Start") phase_during_start = Phase("demo");
  });
  auto r = Settle("demo");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_FALSE(r.requeue_after.has_value());

  // Creating is visible to watchers while the synchronous Start runs.
  EXPECT_EQ(phase_during_start, "Creating");
  json sb = Sandbox("demo");
  EXPECT_EQ(sb["metadata"]["finalizers"], json::array({"sandboxlet.dev/cleanup"}));
  json status = sb["status"];
  EXPECT_EQ(status["phase"], "Running");
  EXPECT_EQ(status["observedGeneration"], 1);
  EXPECT_GT(status["vmm"]["pid"].get<int>(), 0);
  EXPECT_EQ(status["vmm"]["version"], "v48.0.0");
  EXPECT_NE(status["vmm"].value("apiSocket", ""), "");
  EXPECT_NE(status["vmm"].value("serialPath", ""), "");
  EXPECT_NE(status["network"].value("ip", ""), "");
  EXPECT_TRUE(status.contains("startedAt"));
  EXPECT_EQ(Condition("demo", "Ready")["status"], "True");
  EXPECT_EQ(Condition("demo", "VMMRunning")["status"], "True");
  EXPECT_EQ(Condition("demo", "Ready")["observedGeneration"], 1);
  EXPECT_EQ(runtime_.CallCount("Start"), 1);
  auto spec = runtime_.LastSpec(Uid("sandboxes", "demo"));
  EXPECT_EQ(spec.vcpus, 2);
  EXPECT_EQ(spec.memory_mib, 256u);
  EXPECT_EQ(spec.key, "default/demo");

  json started = Event("Started");
  ASSERT_FALSE(started.is_null());
  EXPECT_EQ(started["type"], "Normal");
  EXPECT_EQ(started["involvedObject"]["name"], "demo");
  EXPECT_EQ(started["involvedObject"]["kind"], "Sandbox");
  EXPECT_EQ(started["source"]["component"], "sandboxlet");
  EXPECT_EQ(started["count"], 1);

  // Nothing to do: a further pass makes no runtime call and no write.
  std::string rv = Sandbox("demo")["metadata"]["resourceVersion"];
  r = Settle("demo");
  EXPECT_TRUE(r.error.ok());
  EXPECT_EQ(runtime_.CallCount("Start"), 1);
  EXPECT_EQ(Sandbox("demo")["metadata"]["resourceVersion"], rv);
}

struct PowerStep {
  std::string power;
  std::string phase;  // expected status.phase afterwards
  std::string op;     // the runtime call that gets it there
};
struct PowerCase {
  std::string name;
  std::vector<PowerStep> steps;
};

class PowerTransitionTest : public ReconcileFixture,
                            public ::testing::WithParamInterface<PowerCase> {};

TEST_P(PowerTransitionTest, EachPowerChangeTakesItsRuntimeStep) {
  CreateSandbox("p", kBase);
  ASSERT_TRUE(Settle("p").error.ok());
  ASSERT_EQ(Phase("p"), "Running");
  for (const PowerStep& step : GetParam().steps) {
    SCOPED_TRACE("power " + step.power);
    runtime_.ClearCalls();
    PatchSpec("p", {{"power", step.power}});
    auto r = Settle("p");
    ASSERT_TRUE(r.error.ok()) << r.error;
    EXPECT_EQ(Phase("p"), step.phase);
    EXPECT_EQ(runtime_.CallCount(step.op), 1) << ::testing::PrintToString(runtime_.Calls());
    EXPECT_EQ(Status("p")["observedGeneration"], Sandbox("p")["metadata"]["generation"]);
    // Ready means VMM up and VM running.
    EXPECT_EQ(Condition("p", "Ready")["status"], step.phase == "Running" ? "True" : "False");
    EXPECT_EQ(Condition("p", "VMMRunning")["status"],
              step.phase == "Running" || step.phase == "Paused" ? "True" : "False");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Transitions, PowerTransitionTest,
    ::testing::Values(
        PowerCase{"PauseResume", {{"Paused", "Paused", "Pause"}, {"Running", "Running", "Resume"}}},
        PowerCase{
            "HibernateWake",
            {{"Hibernated", "Hibernated", "Hibernate"}, {"Running", "Running", "RestoreFrom"}}},
        PowerCase{"PausedToHibernated",
                  {{"Paused", "Paused", "Pause"}, {"Hibernated", "Hibernated", "Hibernate"}}},
        PowerCase{"StopStart", {{"Stopped", "Stopped", "Stop"}, {"Running", "Running", "Start"}}},
        PowerCase{"PausedToStopped",
                  {{"Paused", "Paused", "Pause"}, {"Stopped", "Stopped", "Stop"}}}),
    [](const auto& info) { return info.param.name; });

TEST_F(SandboxReconcilerTest, HibernationKeepsASnapshotAndWakingDeletesIt) {
  CreateSandbox("h", kBase);
  ASSERT_TRUE(Settle("h").error.ok());
  const std::string uid = Uid("sandboxes", "h");
  const std::string hib = "hibernate-" + uid;

  PatchSpec("h", {{"power", "Hibernated"}});
  ASSERT_TRUE(Settle("h").error.ok());
  EXPECT_EQ(Phase("h"), "Hibernated");
  EXPECT_TRUE(runtime_.HasSnapshot(hib));
  EXPECT_EQ(runtime_.Observe(uid).phase, runtime::VmPhase::kAbsent);
  EXPECT_EQ(Condition("h", "Hibernated")["status"], "True");
  EXPECT_NE(Condition("h", "Hibernated")["message"].get<std::string>().find(hib),
            std::string::npos);
  EXPECT_FALSE(Status("h").contains("vmm"));
  EXPECT_FALSE(Event("Hibernated").is_null());

  runtime_.ClearCalls();
  PatchSpec("h", {{"power", "Running"}});
  ASSERT_TRUE(Settle("h").error.ok());
  EXPECT_EQ(Phase("h"), "Running");
  std::vector<std::string> calls = runtime_.Calls();
  ASSERT_EQ(calls.size(), 2u) << ::testing::PrintToString(calls);
  EXPECT_EQ(calls[0], "RestoreFrom " + uid + " " + hib);
  EXPECT_EQ(calls[1], "DeleteSnapshot " + hib);
  EXPECT_FALSE(runtime_.HasSnapshot(hib));
  EXPECT_EQ(Condition("h", "Hibernated")["status"], "False");
  EXPECT_FALSE(Event("Restored").is_null());
}

TEST_F(SandboxReconcilerTest, WakeRetriesDeletingTheHibernationSnapshot) {
  CreateSandbox("h", kBase);
  ASSERT_TRUE(Settle("h").error.ok());
  const std::string hib = "hibernate-" + Uid("sandboxes", "h");
  PatchSpec("h", {{"power", "Hibernated"}});
  ASSERT_TRUE(Settle("h").error.ok());
  PatchSpec("h", {{"power", "Running"}});
  runtime_.FailNext("DeleteSnapshot", absl::UnavailableError("disk busy"));
  ASSERT_TRUE(Settle("h").error.ok());
  EXPECT_EQ(Phase("h"), "Running");
  EXPECT_TRUE(runtime_.HasSnapshot(hib));
  EXPECT_EQ(Condition("h", "Hibernated")["status"], "True");
  ASSERT_TRUE(Settle("h").error.ok());
  EXPECT_FALSE(runtime_.HasSnapshot(hib));
  EXPECT_EQ(Condition("h", "Hibernated")["status"], "False");
}

TEST_F(SandboxReconcilerTest, FailedHibernateLeavesTheVmRunning) {
  CreateSandbox("h", kBase);
  ASSERT_TRUE(Settle("h").error.ok());
  PatchSpec("h", {{"power", "Hibernated"}});
  runtime_.FailNext("Hibernate", absl::ResourceExhaustedError("write memory-ranges: ENOSPC"));
  auto r = Settle("h");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Phase("h"), "Running");
  EXPECT_NE(Status("h")["message"].get<std::string>().find("hibernate failed"), std::string::npos);
  EXPECT_NE(Status("h")["message"].get<std::string>().find("ENOSPC"), std::string::npos);
}

TEST_F(SandboxReconcilerTest, RestoreFromAMissingSnapshotWaitsWithBackoff) {
  CreateSandbox("r", {{"restoreFrom", "snap"}});
  auto r = Settle("r");
  EXPECT_FALSE(r.error.ok());  // the controller backs off
  EXPECT_EQ(Phase("r"), "Pending");
  EXPECT_NE(Status("r")["message"].get<std::string>().find("SandboxSnapshot default/snap"),
            std::string::npos);
  EXPECT_EQ(Condition("r", "Ready")["reason"], "SnapshotNotFound");
  EXPECT_EQ(runtime_.CallCount("RestoreFrom"), 0);
  EXPECT_EQ(runtime_.CallCount("Start"), 0);
}

TEST_F(SandboxReconcilerTest, RestoreFromAFailedSnapshotFails) {
  CreateSandbox("src", kBase);
  ASSERT_TRUE(Settle("src").error.ok());
  CreateSnapshot("snap", "src");
  runtime_.FailNext("Snapshot", absl::InternalError("vm.snapshot: CH 500"));
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  ASSERT_EQ(Snapshot("snap")["status"]["phase"], "Failed");

  CreateSandbox("r", {{"restoreFrom", "snap"}});
  Settle("r");
  EXPECT_EQ(Phase("r"), "Failed");
  std::string message = Status("r")["message"];
  EXPECT_NE(message.find("SandboxSnapshot default/snap failed"), std::string::npos) << message;
  EXPECT_NE(message.find("CH 500"), std::string::npos) << message;
  EXPECT_EQ(runtime_.CallCount("RestoreFrom"), 0);
}

TEST_F(SandboxReconcilerTest, RestoreFromAReadySnapshot) {
  CreateSandbox("src", {{"template", "base"}, {"vcpus", 3}, {"memoryMiB", 1024}});
  ASSERT_TRUE(Settle("src").error.ok());
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  const std::string snap_uid = Uid("sandboxsnapshots", "snap");

  CreateSandbox("r", {{"restoreFrom", "snap"}});
  auto r = Settle("r");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_EQ(Phase("r"), "Running");
  const std::string uid = Uid("sandboxes", "r");
  EXPECT_EQ(runtime_.CallCount("RestoreFrom"), 1);
  EXPECT_EQ(runtime_.Calls().back(), "RestoreFrom " + uid + " " + snap_uid);
  auto spec = runtime_.LastSpec(uid);
  EXPECT_EQ(spec.template_name, "base");
  EXPECT_EQ(spec.vcpus, 3);
  EXPECT_EQ(spec.memory_mib, 1024u);
  EXPECT_EQ(Condition("r", "Restored")["status"], "True");
  EXPECT_FALSE(Event("Restored").is_null());
}

TEST_F(SandboxReconcilerTest, RestoreWithAConflictingSpecFailsClearly) {
  CreateSandbox("src", kBase);
  ASSERT_TRUE(Settle("src").error.ok());
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  CreateSandbox("r", {{"restoreFrom", "snap"}, {"vcpus", 8}});
  auto r = Settle("r");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Phase("r"), "Failed");
  EXPECT_NE(Status("r")["message"].get<std::string>().find("spec.vcpus 8 is not the snapshot's 2"),
            std::string::npos)
      << Status("r")["message"];
}

struct ExitCase {
  std::string name;
  std::string policy;
  int exit_code;
  int signal;
  bool known;
  bool restarts;
  std::string phase;  // when not restarted
};

class RestartPolicyTest : public ReconcileFixture,
                          public ::testing::WithParamInterface<ExitCase> {};

TEST_P(RestartPolicyTest, ExitIsHandledPerPolicy) {
  const ExitCase& c = GetParam();
  json spec = kBase;
  spec["restartPolicy"] = c.policy;
  CreateSandbox("x", spec);
  ASSERT_TRUE(Settle("x").error.ok());
  const std::string uid = Uid("sandboxes", "x");
  runtime_.SimulateExit(uid, c.exit_code, c.signal, c.known);
  auto r = Settle("x");
  ASSERT_TRUE(r.error.ok()) << r.error;
  json last_exit = Status("x")["lastExit"];
  EXPECT_EQ(last_exit.value("signal", 0), c.signal);
  EXPECT_TRUE(last_exit.contains("finishedAt"));
  EXPECT_NE(last_exit.value("reason", ""), "");
  if (c.restarts) {
    // First restart after the initial back-off.
    EXPECT_EQ(Phase("x"), "Pending");
    ASSERT_TRUE(r.requeue_after.has_value());
    EXPECT_EQ(*r.requeue_after, seconds(1));
    clock_.Advance(seconds(1));
    ASSERT_TRUE(Settle("x").error.ok());
    EXPECT_EQ(Phase("x"), "Running");
    EXPECT_EQ(Status("x")["restartCount"], 1);
    EXPECT_EQ(runtime_.CallCount("Start"), 2);
  } else {
    EXPECT_EQ(Phase("x"), c.phase);
    EXPECT_FALSE(r.requeue_after.has_value());
    clock_.Advance(std::chrono::minutes(10));
    Settle("x");
    EXPECT_EQ(runtime_.CallCount("Start"), 1);
    EXPECT_EQ(Phase("x"), c.phase);
    EXPECT_NE(Status("x")["message"].get<std::string>().find("not restarted"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RestartPolicyTest,
    ::testing::Values(ExitCase{"AlwaysClean", "Always", 0, 0, true, true, ""},
                      ExitCase{"AlwaysCrash", "Always", 1, 0, true, true, ""},
                      ExitCase{"AlwaysSignal", "Always", 0, 9, true, true, ""},
                      ExitCase{"AlwaysUnknown", "Always", 0, 0, false, true, ""},
                      ExitCase{"OnFailureClean", "OnFailure", 0, 0, true, false, "Stopped"},
                      ExitCase{"OnFailureCrash", "OnFailure", 1, 0, true, true, ""},
                      ExitCase{"OnFailureSignal", "OnFailure", 0, 9, true, true, ""},
                      ExitCase{"OnFailureUnknown", "OnFailure", 0, 0, false, true, ""},
                      ExitCase{"NeverClean", "Never", 0, 0, true, false, "Stopped"},
                      ExitCase{"NeverCrash", "Never", 1, 0, true, false, "Failed"},
                      ExitCase{"NeverSignal", "Never", 0, 9, true, false, "Failed"},
                      ExitCase{"NeverUnknown", "Never", 0, 0, false, false, "Failed"}),
    [](const auto& info) { return info.param.name; });

TEST_F(SandboxReconcilerTest, CrashLoopBackOffDoublesUpToFiveMinutesAndResets) {
  CreateSandbox("c", kBase);
  ASSERT_TRUE(Settle("c").error.ok());
  const std::string uid = Uid("sandboxes", "c");
  const std::vector<int> expected = {1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300};
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    clock_.Advance(seconds(5));  // runs briefly, then crashes
    runtime_.SimulateExit(uid, 1, 0);
    auto r = Settle("c");
    ASSERT_TRUE(r.error.ok());
    ASSERT_TRUE(r.requeue_after.has_value());
    EXPECT_EQ(*r.requeue_after, seconds(expected[i]));
    EXPECT_EQ(Phase("c"), "Pending");
    EXPECT_EQ(Condition("c", "Ready")["reason"], "CrashLoopBackOff");
    // Not restarted a moment before the back-off ends, even when reconciled.
    clock_.Advance(seconds(expected[i]) - std::chrono::milliseconds(1));
    r = Settle("c");
    EXPECT_EQ(runtime_.CallCount("Start"), static_cast<int>(i) + 1);
    ASSERT_TRUE(r.requeue_after.has_value());
    EXPECT_EQ(*r.requeue_after, std::chrono::milliseconds(1));
    clock_.Advance(std::chrono::milliseconds(1));
    ASSERT_TRUE(Settle("c").error.ok());
    EXPECT_EQ(runtime_.CallCount("Start"), static_cast<int>(i) + 2);
    EXPECT_EQ(Status("c")["restartCount"], static_cast<int>(i) + 1);
    EXPECT_EQ(Phase("c"), "Running");
  }
  // Ten minutes of running resets the back-off.
  clock_.Advance(std::chrono::minutes(10));
  runtime_.SimulateExit(uid, 1, 0);
  auto r = Settle("c");
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, seconds(1));
  json backoff = Event("BackOff");
  ASSERT_FALSE(backoff.is_null());
  EXPECT_EQ(backoff["type"], "Warning");
  EXPECT_EQ(backoff["count"], static_cast<int>(expected.size()) + 1);  // repeats folded
}

TEST_F(SandboxReconcilerTest, TtlDeletesAtTheExpiryTime) {
  json spec = kBase;
  spec["ttlSeconds"] = 60;
  CreateSandbox("t", spec);
  auto r = Settle("t");
  const std::string uid = Uid("sandboxes", "t");
  ASSERT_TRUE(r.error.ok());
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, seconds(60));
  clock_.Advance(seconds(59));
  r = Settle("t");
  ASSERT_TRUE(r.requeue_after.has_value());
  EXPECT_EQ(*r.requeue_after, seconds(1));
  EXPECT_FALSE(Sandbox("t").is_null());
  clock_.Advance(seconds(1));
  Settle("t");
  EXPECT_TRUE(Sandbox("t").is_null());
  EXPECT_EQ(runtime_.CallCount("Destroy"), 1);
  EXPECT_EQ(runtime_.Observe(uid).phase, runtime::VmPhase::kAbsent);
}

TEST_F(SandboxReconcilerTest, DeletionDestroysTheVmThroughTheFinalizer) {
  CreateSandbox("d", kBase);
  ASSERT_TRUE(Settle("d").error.ok());
  const std::string uid = Uid("sandboxes", "d");
  CreateSnapshot("keep", "d");
  ASSERT_TRUE(snapshots_->Reconcile("default", "keep").error.ok());
  PatchSpec("d", {{"power", "Hibernated"}});
  ASSERT_TRUE(Settle("d").error.ok());
  ASSERT_TRUE(runtime_.HasSnapshot("hibernate-" + uid));

  Delete("sandboxes", "d");
  ASSERT_FALSE(Sandbox("d").is_null());  // kept by the finalizer until cleaned up
  auto r = Settle("d");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_TRUE(Sandbox("d").is_null());
  EXPECT_EQ(runtime_.CallCount("Destroy"), 1);
  EXPECT_FALSE(runtime_.HasSnapshot("hibernate-" + uid));
  // The user's snapshot is not deleted with its sandbox.
  EXPECT_TRUE(runtime_.HasSnapshot(Uid("sandboxsnapshots", "keep")));
  EXPECT_FALSE(Snapshot("keep").is_null());
}

TEST_F(SandboxReconcilerTest, FailedDestroyKeepsTheObjectAndSaysWhy) {
  CreateSandbox("d", kBase);
  ASSERT_TRUE(Settle("d").error.ok());
  Delete("sandboxes", "d");
  runtime_.FailNext("Destroy", absl::UnavailableError("umount busy"));
  auto r = Settle("d");
  EXPECT_FALSE(r.error.ok());
  EXPECT_EQ(Phase("d"), "Terminating");
  EXPECT_NE(Status("d")["message"].get<std::string>().find("umount busy"), std::string::npos);
  ASSERT_TRUE(Settle("d").error.ok());
  EXPECT_TRUE(Sandbox("d").is_null());
}

TEST_F(SandboxReconcilerTest, LastTransitionTimeMovesOnlyWhenAConditionFlips) {
  CreateSandbox("c", kBase);
  ASSERT_TRUE(Settle("c").error.ok());
  json ready0 = Condition("c", "Ready");
  json vmm0 = Condition("c", "VMMRunning");
  clock_.Advance(seconds(30));
  PatchSpec("c", {{"power", "Paused"}});
  ASSERT_TRUE(Settle("c").error.ok());
  json ready1 = Condition("c", "Ready");
  json vmm1 = Condition("c", "VMMRunning");
  EXPECT_EQ(ready1["status"], "False");
  EXPECT_NE(ready1["lastTransitionTime"], ready0["lastTransitionTime"]);
  EXPECT_EQ(vmm1["status"], "True");
  EXPECT_EQ(vmm1["lastTransitionTime"], vmm0["lastTransitionTime"]);
  // observedGeneration follows the spec change on every condition and on status.
  EXPECT_EQ(Sandbox("c")["metadata"]["generation"], 2);
  EXPECT_EQ(Status("c")["observedGeneration"], 2);
  EXPECT_EQ(vmm1["observedGeneration"], 2);
  EXPECT_EQ(ready1["observedGeneration"], 2);
  clock_.Advance(seconds(30));
  ASSERT_TRUE(Settle("c").error.ok());
  EXPECT_EQ(Condition("c", "Ready")["lastTransitionTime"], ready1["lastTransitionTime"]);
}

TEST_F(SandboxReconcilerTest, TransientStartErrorBacksOffThenSucceeds) {
  CreateSandbox("t", kBase);
  runtime_.FailNext("Start", absl::UnavailableError("CH api socket did not appear in 5s"));
  auto r = Settle("t");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(r.requeue_after.has_value());  // retried by the key's backoff, not at once
  EXPECT_EQ(Phase("t"), "Pending");
  std::string message = Status("t")["message"];
  EXPECT_NE(message.find("start failed"), std::string::npos) << message;
  EXPECT_NE(message.find("api socket did not appear"), std::string::npos) << message;
  r = Settle("t");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_EQ(Phase("t"), "Running");
  EXPECT_EQ(Condition("t", "Ready")["status"], "True");
}

TEST_F(SandboxReconcilerTest, MissingTemplateFailsWithAClearMessageAndNoHotLoop) {
  CreateSandbox("bad", {{"template", "nope"}});
  auto r = Settle("bad");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(Phase("bad"), "Failed");
  std::string message = Status("bad")["message"];
  EXPECT_NE(message.find("template \"nope\" not found"), std::string::npos) << message;
  EXPECT_EQ(Condition("bad", "Ready")["reason"], "StartFailed");
  // A repeat pass changes nothing in the store (no watch event, so no self-triggered loop).
  std::string rv = Sandbox("bad")["metadata"]["resourceVersion"];
  r = Settle("bad");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Sandbox("bad")["metadata"]["resourceVersion"], rv);
  json failed = Event("Failed");
  ASSERT_FALSE(failed.is_null());
  EXPECT_EQ(failed["type"], "Warning");
  EXPECT_EQ(failed["count"], 2);
}

TEST_F(SandboxReconcilerTest, VcpusBeyondTheNodeFail) {
  runtime_.SetMaxVcpus(4);
  CreateSandbox("big", {{"template", "base"}, {"vcpus", 16}});
  auto r = Settle("big");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Phase("big"), "Failed");
  EXPECT_NE(Status("big")["message"].get<std::string>().find("vcpus 16"), std::string::npos);
}

TEST_F(SandboxReconcilerTest, InvalidSpecIsReportedWithoutRuntimeCalls) {
  CreateSandbox("inv", {{"vcpus", 2}});  // neither template nor restoreFrom
  auto r = Settle("inv");
  EXPECT_TRUE(r.error.ok());
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_EQ(Phase("inv"), "Failed");
  EXPECT_NE(Status("inv")["message"].get<std::string>().find("spec.template"), std::string::npos);
  EXPECT_TRUE(runtime_.Calls().empty());
}

TEST_F(SandboxReconcilerTest, LiveSpecChangesWaitForTheNextStart) {
  CreateSandbox("s", kBase);
  ASSERT_TRUE(Settle("s").error.ok());
  PatchSpec("s", {{"vcpus", 4}});
  ASSERT_TRUE(Settle("s").error.ok());
  EXPECT_EQ(Phase("s"), "Running");
  EXPECT_EQ(runtime_.CallCount("Start"), 1);  // not restarted
  json applied = Condition("s", "SpecApplied");
  EXPECT_EQ(applied["status"], "False");
  EXPECT_EQ(applied["reason"], "RestartRequired");
  EXPECT_NE(applied["message"].get<std::string>().find("spec.vcpus (2 → 4)"), std::string::npos);
  PatchSpec("s", {{"power", "Stopped"}});
  ASSERT_TRUE(Settle("s").error.ok());
  PatchSpec("s", {{"power", "Running"}});
  ASSERT_TRUE(Settle("s").error.ok());
  EXPECT_EQ(runtime_.LastSpec(Uid("sandboxes", "s")).vcpus, 4);
  EXPECT_EQ(Condition("s", "SpecApplied")["status"], "True");
}

TEST_F(SandboxReconcilerTest, PausedSpecStartsThenPauses) {
  json spec = kBase;
  spec["power"] = "Paused";
  CreateSandbox("ps", spec);
  ASSERT_TRUE(Settle("ps").error.ok());
  EXPECT_EQ(Phase("ps"), "Paused");
  std::vector<std::string> calls = runtime_.Calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].substr(0, 6), "Start ");
  EXPECT_EQ(calls[1].substr(0, 6), "Pause ");
}

TEST_F(SandboxReconcilerTest, MissingObjectIsANoOp) {
  auto r = sandboxes_->Reconcile("default", "ghost");
  EXPECT_TRUE(r.error.ok());
  EXPECT_FALSE(r.requeue_after.has_value());
  EXPECT_TRUE(runtime_.Calls().empty());
}

}  // namespace
}  // namespace sandboxlet::testing
