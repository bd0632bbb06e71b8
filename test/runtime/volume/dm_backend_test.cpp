// The device-mapper backend against fake `losetup`/`dmsetup` programs on PATH
// (fake_blockdev.cpp): exact command sequences and snapshot tables, busy retry, reference counts
// across a restart, unwinding at every failing step, leftovers.
#include "runtime/volume/dm_backend.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/runtime/volume/scratch_fs.h"

namespace sandboxlet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Call = std::vector<std::string>;

const Call kListLoops = {"losetup", "--list", "--json", "--output", "NAME,BACK-FILE,RO"};

// Time that moves only when waited on, so backoff is observed without sleeping.
class InstantClock final : public Clock {
 public:
  TimePoint Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  std::chrono::system_clock::time_point WallNow() const override {
    return std::chrono::system_clock::time_point();
  }
  void SleepUntil(TimePoint deadline) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (deadline > now_) {
      sleeps_.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now_));
      now_ = deadline;
    }
  }
  void WaitUntil(std::unique_lock<std::mutex>&, std::condition_variable&,
                 TimePoint deadline) override {
    SleepUntil(deadline);
  }
  std::vector<std::chrono::milliseconds> sleeps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sleeps_;
  }

 private:
  mutable std::mutex mu_;
  TimePoint now_{};
  std::vector<std::chrono::milliseconds> sleeps_;
};

class DmBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("voldm");
    ASSERT_FALSE(root_.empty());
    bin_ = root_ + "/bin";
    fake_ = root_ + "/fake";
    state_ = root_ + "/state";
    ASSERT_TRUE(MakeDirs(bin_).ok());
    ASSERT_TRUE(MakeDirs(fake_ + "/busy").ok());
    ASSERT_EQ(::symlink(FAKE_BLOCKDEV_PATH, (bin_ + "/dmsetup").c_str()), 0);
    ASSERT_EQ(::symlink(FAKE_BLOCKDEV_PATH, (bin_ + "/losetup").c_str()), 0);
    const char* path = ::getenv("PATH");
    old_path_ = path ? path : "/usr/bin:/bin";
    ::setenv("PATH", (bin_ + ":" + old_path_).c_str(), 1);
    ::setenv("SBL_FAKE_BLOCKDEV_DIR", fake_.c_str(), 1);

    base_ = root_ + "/base.img";
    ASSERT_TRUE(testing::WriteSparseImage(base_, kBaseSize, 2 << 20));
    options_.state_dir = state_;
    options_.backend = "devicemapper";
    options_.dev_mapper_dir = fake_ + "/mapper";
    options_.clock = &clock_;
    options_.remove_attempts = 4;
    options_.remove_backoff = std::chrono::milliseconds(100);
    backend_ = NewBackend();
    ASSERT_NE(backend_, nullptr);
  }

  void TearDown() override {
    ::setenv("PATH", old_path_.c_str(), 1);
    ::unsetenv("SBL_FAKE_BLOCKDEV_DIR");
    backend_.reset();
    (void)RemoveAll(root_);
  }

  std::unique_ptr<VolumeBackend> NewBackend() {
    auto b = MakeVolumeBackend(options_);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }

  VolumeSpec Spec(const std::string& id) { return VolumeSpec{id, "default/" + id, base_, 0}; }
  std::string Cow(const std::string& id) { return state_ + "/volumes/" + id + "/rootfs.cow"; }

  std::vector<Call> Calls() {
    std::vector<Call> calls;
    std::ifstream in(fake_ + "/calls.jsonl");
    std::string line;
    while (std::getline(in, line)) calls.push_back(nlohmann::json::parse(line).get<Call>());
    return calls;
  }
  void ResetCalls() {
    ::unlink((fake_ + "/calls.jsonl").c_str());
    ::unlink((fake_ + "/count").c_str());
  }
  void FailCall(int n) { ASSERT_TRUE(WriteFileAtomic(fake_ + "/fail_call", Cat(n)).ok()); }
  void NoFailure() { ::unlink((fake_ + "/fail_call").c_str()); }
  void Busy(const std::string& dm, int times) {
    ASSERT_TRUE(WriteFileAtomic(fake_ + "/busy/" + dm, Cat(times)).ok());
  }

  nlohmann::json FakeState(const std::string& name) {
    auto data = ReadFile(fake_ + "/" + name);
    if (!data.ok() || data->empty()) return nlohmann::json::object();
    return nlohmann::json::parse(*data);
  }
  nlohmann::json Bases() {
    auto data = ReadFile(state_ + "/volumes/bases.json");
    if (!data.ok()) return nlohmann::json::object();
    return nlohmann::json::parse(*data);
  }
  // Nothing of ours remains: no loop, no dm device, no volume directory, no base reference.
  void ExpectNothingLeft() {
    EXPECT_EQ(FakeState("loops.json"), nlohmann::json::object());
    EXPECT_EQ(FakeState("dm.json"), nlohmann::json::object());
    EXPECT_EQ(Bases(), nlohmann::json::object());
    auto ids = backend_->ListLeftovers();
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ::testing::IsEmpty());
  }
  std::string Table(int origin_loop, int cow_loop) {
    return Cat("0 ", kBaseSize / 512, " snapshot /dev/loop", origin_loop, " /dev/loop", cow_loop,
               " P 8");
  }

  static constexpr uint64_t kBaseSize = 8 << 20;
  std::string root_, bin_, fake_, state_, base_, old_path_;
  InstantClock clock_;
  VolumeOptions options_;
  std::unique_ptr<VolumeBackend> backend_;
};

