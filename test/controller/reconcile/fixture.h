// A test fixture for the reconcilers: a real ObjectStore on a temporary SQLite file, a FakeClock,
// the FakeSandboxRuntime (template "base" installed), the EventRecorder and both reconcilers,
// with helpers to apply objects and read them back.
#pragma once

#include <stdlib.h>

#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "controller/reconcile/events.h"
#include "controller/reconcile/sandbox_locks.h"
#include "controller/reconcile/sandbox_reconciler.h"
#include "controller/reconcile/snapshot_reconciler.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"
#include "runtime/base/fs.h"
#include "test/controller/reconcile/fake_runtime.h"

namespace sandboxlet::testing {

using nlohmann::json;

class ReconcileFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-reconcile-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::ObjectStore::Open(dir_ + "/store.db", {.clock = &clock_});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    runtime_.AddTemplate("base");
    runtime_.AddTemplate("other");
    events_ = std::make_unique<controller::EventRecorder>(*store_, clock_);
    sandboxes_ = std::make_unique<controller::SandboxReconciler>(
        *store_, runtime_, *events_, locks_,
        controller::SandboxReconcilerOptions{.clock = &clock_});
    snapshots_ = std::make_unique<controller::SnapshotReconciler>(
        *store_, runtime_, *events_, locks_, controller::SnapshotReconcilerOptions{&clock_});
  }
  void TearDown() override {
    snapshots_.reset();
    sandboxes_.reset();
    events_.reset();
    store_.reset();
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

  json CreateSandbox(const std::string& name, const json& spec) {
    json object = {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                   {"kind", "Sandbox"},
                   {"metadata", {{"name", name}, {"namespace", "default"}}},
                   {"spec", spec}};
    auto created = store_->Create("sandboxes", object);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : json();
  }
  json CreateSnapshot(const std::string& name, const std::string& sandbox) {
    json object = {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                   {"kind", "SandboxSnapshot"},
                   {"metadata", {{"name", name}, {"namespace", "default"}}},
                   {"spec", {{"sandboxName", sandbox}}}};
    auto created = store_->Create("sandboxsnapshots", object);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : json();
  }
  // The stored object, or null when it is gone.
  json Get(const std::string& resource, const std::string& name) {
    auto got = store_->Get(resource, "default", name);
    return got.ok() ? *got : json();
  }
  json Sandbox(const std::string& name) { return Get("sandboxes", name); }
  json Snapshot(const std::string& name) { return Get("sandboxsnapshots", name); }
  json Status(const std::string& name) { return Sandbox(name).value("status", json::object()); }
  std::string Phase(const std::string& name) { return Status(name).value("phase", ""); }
  std::string Uid(const std::string& resource, const std::string& name) {
    return Get(resource, name)["metadata"].value("uid", "");
  }
  json Condition(const std::string& name, const std::string& type) {
    for (const json& c : Status(name).value("conditions", json::array())) {
      if (c.value("type", "") == type) return c;
    }
    return json();
  }
  // Changes spec fields (merged) of a Sandbox.
  void PatchSpec(const std::string& name, const json& patch) {
    json object = Sandbox(name);
    object["spec"].merge_patch(patch);
    auto updated = store_->Update("sandboxes", object);
    ASSERT_TRUE(updated.ok()) << updated.status();
  }
  void Delete(const std::string& resource, const std::string& name) {
    auto deleted = store_->Delete(resource, "default", name);
    ASSERT_TRUE(deleted.ok()) << deleted.status();
  }
  // Reconciles until a pass asks for nothing immediate (at most 10 passes).
  controller::ReconcileResult Settle(const std::string& name) {
    controller::ReconcileResult r;
    for (int i = 0; i < 10; ++i) {
      r = sandboxes_->Reconcile("default", name);
      if (!(r.error.ok() && r.requeue_after && *r.requeue_after == Clock::Duration::zero())) break;
    }
    return r;
  }
  std::vector<json> Events() {
    auto list = store_->List("events", "default");
    return list.ok() ? list->items : std::vector<json>{};
  }
  json Event(const std::string& reason) {
    for (const json& e : Events()) {
      if (e.value("reason", "") == reason) return e;
    }
    return json();
  }

  std::string dir_;
  FakeClock clock_;
  FakeSandboxRuntime runtime_{&clock_};
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<controller::EventRecorder> events_;
  controller::SandboxLocks locks_;
  std::unique_ptr<controller::SandboxReconciler> sandboxes_;
  std::unique_ptr<controller::SnapshotReconciler> snapshots_;
};

}  // namespace sandboxlet::testing
