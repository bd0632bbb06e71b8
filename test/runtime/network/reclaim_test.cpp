#include "runtime/network/reclaim.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/command.h"
#include "runtime/base/fs.h"
#include "runtime/network/netns.h"
#include "test/runtime/network/network_test_env.h"

namespace sandboxlet::network {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

class ReclaimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = testing::NetnsUnavailableReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    dir_ = testing::MakeTempDir();
    prefix_ = testing::ProcessPrefix('r');
    NetworkConfig config{.state_dir = dir_, .cidr = testing::ProcessCidr(), .name_prefix = prefix_};
    auto net = SandboxNetwork::Open(config);
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = std::move(*net);
  }
  void TearDown() override {
    if (net_ != nullptr) {
      (void)ReclaimNetworkLeftovers(*net_, {});
      (void)net_->RemoveHostRules();
    }
    (void)RunCommand({"ip", "link", "del", prefix_ + "p100"});
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }
  std::string dir_;
  std::string prefix_;
  std::unique_ptr<SandboxNetwork> net_;
};

TEST_F(ReclaimTest, RemovesEachKindOfLeftoverAndSparesClaimedOnes) {
  ASSERT_TRUE(net_->Create({.id = "dead-a"}).ok());
  auto kept = net_->Create({.id = "alive"});
  ASSERT_TRUE(kept.ok());
  ASSERT_TRUE(net_->Create({.id = "dead-c"}).ok());
  // A netns with no slot, a veth with no slot owner, a slot with nothing else.
  auto orphan_ns = CreateNamedNetns(kDefaultNetnsDir, prefix_ + "-orphan");
  ASSERT_TRUE(orphan_ns.ok());
  ASSERT_TRUE(RunChecked({"ip", "link", "add", prefix_ + "v100", "type", "veth", "peer", "name",
                          prefix_ + "p100"})
                  .ok());
  ASSERT_TRUE(net_->slots().Acquire("ghost").ok());

  auto before = net_->ListLeftovers();
  ASSERT_TRUE(before.ok());
  EXPECT_THAT(before->netns_ids, UnorderedElementsAre("dead-a", "alive", "dead-c", "orphan"));
  EXPECT_EQ(before->host_veths.size(), 4u);
  EXPECT_EQ(before->slots.size(), 4u);

  auto result = ReclaimNetworkLeftovers(*net_, {"alive"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->netns_removed, 3);
  EXPECT_EQ(result->veths_removed, 3);
  EXPECT_EQ(result->slots_released, 3);
  EXPECT_EQ(result->failures, 0);

  auto after = net_->ListLeftovers();
  ASSERT_TRUE(after.ok());
  EXPECT_THAT(after->netns_ids, UnorderedElementsAre("alive"));
  EXPECT_THAT(after->host_veths, UnorderedElementsAre(kept->host_veth));
  ASSERT_EQ(after->slots.size(), 1u);
  EXPECT_EQ(after->slots[0].id, "alive");
  auto links = RunChecked({"ip", "-o", "link", "show"});
  ASSERT_TRUE(links.ok());
  EXPECT_THAT(links->out, Not(HasSubstr(prefix_ + "p100")));
  // The claimed sandbox still works as before.
  EXPECT_TRUE(net_->Lookup("alive").ok());
  EXPECT_TRUE(RunChecked({"ip", "-n", kept->netns_name, "link", "show", "tap0"}).ok());
}

TEST_F(ReclaimTest, ManyLeftoversAreAllReclaimed) {
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(net_->Create({.id = Cat("many-", i)}).ok()) << i;
  auto result = ReclaimNetworkLeftovers(*net_, {}, 8);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->netns_removed, 40);
  EXPECT_EQ(result->veths_removed, 40);
  EXPECT_EQ(result->slots_released, 40);
  auto after = net_->ListLeftovers();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->netns_ids.empty());
  EXPECT_TRUE(after->host_veths.empty());
  EXPECT_TRUE(after->slots.empty());
}

}  // namespace
}  // namespace sandboxlet::network
