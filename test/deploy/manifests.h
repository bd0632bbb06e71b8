// Test support for deploy/ and charts/: runs `kubectl kustomize` and helmrender (Helm's template
// engine), parses their YAML streams into objects keyed by kind/namespace/name, normalises the
// labels that legitimately differ between the two, and checks the invariants of the node agent's
// DaemonSet that both renderings must keep.
// Thread-safe: functions only; each call runs its own process.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace sandboxlet::deploy {

// Absolute path of a file or directory of the source tree, e.g. SourcePath("deploy").
std::string SourcePath(const std::string& relative);

// The kubectl and helmrender binaries found at configure time; "" when absent.
std::string KubectlBinary();
std::string HelmrenderBinary();

// Objects of a YAML stream by "Kind/namespace/name" (namespace empty for cluster-scoped ones).
// InvalidArgument on unparsable YAML, a document that is not an object, or a duplicate key.
using Objects = std::map<std::string, nlohmann::json>;
absl::StatusOr<Objects> ParseObjects(const std::string& yaml_stream);

// `kubectl kustomize <dir>`; errors carry kubectl's stderr.
absl::StatusOr<Objects> Kustomize(const std::string& dir);

// helmrender --chart charts/sandboxlet --release sandboxlet --namespace sandboxlet-system
// --include-crds <extra>...; errors carry the renderer's stderr.
absl::StatusOr<Objects> RenderChart(const std::vector<std::string>& extra = {});
// The rendered NOTES.txt with the same arguments.
absl::StatusOr<std::string> RenderNotes(const std::vector<std::string>& extra = {});

// Removes from every `labels` map the labels only one of the renderings sets: helm.sh/chart and
// app.kubernetes.io/managed-by ("Helm" vs "kustomize").
nlohmann::json WithoutToolLabels(nlohmann::json object);

// The kinds present, sorted, e.g. {"ClusterRole", "DaemonSet", ...}.
std::vector<std::string> KindsOf(const Objects& objects);

// The DaemonSet of a rendering; a failure and null when there is not exactly one.
nlohmann::json TheDaemonSet(const Objects& objects);

// Asserts (gtest) what the node agent needs on `daemonset`: host network and PID namespaces,
// privileged, /dev/kvm and /dev/net/tun as CharDevice hostPaths, state and run dirs, /run/netns
// with Bidirectional propagation, probes on /healthz and /readyz at the metrics port
// `metrics_port`, the KVM nodeSelector, RollingUpdate with maxUnavailable 1, the node name from
// the downward API, and arguments the daemon's own flag parser accepts.
void ExpectNodeAgentDaemonSet(const nlohmann::json& daemonset, int metrics_port);

}  // namespace sandboxlet::deploy
