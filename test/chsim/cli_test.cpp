// ch-sim's command line, version selection, API socket rules, exit behaviour, event monitor and
// log file (CONTRACT §2).
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chsim_test_support.h"

namespace sandboxlet::chsim::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kChainHeader[] =
    "Error: Cloud Hypervisor exited with the following chain of errors:\n";

// Leaves a socket file behind, as a crashed VMM does.
void MakeStaleSocket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
}

TEST(ChsimCli, VersionOutputPerRelease) {
  TempDir dir;
  RunResult v48 = RunSim(dir.path(), {.version = 48, .api_socket = false, .args = {"--version"}});
  EXPECT_EQ(v48.status, 0);
  EXPECT_EQ(v48.out, "cloud-hypervisor v48.0\n");
  RunResult v52 = RunSim(dir.path(), {.version = 52, .api_socket = false, .args = {"--version"}});
  EXPECT_EQ(v52.out, "cloud-hypervisor v52.0\n");
  RunResult v53 = RunSim(dir.path(), {.version = 53, .api_socket = false, .args = {"--version"}});
  EXPECT_EQ(v53.out, "cloud-hypervisor v53.0\nMigration Protocol Versions: 0\n");
  RunResult verbose =
      RunSim(dir.path(), {.version = 53, .api_socket = false, .args = {"--version", "-v"}});
  EXPECT_THAT(verbose.out, HasSubstr("Enabled features: ["));
  // Any major from 30 prints as itself.
  RunResult v41 = RunSim(dir.path(), {.version = 41, .api_socket = false, .args = {"--version"}});
  EXPECT_EQ(v41.out, "cloud-hypervisor v41.0\n");
}

TEST(ChsimCli, VersionFromProgramNameUnlessEnvironmentSaysOtherwise) {
  TempDir dir;
  const std::string v48 = std::string(CHSIM_DIR) + "/ch-sim-v48";
  RunResult by_name =
      RunSim(dir.path(), {.version = 0, .api_socket = false, .args = {"--version"}, .binary = v48});
  EXPECT_EQ(by_name.out, "cloud-hypervisor v48.0\n");
  RunResult env_wins = RunSim(
      dir.path(), {.version = 52, .api_socket = false, .args = {"--version"}, .binary = v48});
  EXPECT_EQ(env_wins.out, "cloud-hypervisor v52.0\n");
  RunResult plain = RunSim(dir.path(), {.version = 0, .api_socket = false, .args = {"--version"}});
  EXPECT_THAT(plain.out, StartsWith("cloud-hypervisor v53.0\n"));
}

TEST(ChsimCli, UnknownOptionsFailLikeClap) {
  TempDir dir;
  RunResult bogus = RunSim(dir.path(), {.api_socket = false, .args = {"--bogus"}});
  EXPECT_EQ(bogus.status, 2);
  EXPECT_THAT(bogus.err, HasSubstr("error: unexpected argument '--bogus' found"));
  // --no-shutdown only exists from v52.
  RunResult old =
      RunSim(dir.path(), {.version = 48, .api_socket = false, .args = {"--no-shutdown"}});
  EXPECT_EQ(old.status, 2);
  RunResult missing = RunSim(dir.path(), {.api_socket = false, .args = {"--api-socket"}});
  EXPECT_EQ(missing.status, 2);
  EXPECT_THAT(missing.err, HasSubstr("a value is required for '--api-socket"));
}

TEST(ChsimCli, RestoreOptionsAreGatedByVersion) {
  TempDir dir;
  const std::string restore = Cat("source_url=", FileUrl(dir / "snap"), ",resume=true");
  RunResult v48 = RunSim(dir.path(), {.version = 48, .args = {"--restore", restore}});
  EXPECT_EQ(v48.status, 1);
  EXPECT_THAT(v48.err, StartsWith(kChainHeader));
  EXPECT_THAT(v48.err, HasSubstr("unknown option: resume"));
  // v52 knows the option and fails later, on the missing snapshot.
  RunResult v52 = RunSim(dir.path(), {.version = 52, .args = {"--restore", restore}});
  EXPECT_EQ(v52.status, 1);
  EXPECT_THAT(v52.err, Not(HasSubstr("unknown option")));
  EXPECT_THAT(v52.err, HasSubstr("config.json"));
}

