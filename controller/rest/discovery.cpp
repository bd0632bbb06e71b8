#include "controller/rest/discovery.h"

#include <map>
#include <set>
#include <vector>

#include "controller/rest/router.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

// The group/versions served, in discovery order (core first is not listed under /apis).
std::vector<std::pair<std::string, std::string>> GroupVersions(bool core) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const ResourceType& t : ResourceTypes()) {
    if (t.group.empty() != core) continue;
    std::pair<std::string, std::string> gv{t.group, t.version};
    if (std::find(out.begin(), out.end(), gv) == out.end()) out.push_back(gv);
  }
  return out;
}

std::vector<std::string> SubresourceVerbs() { return {"get", "patch", "update"}; }

}  // namespace

nlohmann::json VersionInfo(std::string_view sandboxlet_version) {
  std::string git(kKubernetesCompatVersion);
  std::vector<std::string> nums = Split(git.substr(1), '.');
  return {{"major", nums.size() > 0 ? nums[0] : "1"},
          {"minor", nums.size() > 1 ? nums[1] : "0"},
          {"gitVersion", Cat(git, "+sandboxlet-", sandboxlet_version)},
          {"gitCommit", ""},
          {"gitTreeState", "clean"},
          {"buildDate", "1970-01-01T00:00:00Z"},
          {"goVersion", "n/a"},
          {"compiler", "sandboxlet"},
          {"platform", "linux/amd64"}};
}

nlohmann::json LegacyApiVersions(std::string_view server_address) {
  return {{"kind", "APIVersions"},
          {"versions", {"v1"}},
          {"serverAddressByClientCIDRs",
           {{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", server_address}}}}};
}

nlohmann::json LegacyApiGroupList() {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& [group, version] : GroupVersions(false)) {
    groups.push_back(*LegacyApiGroup(group));
  }
  return {{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}};
}

std::optional<nlohmann::json> LegacyApiGroup(std::string_view group) {
  nlohmann::json versions = nlohmann::json::array();
  for (const auto& [g, v] : GroupVersions(false)) {
    if (g == group) versions.push_back({{"groupVersion", Cat(g, "/", v)}, {"version", v}});
  }
  if (versions.empty()) return std::nullopt;
  return nlohmann::json{{"kind", "APIGroup"},
                        {"apiVersion", "v1"},
                        {"name", group},
                        {"versions", versions},
                        {"preferredVersion", versions[0]}};
}

std::optional<nlohmann::json> ApiResourceList(std::string_view group, std::string_view version) {
  nlohmann::json resources = nlohmann::json::array();
  for (const ResourceType& t : ResourceTypes()) {
    if (t.group != group || t.version != version) continue;
    nlohmann::json r = {{"name", t.resource},         {"singularName", t.singular},
                        {"namespaced", t.namespaced}, {"kind", t.kind},
                        {"verbs", t.verbs},           {"shortNames", t.short_names}};
    if (!t.categories.empty()) r["categories"] = t.categories;
    resources.push_back(std::move(r));
    if (t.has_status) {
      resources.push_back({{"name", Cat(t.resource, "/status")},
                           {"singularName", ""},
                           {"namespaced", t.namespaced},
                           {"kind", t.kind},
                           {"verbs", SubresourceVerbs()}});
    }
  }
  if (resources.empty()) return std::nullopt;
  std::string gv = group.empty() ? std::string(version) : Cat(group, "/", version);
  return nlohmann::json{{"kind", "APIResourceList"},
                        {"apiVersion", "v1"},
                        {"groupVersion", gv},
                        {"resources", resources}};
}

std::string AggregatedDiscoveryVersion(std::string_view accept) {
  for (const std::string& entry : Split(accept, ',')) {
    std::string_view e = Trim(entry);
    bool is_discovery = e.find("g=apidiscovery.k8s.io") != std::string_view::npos &&
                        e.find("as=APIGroupDiscoveryList") != std::string_view::npos;
    if (is_discovery) {
      if (e.find("v=v2beta1") != std::string_view::npos) return "v2beta1";
      if (e.find("v=v2") != std::string_view::npos) return "v2";
      continue;
    }
    std::string_view type = Trim(e.substr(0, e.find(';')));
    if (type == "application/json" || type == "*/*") return "";
  }
  return "";
}

std::string AggregatedDiscoveryContentType(std::string_view version) {
  return Cat("application/json;g=apidiscovery.k8s.io;v=", version, ";as=APIGroupDiscoveryList");
}

nlohmann::json AggregatedDiscovery(bool core, std::string_view version) {
  nlohmann::json items = nlohmann::json::array();
  std::map<std::string, nlohmann::json> by_group;
  std::vector<std::string> group_order;
  for (const auto& [group, gv_version] : GroupVersions(core)) {
    nlohmann::json resources = nlohmann::json::array();
    for (const ResourceType& t : ResourceTypes()) {
      if (t.group != group || t.version != gv_version) continue;
      nlohmann::json kind = {{"group", t.group}, {"version", t.version}, {"kind", t.kind}};
      nlohmann::json r = {{"resource", t.resource},
                          {"responseKind", kind},
                          {"scope", t.namespaced ? "Namespaced" : "Cluster"},
                          {"singularResource", t.singular},
                          {"verbs", t.verbs},
                          {"shortNames", t.short_names}};
      if (!t.categories.empty()) r["categories"] = t.categories;
      if (t.has_status) {
        r["subresources"] = {
            {{"subresource", "status"}, {"responseKind", kind}, {"verbs", SubresourceVerbs()}}};
      }
      resources.push_back(std::move(r));
    }
    nlohmann::json v = {
        {"version", gv_version}, {"resources", resources}, {"freshness", "Current"}};
    if (!by_group.count(group)) {
      group_order.push_back(group);
      by_group[group] = {{"metadata", {{"name", group}, {"creationTimestamp", nullptr}}},
                         {"versions", nlohmann::json::array()}};
    }
    by_group[group]["versions"].push_back(std::move(v));
  }
  for (const std::string& g : group_order) items.push_back(by_group[g]);
  return {{"kind", "APIGroupDiscoveryList"},
          {"apiVersion", Cat("apidiscovery.k8s.io/", version)},
          {"metadata", nlohmann::json::object()},
          {"items", items}};
}

}  // namespace sandboxlet::rest
