// charts/sandboxlet, rendered with Helm's template engine (helmrender): with default values it is
// deploy/ object for object, and its values reach the objects they should.
//
// Compared after removing helm.sh/chart and app.kubernetes.io/managed-by from every labels map
// (the only labels that name the tool). The kustomize Namespace has no chart counterpart: Helm
// creates the release namespace (`helm install --create-namespace`).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/deploy/manifests.h"

namespace sandboxlet::deploy {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::vector<std::string> Keys(const Objects& objects) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : objects) keys.push_back(key);
  return keys;
}

class ChartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (HelmrenderBinary().empty()) {
      GTEST_SKIP() << "helmrender was not built (needs go and Debian's "
                      "golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev)";
    }
    char dir[] = "/tmp/sandboxlet-chart-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    if (!dir_.empty()) (void)RemoveAll(dir_);
  }

  // A values file with `yaml` in the test's temporary directory.
  std::string ValuesFile(const std::string& yaml) {
    std::string path = Cat(dir_, "/values-", ++files_, ".yaml");
    absl::Status s = WriteFileAtomic(path, yaml);
    EXPECT_TRUE(s.ok()) << s;
    return path;
  }

  Objects Render(const std::vector<std::string>& args = {}) {
    absl::StatusOr<Objects> objects = RenderChart(args);
    EXPECT_TRUE(objects.ok()) << objects.status();
    return objects.ok() ? *objects : Objects{};
  }

  std::string dir_;
  int files_ = 0;
};

TEST_F(ChartTest, DefaultValuesGiveTheKustomizeObjects) {
  if (KubectlBinary().empty()) GTEST_SKIP() << "kubectl is not installed: no kustomize";
  absl::StatusOr<Objects> kustomize = Kustomize(SourcePath("deploy"));
  ASSERT_TRUE(kustomize.ok()) << kustomize.status();
  Objects chart = Render();
  ASSERT_EQ(kustomize->erase("Namespace//sandboxlet-system"), 1u);

  EXPECT_EQ(Keys(chart), Keys(*kustomize));
  for (const auto& [key, want] : *kustomize) {
    if (!chart.contains(key)) continue;
    nlohmann::json a = WithoutToolLabels(want);
    nlohmann::json b = WithoutToolLabels(chart[key]);
    EXPECT_EQ(a, b) << key << " differs between deploy/ and the chart; JSON patch from deploy/ "
                    << "to the chart: " << nlohmann::json::diff(a, b).dump();
  }
  // The labels left out of the comparison are the tool's own.
  nlohmann::json labels = chart["DaemonSet/sandboxlet-system/sandboxlet"]["metadata"]["labels"];
  EXPECT_EQ(labels["helm.sh/chart"], "sandboxlet-0.1.0");
  EXPECT_EQ(labels["app.kubernetes.io/managed-by"], "Helm");
  EXPECT_EQ((*kustomize)["DaemonSet/sandboxlet-system/sandboxlet"]["metadata"]["labels"]
                        ["app.kubernetes.io/managed-by"],
            "kustomize");
}

TEST_F(ChartTest, DaemonSetRunsTheNodeAgent) {
  ExpectNodeAgentDaemonSet(TheDaemonSet(Render()), 9464);
}

TEST_F(ChartTest, ServiceMonitorAndMetricsServiceCanBeTurnedOff) {
  Objects defaults = Render();
  ASSERT_TRUE(defaults.contains("ServiceMonitor/sandboxlet-system/sandboxlet"));

  Objects no_monitor = Render({"--set", "serviceMonitor.enabled=false"});
  Objects want = defaults;
  want.erase("ServiceMonitor/sandboxlet-system/sandboxlet");
  EXPECT_EQ(Keys(no_monitor), Keys(want));
  EXPECT_EQ(no_monitor, want) << "nothing but the ServiceMonitor changes";

  Objects no_metrics = Render({"--set", "metrics.enabled=false"});
  EXPECT_THAT(KindsOf(no_metrics), Not(Contains("Service")));
  EXPECT_THAT(KindsOf(no_metrics), Not(Contains("ServiceMonitor")));
  // The probes still have their listener.
  ExpectNodeAgentDaemonSet(TheDaemonSet(no_metrics), 9464);
}