TEST_F(DmBackendTest, CreateAttachesBaseAndCowAndCreatesSnapshotTarget) {
  auto vol = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(vol.ok()) << vol.status();
  EXPECT_EQ(backend_->Name(), "devicemapper");
  EXPECT_EQ(vol->device_path, fake_ + "/mapper/sbl-sb1");
  EXPECT_EQ(vol->backend, "devicemapper");
  EXPECT_EQ(vol->base_image, base_);
  EXPECT_THAT(vol->base_digest, ::testing::StartsWith("sha256:"));
  EXPECT_THAT(Calls(),
              ElementsAre(kListLoops, Call{"losetup", "--find", "--show", "--read-only", base_},
                          Call{"losetup", "--find", "--show", Cow("sb1")},
                          Call{"dmsetup", "create", "sbl-sb1", "--table", Table(0, 1)}));
  // The CoW holds every origin chunk plus the exception store's metadata, and costs nothing yet.
  EXPECT_GE(testing::FileSize(Cow("sb1")), kBaseSize + kBaseSize / 256 + 4096);
  EXPECT_EQ(testing::AllocatedBytes(Cow("sb1")), 0u);
  EXPECT_EQ(Bases()[base_]["users"], nlohmann::json::array({"sb1"}));
}

TEST_F(DmBackendTest, SecondVolumeSharesTheBaseLoop) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ResetCalls();
  ASSERT_TRUE(backend_->Create(Spec("sb2")).ok());
  EXPECT_THAT(Calls(), ElementsAre(kListLoops, Call{"losetup", "--find", "--show", Cow("sb2")},
                                   Call{"dmsetup", "create", "sbl-sb2", "--table", Table(0, 2)}));
  EXPECT_EQ(Bases()[base_]["users"], nlohmann::json::array({"sb1", "sb2"}));
}

TEST_F(DmBackendTest, RemoveRetriesWhileBusyThenTearsDownInReverseOrder) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ResetCalls();
  Busy("sbl-sb1", 2);
  ASSERT_TRUE(backend_->Remove("sb1").ok());
  Call remove = {"dmsetup", "remove", "sbl-sb1"};
  EXPECT_THAT(Calls(), ElementsAre(remove, remove, remove, kListLoops,
                                   Call{"losetup", "--detach", "/dev/loop1"}, kListLoops,
                                   Call{"losetup", "--detach", "/dev/loop0"}));
  EXPECT_THAT(clock_.sleeps(),
              ElementsAre(std::chrono::milliseconds(100), std::chrono::milliseconds(200)));
  EXPECT_FALSE(PathExists(state_ + "/volumes/sb1"));
  ExpectNothingLeft();
  // Idempotent: removing again is fine.
  EXPECT_TRUE(backend_->Remove("sb1").ok());
}

TEST_F(DmBackendTest, RemoveGivesUpWhenStillBusyAndKeepsTheVolume) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  Busy("sbl-sb1", 100);
  absl::Status st = backend_->Remove("sb1");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("volume sb1: remove: remove dm device"));
  EXPECT_THAT(st.message(), HasSubstr("still busy after 4 attempts"));
  EXPECT_EQ(clock_.sleeps().size(), 3u);
  EXPECT_TRUE(FakeState("dm.json").contains("sbl-sb1"));
  EXPECT_TRUE(PathExists(Cow("sb1")));
}

