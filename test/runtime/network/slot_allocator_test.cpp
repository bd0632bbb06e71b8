#include "runtime/network/slot_allocator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "runtime/base/fs.h"
#include "test/runtime/network/network_test_env.h"

namespace sandboxlet::network {
namespace {

using ::testing::HasSubstr;

class SlotAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    ASSERT_FALSE(dir_.empty());
    state_ = dir_ + "/network/slots.json";
  }
  void TearDown() override { (void)RemoveAll(dir_); }
  std::string dir_;
  std::string state_;
};

TEST_F(SlotAllocatorTest, AcquireGivesPairAddressesAndIsIdempotent) {
  auto alloc = SlotAllocator::Open("10.200.0.0/16", state_);
  ASSERT_TRUE(alloc.ok()) << alloc.status();
  auto a = (*alloc)->Acquire("a");
  auto b = (*alloc)->Acquire("b");
  auto a2 = (*alloc)->Acquire("a");
  ASSERT_TRUE(a.ok() && b.ok() && a2.ok());
  EXPECT_EQ(a->index, 0u);
  EXPECT_EQ(b->index, 1u);
  EXPECT_EQ(a2->index, 0u);
  EXPECT_EQ(FormatIpv4(b->host_ip), "10.200.0.2");
  EXPECT_EQ(FormatIpv4(b->slot_ip), "10.200.0.3");
  EXPECT_EQ((*alloc)->List().size(), 2u);
}

TEST_F(SlotAllocatorTest, NewInstanceSeesPersistedSlotsAndNeverReusesThem) {
  {
    auto alloc = SlotAllocator::Open("10.200.0.0/16", state_);
    ASSERT_TRUE(alloc.ok());
    ASSERT_TRUE((*alloc)->Acquire("a").ok());
    ASSERT_TRUE((*alloc)->Acquire("b").ok());
    ASSERT_TRUE((*alloc)->Acquire("c").ok());
    ASSERT_TRUE((*alloc)->Release("b").ok());
  }
  auto again = SlotAllocator::Open("10.200.0.0/16", state_);
  ASSERT_TRUE(again.ok()) << again.status();
  auto c = (*again)->Lookup("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->index, 2u);
  EXPECT_FALSE((*again)->Lookup("b").ok());
  auto d = (*again)->Acquire("d");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->index, 1u);  // the freed slot, never a live one
  auto owner = (*again)->OwnerOf(0);
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(*owner, "a");
}

TEST_F(SlotAllocatorTest, FullCidrIsAClearError) {
  auto alloc = SlotAllocator::Open("10.9.0.0/30", state_);
  ASSERT_TRUE(alloc.ok());
  EXPECT_EQ((*alloc)->Capacity(), 2u);
  ASSERT_TRUE((*alloc)->Acquire("a").ok());
  ASSERT_TRUE((*alloc)->Acquire("b").ok());
  auto c = (*alloc)->Acquire("c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("sandbox c"));
  EXPECT_THAT(c.status().message(), HasSubstr("10.9.0.0/30"));
}

TEST_F(SlotAllocatorTest, BadCidrsAreRejected) {
  for (const char* cidr :
       {"10.9.0.1/32", "10.9.0.0/32", "10.9.0.1/24", "10.9.0.0", "x/24", "10.9.0.0/33"}) {
    auto alloc = SlotAllocator::Open(cidr, state_);
    EXPECT_FALSE(alloc.ok()) << cidr;
    EXPECT_EQ(alloc.status().code(), absl::StatusCode::kInvalidArgument) << cidr;
  }
}

TEST_F(SlotAllocatorTest, StateForAnotherCidrIsRefused) {
  {
    auto alloc = SlotAllocator::Open("10.200.0.0/16", state_);
    ASSERT_TRUE(alloc.ok());
    ASSERT_TRUE((*alloc)->Acquire("a").ok());
  }
  auto other = SlotAllocator::Open("10.201.0.0/16", state_);
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().message(), HasSubstr("10.200.0.0/16"));
}

TEST_F(SlotAllocatorTest, CorruptStateIsAnErrorNotACrash) {
  ASSERT_TRUE(MakeDirs(dir_ + "/network").ok());
  ASSERT_TRUE(WriteFileAtomic(state_, "{\"cidr\": \"10.200.0.0/16\", \"slots\": {\"a\": -3").ok());
  auto alloc = SlotAllocator::Open("10.200.0.0/16", state_);
  ASSERT_FALSE(alloc.ok());
  EXPECT_EQ(alloc.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(alloc.status().message(), HasSubstr(state_));
}

TEST_F(SlotAllocatorTest, StateFromAnEarlierBootIsIgnored) {
  // After a reboot no veth or netns of the old slots exists, so every slot is free again.
  ASSERT_TRUE(MakeDirs(dir_ + "/network").ok());
  ASSERT_TRUE(WriteFileAtomic(state_,
                              "{\"version\":1,\"boot_id\":\"00000000-old-boot\","
                              "\"cidr\":\"10.200.0.0/16\",\"slots\":{\"a\":0}}")
                  .ok());
  auto alloc = SlotAllocator::Open("10.200.0.0/16", state_);
  ASSERT_TRUE(alloc.ok()) << alloc.status();
  EXPECT_TRUE((*alloc)->List().empty());
  auto b = (*alloc)->Acquire("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->index, 0u);
}

TEST_F(SlotAllocatorTest, ReleaseManyFreesAllWithOneWrite) {
  auto alloc = SlotAllocator::Open("10.200.0.0/24", state_);
  ASSERT_TRUE(alloc.ok());
  for (const char* id : {"a", "b", "c", "d"}) ASSERT_TRUE((*alloc)->Acquire(id).ok());
  ASSERT_TRUE((*alloc)->ReleaseMany({"a", "c", "missing"}).ok());
  auto again = SlotAllocator::Open("10.200.0.0/24", state_);
  ASSERT_TRUE(again.ok());
  auto list = (*again)->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, "b");
  EXPECT_EQ(list[1].id, "d");
}

TEST_F(SlotAllocatorTest, ConcurrentAcquiresGetDistinctSlots) {
  auto alloc = SlotAllocator::Open("10.200.0.0/24", state_);
  ASSERT_TRUE(alloc.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) (void)(*alloc)->Acquire(Cat("t", t, "-", i));
    });
  }
  for (auto& th : threads) th.join();
  auto list = (*alloc)->List();
  ASSERT_EQ(list.size(), 40u);
  for (size_t i = 0; i < list.size(); ++i) EXPECT_EQ(list[i].index, i);
}

}  // namespace
}  // namespace sandboxlet::network
