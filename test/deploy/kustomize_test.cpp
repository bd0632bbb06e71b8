// deploy/: `kubectl kustomize` builds the node agent's objects, with least-privilege RBAC, a
// DaemonSet that has what a microVM agent needs, metrics plumbing, and valid examples.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <set>

#include "api/codec.h"
#include "api/validation.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/deploy/manifests.h"

namespace sandboxlet::deploy {
namespace {

using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<std::string> Keys(const Objects& objects) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : objects) keys.push_back(key);
  return keys;
}

class KustomizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (KubectlBinary().empty()) GTEST_SKIP() << "kubectl is not installed: no kustomize";
    absl::StatusOr<Objects> objects = Kustomize(SourcePath("deploy"));
    ASSERT_TRUE(objects.ok()) << objects.status();
    objects_ = *std::move(objects);
  }
  Objects objects_;
};

TEST_F(KustomizeTest, BuildsTheNodeAgentObjects) {
  EXPECT_THAT(Keys(objects_),
              UnorderedElementsAre("Namespace//sandboxlet-system",
                                   "CustomResourceDefinition//sandboxes.sandboxlet.dev",
                                   "CustomResourceDefinition//sandboxsnapshots.sandboxlet.dev",
                                   "ServiceAccount/sandboxlet-system/sandboxlet",
                                   "ClusterRole//sandboxlet", "ClusterRoleBinding//sandboxlet",
                                   "DaemonSet/sandboxlet-system/sandboxlet",
                                   "Service/sandboxlet-system/sandboxlet-metrics",
                                   "ServiceMonitor/sandboxlet-system/sandboxlet"));
  // Pod Security Admission must let the privileged DaemonSet into its namespace.
  EXPECT_EQ(objects_["Namespace//sandboxlet-system"]["metadata"]["labels"]
                    ["pod-security.kubernetes.io/enforce"],
            "privileged");
}

TEST_F(KustomizeTest, DaemonSetRunsTheNodeAgent) {
  ExpectNodeAgentDaemonSet(TheDaemonSet(objects_), 9464);
}

TEST_F(KustomizeTest, RbacGrantsWhatTheAgentDoesAndNothingMore) {
  std::set<std::string> granted;
  for (nlohmann::json rule : objects_["ClusterRole//sandboxlet"]["rules"]) {
    for (const std::string group : rule["apiGroups"]) {
      for (const std::string resource : rule["resources"]) {
        for (const std::string verb : rule["verbs"]) {
          granted.insert(Cat(group, "/", resource, ":", verb));
        }
      }
    }
  }
  std::set<std::string> want;
  for (const char* r : {"sandboxes", "sandboxsnapshots"}) {
    for (const char* v : {"get", "list", "watch", "update", "patch"}) {
      want.insert(Cat("sandboxlet.dev/", r, ":", v));
    }
    want.insert(Cat("sandboxlet.dev/", r, "/status:update"));
    want.insert(Cat("sandboxlet.dev/", r, "/status:patch"));
    want.insert(Cat("sandboxlet.dev/", r, "/finalizers:update"));
  }
  want.insert("/events:create");
  want.insert("/events:patch");
  want.insert("/nodes:get");
  EXPECT_EQ(granted, want);

  nlohmann::json binding = objects_["ClusterRoleBinding//sandboxlet"];
  EXPECT_EQ(binding["roleRef"]["kind"], "ClusterRole");
  EXPECT_EQ(binding["roleRef"]["name"], "sandboxlet");
  EXPECT_EQ(binding["subjects"], nlohmann::json::parse(R"([{"kind": "ServiceAccount",
      "name": "sandboxlet", "namespace": "sandboxlet-system"}])"));
  EXPECT_EQ(TheDaemonSet(objects_)["spec"]["template"]["spec"]["serviceAccountName"], "sandboxlet");
}