TEST_F(DmBackendTest, BaseReferencesSurviveARestart) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(backend_->Create(Spec("sb2")).ok());
  backend_ = NewBackend();  // sandboxlet restart
  ASSERT_TRUE(backend_->Remove("sb1").ok());
  EXPECT_TRUE(FakeState("loops.json").contains("/dev/loop0")) << "base loop still used by sb2";
  EXPECT_EQ(Bases()[base_]["users"], nlohmann::json::array({"sb2"}));
  backend_ = NewBackend();
  ASSERT_TRUE(backend_->Remove("sb2").ok());
  ExpectNothingLeft();
}

TEST_F(DmBackendTest, OpenIsIdempotentOnLiveDevices) {
  auto created = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(created.ok());
  ResetCalls();
  backend_ = NewBackend();
  auto opened = backend_->Open(Spec("sb1"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->device_path, created->device_path);
  EXPECT_EQ(opened->base_digest, created->base_digest);
  EXPECT_THAT(Calls(), ElementsAre(kListLoops, kListLoops, Call{"dmsetup", "info", "sbl-sb1"}));
  EXPECT_EQ(Bases()[base_]["users"], nlohmann::json::array({"sb1"}));
}

TEST_F(DmBackendTest, OpenAfterHostRebootRecreatesDevicesFromTheCow) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(testing::WriteAt(Cow("sb1"), 0, "persistent exception store"));
  // A reboot loses every loop and dm device; the files and bases.json remain.
  ::unlink((fake_ + "/loops.json").c_str());
  ::unlink((fake_ + "/dm.json").c_str());
  ResetCalls();
  backend_ = NewBackend();
  ASSERT_TRUE(backend_->Open(Spec("sb1")).ok());
  EXPECT_THAT(Calls(),
              ElementsAre(kListLoops, Call{"losetup", "--find", "--show", "--read-only", base_},
                          kListLoops, Call{"losetup", "--find", "--show", Cow("sb1")},
                          Call{"dmsetup", "info", "sbl-sb1"},
                          Call{"dmsetup", "create", "sbl-sb1", "--table", Table(0, 1)}));
  auto cow = ReadFile(Cow("sb1"));
  ASSERT_TRUE(cow.ok());
  EXPECT_TRUE(StartsWith(*cow, "persistent exception store")) << "the CoW was re-used, not reset";
}

TEST_F(DmBackendTest, OpenOfUnknownVolumeIsNotFound) {
  auto vol = backend_->Open(Spec("nope"));
  EXPECT_EQ(vol.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(vol.status().message(), HasSubstr("volume default/nope: open"));
  EXPECT_TRUE(Calls().empty());
}

TEST_F(DmBackendTest, CaptureAndRestoreMoveTheCowIntoANewVolume) {
  auto vol = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(vol.ok());
  ASSERT_TRUE(testing::WriteAt(Cow("sb1"), 4096, "guest writes"));
  std::string snap = root_ + "/snap";
  ASSERT_TRUE(MakeDirs(snap).ok());
  ResetCalls();
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kCopy).ok());
  EXPECT_TRUE(Calls().empty()) << "capturing a paused volume needs no device change";
  EXPECT_EQ(*ReadFile(snap + "/rootfs.cow"), *ReadFile(Cow("sb1")));
  // The running sandbox's later writes do not reach the snapshot.
  ASSERT_TRUE(testing::WriteAt(Cow("sb1"), 4096, "LATER"));
  EXPECT_NE(*ReadFile(snap + "/rootfs.cow"), *ReadFile(Cow("sb1")));

  ResetCalls();
  auto restored = backend_->RestoreFrom(Spec("sb2"), snap, vol->base_digest);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->device_path, fake_ + "/mapper/sbl-sb2");
  EXPECT_THAT(Calls(), ElementsAre(kListLoops, Call{"losetup", "--find", "--show", Cow("sb2")},
                                   Call{"dmsetup", "create", "sbl-sb2", "--table", Table(0, 2)}));
  EXPECT_EQ(*ReadFile(Cow("sb2")), *ReadFile(snap + "/rootfs.cow"));
  EXPECT_TRUE(PathExists(snap + "/rootfs.cow")) << "a snapshot can be restored again";
}

