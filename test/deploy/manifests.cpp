#include "test/deploy/manifests.h"

#include <gtest/gtest.h>

#include <set>

#include "api/codec.h"
#include "controller/daemon/config.h"
#include "runtime/base/command.h"
#include "runtime/base/strings.h"

namespace sandboxlet::deploy {
namespace {

constexpr std::chrono::seconds kToolTimeout{60};

absl::StatusOr<std::string> RunTool(const std::vector<std::string>& argv) {
  CommandOptions options;
  options.timeout = kToolTimeout;
  absl::StatusOr<CommandResult> r = RunCommand(argv, options);
  if (!r.ok()) return r.status();
  if (!r->ok()) {
    return absl::InternalError(
        Cat(ShellJoin(argv), ": exit ", r->exit_code, " signal ", r->term_signal, ": ", r->err));
  }
  return r->out;
}

std::vector<std::string> ChartArgs(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {
      HelmrenderBinary(), "--chart",    SourcePath("charts/sandboxlet"),
      "--release",        "sandboxlet", "--namespace",
      "sandboxlet-system"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// The element of a JSON array whose "name" is `name`; null when there is none.
nlohmann::json Named(const nlohmann::json& array, const std::string& name) {
  if (!array.is_array()) return nullptr;
  for (const nlohmann::json& item : array) {
    if (item.value("name", "") == name) return item;
  }
  return nullptr;
}

}  // namespace

std::string SourcePath(const std::string& relative) {
  return Cat(SANDBOXLET_SOURCE_DIR, "/", relative);
}

std::string KubectlBinary() { return SANDBOXLET_KUBECTL; }
std::string HelmrenderBinary() { return SANDBOXLET_HELMRENDER; }

absl::StatusOr<Objects> ParseObjects(const std::string& yaml_stream) {
  absl::StatusOr<std::vector<nlohmann::json>> docs = api::ParseYamlDocuments(yaml_stream);
  if (!docs.ok()) return docs.status();
  Objects objects;
  for (size_t i = 0; i < docs->size(); ++i) {
    const nlohmann::json& doc = (*docs)[i];
    if (doc.is_null()) continue;
    if (!doc.is_object() || !doc.contains("kind") || !doc["kind"].is_string() ||
        !doc.contains("metadata") || !doc["metadata"].is_object()) {
      return absl::InvalidArgumentError(
          Cat("document ", i, ": not a Kubernetes object: ", doc.dump().substr(0, 200)));
    }
    const nlohmann::json& meta = doc["metadata"];
    std::string key = Cat(doc["kind"].get<std::string>(), "/", meta.value("namespace", ""), "/",
                          meta.value("name", ""));
    if (!objects.emplace(key, doc).second) {
      return absl::InvalidArgumentError(Cat("document ", i, ": ", key, " appears twice"));
    }
  }
  return objects;
}

absl::StatusOr<Objects> Kustomize(const std::string& dir) {
  absl::StatusOr<std::string> out = RunTool({KubectlBinary(), "kustomize", dir});
  if (!out.ok()) return out.status();
  return ParseObjects(*out);
}

absl::StatusOr<Objects> RenderChart(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = ChartArgs(extra);
  argv.push_back("--include-crds");
  absl::StatusOr<std::string> out = RunTool(argv);
  if (!out.ok()) return out.status();
  return ParseObjects(*out);
}

absl::StatusOr<std::string> RenderNotes(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = ChartArgs(extra);
  argv.push_back("--notes");
  return RunTool(argv);
}

nlohmann::json WithoutToolLabels(nlohmann::json object) {
  if (object.is_object()) {
    for (auto& [key, value] : object.items()) {
      if (key == "labels" && value.is_object()) {
        value.erase("helm.sh/chart");
        value.erase("app.kubernetes.io/managed-by");
      } else {
        value = WithoutToolLabels(std::move(value));
      }
    }
  } else if (object.is_array()) {
    for (auto& item : object) item = WithoutToolLabels(std::move(item));
  }
  return object;
}

std::vector<std::string> KindsOf(const Objects& objects) {
  std::set<std::string> kinds;
  for (const auto& [_, object] : objects) kinds.insert(object["kind"].get<std::string>());
  return {kinds.begin(), kinds.end()};
}

nlohmann::json TheDaemonSet(const Objects& objects) {
  nlohmann::json found;
  int count = 0;
  for (const auto& [_, object] : objects) {
    if (object["kind"] == "DaemonSet") {
      found = object;
      ++count;
    }
  }
  EXPECT_EQ(count, 1) << "DaemonSets in the rendering";
  return count == 1 ? found : nlohmann::json();
}

void ExpectNodeAgentDaemonSet(const nlohmann::json& daemonset, int metrics_port) {
  ASSERT_TRUE(daemonset.is_object());
  // Non-const copies: a missing field reads as null instead of tripping nlohmann's const lookup.
  nlohmann::json spec = daemonset.value("spec", nlohmann::json::object());
  EXPECT_EQ(spec["updateStrategy"]["type"], "RollingUpdate");
  EXPECT_EQ(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
  nlohmann::json pod = spec["template"]["spec"];
  EXPECT_EQ(pod["hostNetwork"], true) << "netns, veths and nftables rules are made on the host";
  EXPECT_EQ(pod["dnsPolicy"], "ClusterFirstWithHostNet");
  EXPECT_EQ(pod["hostPID"], true) << "adoption of running VMMs needs the host's /proc";
  EXPECT_EQ(pod["nodeSelector"]["sandboxlet.dev/kvm"], "true");
  EXPECT_TRUE(pod["terminationGracePeriodSeconds"].is_number_integer());
  for (const auto& [key, value] : spec["selector"]["matchLabels"].items()) {
    EXPECT_EQ(spec["template"]["metadata"]["labels"][key], value) << "selector label " << key;
  }

  nlohmann::json container = Named(pod["containers"], "sandboxlet");
  ASSERT_TRUE(container.is_object()) << "no container named sandboxlet";
  EXPECT_EQ(container["securityContext"]["privileged"], true);
  nlohmann::json port = Named(container["ports"], "metrics");
  ASSERT_TRUE(port.is_object()) << "no container port named metrics";
  EXPECT_EQ(port["containerPort"], metrics_port);
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["path"], "/healthz");
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["port"], "metrics");
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["path"], "/readyz");
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["port"], "metrics");
  nlohmann::json node_env = Named(container["env"], "NODE_NAME");
  EXPECT_EQ(node_env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

  // Mount path → host path (hostPath volumes), and the propagation of each mount.
  std::map<std::string, nlohmann::json> host_mounts;
  for (nlohmann::json m : container["volumeMounts"]) {
    nlohmann::json volume = Named(pod["volumes"], m["name"].get<std::string>());
    ASSERT_TRUE(volume.is_object()) << "mount of an undeclared volume " << m["name"];
    if (!volume.contains("hostPath")) continue;
    nlohmann::json h = volume["hostPath"];
    h["propagation"] = m.value("mountPropagation", "None");
    host_mounts[m["mountPath"].get<std::string>()] = h;
  }
  for (const char* device : {"/dev/kvm", "/dev/net/tun"}) {
    EXPECT_EQ(host_mounts[device]["path"], device);
    EXPECT_EQ(host_mounts[device]["type"], "CharDevice") << device;
  }
  EXPECT_EQ(host_mounts["/run/netns"]["path"], "/run/netns");
  EXPECT_EQ(host_mounts["/run/netns"]["propagation"], "Bidirectional");

  // The arguments are the daemon's: its own parser must accept them, with the paths it is given
  // mounted from the host.
  std::vector<std::string> args = container["args"].get<std::vector<std::string>>();
  ASSERT_FALSE(args.empty());
  EXPECT_EQ(args[0], "run");
  args.erase(args.begin());
  for (std::string& a : args) {
    size_t at = a.find("$(NODE_NAME)");
    if (at != std::string::npos) a.replace(at, 12, "worker-1");
  }
  absl::StatusOr<daemon::DaemonConfig> config = daemon::ParseConfig(args);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->node_name, "worker-1");
  EXPECT_EQ(config->metrics_listen, Cat("0.0.0.0:", metrics_port));
  EXPECT_EQ(config->api_listen, "") << "the local REST API is off in a cluster";
  EXPECT_EQ(host_mounts[config->state_dir]["path"], config->state_dir);
  EXPECT_EQ(host_mounts[config->run_dir]["path"], config->run_dir);
  EXPECT_TRUE(StartsWith(config->kernel, config->state_dir + "/")) << config->kernel;
  EXPECT_TRUE(StartsWith(config->templates_dir, config->state_dir + "/")) << config->templates_dir;
  EXPECT_TRUE(StartsWith(config->grpc_socket, config->run_dir + "/")) << config->grpc_socket;
}

}  // namespace sandboxlet::deploy
