#include "controller/rest/openapi_doc.h"

#include <functional>
#include <map>

#include "api/object.h"
#include "api/openapi.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

constexpr std::string_view kGvPath = "apis/sandboxlet.dev/v1alpha1";

std::string SchemaName(std::string_view kind) { return Cat("dev.sandboxlet.v1alpha1.", kind); }
constexpr std::string_view kStatusSchema = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
constexpr std::string_view kPatchSchema = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
constexpr std::string_view kDeleteOptionsSchema =
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

nlohmann::json Gvk(std::string_view kind) {
  return {{"group", api::kGroup}, {"version", api::kVersion}, {"kind", kind}};
}

// One query parameter, documented as kube-apiserver documents it.
nlohmann::json QueryParam(std::string_view name, std::string_view type, std::string_view doc) {
  return {{"name", name},
          {"in", "query"},
          {"description", doc},
          {"schema", {{"type", type}, {"uniqueItems", true}}}};
}

nlohmann::json Ref(std::string_view schema, bool v3) {
  return {{"$ref", Cat(v3 ? "#/components/schemas/" : "#/definitions/", schema)}};
}

nlohmann::json DryRun() {
  return QueryParam("dryRun", "string",
                    "When present, indicates that modifications should not be persisted. Valid "
                    "values are: All.");
}
nlohmann::json FieldManager() {
  return QueryParam("fieldManager", "string",
                    "A name associated with the actor or entity that is making these changes.");
}
nlohmann::json FieldValidation() {
  return QueryParam("fieldValidation", "string",
                    "How the server handles unknown fields in the request: Ignore, Warn or "
                    "Strict (the default).");
}

struct Operation {
  std::string method;  // get, post, put, patch, delete
  std::string action;  // x-kubernetes-action
  std::string operation_id;
  std::string description;
  std::string response_schema;
  std::vector<nlohmann::json> params;
  bool has_body = false;
  bool patch_body = false;
};

nlohmann::json RenderV3(const Operation& op, std::string_view kind) {
  nlohmann::json json_content = {{"schema", Ref(op.response_schema, true)}};
  nlohmann::json o = {
      {"description", op.description},
      {"operationId", op.operation_id},
      {"tags", {"sandboxletDev_v1alpha1"}},
      {"x-kubernetes-action", op.action},
      {"x-kubernetes-group-version-kind", Gvk(kind)},
      {"parameters", op.params},
      {"responses",
       {{"200",
         {{"description", "OK"},
          {"content", {{"application/json", json_content}, {"application/yaml", json_content}}}}},
        {"401", {{"description", "Unauthorized"}}}}}};
  if (op.method == "post") {
    o["responses"]["201"] = {{"description", "Created"},
                             {"content", {{"application/json", json_content}}}};
  }
  if (op.has_body) {
    nlohmann::json body_schema =
        op.patch_body ? Ref(kPatchSchema, true) : Ref(op.response_schema, true);
    if (op.method == "delete") body_schema = Ref(kDeleteOptionsSchema, true);
    nlohmann::json content = nlohmann::json::object();
    if (op.patch_body) {
      for (const char* type : {"application/apply-patch+yaml", "application/json-patch+json",
                               "application/merge-patch+json"}) {
        content[type] = {{"schema", body_schema}};
      }
    } else {
      content["application/json"] = {{"schema", body_schema}};
      content["application/yaml"] = {{"schema", body_schema}};
    }
    o["requestBody"] = {{"content", content}, {"required", op.method != "delete"}};
  }
  return o;
}

nlohmann::json RenderV2(const Operation& op, std::string_view kind) {
  nlohmann::json params = nlohmann::json::array();
  for (const nlohmann::json& p : op.params) {
    params.push_back({{"name", p["name"]},
                      {"in", "query"},
                      {"description", p["description"]},
                      {"type", p["schema"]["type"]},
                      {"uniqueItems", true}});
  }
  if (op.has_body) {
    std::string schema = op.patch_body ? std::string(kPatchSchema) : op.response_schema;
    if (op.method == "delete") schema = std::string(kDeleteOptionsSchema);
    params.push_back({{"name", "body"},
                      {"in", "body"},
                      {"required", op.method != "delete"},
                      {"schema", Ref(schema, false)}});
  }
  nlohmann::json o = {
      {"description", op.description},
      {"operationId", op.operation_id},
      {"produces", {"application/json", "application/yaml"}},
      {"schemes", {"https"}},
      {"tags", {"sandboxletDev_v1alpha1"}},
      {"x-kubernetes-action", op.action},
      {"x-kubernetes-group-version-kind", Gvk(kind)},
      {"parameters", params},
      {"responses",
       {{"200", {{"description", "OK"}, {"schema", Ref(op.response_schema, false)}}},
        {"401", {{"description", "Unauthorized"}}}}}};
  if (op.patch_body) {
    o["consumes"] = {"application/json-patch+json", "application/merge-patch+json",
                     "application/apply-patch+yaml"};
  } else {
    o["consumes"] = {"*/*"};
  }
  return o;
}