TEST_F(DmBackendTest, CaptureMoveTakesTheVolumeDown) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(testing::WriteAt(Cow("sb1"), 0, "hibernated"));
  std::string snap = root_ + "/snap";
  ASSERT_TRUE(MakeDirs(snap).ok());
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kMove).ok());
  EXPECT_TRUE(StartsWith(*ReadFile(snap + "/rootfs.cow"), "hibernated"));
  EXPECT_FALSE(PathExists(state_ + "/volumes/sb1"));
  ExpectNothingLeft();
}

TEST_F(DmBackendTest, RestoreRefusesACowRecordedAgainstAnotherBase) {
  std::string snap = root_ + "/snap";
  ASSERT_TRUE(MakeDirs(snap).ok());
  ASSERT_TRUE(WriteFileAtomic(snap + "/rootfs.cow", "cow").ok());
  std::string recorded = "sha256:" + std::string(64, '0');
  auto vol = backend_->RestoreFrom(Spec("sb2"), snap, recorded);
  ASSERT_EQ(vol.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(vol.status().message(), HasSubstr("volume default/sb2: restore from " + snap));
  EXPECT_THAT(vol.status().message(), HasSubstr("base image " + base_));
  EXPECT_THAT(vol.status().message(), HasSubstr(recorded));
  auto actual = ComputeBaseDigest(base_);
  ASSERT_TRUE(actual.ok());
  EXPECT_THAT(vol.status().message(), HasSubstr(*actual));
  EXPECT_TRUE(Calls().empty());
  ExpectNothingLeft();
}

TEST_F(DmBackendTest, FlattenWritesBasePlusCowAsANewSparseReadOnlyImage) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  // The fake's device file plays the dm device: the base's content plus what the guest wrote.
  std::string device = fake_ + "/mapper/sbl-sb1";
  ASSERT_TRUE(testing::WriteAt(device, 5 << 20, "written by the guest"));
  ResetCalls();
  std::string flat = root_ + "/flat.img";
  ASSERT_TRUE(backend_->Flatten("sb1", flat).ok());
  EXPECT_TRUE(Calls().empty());
  EXPECT_EQ(*ReadFile(flat), *ReadFile(device));
  struct stat st;
  ASSERT_EQ(::stat(flat.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444);
  EXPECT_LT(testing::AllocatedBytes(flat), 3u << 20) << "holes stay holes";
  absl::Status again = backend_->Flatten("sb1", flat);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  // The flattened image is a base like any other.
  VolumeSpec spec = Spec("sb3");
  spec.base_image = flat;
  EXPECT_TRUE(backend_->Create(spec).ok());
}

TEST_F(DmBackendTest, CreateUnwindsAtEveryFailingStep) {
  // Calls of a first create: list, attach base, attach cow, dmsetup create.
  for (int n = 1; n <= 4; ++n) {
    SCOPED_TRACE(Cat("failing call ", n));
    ResetCalls();
    FailCall(n);
    auto vol = backend_->Create(Spec("sb1"));
    ASSERT_FALSE(vol.ok());
    EXPECT_THAT(vol.status().message(), HasSubstr("volume default/sb1: create: activate: "));
    EXPECT_THAT(vol.status().message(), HasSubstr("injected failure"));
    NoFailure();
    EXPECT_FALSE(PathExists(state_ + "/volumes/sb1"));
    ExpectNothingLeft();
  }
}

TEST_F(DmBackendTest, RestoreUnwindsAtEveryFailingStepWithoutTouchingOtherVolumes) {
  auto first = backend_->Create(Spec("sb1"));
  ASSERT_TRUE(first.ok());
  std::string snap = root_ + "/snap";
  ASSERT_TRUE(MakeDirs(snap).ok());
  ASSERT_TRUE(backend_->CaptureInto("sb1", snap, CaptureMode::kCopy).ok());
  nlohmann::json loops_before = FakeState("loops.json");
  // Calls of a restore next to a live volume: list, attach cow, dmsetup create.
  for (int n = 1; n <= 3; ++n) {
    SCOPED_TRACE(Cat("failing call ", n));
    ResetCalls();
    FailCall(n);
    auto vol = backend_->RestoreFrom(Spec("sb2"), snap, first->base_digest);
    ASSERT_FALSE(vol.ok());
    EXPECT_THAT(vol.status().message(), HasSubstr("volume default/sb2: restore from"));
    NoFailure();
    EXPECT_FALSE(PathExists(state_ + "/volumes/sb2"));
    EXPECT_EQ(FakeState("loops.json"), loops_before);
    EXPECT_EQ(Bases()[base_]["users"], nlohmann::json::array({"sb1"}));
    auto ids = backend_->ListLeftovers();
    ASSERT_TRUE(ids.ok());
    EXPECT_THAT(*ids, ElementsAre("sb1"));
  }
  ASSERT_TRUE(backend_->Remove("sb1").ok());
  ExpectNothingLeft();
}

TEST_F(DmBackendTest, RemoveFailureAtEachStepCanBeRetried) {
  for (int n = 1; n <= 5; ++n) {
    SCOPED_TRACE(Cat("failing call ", n));
    ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
    ResetCalls();
    FailCall(n);  // remove, list, detach cow, list, detach base
    EXPECT_FALSE(backend_->Remove("sb1").ok());
    NoFailure();
    ASSERT_TRUE(backend_->Remove("sb1").ok());
    ExpectNothingLeft();
  }
}

TEST_F(DmBackendTest, LeftoversAreFoundFromDevicesLoopsAndDirectories) {
  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  ASSERT_TRUE(backend_->Create(Spec("sb2")).ok());
  // sb2's files vanished (e.g. a state directory restored from an older copy): its dm device
  // and loops are still ours.
  ASSERT_TRUE(RemoveAll(state_ + "/volumes/sb2").ok());
  auto ids = backend_->ListLeftovers();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre("sb1", "sb2"));
  ASSERT_TRUE(backend_->Remove("sb2").ok());
  ASSERT_TRUE(backend_->Remove("sb1").ok());
  ExpectNothingLeft();
}