TEST_F(KustomizeTest, HeadlessMetricsServiceAndServiceMonitorReachThePods) {
  nlohmann::json service = objects_["Service/sandboxlet-system/sandboxlet-metrics"];
  EXPECT_EQ(service["spec"]["clusterIP"], "None");
  EXPECT_EQ(service["spec"]["ports"], nlohmann::json::parse(R"([{"name": "metrics",
      "port": 9464, "targetPort": "metrics", "protocol": "TCP"}])"));
  nlohmann::json pod_labels = TheDaemonSet(objects_)["spec"]["template"]["metadata"]["labels"];
  for (const auto& [key, value] : service["spec"]["selector"].items()) {
    EXPECT_EQ(pod_labels[key], value) << "Service selector " << key << " misses the pods";
  }
  nlohmann::json monitor = objects_["ServiceMonitor/sandboxlet-system/sandboxlet"];
  EXPECT_EQ(monitor["apiVersion"], "monitoring.coreos.com/v1");
  for (const auto& [key, value] : monitor["spec"]["selector"]["matchLabels"].items()) {
    EXPECT_EQ(service["metadata"]["labels"][key], value)
        << "ServiceMonitor selector " << key << " misses the Service";
  }
  EXPECT_EQ(monitor["spec"]["namespaceSelector"]["matchNames"],
            nlohmann::json({"sandboxlet-system"}));
  EXPECT_EQ(monitor["spec"]["endpoints"][0]["port"], "metrics");
  EXPECT_EQ(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

// The overlay docs/deploy.md shows: deploy/ without the ServiceMonitor, with another image tag.
TEST_F(KustomizeTest, OverlayCanDropTheServiceMonitor) {
  char dir[] = "/tmp/sandboxlet-overlay-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string base = std::filesystem::relative(SourcePath("deploy"), dir).string();
  absl::Status written = WriteFileAtomic(Cat(dir, "/kustomization.yaml"), Cat(R"(
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - )",
                                                                              base, R"(
images:
  - name: ghcr.io/sandboxlet/sandboxlet
    newTag: 0.1.1
patches:
  - patch: |-
      $patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata:
        name: sandboxlet
        namespace: sandboxlet-system
)"));
  ASSERT_TRUE(written.ok()) << written;
  absl::StatusOr<Objects> overlay = Kustomize(dir);
  (void)RemoveAll(dir);
  ASSERT_TRUE(overlay.ok()) << overlay.status();
  Objects want = objects_;
  want.erase("ServiceMonitor/sandboxlet-system/sandboxlet");
  want["DaemonSet/sandboxlet-system/sandboxlet"]["spec"]["template"]["spec"]["containers"][0]
      ["image"] = "ghcr.io/sandboxlet/sandboxlet:0.1.1";
  EXPECT_EQ(Keys(*overlay), Keys(want));
  for (const auto& [key, object] : want) EXPECT_EQ((*overlay)[key], object) << key;
}

// deploy/examples/: cluster-mode manifests decode, default and validate like the API server
// would, and name a node (no scheduler places Sandboxes).
TEST(DeployExamplesTest, ClusterSandboxExampleIsValidAndNamesItsNode) {
  std::string path = SourcePath("deploy/examples/sandbox.yaml");
  absl::StatusOr<std::string> text = ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<std::vector<api::Decoded>> decoded = api::DecodeManifests(*text);
  ASSERT_TRUE(decoded.ok()) << path << ": " << decoded.status();
  ASSERT_EQ(decoded->size(), 1u);
  api::Object object = decoded->at(0).object;
  EXPECT_THAT(decoded->at(0).warnings, IsEmpty());
  api::SetDefaults(object);
  std::vector<std::string> problems;
  for (const api::FieldError& e : api::Validate(object)) problems.push_back(e.ToString());
  EXPECT_THAT(problems, IsEmpty()) << path;
  ASSERT_EQ(api::KindOf(object), api::Kind::kSandbox);
  EXPECT_FALSE(std::get<v1alpha1::Sandbox>(object).spec().node_name().empty());
}

}  // namespace
}  // namespace sandboxlet::deploy