nlohmann::json PathParam(std::string_view name, std::string_view doc) {
  return {{"name", name},
          {"in", "path"},
          {"description", doc},
          {"required", true},
          {"schema", {{"type", "string"}, {"uniqueItems", true}}}};
}

// Paths of both kinds, rendered by `render` (v2 or v3).
nlohmann::json Paths(bool v3) {
  nlohmann::json paths = nlohmann::json::object();
  auto render = [&](const Operation& op, std::string_view kind) {
    return v3 ? RenderV3(op, kind) : RenderV2(op, kind);
  };
  auto path_params = [&](bool with_name) {
    nlohmann::json params = nlohmann::json::array();
    if (with_name) params.push_back(PathParam("name", "name of the object"));
    params.push_back(PathParam("namespace", "object name and auth scope, such as for teams"));
    if (!v3) {
      for (auto& p : params) {
        p["type"] = "string";
        p.erase("schema");
      }
    }
    return params;
  };
  nlohmann::json list_params = {
      QueryParam("labelSelector", "string", "A selector to restrict the list by labels."),
      QueryParam("fieldSelector", "string", "A selector to restrict the list by fields."),
      QueryParam("limit", "integer", "Maximum number of items in one page."),
      QueryParam("continue", "string", "Token of the next page."),
      QueryParam("resourceVersion", "string", "Version to list or watch from."),
      QueryParam("watch", "boolean", "Watch for changes instead of listing."),
      QueryParam("allowWatchBookmarks", "boolean", "Send BOOKMARK events."),
      QueryParam("timeoutSeconds", "integer", "Timeout of a list or watch call.")};

  for (api::Kind k : {api::Kind::kSandbox, api::Kind::kSandboxSnapshot}) {
    std::string kind(api::KindName(k));
    std::string resource(api::ResourceName(k));
    std::string schema = SchemaName(kind);
    std::string list_schema = SchemaName(api::ListKindName(k));
    std::string base = Cat("/apis/", api::kGroup, "/", api::kVersion);
    std::string coll = Cat(base, "/namespaces/{namespace}/", resource);
    std::string item = Cat(coll, "/{name}");

    nlohmann::json c = {{"parameters", path_params(false)}};
    c["get"] = render({"get", "list", Cat("listNamespaced", kind), Cat("list or watch ", kind),
                       list_schema, list_params},
                      kind);
    c["post"] = render({"post",
                        "post",
                        Cat("createNamespaced", kind),
                        Cat("create a ", kind),
                        schema,
                        {DryRun(), FieldManager(), FieldValidation()},
                        true},
                       kind);
    c["delete"] =
        render({"delete", "deletecollection", Cat("deleteCollectionNamespaced", kind),
                Cat("delete collection of ", kind), kStatusSchema.data(), list_params, true},
               kind);
    paths[coll] = c;

    nlohmann::json i = {{"parameters", path_params(true)}};
    i["get"] = render(
        {"get", "get", Cat("readNamespaced", kind), Cat("read the specified ", kind), schema, {}},
        kind);
    i["put"] = render({"put",
                       "put",
                       Cat("replaceNamespaced", kind),
                       Cat("replace the specified ", kind),
                       schema,
                       {DryRun(), FieldManager(), FieldValidation()},
                       true},
                      kind);
    i["patch"] =
        render({"patch",
                "patch",
                Cat("patchNamespaced", kind),
                Cat("partially update the specified ", kind),
                schema,
                {DryRun(), FieldManager(), FieldValidation(),
                 QueryParam("force", "boolean", "Force is going to \"force\" Apply requests.")},
                true,
                true},
               kind);
    i["delete"] = render({"delete",
                          "delete",
                          Cat("deleteNamespaced", kind),
                          Cat("delete a ", kind),
                          kStatusSchema.data(),
                          {DryRun()},
                          true},
                         kind);
    paths[item] = i;

    nlohmann::json s = {{"parameters", path_params(true)}};
    s["get"] = render({"get",
                       "get",
                       Cat("readNamespaced", kind, "Status"),
                       Cat("read status of the specified ", kind),
                       schema,
                       {}},
                      kind);
    s["put"] = render({"put",
                       "put",
                       Cat("replaceNamespaced", kind, "Status"),
                       Cat("replace status of the specified ", kind),
                       schema,
                       {DryRun(), FieldManager(), FieldValidation()},
                       true},
                      kind);
    s["patch"] =
        render({"patch",
                "patch",
                Cat("patchNamespaced", kind, "Status"),
                Cat("partially update status of the specified ", kind),
                schema,
                {DryRun(), FieldManager(), FieldValidation(),
                 QueryParam("force", "boolean", "Force is going to \"force\" Apply requests.")},
                true,
                true},
               kind);
    paths[Cat(item, "/status")] = s;

    nlohmann::json all = nlohmann::json::object();
    all["get"] =
        render({"get", "list", Cat("list", kind, "ForAllNamespaces"),
                Cat("list or watch ", kind, " in all namespaces"), list_schema, list_params},
               kind);
    paths[Cat(base, "/", resource)] = all;
  }
  return paths;
}