TEST_F(DmBackendTest, BadInputIsRefusedWithClearErrorsAndNoDeviceCalls) {
  VolumeSpec bad_id = Spec("../escape");
  auto r1 = backend_->Create(bad_id);
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r1.status().message(), HasSubstr("volume default/../escape: create: check id"));

  VolumeSpec missing = Spec("sb1");
  missing.base_image = root_ + "/missing.img";
  auto r2 = backend_->Create(missing);
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r2.status().message(), HasSubstr("volume default/sb1: create: inspect base image"));
  EXPECT_THAT(r2.status().message(), HasSubstr(missing.base_image));

  VolumeSpec dir = Spec("sb1");
  dir.base_image = root_;
  auto r3 = backend_->Create(dir);
  EXPECT_EQ(r3.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r3.status().message(), HasSubstr("not a regular file"));

  std::string odd = root_ + "/odd.img";
  ASSERT_TRUE(WriteFileAtomic(odd, "not a whole sector").ok());
  VolumeSpec odd_spec = Spec("sb1");
  odd_spec.base_image = odd;
  EXPECT_THAT(backend_->Create(odd_spec).status().message(),
              HasSubstr("is not a multiple of 512 bytes"));

  VolumeSpec big = Spec("sb1");
  big.min_size_bytes = kBaseSize + 1;
  EXPECT_EQ(backend_->Create(big).status().code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(backend_->Create(Spec("sb1")).ok());
  EXPECT_EQ(backend_->Create(Spec("sb1")).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(backend_->Remove("sb1").ok());
  ResetCalls();
  EXPECT_FALSE(backend_->Remove("a/b").ok());
  EXPECT_TRUE(Calls().empty());
  ExpectNothingLeft();
}

TEST(DmCowSize, CoversEveryChunkPlusExceptionMetadata) {
  constexpr uint64_t kGiB = 1ull << 30;
  uint64_t chunks = kGiB / 4096;
  uint64_t needed = (1 + chunks + chunks / 256) * 4096;
  uint64_t size = DmVolumeBackend::CowSizeFor(kGiB);
  EXPECT_GE(size, needed);
  EXPECT_LT(size, needed + (1 << 20));
  EXPECT_EQ(size % (1 << 20), 0u);
  EXPECT_GE(DmVolumeBackend::CowSizeFor(512), 3u * 4096);
}

}  // namespace
}  // namespace sandboxlet
