// Tests runtime/ch/version.cpp: parsing every `--version` form of CONTRACT §2 and running a binary.
#include "runtime/ch/version.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fs.h"

namespace sandboxlet::ch {
namespace {

using ::testing::HasSubstr;

struct VersionCase {
  const char* output;
  int major, minor, patch;
  const char* suffix;
};

class ParseChVersionTest : public ::testing::TestWithParam<VersionCase> {};

TEST_P(ParseChVersionTest, ParsesEveryForm) {
  const VersionCase& c = GetParam();
  absl::StatusOr<ChVersion> v = ParseChVersion(c.output);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->major, c.major);
  EXPECT_EQ(v->minor, c.minor);
  EXPECT_EQ(v->patch, c.patch);
  EXPECT_EQ(v->suffix, c.suffix);
  EXPECT_TRUE(v->raw.starts_with("cloud-hypervisor v")) << v->raw;
  EXPECT_EQ(v->raw.find('\n'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    ContractForms, ParseChVersionTest,
    ::testing::Values(
        VersionCase{"cloud-hypervisor v48.0\n", 48, 0, 0, ""},
        VersionCase{"cloud-hypervisor v48.0.0\n", 48, 0, 0, ""},
        VersionCase{"cloud-hypervisor v41.0.0-41.0.120.g4ea35aaf\n", 41, 0, 0,
                    "-41.0.120.g4ea35aaf"},
        VersionCase{"cloud-hypervisor v53.0-246-gae44c2971-dirty\n", 53, 0, 0,
                    "-246-gae44c2971-dirty"},
        VersionCase{"cloud-hypervisor v53.0\nMigration Protocol Versions: 0\n", 53, 0, 0, ""},
        VersionCase{"cloud-hypervisor v52.1.2\nEnabled features: [\"kvm\", \"io_uring\"]\n", 52, 1,
                    2, ""},
        VersionCase{"cloud-hypervisor v30.0\r\n", 30, 0, 0, ""},
        VersionCase{"\ncloud-hypervisor v47.0", 47, 0, 0, ""}));

TEST(ParseChVersion, RejectsWhatIsNotCloudHypervisor) {
  for (const char* bad :
       {"", "\n\n", "firecracker v1.4.0\n", "cloud-hypervisor 48.0\n", "cloud-hypervisor v48\n",
        "cloud-hypervisor vX.Y\n", "cloud-hypervisor v.1\n", "Cloud-Hypervisor v48.0\n",
        "cloud-hypervisor v99999999999.0\n", "\x01\x02\xff garbage"}) {
    absl::StatusOr<ChVersion> v = ParseChVersion(bad);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << "input: " << bad;
  }
  EXPECT_THAT(std::string(ParseChVersion("firecracker v1.4.0").status().message()),
              HasSubstr("firecracker v1.4.0"));
}

TEST(ChVersion, GatesFollowTheContract) {
  ChVersion v48 = ChVersion::Of(48), v51 = ChVersion::Of(51), v52 = ChVersion::Of(52),
            v53 = ChVersion::Of(53), v31 = ChVersion::Of(31), v39 = ChVersion::Of(39);
  EXPECT_TRUE(v48.JsonArrayErrors());
  EXPECT_FALSE(ChVersion::Of(46).JsonArrayErrors());
  EXPECT_FALSE(ChVersion::Of(50).ImageTypeField());
  EXPECT_TRUE(v51.ImageTypeField());
  EXPECT_FALSE(v51.RestoreResume());
  EXPECT_TRUE(v52.RestoreResume());
  EXPECT_TRUE(v52.MemoryRestoreMode());
  EXPECT_FALSE(v52.NotCreatedIs404());
  EXPECT_TRUE(v53.NotCreatedIs404());
  EXPECT_TRUE(v53.NullsOmitted());
  EXPECT_TRUE(v53.SocketLock());
  EXPECT_TRUE(v52.BootResumesPaused());
  EXPECT_FALSE(v53.BootResumesPaused());
  EXPECT_FALSE(v39.RestoreNetFds());
  EXPECT_TRUE(ChVersion::Of(40).RestoreNetFds());
  EXPECT_FALSE(v31.PingHasBuildVersion());
  EXPECT_TRUE(ChVersion::Of(32).PingHasBuildVersion());
  EXPECT_EQ(v53.MaxRequestBody(), 51200u);
  EXPECT_EQ(ChVersion::Of(54).MaxRequestBody(), 4u << 20);
  EXPECT_EQ(ParseChVersion("cloud-hypervisor v53.0-246-gae44c2971-dirty")->ToString(),
            "v53.0.0-246-gae44c2971-dirty");
}

class DetectChVersionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ch_version_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)RemoveAll(dir_); }
  std::string Script(const std::string& name, const std::string& body, int mode = 0755) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string dir_;
};

TEST_F(DetectChVersionTest, RunsTheBinary) {
  std::string bin = Script("cloud-hypervisor",
                           "[ \"$1\" = --version ] || exit 3\n"
                           "echo 'cloud-hypervisor v53.0'\necho 'Migration Protocol Versions: 0'");
  absl::StatusOr<ChVersion> v = DetectChVersion(bin, std::chrono::seconds(10));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->major, 53);
}

TEST_F(DetectChVersionTest, MissingBinaryNamesPathAndFlag) {
  std::string bin = dir_ + "/nope/cloud-hypervisor";
  absl::Status s = DetectChVersion(bin, std::chrono::seconds(10)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr(bin));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--vmm-bin"));

  s = DetectChVersion("sandboxlet-no-such-vmm-binary", std::chrono::seconds(10)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("sandboxlet-no-such-vmm-binary"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--vmm-bin"));
}

TEST_F(DetectChVersionTest, NonExecutableIsRefused) {
  std::string bin = Script("cloud-hypervisor", "echo 'cloud-hypervisor v48.0'", 0644);
  // Even root fails access(X_OK) when no execute bit is set.
  absl::Status s = DetectChVersion(bin, std::chrono::seconds(10)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(bin));
}

TEST_F(DetectChVersionTest, OtherProgramIsNotCloudHypervisor) {
  std::string bin = Script("firecracker", "echo 'Firecracker v1.4.0'");
  absl::Status s = DetectChVersion(bin, std::chrono::seconds(10)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(bin));
  EXPECT_THAT(std::string(s.message()), HasSubstr("not Cloud Hypervisor"));

  std::string failing = Script("failing", "echo 'unknown option' >&2; exit 2");
  s = DetectChVersion(failing, std::chrono::seconds(10)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("unknown option"));
}

TEST_F(DetectChVersionTest, HangingBinaryTimesOut) {
  std::string bin = Script("hangs", "exec sleep 600");
  absl::Status s = DetectChVersion(bin, std::chrono::milliseconds(200)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(s.message()), HasSubstr(bin));
}

TEST_F(DetectChVersionTest, DirectoryIsRefused) {
  absl::Status s = DetectChVersion(dir_, std::chrono::seconds(10)).status();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir_));
}

}  // namespace
}  // namespace sandboxlet::ch