TEST(ChsimCli, BadSeccompValueIsFatal) {
  TempDir dir;
  RunResult r = RunSim(dir.path(), {.args = {"--seccomp", "maybe"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.err, StartsWith(kChainHeader));
  EXPECT_THAT(r.err, HasSubstr("  0: Error parsing --seccomp"));
}

TEST(ChsimSocket, ApiSocketIsOwnerOnly) {
  TempDir dir;
  Sim sim(dir.path(), {});
  ASSERT_TRUE(sim.WaitReady());
  struct stat st {};
  ASSERT_EQ(::stat(sim.sock().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ChsimSocket, StaleSocketFailsUpToV52AndV52RemovesIt) {
  TempDir dir;
  for (int version : {48, 52}) {
    SCOPED_TRACE(Cat("v", version));
    MakeStaleSocket(dir / "api.sock");
    RunResult r = RunSim(dir.path(), {.version = version});
    EXPECT_EQ(r.status, 1);
    EXPECT_THAT(r.err, StartsWith(kChainHeader));
    EXPECT_THAT(r.err, HasSubstr("Address already in use (os error 98)"));
    // v48 leaves the path; v52 removes it at exit after the failed start (CONTRACT §2).
    EXPECT_EQ(PathExists(dir / "api.sock"), version == 48);
    ::unlink((dir / "api.sock").c_str());
  }
}

TEST(ChsimSocket, V53ReplacesStaleSocket) {
  TempDir dir;
  MakeStaleSocket(dir / "api.sock");
  Sim sim(dir.path(), {.version = 53});
  EXPECT_TRUE(sim.WaitReady());
}

TEST(ChsimSocket, V53RefusesSocketLockedByAnotherInstance) {
  TempDir dir;
  Sim first(dir.path(), {.version = 53});
  ASSERT_TRUE(first.WaitReady());
  RunResult second = RunSim(dir.path(), {.version = 53});
  EXPECT_EQ(second.status, 1);
  EXPECT_THAT(second.err, HasSubstr(Cat("API socket \"", dir / "api.sock",
                                        "\" is already in use by another running instance")));
  // The first instance is untouched.
  EXPECT_EQ(first.Call("GET", "vmm.ping").code, 200);

  // A lock held by anyone counts, even without a socket file.
  TempDir other;
  int lock = ::open((other / "api.sock.lock").c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_EQ(::flock(lock, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(RunSim(other.path(), {.version = 53}).status, 1);
  ::close(lock);
}

TEST(ChsimSocket, AdoptsListeningSocketByFd) {
  TempDir dir;
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  const std::string path = dir / "api.sock";  // the harness's default path
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  Sim sim(dir.path(),
          {.api_socket = false, .args = {"--api-socket", Cat("fd=", fd)}, .inherit_fds = {fd}});
  ::close(fd);
  EXPECT_TRUE(sim.WaitReady());
}

TEST(ChsimExit, TermAndIntShutDownWithStatusZero) {
  for (int sig : {SIGTERM, SIGINT}) {
    TempDir dir;
    VmFiles files = MakeVmFiles(dir);
    Sim sim(dir.path(), {});
    ASSERT_TRUE(sim.WaitReady());
    ASSERT_EQ(sim.Call("PUT", "vm.create", MinimalConfig(files).dump()).code, 204);
    ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 204);
    sim.Signal(sig);
    EXPECT_EQ(sim.WaitExit(), 0);
    // The VM released its disk lock; the socket path stays (CH does not remove it).
    EXPECT_TRUE(LockFile(files.disk).valid());
    EXPECT_TRUE(PathExists(sim.sock()));
  }
}

TEST(ChsimExit, VmmShutdownAnswers200EmptyThenExits) {
  TempDir dir;
  Sim sim(dir.path(), {});
  ASSERT_TRUE(sim.WaitReady());
  Response r = sim.Call("PUT", "vmm.shutdown");
  EXPECT_EQ(r.code, 200);
  EXPECT_EQ(r.content_length, 0u);
  EXPECT_EQ(sim.WaitExit(), 0);
}

// Events as CH writes them: pretty-printed objects separated by blank lines.
std::vector<Json> ParseEvents(const std::string& text) {
  std::vector<Json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n}\n\n", pos);
    if (end == std::string::npos) break;
    out.push_back(Json::parse(text.substr(pos, end + 2 - pos), nullptr, false));
    pos = end + 4;
  }
  return out;
}

TEST(ChsimEvents, MonitorWritesPrettyObjectsSeparatedByBlankLines) {
  TempDir dir;
  VmFiles files = MakeVmFiles(dir);
  const std::string events = dir / "events";
  Sim sim(dir.path(), {.args = {"--event-monitor", "path=" + events}});
  ASSERT_TRUE(sim.WaitReady());
  ASSERT_EQ(sim.Call("PUT", "vm.create", MinimalConfig(files).dump()).code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 204);
  ASSERT_EQ(sim.Call("PUT", "vm.pause").code, 204);
  sim.Signal(SIGTERM);
  ASSERT_EQ(sim.WaitExit(), 0);

  std::string text = ReadFile(events).value_or("");
  EXPECT_THAT(text, StartsWith("{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": "));
  EXPECT_THAT(text, HasSubstr("\n  },\n  \"source\": \"vmm\",\n  \"event\": \"starting\",\n"
                              "  \"properties\": null\n}\n\n"));
  std::vector<std::string> seen;
  for (const Json& e : ParseEvents(text)) {
    ASSERT_FALSE(e.is_discarded());
    ASSERT_EQ(e.size(), 4u);
    EXPECT_EQ(e.begin().key(), "timestamp");
    seen.push_back(Cat(e["source"].get<std::string>(), "/", e["event"].get<std::string>()));
  }
  EXPECT_THAT(seen, ::testing::ElementsAre("vmm/starting", "vm/booting", "vm/booted",
                                           "virtio-device/activated", "vm/pausing", "vm/paused",
                                           "vm/shutdown", "vmm/shutdown"));
}

TEST(ChsimLog, LogFileIsTruncatedAndHoldsChLikeLines) {
  TempDir dir;
  const std::string log = dir / "ch.log";
  ASSERT_TRUE(WriteFileAtomic(log, "stale line from a previous run\n").ok());
  Sim sim(dir.path(), {.args = {"--log-file", log, "-v"}});
  ASSERT_TRUE(sim.WaitReady());
  ASSERT_EQ(sim.Call("PUT", "vm.boot").code, 404);
  std::string text = ReadFile(log).value_or("");
  EXPECT_THAT(text, Not(HasSubstr("stale line")));
  EXPECT_THAT(text, StartsWith("cloud-hypervisor: "));
  EXPECT_THAT(text, HasSubstr("API request event: vm.boot"));
}

}  // namespace
}  // namespace sandboxlet::chsim::testing
