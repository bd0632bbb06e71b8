// Routing of the local REST API: the resource types it serves (sandboxlet.dev/v1alpha1 sandboxes
// and sandboxsnapshots, core/v1 events and namespaces) and the parsing of a request URL into
// Kubernetes' "request info" (group, version, namespace, resource, name, subresource, verb), the
// way kube-apiserver reads `/apis/<group>/<version>[/watch]/namespaces/<ns>/<resource>/<name>/...`.
// Thread-safe: immutable tables and pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/object.h"
#include "controller/rest/http_server.h"

namespace sandboxlet::rest {

struct ResourceType {
  std::string group;  // "" for the core group
  std::string version;
  std::string resource;  // plural, as in URLs and the store
  std::string singular;
  std::string kind;
  std::string list_kind;
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  bool namespaced = true;
  bool has_status = false;
  std::vector<std::string> verbs;
  // Typed kinds of the sandboxlet API are decoded, defaulted and validated through api/;
  // other resources (events) are read-only views of what the controller stores.
  std::optional<api::Kind> api_kind;

  std::string GroupVersion() const;  // "sandboxlet.dev/v1alpha1" or "v1"
  bool AllowsVerb(std::string_view verb) const;
};

// Every resource type served, sandboxlet kinds first.
const std::vector<ResourceType>& ResourceTypes();
const ResourceType* FindResourceType(std::string_view group, std::string_view version,
                                     std::string_view resource);

struct RequestInfo {
  bool is_resource = false;  // false: discovery, /version, /openapi, ...
  std::string group;
  std::string version;
  std::string ns;
  std::string resource;
  std::string name;
  std::string subresource;
  // get, list, watch, create, update, patch, delete, deletecollection
  std::string verb;
};

// Parses the method, path and query of a request. Paths under /api/<v> and /apis/<g>/<v> with
// more segments are resource requests; everything else is not.
RequestInfo ParseRequestInfo(const HttpRequest& request);

}  // namespace sandboxlet::rest
