#include "controller/reconcile/controller.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "controller/store/object_store.h"
#include "runtime/base/clock.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/controller/reconcile/fake_runtime.h"

namespace sandboxlet::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbl-controller-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::ObjectStore::Open(dir_ + "/store.db", {.clock = &clock_});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    runtime_.AddTemplate("base");
    runtime_.SetOpDelay(std::chrono::microseconds(300));
    controller::ControllerOptions options;
    options.workers = 4;
    options.clock = &clock_;
    options.resync_period = std::chrono::hours(1);
    options.on_reconcile = [this](std::string_view, std::string_view result, Clock::Duration) {
      ++reconciles_;
      if (result == "error") ++errors_;
    };
    controller_ = std::make_unique<controller::Controller>(*store_, runtime_, options);
  }
  // Replaces the controller by one whose Sandboxes wait for their guest agents (the fake's).
  void UseGuestAgents(const runtime::GuestAgentOptions& agent) {
    controller_.reset();
    runtime_.SetGuestAgentSettings(agent);
    controller::ControllerOptions options;
    options.workers = 4;
    options.clock = &clock_;
    options.resync_period = std::chrono::hours(1);
    options.guest = &runtime_;
    controller_ = std::make_unique<controller::Controller>(*store_, runtime_, options);
  }
  // The condition, or an empty object when there is none (yet).
  json Condition(const std::string& name, const std::string& type) {
    json object = Get("sandboxes", name);
    if (object.is_null()) return json::object();
    for (const json& c :
         object.value("status", json::object()).value("conditions", json::array())) {
      if (c.value("type", "") == type) return c;
    }
    return json::object();
  }
  void TearDown() override {
    controller_.reset();
    store_.reset();
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

  void CreateSandbox(const std::string& name, const json& spec) {
    json object = {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                   {"kind", "Sandbox"},
                   {"metadata", {{"name", name}, {"namespace", "default"}}},
                   {"spec", spec}};
    auto created = store_->Create("sandboxes", object);
    ASSERT_TRUE(created.ok()) << created.status();
  }
  void CreateSnapshot(const std::string& name, const std::string& sandbox) {
    json object = {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                   {"kind", "SandboxSnapshot"},
                   {"metadata", {{"name", name}, {"namespace", "default"}}},
                   {"spec", {{"sandboxName", sandbox}}}};
    auto created = store_->Create("sandboxsnapshots", object);
    ASSERT_TRUE(created.ok()) << created.status();
  }
  json Get(const std::string& resource, const std::string& name) {
    auto got = store_->Get(resource, "default", name);
    return got.ok() ? *got : json();
  }
  std::string Phase(const std::string& resource, const std::string& name) {
    json object = Get(resource, name);
    return object.is_null() ? "" : object.value("status", json::object()).value("phase", "");
  }
  // Waits (on store watch events, up to a real-time deadline) until `done` holds.
  bool WaitFor(const std::string& resource, const std::function<bool()>& done,
               std::chrono::seconds timeout = seconds(30)) {
    auto stream = store_->Watch(resource, "");
    if (!stream.ok()) return false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      auto event = (*stream)->Next(deadline);
      if (!event.ok()) return done();
    }
    return true;
  }
  int CountPhase(const std::string& resource, const std::string& phase) {
    auto list = store_->List(resource, "default");
    int n = 0;
    if (!list.ok()) return -1;
    for (const json& item : list->items) {
      if (item.value("status", json::object()).value("phase", "") == phase) ++n;
    }
    return n;
  }

  std::string dir_;
  FakeClock clock_;
  FakeSandboxRuntime runtime_{&clock_};
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<controller::Controller> controller_;
  std::atomic<int> reconciles_{0};
  std::atomic<int> errors_{0};
};

TEST_F(ControllerTest, FiftySandboxesAllRunWithoutOverlappingOperations) {
  // Half exist before Start (found by the initial list), half arrive through the watch.
  for (int i = 0; i < 25; ++i) CreateSandbox(Cat("sb-", i), {{"template", "base"}});
  ASSERT_TRUE(controller_->Start().ok());
  for (int i = 25; i < 50; ++i) CreateSandbox(Cat("sb-", i), {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return CountPhase("sandboxes", "Running") == 50; }))
      << CountPhase("sandboxes", "Running") << " of 50 Running";
  EXPECT_EQ(runtime_.CallCount("Start"), 50);

  // Snapshots and power changes of the same sandboxes at once: the per-sandbox lock keeps the
  // runtime operations on each uid apart.
  for (int i = 0; i < 10; ++i) CreateSnapshot(Cat("snap-", i), Cat("sb-", i));
  for (int i = 0; i < 10; ++i) {
    json object = Get("sandboxes", Cat("sb-", i));
    object["spec"]["power"] = "Paused";
    ASSERT_TRUE(store_->Update("sandboxes", object).ok());
  }
  ASSERT_TRUE(
      WaitFor("sandboxsnapshots", [&] { return CountPhase("sandboxsnapshots", "Ready") == 10; }))
      << CountPhase("sandboxsnapshots", "Ready") << " of 10 snapshots Ready";
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return CountPhase("sandboxes", "Paused") == 10; }));
  controller_->Stop();
  EXPECT_EQ(runtime_.OverlapViolations(), 0);
  EXPECT_GT(reconciles_.load(), 0);
}

