// End-to-end: the real kubectl binaries (1.27 … 1.33, installed beside the Google Cloud SDK
// dispatcher that /usr/bin/kubectl links to) against an in-test ApiServer over a real ObjectStore
// on a temporary file. There is no reconciler: where a controller would move a Sandbox to Running
// or drop a finalizer, the test writes the store itself.
//
// The full scenario runs for the oldest and the newest kubectl installed, a smoke subset for the
// versions in between.
//
// Flags per version (kubectl's client-side field validation needs OpenAPI, which this server
// serves as v3 JSON and v2 JSON but not v2 protobuf):
//   1.27, 1.28: `--validate=false` on apply/create (they check fieldValidation support through
//               OpenAPI v2 protobuf and fail with "the server could not find the requested
//               resource" otherwise); `kubectl explain` does not work (also v2 protobuf); unknown
//               fields are then dropped by the server (fieldValidation=Ignore).
//   1.29 … 1.33: no extra flags; server-side field validation (Strict/Warn) and explain work.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "api/codec.h"
#include "controller/rest/kubeconfig.h"
#include "runtime/base/command.h"
#include "test/controller/rest/rest_test_support.h"

extern char** environ;

namespace sandboxlet::rest {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr auto kDeadline = std::chrono::seconds(30);

// The versioned kubectl binaries: kubectl.<major>.<minor> in the dispatcher's directory.
std::string KubectlDir() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::canonical("/usr/bin/kubectl", ec);
  return ec ? "" : p.parent_path().string();
}

std::vector<std::string> InstalledVersions() {
  std::vector<std::pair<int, std::string>> found;
  std::string dir = KubectlDir();
  if (dir.empty()) return {};
  std::regex re(R"(kubectl\.1\.(\d+))");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, re)) found.emplace_back(std::stoi(m[1]), "1." + m[1].str());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [minor, v] : found) out.push_back(v);
  return out;
}

int Minor(const std::string& version) { return std::stoi(version.substr(2)); }

std::vector<std::string> FullVersions() {
  std::vector<std::string> all = InstalledVersions();
  if (all.size() <= 2) return all;
  return {all.front(), all.back()};
}

std::vector<std::string> SmokeVersions() {
  std::vector<std::string> all = InstalledVersions();
  if (all.size() <= 2) return {};
  return std::vector<std::string>(all.begin() + 1, all.end() - 1);
}

// A kubectl running in the background whose output is read as it comes (for `get -w`).
class BackgroundKubectl {
 public:
  BackgroundKubectl(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string entry = *e;
      std::string key = entry.substr(0, entry.find('=') + 1);
      bool overridden = std::any_of(env.begin(), env.end(),
                                    [&](const std::string& x) { return x.rfind(key, 0) == 0; });
      if (!overridden) env_strings.push_back(std::move(entry));
    }
    for (const auto& e : env) env_strings.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_fd_ = fds[0];
  }
  ~BackgroundKubectl() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }

  // Reads output until `pattern` appears after `from` or the deadline passes.
  bool WaitFor(const std::string& pattern, size_t from = 0) {
    auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (output_.find(pattern, from) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = read(out_fd_, buf, sizeof(buf));
      if (n <= 0) return output_.find(pattern, from) != std::string::npos;
      output_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  const std::string& output() const { return output_; }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string output_;
};

class KubectlTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_NE(srv_.server, nullptr);
    binary_ = KubectlDir() + "/kubectl." + GetParam();
    kubeconfig_ = srv_.dir.path() + "/kubeconfig";
    ASSERT_TRUE(WriteFileAtomic(kubeconfig_, Kubeconfig(srv_.server->url())).ok());
    ASSERT_TRUE(MakeDirs(srv_.dir.path() + "/home").ok());
  }

  std::vector<std::string> Argv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {binary_, "--kubeconfig", kubeconfig_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  std::vector<std::string> Env() const { return {"HOME=" + srv_.dir.path() + "/home"}; }

  CommandResult Kubectl(const std::vector<std::string>& args, const std::string& stdin_data = "") {
    CommandOptions options;
    options.timeout = kDeadline;
    options.stdin_data = stdin_data;
    options.env = Env();
    absl::StatusOr<CommandResult> r = RunCommand(Argv(args), options);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  }

  // Flags apply/create need on this version (see the file comment).
  std::vector<std::string> ValidateFlags() const {
    if (Minor(GetParam()) < 29) return {"--validate=false"};
    return {};
  }

  CommandResult Apply(const std::string& manifest, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"apply", "-f", "-"};
    for (const auto& f : ValidateFlags()) args.push_back(f);
    args.insert(args.end(), extra.begin(), extra.end());
    return Kubectl(args, manifest);
  }

  json Stored(const std::string& name) {
    auto o = srv_.store->Get("sandboxes", "default", name);
    EXPECT_TRUE(o.ok()) << o.status();
    return o.ok() ? *o : json();
  }

  void SetStatus(const std::string& name, const json& status) {
    json o = Stored(name);
    o["status"] = status;
    ASSERT_TRUE(srv_.store->UpdateStatus("sandboxes", o).ok());
  }

  void AddEvent(const std::string& sandbox, const std::string& reason, const std::string& message) {
    json sbx = Stored(sandbox);
    json event = {{"apiVersion", "v1"},
                  {"kind", "Event"},
                  {"metadata", {{"name", sandbox + ".started"}, {"namespace", "default"}}},
                  {"involvedObject",
                   {{"apiVersion", "sandboxlet.dev/v1alpha1"},
                    {"kind", "Sandbox"},
                    {"name", sandbox},
                    {"namespace", "default"},
                    {"uid", sbx["metadata"]["uid"]}}},
                  {"reason", reason},
                  {"message", message},
                  {"type", "Normal"},
                  {"count", 1},
                  {"source", {{"component", "sandboxlet"}}},
                  {"firstTimestamp", sbx["metadata"]["creationTimestamp"]},
                  {"lastTimestamp", sbx["metadata"]["creationTimestamp"]}};
    absl::StatusOr<json> created = srv_.store->Create("events", event);
    ASSERT_TRUE(created.ok()) << created.status();
  }

  static std::string Manifest(const std::string& name, int vcpus, const std::string& extra = "") {
    return "apiVersion: sandboxlet.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: " + name +
           "\n  labels:\n    app: " + name +
           "\nspec:\n  template: ubuntu\n  vcpus: " + std::to_string(vcpus) +
           "\n  memoryMiB: 1024\n" + extra;
  }

  testing::ServerUnderTest srv_;
  std::string binary_;
  std::string kubeconfig_;
};