TEST_F(ChartTest, ValuesReachTheDaemonSetServiceAndMonitor) {
  std::string values = ValuesFile(R"(image:
  repository: registry.example.com/platform/sandboxlet
  tag: "1.2.3"
  pullPolicy: Always
imagePullSecrets:
  - name: regcred
nodeSelector:
  node-pool: sandboxes
tolerations:
  - key: dedicated
    value: sandboxes
    effect: NoSchedule
resources:
  requests:
    cpu: 500m
    memory: 1Gi
priorityClassName: system-node-critical
terminationGracePeriodSeconds: 60
stateDir: /data/sandboxlet
runDir: /run/sbl
vmmBin: /opt/ch/cloud-hypervisor
kernel: /data/sandboxlet/kernels/vmlinux-6.1
networkCidr: 10.77.0.0/16
volumeBackend: file
logFormat: logfmt
serviceMonitor:
  interval: 15s
  labels:
    release: kube-prometheus
extraArgs: ["--workers=8", "--log-level=debug"]
)");
  Objects objects = Render({"-f", values, "--set", "metrics.port=9500"});
  nlohmann::json ds = TheDaemonSet(objects);
  ExpectNodeAgentDaemonSet(ds, 9500);
  nlohmann::json pod = ds["spec"]["template"]["spec"];
  nlohmann::json container = pod["containers"][0];
  EXPECT_EQ(container["image"], "registry.example.com/platform/sandboxlet:1.2.3");
  EXPECT_EQ(container["imagePullPolicy"], "Always");
  EXPECT_EQ(pod["imagePullSecrets"], nlohmann::json::parse(R"([{"name": "regcred"}])"));
  // Maps merge with the chart's defaults (Helm's rule); lists replace them.
  EXPECT_EQ(pod["nodeSelector"], nlohmann::json::parse(R"({"kubernetes.io/os": "linux",
      "sandboxlet.dev/kvm": "true", "node-pool": "sandboxes"})"));
  EXPECT_EQ(pod["tolerations"], nlohmann::json::parse(R"([{"key": "dedicated",
      "value": "sandboxes", "effect": "NoSchedule"}])"));
  EXPECT_EQ(container["resources"],
            nlohmann::json::parse(R"({"requests": {"cpu": "500m", "memory": "1Gi"}})"));
  EXPECT_EQ(pod["priorityClassName"], "system-node-critical");
  EXPECT_EQ(pod["terminationGracePeriodSeconds"], 60);
  std::vector<std::string> args = container["args"];
  for (const char* want :
       {"--state-dir=/data/sandboxlet", "--run-dir=/run/sbl", "--vmm-bin=/opt/ch/cloud-hypervisor",
        "--kernel=/data/sandboxlet/kernels/vmlinux-6.1",
        "--templates-dir=/data/sandboxlet/templates", "--network-cidr=10.77.0.0/16",
        "--volume-backend=file", "--log-format=logfmt", "--metrics-listen=0.0.0.0:9500",
        "--workers=8", "--log-level=debug"}) {
    EXPECT_THAT(args, Contains(want));
  }

  nlohmann::json service = objects["Service/sandboxlet-system/sandboxlet-metrics"];
  EXPECT_EQ(service["spec"]["ports"][0]["port"], 9500);
  nlohmann::json monitor = objects["ServiceMonitor/sandboxlet-system/sandboxlet"];
  EXPECT_EQ(monitor["spec"]["endpoints"][0]["interval"], "15s");
  EXPECT_EQ(monitor["metadata"]["labels"]["release"], "kube-prometheus");
  EXPECT_EQ(monitor["metadata"]["labels"]["app.kubernetes.io/name"], "sandboxlet");
}

TEST_F(ChartTest, ReleaseNameAndNamespaceNameTheObjects) {
  absl::StatusOr<Objects> objects = RenderChart({"--release", "edge", "--namespace", "sbx-edge"});
  ASSERT_TRUE(objects.ok()) << objects.status();
  EXPECT_THAT(
      Keys(*objects),
      ::testing::IsSupersetOf(
          {"DaemonSet/sbx-edge/edge-sandboxlet", "ServiceAccount/sbx-edge/edge-sandboxlet",
           "ClusterRole//edge-sandboxlet", "ClusterRoleBinding//edge-sandboxlet",
           "Service/sbx-edge/edge-sandboxlet-metrics", "ServiceMonitor/sbx-edge/edge-sandboxlet"}));
  nlohmann::json binding = (*objects)["ClusterRoleBinding//edge-sandboxlet"];
  EXPECT_EQ(binding["roleRef"]["name"], "edge-sandboxlet");
  EXPECT_EQ(binding["subjects"][0]["name"], "edge-sandboxlet");
  EXPECT_EQ(binding["subjects"][0]["namespace"], "sbx-edge");
  nlohmann::json ds = (*objects)["DaemonSet/sbx-edge/edge-sandboxlet"];
  EXPECT_EQ(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"], "edge");
  EXPECT_EQ(ds["spec"]["template"]["spec"]["serviceAccountName"], "edge-sandboxlet");
  EXPECT_EQ((*objects)["ServiceMonitor/sbx-edge/edge-sandboxlet"]["spec"]["namespaceSelector"],
            nlohmann::json::parse(R"({"matchNames": ["sbx-edge"]})"));
}

TEST_F(ChartTest, RbacAndServiceAccountCanBeLeftToTheOperator) {
  Objects objects = Render({"--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                            "--set", "serviceAccount.name=preexisting"});
  EXPECT_THAT(KindsOf(objects), Not(Contains("ClusterRole")));
  EXPECT_THAT(KindsOf(objects), Not(Contains("ClusterRoleBinding")));
  EXPECT_THAT(KindsOf(objects), Not(Contains("ServiceAccount")));
  EXPECT_EQ(TheDaemonSet(objects)["spec"]["template"]["spec"]["serviceAccountName"], "preexisting");
}

TEST_F(ChartTest, EmptyRequiredValueFailsNamingIt) {
  absl::StatusOr<Objects> objects = RenderChart({"--set", "stateDir="});
  ASSERT_FALSE(objects.ok());
  EXPECT_THAT(std::string(objects.status().message()), HasSubstr("stateDir is required"));
}

TEST_F(ChartTest, NotesSayHowToLabelNodesAndWhereMetricsAre) {
  absl::StatusOr<std::string> notes = RenderNotes();
  ASSERT_TRUE(notes.ok()) << notes.status();
  EXPECT_THAT(*notes, HasSubstr("kubectl label node <node> sandboxlet.dev/kvm=true"));
  EXPECT_THAT(*notes, HasSubstr("-n sandboxlet-system get pods"));
  EXPECT_THAT(*notes, HasSubstr("/var/lib/sandboxlet/kernel/vmlinux"));
  EXPECT_THAT(*notes, HasSubstr("ServiceMonitor sandboxlet"));
  absl::StatusOr<std::string> plain = RenderNotes({"--set", "serviceMonitor.enabled=false"});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(*plain, Not(HasSubstr("ServiceMonitor")));
  EXPECT_THAT(*plain, Not(HasSubstr("<no value>")));
}

}  // namespace
}  // namespace sandboxlet::deploy