TEST_F(ControllerTest, AVmmExitIsReconciledAtOnce) {
  ASSERT_TRUE(controller_->Start().ok());
  CreateSandbox("crashy", {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "crashy") == "Running"; }));
  const std::string uid = Get("sandboxes", "crashy")["metadata"]["uid"];

  // No resync is due and the fake clock does not move: only the exit event can bring the key
  // back.
  runtime_.SimulateExit(uid, 1, 0);
  ASSERT_TRUE(WaitFor("sandboxes", [&] {
    json s = Get("sandboxes", "crashy")["status"];
    return s.value("phase", "") == "Pending" && s.contains("lastExit");
  }));
  EXPECT_EQ(runtime_.CallCount("Start"), 1);
  // The crash-loop back-off (1s) runs on the controller's clock.
  clock_.Advance(seconds(1));
  ASSERT_TRUE(WaitFor("sandboxes", [&] {
    json s = Get("sandboxes", "crashy")["status"];
    return s.value("phase", "") == "Running" && s.value("restartCount", 0) == 1;
  }));
  EXPECT_EQ(runtime_.CallCount("Start"), 2);
}

TEST_F(ControllerTest, ASnapshotBecomingReadyWakesTheSandboxRestoringFromIt) {
  ASSERT_TRUE(controller_->Start().ok());
  CreateSandbox("src", {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "src") == "Running"; }));
  CreateSandbox("r", {{"restoreFrom", "snap"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "r") == "Pending"; }));
  // "r" now waits out its error backoff on a clock that does not move; the snapshot's change
  // must enqueue it.
  CreateSnapshot("snap", "src");
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "r") == "Running"; }));
  EXPECT_EQ(runtime_.CallCount("RestoreFrom"), 1);
}

TEST_F(ControllerTest, ResyncReconcilesEveryKeyPeriodically) {
  ASSERT_TRUE(controller_->Start().ok());
  CreateSandbox("a", {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "a") == "Running"; }));
  // An out-of-band change the controller hears nothing about: the VMM is stopped underneath.
  const std::string uid = Get("sandboxes", "a")["metadata"]["uid"];
  ASSERT_TRUE(runtime_.Stop(uid).ok());
  clock_.Advance(std::chrono::hours(1));
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return runtime_.CallCount("Start") == 2; }));
  ASSERT_TRUE(WaitFor("sandboxes", [&] { return Phase("sandboxes", "a") == "Running"; }));
}

TEST_F(ControllerTest, AGuestThatNeverAnswersHoldsUpNoOtherSandbox) {
  UseGuestAgents({.enabled = true,
                  .ready_timeout = std::chrono::seconds(5),
                  .poll_interval = std::chrono::milliseconds(500)});
  runtime_.SetGuestAnswers(false);
  ASSERT_TRUE(controller_->Start().ok());
  CreateSandbox("mute", {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] {
    return Condition("mute", "GuestReady").value("reason", "") == "WaitingForAgent";
  }));
  const std::string mute = Get("sandboxes", "mute")["metadata"]["uid"];
  runtime_.SetGuestAnswers(mute, false);
  runtime_.SetGuestAnswers(true);

  // The clock stands still: "mute" waits for its poll interval while "fine" comes up.
  CreateSandbox("fine", {{"template", "base"}});
  ASSERT_TRUE(WaitFor("sandboxes", [&] {
    return Condition("fine", "Ready").value("status", "") == "True";
  })) << Get("sandboxes", "fine").dump();
  EXPECT_EQ(Condition("mute", "Ready")["status"], "False");
  EXPECT_EQ(Phase("sandboxes", "mute"), "Running");
  // One attempt, and at most one more from its own status write: no hot loop.
  EXPECT_LE(runtime_.GuestHealthCalls(mute), 2);

  clock_.Advance(std::chrono::seconds(5));
  ASSERT_TRUE(WaitFor("sandboxes", [&] {
    return Condition("mute", "GuestReady").value("reason", "") == "AgentTimeout";
  })) << Get("sandboxes", "mute").dump();
  std::string message = Condition("mute", "GuestReady")["message"];
  EXPECT_NE(message.find("did not answer within 5s"), std::string::npos) << message;
  EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
  EXPECT_EQ(Condition("mute", "Ready")["status"], "False");
  EXPECT_EQ(Condition("fine", "Ready")["status"], "True");
  controller_->Stop();
  EXPECT_EQ(runtime_.OverlapViolations(), 0);
}

TEST_F(ControllerTest, ClaimedSandboxesMapsUidsToKeys) {
  CreateSandbox("one", {{"template", "base"}});
  CreateSandbox("two", {{"template", "base"}});
  auto claimed = controller_->ClaimedSandboxes();
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 2u);
  EXPECT_EQ(claimed->at(Get("sandboxes", "one")["metadata"]["uid"]), "default/one");
  EXPECT_EQ(claimed->at(Get("sandboxes", "two")["metadata"]["uid"]), "default/two");
}

TEST_F(ControllerTest, StartTwiceIsRefused) {
  ASSERT_TRUE(controller_->Start().ok());
  EXPECT_EQ(controller_->Start().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace sandboxlet::testing