class KubectlFullTest : public KubectlTest {};
class KubectlSmokeTest : public KubectlTest {};

TEST_P(KubectlFullTest, ApplyCreatesLeavesUnchangedAndConfigures) {
  CommandResult r = Apply(Manifest("demo", 2));
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sandbox.sandboxlet.dev/demo created"));
  r = Apply(Manifest("demo", 2));
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sandbox.sandboxlet.dev/demo unchanged"));
  r = Apply(Manifest("demo", 3));
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sandbox.sandboxlet.dev/demo configured"));
  json o = Stored("demo");
  EXPECT_EQ(o["spec"]["vcpus"], 3);
  EXPECT_EQ(o["metadata"]["generation"], 2);
  EXPECT_TRUE(
      o["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
}

TEST_P(KubectlFullTest, ServerSideApplyConflictsWithAnotherManagerUntilForced) {
  CommandResult r = Apply(Manifest("ssa", 2), {"--server-side"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("serverside-applied"));
  r = Apply(Manifest("ssa", 4), {"--server-side", "--field-manager=other"});
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("conflict with \"kubectl\""));
  EXPECT_THAT(r.err, HasSubstr(".spec.vcpus"));
  EXPECT_EQ(Stored("ssa")["spec"]["vcpus"], 2);
  r = Apply(Manifest("ssa", 4), {"--server-side", "--field-manager=other", "--force-conflicts"});
  ASSERT_TRUE(r.ok()) << r.err;
  json o = Stored("ssa");
  EXPECT_EQ(o["spec"]["vcpus"], 4);
  std::set<std::string> managers;
  for (const auto& e : o["metadata"]["managedFields"]) managers.insert(e["manager"]);
  EXPECT_EQ(managers, (std::set<std::string>{"kubectl", "other"}));
}

TEST_P(KubectlFullTest, GetPrintsTablesAndStructuredOutput) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  SetStatus("demo", {{"phase", "Running"}, {"network", {{"ip", "10.200.0.2"}}}});
  CommandResult r = Kubectl({"get", "sandboxes"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, ::testing::MatchesRegex(
                         "NAME +PHASE +IP +VCPUS +MEMORY +AGE\ndemo +Running +10.200.0.2 +2 +1Gi "
                         "+[0-9]+[smhd]\n"));
  r = Kubectl({"get", "sbx", "demo", "-o", "yaml"});
  ASSERT_TRUE(r.ok()) << r.err;
  auto docs = api::ParseYamlDocuments(r.out);
  ASSERT_TRUE(docs.ok()) << docs.status();
  EXPECT_EQ((*docs)[0]["spec"]["template"], "ubuntu");
  EXPECT_EQ((*docs)[0]["status"]["phase"], "Running");
  r = Kubectl({"get", "sbx", "-o", "json"});
  ASSERT_TRUE(r.ok()) << r.err;
  json list = json::parse(r.out);
  EXPECT_EQ(list["items"][0]["metadata"]["name"], "demo");
  r = Kubectl({"get", "sbx", "demo", "-o", "jsonpath={.spec.vcpus}/{.status.network.ip}"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(r.out, "2/10.200.0.2");
  r = Kubectl({"get", "sbx", "-l", "app=nothing"});
  EXPECT_THAT(r.err, HasSubstr("No resources found"));
}

TEST_P(KubectlFullTest, GetWatchSeesThePhaseChangeToRunning) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  // The list form: kubectl watches from the list's resourceVersion and prints every change. (For
  // `get sbx demo -w` kubectl watches from "0" and suppresses the first, synthetic ADDED event,
  // so a change racing with the start of its watch is not printed — with any API server.)
  BackgroundKubectl watch(Argv({"get", "sbx", "-w"}), Env());
  ASSERT_TRUE(watch.started());
  ASSERT_TRUE(watch.WaitFor("demo")) << watch.output();
  size_t seen = watch.output().size();
  SetStatus("demo", {{"phase", "Running"}});
  EXPECT_TRUE(watch.WaitFor("Running", seen)) << watch.output();
}

TEST_P(KubectlFullTest, DescribeShowsSpecAndEvents) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  AddEvent("demo", "VMStarted", "cloud-hypervisor is running");
  CommandResult r = Kubectl({"describe", "sandbox", "demo"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Name:         demo"));
  EXPECT_THAT(r.out, HasSubstr("Template:"));
  EXPECT_THAT(r.out, HasSubstr("VMStarted"));
  EXPECT_THAT(r.out, HasSubstr("cloud-hypervisor is running"));
}

TEST_P(KubectlFullTest, GetEvents) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  AddEvent("demo", "VMStarted", "cloud-hypervisor is running");
  CommandResult r = Kubectl({"get", "events"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("REASON"));
  EXPECT_THAT(r.out, HasSubstr("VMStarted"));
  EXPECT_THAT(r.out, HasSubstr("sandbox/demo"));
}

TEST_P(KubectlFullTest, WaitForReadyReturnsWhenTheConditionIsSet) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  auto waiter = std::async(std::launch::async, [&] {
    return Kubectl({"wait", "--for=condition=Ready", "sandbox/demo", "--timeout=25s"});
  });
  SetStatus("demo", {{"phase", "Running"},
                     {"conditions", {{{"type", "Ready"}, {"status", "True"}, {"reason", "Up"}}}}});
  CommandResult r = waiter.get();
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("condition met"));
}

TEST_P(KubectlFullTest, PatchMergeAndJson) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  CommandResult r =
      Kubectl({"patch", "sbx", "demo", "--type=merge", "-p", R"({"spec":{"vcpus":5}})"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(Stored("demo")["spec"]["vcpus"], 5);
  r = Kubectl(
      {"patch", "sbx", "demo", "--type=json", "-p",
       R"([{"op":"test","path":"/spec/vcpus","value":5},{"op":"replace","path":"/spec/vcpus","value":6}])"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(Stored("demo")["spec"]["vcpus"], 6);
  r = Kubectl({"patch", "sbx", "demo", "--type=json", "-p",
               R"([{"op":"test","path":"/spec/vcpus","value":5}])"});
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("value is 6, not 5"));
  // kubectl's default (strategic) patch is refused for custom resources, as kube does.
  r = Kubectl({"patch", "sbx", "demo", "-p", R"({"spec":{"vcpus":7}})"});
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("strategic-merge-patch"));
}

TEST_P(KubectlFullTest, LabelAndAnnotate) {
  ASSERT_TRUE(Apply(Manifest("demo", 2)).ok());
  ASSERT_TRUE(Kubectl({"label", "sbx", "demo", "tier=web"}).ok());
  ASSERT_TRUE(Kubectl({"annotate", "sbx", "demo", "owner=team-a"}).ok());
  json o = Stored("demo");
  EXPECT_EQ(o["metadata"]["labels"]["tier"], "web");
  EXPECT_EQ(o["metadata"]["annotations"]["owner"], "team-a");
  CommandResult r = Kubectl({"get", "sbx", "-l", "tier=web", "-o", "name"});
  EXPECT_EQ(r.out, "sandbox.sandboxlet.dev/demo\n");
  ASSERT_TRUE(Kubectl({"label", "sbx", "demo", "tier-"}).ok());
  EXPECT_FALSE(Stored("demo")["metadata"]["labels"].contains("tier"));
}

TEST_P(KubectlFullTest, ExplainSandboxSpec) {
  if (Minor(GetParam()) < 29) {
    GTEST_SKIP() << "kubectl " << GetParam() << " explains from OpenAPI v2 protobuf";
  }
  CommandResult r = Kubectl({"explain", "sandbox.spec"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("KIND:       Sandbox"));
  EXPECT_THAT(r.out, HasSubstr("vcpus"));
  EXPECT_THAT(r.out, HasSubstr("Number of virtual CPUs"));
}

TEST_P(KubectlFullTest, DeleteWaitsForTheFinalizer) {
  ASSERT_TRUE(Apply(Manifest("demo", 2, "")).ok());
  json o = Stored("demo");
  o["metadata"]["finalizers"] = {"sandboxlet.dev/vm"};
  ASSERT_TRUE(srv_.store->Update("sandboxes", o).ok());
  auto deleter = std::async(std::launch::async, [&] {
    return Kubectl({"delete", "sandbox", "demo", "--timeout=25s"});
  });
  // The deletion is requested; the object stays while the finalizer is there.
  auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!Stored("demo")["metadata"].contains("deletionTimestamp") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(Stored("demo")["metadata"].contains("deletionTimestamp"));
  EXPECT_EQ(deleter.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "kubectl delete returned while the finalizer was still there";
  json deleting = Stored("demo");
  deleting["metadata"].erase("finalizers");
  ASSERT_TRUE(srv_.store->Update("sandboxes", deleting).ok());
  CommandResult r = deleter.get();
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"demo\" deleted"));
  EXPECT_FALSE(srv_.store->Get("sandboxes", "default", "demo").ok());
}

TEST_P(KubectlFullTest, InvalidObjectPrintsTheCauses) {
  CommandResult r = Apply(Manifest("bad", 0));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("The Sandbox \"bad\" is invalid"));
  EXPECT_THAT(r.err, HasSubstr("spec.vcpus: Invalid value: 0: must be between 1 and 256"));
}

TEST_P(KubectlFullTest, UnknownFieldIsAnErrorWhenStrictAndAWarningWhenWarn) {
  if (Minor(GetParam()) < 29) {
    GTEST_SKIP() << "kubectl " << GetParam()
                 << " runs with --validate=false here (no OpenAPI v2 protobuf)";
  }
  std::string manifest = Manifest("unk", 2, "  vcpu: 2\n");
  CommandResult r = Apply(manifest);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("unknown field \"spec.vcpu\""));
  r = Apply(manifest, {"--validate=warn"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.err, HasSubstr("Warning:"));
  EXPECT_THAT(r.err, HasSubstr("spec.vcpu"));
  EXPECT_FALSE(Stored("unk")["spec"].contains("vcpu"));
}

TEST_P(KubectlSmokeTest, ApplyGetPatchDelete) {
  CommandResult r = Apply(Manifest("demo", 2));
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(r.out, HasSubstr("created"));
  r = Kubectl({"get", "sbx"});
  EXPECT_THAT(r.out, ::testing::StartsWith("NAME"));
  EXPECT_THAT(r.out, HasSubstr("demo"));
  ASSERT_TRUE(
      Kubectl({"patch", "sbx", "demo", "--type=merge", "-p", R"({"spec":{"vcpus":3}})"}).ok());
  EXPECT_EQ(Stored("demo")["spec"]["vcpus"], 3);
  r = Kubectl({"delete", "sbx", "demo"});
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_FALSE(srv_.store->Get("sandboxes", "default", "demo").ok());
}

// /usr/bin/kubectl runs kubectl.<server minor> for this server's /version.
TEST(KubectlDispatcherTest, PicksTheVersionTheServerReports) {
  if (KubectlDir().empty()) GTEST_SKIP() << "no /usr/bin/kubectl";
  testing::ServerUnderTest srv;
  ASSERT_NE(srv.server, nullptr);
  std::string kubeconfig = srv.dir.path() + "/kubeconfig";
  ASSERT_TRUE(WriteFileAtomic(kubeconfig, Kubeconfig(srv.server->url())).ok());
  CommandOptions options;
  options.env = {"HOME=" + srv.dir.path()};
  options.timeout = kDeadline;
  auto r = RunCommand({"/usr/bin/kubectl", "--kubeconfig", kubeconfig, "version"}, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->ok()) << r->err;
  EXPECT_THAT(r->out, HasSubstr("Client Version: v1.33."));
  EXPECT_THAT(r->out, HasSubstr("Server Version: v1.33."));
}

std::string VersionName(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = "v" + info.param;
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

INSTANTIATE_TEST_SUITE_P(Kubectl, KubectlFullTest, ::testing::ValuesIn(FullVersions()),
                         VersionName);
INSTANTIATE_TEST_SUITE_P(Kubectl, KubectlSmokeTest, ::testing::ValuesIn(SmokeVersions()),
                         VersionName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KubectlFullTest);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(KubectlSmokeTest);

}  // namespace
}  // namespace sandboxlet::rest
