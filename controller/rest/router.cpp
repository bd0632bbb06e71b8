#include "controller/rest/router.h"

#include <algorithm>

#include "runtime/base/strings.h"

namespace sandboxlet::rest {

std::string ResourceType::GroupVersion() const {
  return group.empty() ? version : Cat(group, "/", version);
}

bool ResourceType::AllowsVerb(std::string_view verb) const {
  return std::find(verbs.begin(), verbs.end(), verb) != verbs.end();
}

namespace {

ResourceType Typed(api::Kind kind, std::vector<std::string> categories) {
  ResourceType t;
  t.group = std::string(api::kGroup);
  t.version = std::string(api::kVersion);
  t.resource = std::string(api::ResourceName(kind));
  t.singular = std::string(api::SingularName(kind));
  t.kind = std::string(api::KindName(kind));
  t.list_kind = std::string(api::ListKindName(kind));
  t.short_names = {std::string(api::ShortName(kind))};
  t.categories = std::move(categories);
  t.namespaced = true;
  t.has_status = true;
  t.verbs = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"};
  t.api_kind = kind;
  return t;
}

}  // namespace

const std::vector<ResourceType>& ResourceTypes() {
  static const std::vector<ResourceType>* types = [] {
    auto* v = new std::vector<ResourceType>;
    v->push_back(Typed(api::Kind::kSandbox, {"all", "sandboxlet"}));
    v->push_back(Typed(api::Kind::kSandboxSnapshot, {"sandboxlet"}));
    ResourceType events;
    events.version = "v1";
    events.resource = "events";
    events.singular = "event";
    events.kind = "Event";
    events.list_kind = "EventList";
    events.short_names = {"ev"};
    events.verbs = {"get", "list", "watch"};
    v->push_back(events);
    ResourceType namespaces;
    namespaces.version = "v1";
    namespaces.resource = "namespaces";
    namespaces.singular = "namespace";
    namespaces.kind = "Namespace";
    namespaces.list_kind = "NamespaceList";
    namespaces.short_names = {"ns"};
    namespaces.namespaced = false;
    namespaces.verbs = {"get", "list"};
    v->push_back(namespaces);
    return v;
  }();
  return *types;
}

const ResourceType* FindResourceType(std::string_view group, std::string_view version,
                                     std::string_view resource) {
  for (const ResourceType& t : ResourceTypes()) {
    if (t.group == group && t.version == version && t.resource == resource) return &t;
  }
  return nullptr;
}

RequestInfo ParseRequestInfo(const HttpRequest& request) {
  RequestInfo info;
  std::vector<std::string> parts;
  for (const std::string& p : Split(request.path, '/')) {
    if (!p.empty()) parts.push_back(p);
  }
  size_t i = 0;
  if (parts.size() >= 2 && parts[0] == "api") {
    info.version = parts[1];
    i = 2;
  } else if (parts.size() >= 3 && parts[0] == "apis") {
    info.group = parts[1];
    info.version = parts[2];
    i = 3;
  } else {
    return info;
  }
  if (i >= parts.size()) return info;  // /api/v1, /apis/g/v: discovery
  info.is_resource = true;
  bool watch_path = false;
  if (parts[i] == "watch") {
    watch_path = true;
    ++i;
  }
  std::vector<std::string> rest(parts.begin() + static_cast<long>(i), parts.end());
  if (!rest.empty() && rest[0] == "namespaces") {
    if (rest.size() >= 3) {
      info.ns = rest[1];
      rest.erase(rest.begin(), rest.begin() + 2);
    } else {
      // /namespaces or /namespaces/<name>: the namespaces resource itself.
    }
  }
  if (!rest.empty()) info.resource = rest[0];
  if (rest.size() >= 2) info.name = rest[1];
  if (rest.size() >= 3) info.subresource = rest[2];
  if (rest.size() > 3) info.subresource = Join({rest.begin() + 2, rest.end()}, "/");

  std::string watch_q = request.Query("watch");
  bool watch = watch_path || watch_q == "true" || watch_q == "1";
  const std::string& m = request.method;
  if (m == "GET" || m == "HEAD") {
    info.verb = watch ? "watch" : (info.name.empty() ? "list" : "get");
  } else if (m == "POST") {
    info.verb = "create";
  } else if (m == "PUT") {
    info.verb = "update";
  } else if (m == "PATCH") {
    info.verb = "patch";
  } else if (m == "DELETE") {
    info.verb = info.name.empty() ? "deletecollection" : "delete";
  } else {
    info.verb = Cat("unsupported:", m);
  }
  return info;
}

}  // namespace sandboxlet::rest
