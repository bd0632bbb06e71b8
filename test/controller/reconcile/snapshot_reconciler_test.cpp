#include "controller/reconcile/snapshot_reconciler.h"

#include <string>

#include <gtest/gtest.h>

#include "test/controller/reconcile/fixture.h"

namespace sandboxlet::testing {
namespace {

const json kBase = {{"template", "base"}, {"vcpus", 2}, {"memoryMiB", 256}};

class SnapshotReconcilerTest : public ReconcileFixture {
 protected:
  json SnapStatus(const std::string& name) {
    return Snapshot(name).value("status", json::object());
  }
  void RunningSandbox(const std::string& name) {
    CreateSandbox(name, kBase);
    ASSERT_TRUE(Settle(name).error.ok());
    ASSERT_EQ(Phase(name), "Running");
  }
};

TEST_F(SnapshotReconcilerTest, SnapshotOfARunningSandboxBecomesReady) {
  RunningSandbox("src");
  CreateSnapshot("snap", "src");
  std::string phase_during_snapshot;
  runtime_.SetCallHook([&](const std::string& op, const std::string&) {
    if (op == "Snapshot") phase_during_snapshot = SnapStatus("snap").value("phase", "");
  });
  auto r = snapshots_->Reconcile("default", "snap");
  ASSERT_TRUE(r.error.ok()) << r.error;
  EXPECT_EQ(phase_during_snapshot, "InProgress");

  json status = SnapStatus("snap");
  EXPECT_EQ(status["phase"], "Ready");
  EXPECT_EQ(status["sizeBytes"], 256 * 1024 * 256 + 8192);
  EXPECT_TRUE(status.contains("createdAt"));
  EXPECT_EQ(status["source"]["template"], "base");
  EXPECT_EQ(status["source"]["vcpus"], 2);
  EXPECT_EQ(status["source"]["memoryMiB"], 256);
  EXPECT_EQ(status["observedGeneration"], 1);
  EXPECT_EQ(Snapshot("snap")["metadata"]["finalizers"], json::array({"sandboxlet.dev/cleanup"}));
  const std::string snap_uid = Uid("sandboxsnapshots", "snap");
  EXPECT_EQ(runtime_.Calls().back(), "Snapshot " + Uid("sandboxes", "src") + " " + snap_uid);
  EXPECT_TRUE(runtime_.HasSnapshot(snap_uid));
  EXPECT_EQ(runtime_.Observe(Uid("sandboxes", "src")).phase, runtime::VmPhase::kRunning);
  json ready = Event("SnapshotReady");
  ASSERT_FALSE(ready.is_null());
  EXPECT_EQ(ready["involvedObject"]["kind"], "SandboxSnapshot");

  // One snapshot per object: a Ready snapshot is never taken again.
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_EQ(runtime_.CallCount("Snapshot"), 1);
}

TEST_F(SnapshotReconcilerTest, FailureIsReportedAndFinal) {
  RunningSandbox("src");
  CreateSnapshot("snap", "src");
  runtime_.FailNext("Snapshot", absl::InternalError("vm.snapshot: CH 500 [\"Error from API\"]"));
  auto r = snapshots_->Reconcile("default", "snap");
  ASSERT_TRUE(r.error.ok());
  json status = SnapStatus("snap");
  EXPECT_EQ(status["phase"], "Failed");
  std::string message = status["message"];
  EXPECT_NE(message.find("snapshot of Sandbox default/src failed"), std::string::npos) << message;
  EXPECT_NE(message.find("CH 500"), std::string::npos) << message;
  EXPECT_FALSE(Event("SnapshotFailed").is_null());
  EXPECT_EQ(Phase("src"), "Running");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_EQ(runtime_.CallCount("Snapshot"), 1);
}

TEST_F(SnapshotReconcilerTest, WaitsForTheSandboxToRun) {
  json spec = kBase;
  spec["power"] = "Stopped";
  CreateSandbox("src", spec);
  ASSERT_TRUE(Settle("src").error.ok());
  CreateSnapshot("snap", "src");
  auto r = snapshots_->Reconcile("default", "snap");
  EXPECT_FALSE(r.error.ok());  // retried with backoff
  EXPECT_EQ(SnapStatus("snap")["phase"], "Pending");
  std::string message = SnapStatus("snap")["message"];
  EXPECT_NE(message.find("Running or Paused"), std::string::npos) << message;
  EXPECT_EQ(runtime_.CallCount("Snapshot"), 0);

  PatchSpec("src", {{"power", "Paused"}});
  ASSERT_TRUE(Settle("src").error.ok());
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_EQ(SnapStatus("snap")["phase"], "Ready");
}

TEST_F(SnapshotReconcilerTest, WaitsForAMissingSandbox) {
  CreateSnapshot("snap", "nobody");
  auto r = snapshots_->Reconcile("default", "snap");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SnapStatus("snap")["phase"], "Pending");
  EXPECT_NE(SnapStatus("snap")["message"].get<std::string>().find("Sandbox default/nobody"),
            std::string::npos);
}

TEST_F(SnapshotReconcilerTest, DeletionWaitsWhileASandboxRestoresFromIt) {
  RunningSandbox("src");
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  const std::string snap_uid = Uid("sandboxsnapshots", "snap");

  CreateSandbox("r", {{"restoreFrom", "snap"}});
  runtime_.FailNext("RestoreFrom", absl::UnavailableError("restore timed out"));
  EXPECT_FALSE(Settle("r").error.ok());
  ASSERT_NE(Phase("r"), "Running");

  Delete("sandboxsnapshots", "snap");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_FALSE(Snapshot("snap").is_null());
  EXPECT_TRUE(runtime_.HasSnapshot(snap_uid));
  EXPECT_EQ(runtime_.CallCount("DeleteSnapshot"), 0);
  EXPECT_NE(SnapStatus("snap")["message"].get<std::string>().find("in use by default/r"),
            std::string::npos)
      << SnapStatus("snap")["message"];

  // The restore completes from the snapshot that was kept for it; then deletion proceeds.
  ASSERT_TRUE(Settle("r").error.ok());
  EXPECT_EQ(Phase("r"), "Running");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_TRUE(Snapshot("snap").is_null());
  EXPECT_FALSE(runtime_.HasSnapshot(snap_uid));
  EXPECT_EQ(Phase("r"), "Running");
}

TEST_F(SnapshotReconcilerTest, AFailedSnapshotIsDeletedEvenWhenReferenced) {
  RunningSandbox("src");
  CreateSnapshot("snap", "src");
  runtime_.FailNext("Snapshot", absl::InternalError("vm.snapshot: CH 500"));
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  CreateSandbox("r", {{"restoreFrom", "snap"}});
  Settle("r");
  ASSERT_EQ(Phase("r"), "Failed");
  Delete("sandboxsnapshots", "snap");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_TRUE(Snapshot("snap").is_null());
}

TEST_F(SnapshotReconcilerTest, DeletionOfAnUnusedSnapshotRemovesItsFiles) {
  RunningSandbox("src");
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  const std::string snap_uid = Uid("sandboxsnapshots", "snap");
  Delete("sandboxsnapshots", "snap");
  runtime_.FailNext("DeleteSnapshot", absl::PermissionDeniedError("rm: EACCES"));
  auto r = snapshots_->Reconcile("default", "snap");
  EXPECT_EQ(r.error.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(SnapStatus("snap")["message"].get<std::string>().find("EACCES"), std::string::npos);
  ASSERT_TRUE(snapshots_->Reconcile("default", "snap").error.ok());
  EXPECT_TRUE(Snapshot("snap").is_null());
  EXPECT_FALSE(runtime_.HasSnapshot(snap_uid));
}

}  // namespace
}  // namespace sandboxlet::testing
