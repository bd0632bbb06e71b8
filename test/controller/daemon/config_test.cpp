// Tests of controller/daemon/config.cpp: flags, the YAML file, precedence, unknown names with
// suggestions and the missing-VMM-binary message.
#include "controller/daemon/config.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/fs.h"

namespace sandboxlet::daemon {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sbl-daemon-config-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { (void)RemoveAll(path_); }
  std::string File(const std::string& name, const std::string& content) const {
    std::string p = path_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(p, content).ok());
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigTest, DefaultsWorkStandaloneAndDeriveFromStateAndRunDirs) {
  absl::StatusOr<DaemonConfig> c = ParseConfig({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state_dir, "/var/lib/sandboxlet");
  EXPECT_EQ(c->run_dir, "/run/sandboxlet");
  EXPECT_EQ(c->vmm_bin, "cloud-hypervisor");
  EXPECT_EQ(c->kernel, "/var/lib/sandboxlet/kernel/vmlinux");
  EXPECT_EQ(c->templates_dir, "/var/lib/sandboxlet/templates");
  EXPECT_EQ(c->grpc_socket, "/run/sandboxlet/sandboxlet.sock");
  EXPECT_EQ(c->manifests, "");
  EXPECT_EQ(c->api_listen, "127.0.0.1:6443");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(c->network_cidr, "10.200.0.0/16");
  EXPECT_EQ(c->volume_backend, "auto");
  EXPECT_EQ(c->workers, 4);
  EXPECT_EQ(c->resync, std::chrono::minutes(5));
  EXPECT_FALSE(c->node_name.empty());
  EXPECT_GE(c->max_vcpus, 1);

  c = ParseConfig({"--state-dir=/srv/sbl", "--run-dir", "/tmp/sbl-run"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kernel, "/srv/sbl/kernel/vmlinux");
  EXPECT_EQ(c->templates_dir, "/srv/sbl/templates");
  EXPECT_EQ(c->grpc_socket, "/tmp/sbl-run/sandboxlet.sock");
  EXPECT_EQ(c->StorePath(), "/srv/sbl/store.db");
}

TEST(ConfigTest, FlagsTakeEqualsOrSeparateValues) {
  absl::StatusOr<DaemonConfig> c =
      ParseConfig({"--workers=8", "--resync", "90s", "--log-level=debug", "--log-format", "json",
                   "--max-vcpus=2", "--node-name=node-a", "--manifests=/etc/sandboxlet/manifests",
                   "--volume-backend", "file", "--api-listen="});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->workers, 8);
  EXPECT_EQ(c->resync, std::chrono::seconds(90));
  EXPECT_EQ(c->log_level, log::Level::kDebug);
  EXPECT_EQ(c->log_format, log::Format::kJson);
  EXPECT_EQ(c->max_vcpus, 2);
  EXPECT_EQ(c->node_name, "node-a");
  EXPECT_EQ(c->manifests, "/etc/sandboxlet/manifests");
  EXPECT_EQ(c->volume_backend, "file");
  EXPECT_EQ(c->api_listen, "");  // disabled
}

TEST(ConfigTest, BadValuesNameTheFlagAndTheRule) {
  struct Case {
    std::vector<std::string> args;
    std::string want;
  } cases[] = {
      {{"--workers=0"}, "--workers=0: must be between 1 and 256"},
      {{"--workers=many"}, "--workers=many: not an integer"},
      {{"--resync=5 minutes"}, "--resync=5 minutes"},
      {{"--state-dir=relative/dir"}, "--state-dir=relative/dir: must be an absolute path"},
      {{"--network-cidr=10.200.0.0"}, "expected an IPv4 CIDR"},
      {{"--volume-backend=zfs"}, "expected auto, devicemapper or file"},
      {{"--log-level=loud"}, "expected debug, info, warn or error"},
      {{"--metrics-listen=9464"}, "expected HOST:PORT"},
      {{"--node-name=Node_A"}, "DNS-1123"},
      {{"--workers"}, "flag --workers needs a value"},
      {{"run"}, "unexpected argument \"run\""},
      {{"--network-prefix=Sbl"}, "expected 1-8 of [a-z0-9]"},
      {{"--network-prefix=toolongprefix"}, "expected 1-8 of [a-z0-9]"},
      {{"--vmm-cgroups=on"}, "expected auto or off"},
      {{"--vmm-cgroup-parent=a/b"}, "--vmm-cgroup-parent=a/b"},
      {{"--guest-agent=yes"}, "expected true or false"},
      {{"--guest-agent-port=70000"}, "must be between 1 and 65535"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<DaemonConfig> got = ParseConfig(c.args);
    ASSERT_FALSE(got.ok()) << c.args[0];
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.args[0];
  }
}

TEST(ConfigTest, UnknownFlagSuggestsTheClosestOne) {
  absl::StatusOr<DaemonConfig> c = ParseConfig({"--state-dri=/x"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("unknown flag --state-dri; did you mean --state-dir?"));
  c = ParseConfig({"--vmmbin=/x"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("did you mean --vmm-bin?"));
  // Nothing close: no suggestion, but a pointer to --help.
  c = ParseConfig({"--frobnicate=1"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("unknown flag --frobnicate"));
  EXPECT_THAT(std::string(c.status().message()), ::testing::Not(HasSubstr("did you mean")));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("--help"));
}

TEST(ConfigTest, FileSetsValuesAndFlagsOverrideIt) {
  TempDir dir;
  std::string file = dir.File("config.yaml",
                              "# node settings\n"
                              "state-dir: /srv/state\n"
                              "workers: 6\n"
                              "resync: 2m\n"
                              "manifests: /etc/sbl/manifests\n"
                              "log-format: json\n");
  absl::StatusOr<DaemonConfig> c = ParseConfig({"--config", file, "--workers=3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config_file, file);
  EXPECT_EQ(c->state_dir, "/srv/state");
  EXPECT_EQ(c->kernel, "/srv/state/kernel/vmlinux");
  EXPECT_EQ(c->workers, 3);  // the flag wins
  EXPECT_EQ(c->resync, std::chrono::minutes(2));
  EXPECT_EQ(c->manifests, "/etc/sbl/manifests");
  EXPECT_EQ(c->log_format, log::Format::kJson);

  // The flag wins wherever it is written relative to --config.
  c = ParseConfig({"--state-dir=/flag", "--config=" + file});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state_dir, "/flag");
}

TEST(ConfigTest, FileErrorsNameTheFileAndSuggestKeys) {
  TempDir dir;
  std::string unknown = dir.File("unknown.yaml", "state-dir: /srv\nworkes: 3\n");
  absl::StatusOr<DaemonConfig> c = ParseConfig({"--config=" + unknown});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(
      std::string(c.status().message()),
      HasSubstr("config file " + unknown + ": unknown key \"workes\"; did you mean workers?"));

  std::string bad_value = dir.File("bad.yaml", "workers: 0\n");
  c = ParseConfig({"--config=" + bad_value});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("config file " + bad_value + ": --workers=0: must be between 1 and 256"));

  std::string nested = dir.File("nested.yaml", "workers: [1, 2]\n");
  c = ParseConfig({"--config=" + nested});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("workers: expected a single value"));

  std::string not_yaml = dir.File("broken.yaml", "state-dir: [unclosed\n");
  c = ParseConfig({"--config=" + not_yaml});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config file " + not_yaml));

  c = ParseConfig({"--config=" + dir.path() + "/missing.yaml"});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir.path() + "/missing.yaml"));
}

TEST(ConfigTest, MissingVmmBinarySaysHowToFixIt) {
  absl::StatusOr<std::string> got = CheckVmmBin("sandboxlet-no-such-vmm-binary");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("not found on PATH"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("install cloud-hypervisor"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("--vmm-bin="));

  got = CheckVmmBin("/nonexistent/cloud-hypervisor");
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("/nonexistent/cloud-hypervisor does not exist"));

  TempDir dir;
  std::string not_exec = dir.File("ch", "#!/bin/sh\n");
  got = CheckVmmBin(not_exec);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("is not an executable file"));

  ASSERT_EQ(::chmod(not_exec.c_str(), 0755), 0);
  got = CheckVmmBin(not_exec);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, not_exec);
  // A bare name is found on PATH.
  got = CheckVmmBin("sh");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, ::testing::EndsWith("/sh"));
}

