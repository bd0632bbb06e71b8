// Tests of runtime/vmm/exit_watcher.cpp with plain child processes (fork + pause).
#include "runtime/vmm/exit_watcher.h"

#include <signal.h>
#include <unistd.h>

#include <set>

#include "gtest/gtest.h"
#include "runtime/base/fd.h"
#include "runtime/base/strings.h"
#include "test/runtime/vmm/vmm_test_support.h"

namespace sandboxlet::vmm {
namespace {

struct Child {
  pid_t pid = -1;
  UniqueFd pidfd;
};

// A child that waits for a signal, or exits with `code` at once if code >= 0.
Child StartChild(int code = -1) {
  Child c;
  c.pid = ::fork();
  if (c.pid == 0) {
    if (code >= 0) ::_exit(code);
    while (true) ::pause();
  }
  c.pidfd.Reset(PidfdOpen(c.pid));
  return c;
}

class ExitWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = ExitWatcher::Start([this](const VmmExit& e) {
      recorder_.Record(e);
      if (on_exit_) on_exit_(e);
    });
    ASSERT_TRUE(w.ok()) << w.status();
    watcher_ = std::move(*w);
  }
  testing::ExitRecorder recorder_;
  std::function<void(const VmmExit&)> on_exit_;
  std::unique_ptr<ExitWatcher> watcher_;
};

TEST_F(ExitWatcherTest, ReportsExitCodeOfChildAndReapsIt) {
  Child c = StartChild(7);
  ASSERT_TRUE(watcher_->Watch("ns/seven", c.pidfd.get(), c.pid, true).ok());
  auto exits = recorder_.WaitFor(1);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].key, "ns/seven");
  EXPECT_EQ(exits[0].pid, c.pid);
  EXPECT_TRUE(exits[0].status_known);
  EXPECT_EQ(exits[0].exit_code, 7);
  EXPECT_EQ(exits[0].signal, 0);
  EXPECT_EQ(DescribeExit(exits[0]), "exit code 7");
  EXPECT_FALSE(testing::HaveZombieChild());
  EXPECT_EQ(watcher_->watched(), 0u);
}

TEST_F(ExitWatcherTest, ReportsEveryOneOfManyKilledChildren) {
  std::vector<Child> children;
  for (int i = 0; i < 16; ++i) {
    children.push_back(StartChild());
    ASSERT_TRUE(
        watcher_->Watch(Cat("ns/c", i), children.back().pidfd.get(), children.back().pid, true)
            .ok());
  }
  for (auto& c : children) ::kill(c.pid, SIGKILL);
  auto exits = recorder_.WaitFor(children.size());
  ASSERT_EQ(exits.size(), children.size());
  std::set<std::string> keys;
  for (const auto& e : exits) {
    keys.insert(e.key);
    EXPECT_TRUE(e.status_known);
    EXPECT_EQ(e.signal, SIGKILL);
  }
  EXPECT_EQ(keys.size(), children.size());
  EXPECT_FALSE(testing::HaveZombieChild());
}

TEST_F(ExitWatcherTest, NonChildExitHasUnknownStatus) {
  // Watching our own child as if adopted: the watcher must not reap it, only observe the exit.
  Child c = StartChild();
  ASSERT_TRUE(watcher_->Watch("ns/adopted", c.pidfd.get(), c.pid, false).ok());
  ::kill(c.pid, SIGKILL);
  auto exits = recorder_.WaitFor(1);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_FALSE(exits[0].status_known);
  EXPECT_TRUE(testing::HaveZombieChild()) << "a non-child watch must leave reaping to its parent";
  int status = 0;
  EXPECT_EQ(::waitpid(c.pid, &status, 0), c.pid);
}

TEST_F(ExitWatcherTest, DuplicateKeyIsRejectedAndUnwatchFreesIt) {
  Child a = StartChild();
  Child b = StartChild();
  ASSERT_TRUE(watcher_->Watch("ns/x", a.pidfd.get(), a.pid, true).ok());
  absl::Status dup = watcher_->Watch("ns/x", b.pidfd.get(), b.pid, true);
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  watcher_->Unwatch("ns/x");
  EXPECT_EQ(watcher_->watched(), 0u);
  ::kill(a.pid, SIGKILL);
  ASSERT_EQ(::waitpid(a.pid, nullptr, 0), a.pid);  // unwatched: ours to reap

  ASSERT_TRUE(watcher_->Watch("ns/x", b.pidfd.get(), b.pid, true).ok());
  ::kill(b.pid, SIGKILL);
  auto exits = recorder_.WaitFor(1);
  ASSERT_GE(exits.size(), 1u);
  EXPECT_EQ(exits[0].pid, b.pid) << "the unwatched child's exit must not be reported";
}

TEST_F(ExitWatcherTest, CallbackMayWatchAndUnwatch) {
  Child a = StartChild();
  Child b = StartChild(3);
  on_exit_ = [&](const VmmExit& e) {
    if (e.key != "ns/a") return;
    watcher_->Unwatch("ns/a");
    ASSERT_TRUE(watcher_->Watch("ns/b", b.pidfd.get(), b.pid, true).ok());
  };
  ASSERT_TRUE(watcher_->Watch("ns/a", a.pidfd.get(), a.pid, true).ok());
  ::kill(a.pid, SIGKILL);
  auto exits = recorder_.WaitFor(2);
  ASSERT_EQ(exits.size(), 2u);
  EXPECT_EQ(exits[1].key, "ns/b");
  EXPECT_EQ(exits[1].exit_code, 3);
}

TEST_F(ExitWatcherTest, DestroyingWatcherWithLiveWatchesReturns) {
  Child c = StartChild();
  ASSERT_TRUE(watcher_->Watch("ns/live", c.pidfd.get(), c.pid, true).ok());
  watcher_.reset();
  ::kill(c.pid, SIGKILL);
  EXPECT_EQ(::waitpid(c.pid, nullptr, 0), c.pid);
  EXPECT_TRUE(recorder_.Snapshot().empty());
}

}  // namespace
}  // namespace sandboxlet::vmm