// Schemas of both kinds, their lists and the meta types the operations name.
nlohmann::json Schemas(bool v3) {
  nlohmann::json schemas = nlohmann::json::object();
  for (api::Kind k : {api::Kind::kSandbox, api::Kind::kSandboxSnapshot}) {
    std::string kind(api::KindName(k));
    nlohmann::json s = api::OpenApiSchemaOf(api::DescriptorOf(k));
    s["x-kubernetes-group-version-kind"] = nlohmann::json::array({Gvk(kind)});
    schemas[SchemaName(kind)] = s;
    std::string list_kind(api::ListKindName(k));
    nlohmann::json list = {
        {"type", "object"},
        {"description", Cat(list_kind, " is a list of ", kind)},
        {"required", {"items"}},
        {"properties",
         {{"apiVersion", {{"type", "string"}}},
          {"kind", {{"type", "string"}}},
          {"metadata", {{"type", "object"}}},
          {"items", {{"type", "array"}, {"items", Ref(SchemaName(kind), v3)}}}}},
        {"x-kubernetes-group-version-kind", nlohmann::json::array({Gvk(list_kind)})}};
    schemas[SchemaName(list_kind)] = list;
  }
  schemas[kStatusSchema] = {
      {"type", "object"},
      {"description", "Status is a return value for calls that don't return other objects."},
      {"properties",
       {{"apiVersion", {{"type", "string"}}},
        {"kind", {{"type", "string"}}},
        {"code", {{"type", "integer"}, {"format", "int32"}}},
        {"message", {{"type", "string"}}},
        {"reason", {{"type", "string"}}},
        {"status", {{"type", "string"}}},
        {"details", {{"type", "object"}}},
        {"metadata", {{"type", "object"}}}}},
      {"x-kubernetes-group-version-kind",
       nlohmann::json::array({{{"group", ""}, {"version", "v1"}, {"kind", "Status"}}})}};
  schemas[kPatchSchema] = {{"type", "object"},
                           {"description",
                            "Patch is provided to give a concrete name and type to the Kubernetes "
                            "PATCH request body."}};
  schemas[kDeleteOptionsSchema] = {
      {"type", "object"},
      {"description", "DeleteOptions may be provided when deleting an API object."},
      {"properties",
       {{"apiVersion", {{"type", "string"}}},
        {"kind", {{"type", "string"}}},
        {"dryRun", {{"type", "array"}, {"items", {{"type", "string"}}}}},
        {"gracePeriodSeconds", {{"type", "integer"}, {"format", "int64"}}},
        {"preconditions",
         {{"type", "object"},
          {"properties",
           {{"resourceVersion", {{"type", "string"}}}, {"uid", {{"type", "string"}}}}}}},
        {"propagationPolicy", {{"type", "string"}}}}}};
  return schemas;
}

std::string Hash(const nlohmann::json& doc) {
  size_t h = std::hash<std::string>{}(doc.dump());
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016zX", h);
  return buf;
}

const nlohmann::json& GroupDocument() {
  static const nlohmann::json* doc =
      new nlohmann::json{{"openapi", "3.0.0"},
                         {"info", {{"title", "sandboxlet"}, {"version", api::kVersion}}},
                         {"paths", Paths(true)},
                         {"components", {{"schemas", Schemas(true)}}}};
  return *doc;
}

}  // namespace

const nlohmann::json& OpenApiV3Index() {
  static const nlohmann::json* index = new nlohmann::json{
      {"paths",
       {{kGvPath,
         {{"serverRelativeURL", Cat("/openapi/v3/", kGvPath, "?hash=", Hash(GroupDocument()))}}}}}};
  return *index;
}

const nlohmann::json* OpenApiV3Document(std::string_view gv_path) {
  if (gv_path != kGvPath) return nullptr;
  return &GroupDocument();
}

const nlohmann::json& OpenApiV2Document() {
  static const nlohmann::json* doc =
      new nlohmann::json{{"swagger", "2.0"},
                         {"info", {{"title", "sandboxlet"}, {"version", api::kVersion}}},
                         {"paths", Paths(false)},
                         {"definitions", Schemas(false)}};
  return *doc;
}

}  // namespace sandboxlet::rest