TEST(ConfigTest, DurationsParseUnitsAndRejectGarbage) {
  EXPECT_EQ(*ParseDuration("5m"), std::chrono::minutes(5));
  EXPECT_EQ(*ParseDuration("1h30m"), std::chrono::minutes(90));
  EXPECT_EQ(*ParseDuration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(*ParseDuration("45"), std::chrono::seconds(45));
  EXPECT_FALSE(ParseDuration("5 minutes").ok());
  EXPECT_FALSE(ParseDuration("m").ok());
  EXPECT_FALSE(ParseDuration("").ok());
}

TEST(ConfigTest, UsageListsEveryFlagWithItsDefault) {
  std::string usage = FlagsUsage();
  for (const char* flag : {"--config=",
                           "--state-dir=",
                           "--run-dir=",
                           "--vmm-bin=",
                           "--kernel=",
                           "--templates-dir=",
                           "--manifests=",
                           "--grpc-socket=",
                           "--api-listen=",
                           "--metrics-listen=",
                           "--node-name=",
                           "--network-cidr=",
                           "--volume-backend=",
                           "--workers=",
                           "--resync=",
                           "--log-level=",
                           "--log-format=",
                           "--max-vcpus=",
                           "--network-prefix=",
                           "--vmm-cgroups=",
                           "--vmm-cgroup-parent=",
                           "--guest-agent=",
                           "--guest-agent-port=",
                           "--api-token-file=",
                           "--api-tls-cert-file=",
                           "--api-tls-key-file="}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
  EXPECT_THAT(usage, HasSubstr("(default /var/lib/sandboxlet)"));
}

}  // namespace
}  // namespace sandboxlet::daemon
