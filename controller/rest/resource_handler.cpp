#include "controller/rest/resource_handler.h"

#include <ctime>
#include <set>

#include "api/codec.h"
#include "controller/rest/managed_fields.h"
#include "controller/rest/patch.h"
#include "controller/rest/table.h"
#include "controller/rest/watch_stream.h"
#include "controller/store/selector.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

// Metadata the api/ ObjectMeta does not model but Kubernetes clients send or expect back.
constexpr const char* kPassthroughMetadata[] = {"ownerReferences", "managedFields",
                                                "deletionGracePeriodSeconds"};
constexpr int kMaxConflictRetries = 5;

ApiResponse ErrorResponse(const ApiError& e) { return {e.code, e.ToStatus(), {}}; }

std::string MediaType(const HttpRequest& req) {
  std::string ct = req.Header("content-type");
  std::string_view t = Trim(std::string_view(ct).substr(0, ct.find(';')));
  return std::string(t);
}

// Parses a request body as JSON or YAML (one document).
std::variant<nlohmann::json, ApiError> ParseBody(const HttpRequest& req) {
  std::string type = MediaType(req);
  std::string_view body = Trim(req.body);
  if (body.empty()) return BadRequest("the request has no body");
  bool yaml = type == "application/yaml" || type == "application/apply-patch+yaml" ||
              (body[0] != '{' && body[0] != '[');
  if (!yaml) {
    absl::StatusOr<nlohmann::json> j = api::ParseJson(body);
    if (!j.ok()) return BadRequest(Cat("error decoding request body: ", j.status().message()));
    return *j;
  }
  absl::StatusOr<std::vector<nlohmann::json>> docs = api::ParseYamlDocuments(body);
  if (!docs.ok()) return BadRequest(Cat("error decoding YAML: ", docs.status().message()));
  if (docs->size() != 1) {
    return BadRequest(Cat("the request body must hold one object, found ", docs->size()));
  }
  return std::move((*docs)[0]);
}

std::string StringOf(const nlohmann::json& o, std::initializer_list<const char*> path) {
  const nlohmann::json* node = &o;
  for (const char* p : path) {
    if (!node->is_object()) return "";
    auto it = node->find(p);
    if (it == node->end()) return "";
    node = &*it;
  }
  return node->is_string() ? node->get<std::string>() : "";
}

// Field selector paths each type can filter on (kube rejects others with 400).
bool FieldSelectable(const ResourceType& type, const std::string& field) {
  static const std::set<std::string> common = {"metadata.name", "metadata.namespace"};
  if (common.count(field)) return true;
  if (type.resource == "sandboxes") return field == "spec.nodeName" || field == "status.phase";
  if (type.resource == "sandboxsnapshots") {
    return field == "spec.sandboxName" || field == "status.phase";
  }
  if (type.resource == "events") {
    return StartsWith(field, "involvedObject.") || field == "reason" || field == "type" ||
           field == "source" || field == "reportingComponent";
  }
  if (type.resource == "namespaces") return field == "status.phase";
  return false;
}

std::variant<store::ListOptions, ApiError> ParseListOptions(const HttpRequest& req,
                                                            const ResourceType& type) {
  store::ListOptions options;
  absl::StatusOr<store::LabelSelector> labels =
      store::LabelSelector::Parse(req.Query("labelSelector"));
  if (!labels.ok()) return BadRequest(std::string(labels.status().message()));
  options.labels = std::move(*labels);
  absl::StatusOr<store::FieldSelector> fields =
      store::FieldSelector::Parse(req.Query("fieldSelector"));
  if (!fields.ok()) return BadRequest(std::string(fields.status().message()));
  for (const auto& r : fields->requirements()) {
    if (!FieldSelectable(type, r.field)) {
      return BadRequest(Cat("field label not supported: ", r.field));
    }
  }
  options.fields = std::move(*fields);
  if (std::string limit = req.Query("limit"); !limit.empty()) {
    char* end = nullptr;
    long long n = std::strtoll(limit.c_str(), &end, 10);
    if (end == limit.c_str() || *end != '\0' || n < 0) {
      return BadRequest(
          Cat("limit: Invalid value: \"", limit, "\": must be a non-negative integer"));
    }
    options.limit = n;
  }
  options.continue_token = req.Query("continue");
  return options;
}

bool IsTrue(const std::string& v) { return v == "true" || v == "1"; }

// The object without managedFields times, to tell a no-op write from a real one.
nlohmann::json WithoutManagedTimes(nlohmann::json o) {
  if (o.is_object() && o.contains("metadata") && o["metadata"].contains("managedFields") &&
      o["metadata"]["managedFields"].is_array()) {
    for (auto& e : o["metadata"]["managedFields"]) {
      if (e.is_object()) e.erase("time");
    }
  }
  return o;
}

}  // namespace

std::string FieldManagerOf(const HttpRequest& request) {
  std::string m = request.Query("fieldManager");
  if (!m.empty()) return m;
  std::string ua = request.Header("user-agent");
  std::string program = ua.substr(0, ua.find('/'));
  program = std::string(Trim(program.substr(0, program.find(' '))));
  return program.empty() ? "unknown" : program.substr(0, 128);
}

std::variant<Admitted, ApiError> AdmitObject(const ResourceType& type, const nlohmann::json& object,
                                             api::FieldValidation validation,
                                             const api::ValidationLimits& limits) {
  if (!object.is_object()) return BadRequest("the request body must be a JSON or YAML object");
  const std::string name = StringOf(object, {"metadata", "name"});
  ErrorSubject subject{type.group, type.resource, type.kind, name};
  std::string api_version = StringOf(object, {"apiVersion"});
  std::string kind = StringOf(object, {"kind"});
  if (kind.empty()) return BadRequest("Object 'Kind' is missing in the request body");
  if (api_version.empty()) return BadRequest("Object 'apiVersion' is missing in the request body");
  if (api_version != type.GroupVersion() || kind != type.kind) {
    return BadRequest(Cat("the API version and kind in the data (", api_version, ", ", kind,
                          ") do not match the expected ", type.GroupVersion(), ", ", type.kind));
  }

  nlohmann::json input = object;
  nlohmann::json passthrough = nlohmann::json::object();
  if (input.contains("metadata") && input["metadata"].is_object()) {
    nlohmann::json& meta = input["metadata"];
    for (const char* f : kPassthroughMetadata) {
      auto it = meta.find(f);
      if (it == meta.end()) continue;
      if (!it->is_null()) passthrough[f] = *it;
      meta.erase(it);
    }
    meta.erase("selfLink");
  }

  absl::StatusOr<api::Decoded> decoded = api::DecodeObject(input, {validation});
  if (!decoded.ok()) {
    std::vector<api::FieldError> errors = api::FieldErrorsOf(decoded.status());
    std::vector<std::string> unknown;
    std::vector<api::FieldError> others;
    for (const api::FieldError& e : errors) {
      if (e.type == api::FieldErrorType::kUnknown) {
        unknown.push_back(Cat("unknown field \"", e.path, "\""));
      } else {
        others.push_back(e);
      }
    }
    if (!unknown.empty()) {
      return BadRequest(Cat(type.kind, " in version \"", type.version, "\" cannot be handled as a ",
                            type.kind, ": strict decoding error: ", Join(unknown, ", ")));
    }
    if (!others.empty()) return Invalid(subject, others);
    return BadRequest(Cat(type.kind, " in version \"", type.version, "\" cannot be handled as a ",
                          type.kind, ": ", decoded.status().message()));
  }
  api::SetDefaults(decoded->object);
  std::vector<api::FieldError> errors = api::Validate(decoded->object, limits);
  if (!errors.empty()) return Invalid(subject, errors);
  absl::StatusOr<nlohmann::json> canonical = api::ToJson(decoded->object);
  if (!canonical.ok()) return Internal(std::string(canonical.status().message()));
  nlohmann::json& meta = (*canonical)["metadata"];
  for (auto it = passthrough.begin(); it != passthrough.end(); ++it) meta[it.key()] = it.value();
  return Admitted{std::move(*canonical), std::move(decoded->warnings)};
}

struct ResourceHandler::Context {
  const HttpRequest& req;
  const RequestInfo& info;
  const ResourceType& type;
  ErrorSubject subject;
  bool dry_run = false;
  api::FieldValidation validation = api::FieldValidation::kStrict;
  std::string manager;
  std::optional<TableOptions> table;
  bool status = false;  // the status subresource
};

ResourceHandler::ResourceHandler(store::ObjectStore& store, Clock& clock,
                                 ResourceHandlerOptions options)
    : store_(store), clock_(clock), options_(options), started_(Now()) {}

std::string ResourceHandler::Now() const {
  std::time_t t = std::chrono::system_clock::to_time_t(clock_.WallNow());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<ApiResponse> ResourceHandler::Handle(const HttpRequest& req, const RequestInfo& info,
                                                   const ResourceType& type,
                                                   ResponseWriter& writer) {
  Context c{req, info, type, {type.group, type.resource, type.kind, info.name}};
  if (!info.subresource.empty()) {
    if (info.subresource != "status" || !type.has_status) {
      return ErrorResponse(NotFoundPath(req.path));
    }
    if (info.verb != "get" && info.verb != "update" && info.verb != "patch") {
      return ErrorResponse(MethodNotAllowed(req.method, Cat(type.resource, "/status")));
    }
    c.status = true;
  }
  if (!type.AllowsVerb(info.verb)) {
    return ErrorResponse(MethodNotAllowed(req.method, type.resource));
  }
  if (type.namespaced && info.ns.empty() && !info.name.empty()) {
    return ErrorResponse(NotFoundPath(req.path));
  }
  if (type.namespaced && info.ns.empty() &&
      (info.verb == "create" || info.verb == "deletecollection")) {
    return ErrorResponse(NotFoundPath(req.path));
  }

  // dryRun: "All" is the only value kube accepts.
  auto [dr_begin, dr_end] = req.query.equal_range("dryRun");
  for (auto it = dr_begin; it != dr_end; ++it) {
    if (it->second != "All") {
      return ErrorResponse(BadRequest(
          Cat("dryRun: Unsupported value: \"", it->second, "\": supported values: \"All\"")));
    }
    c.dry_run = true;
  }
  absl::StatusOr<api::FieldValidation> fv = api::ParseFieldValidation(req.Query("fieldValidation"));
  if (!fv.ok()) {
    return ErrorResponse(
        BadRequest(Cat("fieldValidation: Unsupported value: \"", req.Query("fieldValidation"),
                       "\": supported values: \"Ignore\", \"Strict\", \"Warn\"")));
  }
  c.validation = *fv;
  c.manager = FieldManagerOf(req);
  if (std::optional<std::string> tv = TableVersionFromAccept(req.Header("accept")); tv) {
    std::optional<IncludeObject> include = ParseIncludeObject(req.Query("includeObject"));
    if (!include) {
      return ErrorResponse(BadRequest(
          Cat("includeObject: Unsupported value: \"", req.Query("includeObject"), "\"")));
    }
    c.table = TableOptions{Cat("meta.k8s.io/", *tv), *include, false};
  }

  if (type.resource == "namespaces") return Namespaces(c);
  if (info.verb == "get") return Get(c);
  if (info.verb == "list") return List(c);
  if (info.verb == "watch") return Watch(c, writer);
  if (info.verb == "create") return Create(c);
  if (info.verb == "update") return Update(c);
  if (info.verb == "patch") return Patch(c);
  if (info.verb == "delete") return Delete(c);
  if (info.verb == "deletecollection") return DeleteCollection(c);
  return ErrorResponse(MethodNotAllowed(req.method, type.resource));
}

ApiResponse ResourceHandler::Render(const Context& c, int code, nlohmann::json object,
                                    std::vector<std::string> warnings) {
  if (c.table.has_value() && object.is_object() && object.value("kind", "") == c.type.kind) {
    // kubectl watches a single object from the Table's resourceVersion.
    nlohmann::json meta = {{"resourceVersion", StringOf(object, {"metadata", "resourceVersion"})}};
    object = RenderTable(c.type, {object}, meta, *c.table, clock_.WallNow());
  }
  return {code, std::move(object), std::move(warnings)};
}

ApiResponse ResourceHandler::Get(const Context& c) {
  absl::StatusOr<nlohmann::json> o = store_.Get(c.type.resource, c.info.ns, c.info.name);
  if (!o.ok()) return ErrorResponse(FromStatus(o.status(), c.subject));
  return Render(c, 200, std::move(*o));
}

ApiResponse ResourceHandler::List(const Context& c) {
  auto parsed = ParseListOptions(c.req, c.type);
  if (auto* e = std::get_if<ApiError>(&parsed)) return ErrorResponse(*e);
  absl::StatusOr<store::ObjectList> list =
      store_.List(c.type.resource, c.info.ns, std::get<store::ListOptions>(parsed));
  if (!list.ok()) {
    if (list.status().code() == absl::StatusCode::kInvalidArgument) {
      return ErrorResponse(BadRequest(std::string(list.status().message())));
    }
    return ErrorResponse(FromStatus(list.status(), c.subject));
  }
  nlohmann::json meta = {{"resourceVersion", list->resource_version}};
  if (!list->continue_token.empty()) meta["continue"] = list->continue_token;
  if (c.table.has_value()) {
    return {200, RenderTable(c.type, list->items, meta, *c.table, clock_.WallNow()), {}};
  }
  return {200,
          {{"apiVersion", c.type.GroupVersion()},
           {"kind", c.type.list_kind},
           {"metadata", meta},
           {"items", list->items}},
          {}};
}

std::optional<ApiResponse> ResourceHandler::Watch(const Context& c, ResponseWriter& writer) {
  auto parsed = ParseListOptions(c.req, c.type);
  if (auto* e = std::get_if<ApiError>(&parsed)) return ErrorResponse(*e);
  store::ListOptions& lo = std::get<store::ListOptions>(parsed);
  WatchRequest w;
  w.ns = c.info.ns;
  w.options.labels = std::move(lo.labels);
  w.options.fields = std::move(lo.fields);
  if (!c.info.name.empty()) {
    // /watch/namespaces/<ns>/<resource>/<name>: a watch of one object.
    absl::StatusOr<store::FieldSelector> by_name =
        store::FieldSelector::Parse(Cat("metadata.name=", c.info.name));
    if (by_name.ok()) w.options.fields = std::move(*by_name);
  }
  std::string rv = c.req.Query("resourceVersion");
  w.options.resource_version = rv;
  bool bookmarks = IsTrue(c.req.Query("allowWatchBookmarks"));
  std::string initial = c.req.Query("sendInitialEvents");
  if (!initial.empty()) {
    w.options.send_initial_events = IsTrue(initial);
    if (w.options.send_initial_events && !bookmarks) {
      return ErrorResponse(
          Invalid(c.subject, {{"allowWatchBookmarks", api::FieldErrorType::kForbidden, nullptr,
                               "sendInitialEvents requires allowWatchBookmarks"}}));
    }
    w.options.initial_events_end_bookmark = w.options.send_initial_events;
  } else {
    // Without a version (or "0") kube starts with the current state as ADDED events.
    w.options.send_initial_events = rv.empty() || rv == "0";
  }
  if (bookmarks) w.options.bookmark_interval = options_.bookmark_interval;
  w.timeout = options_.default_watch_timeout;
  if (std::string t = c.req.Query("timeoutSeconds"); !t.empty()) {
    char* end = nullptr;
    long long n = std::strtoll(t.c_str(), &end, 10);
    if (end == t.c_str() || *end != '\0' || n < 0) {
      return ErrorResponse(BadRequest(Cat("timeoutSeconds: Invalid value: \"", t, "\"")));
    }
    // 0 means "the server's default", as in kube-apiserver.
    if (n > 0) w.timeout = std::min(std::chrono::seconds(n), options_.max_watch_timeout);
  }
  w.table = c.table;
  std::optional<ApiError> e = ServeWatch(store_, c.type, w, clock_, writer);
  if (e.has_value()) return ErrorResponse(*e);
  return std::nullopt;
}

ApiResponse ResourceHandler::Create(const Context& c) {
  if (c.status) return ErrorResponse(MethodNotAllowed(c.req.method, "status"));
  auto body = ParseBody(c.req);
  if (auto* e = std::get_if<ApiError>(&body)) return ErrorResponse(*e);
  nlohmann::json& object = std::get<nlohmann::json>(body);
  if (!object.is_object()) return ErrorResponse(BadRequest("the request body must be an object"));
  nlohmann::json& meta = object["metadata"];
  if (!meta.is_object()) meta = nlohmann::json::object();
  std::string ns = meta.value("namespace", "");
  if (!ns.empty() && ns != c.info.ns) {
    return ErrorResponse(BadRequest(
        "the namespace of the provided object does not match the namespace sent on the request"));
  }
  meta["namespace"] = c.info.ns;
  return Commit(c, nullptr, std::move(object), {}, 201);
}

ApiResponse ResourceHandler::Commit(const Context& c, const nlohmann::json& live,
                                    nlohmann::json next, std::vector<std::string> warnings,
                                    int success_code) {
  ErrorSubject subject = c.subject;
  subject.name = StringOf(next, {"metadata", "name"});
  auto admitted = AdmitObject(c.type, next, c.validation, options_.limits);
  if (auto* e = std::get_if<ApiError>(&admitted)) return ErrorResponse(*e);
  Admitted& a = std::get<Admitted>(admitted);
  for (std::string& w : a.warnings) warnings.push_back(std::move(w));
  nlohmann::json object = std::move(a.object);

  // Field ownership: an apply already set managedFields on `next`; other writes are updates.
  if (MediaType(c.req) != "application/apply-patch+yaml") {
    absl::StatusOr<ManagedFields> mf =
        ManagedFields::FromObject(live.is_null() ? nlohmann::json::object() : live);
    if (!mf.ok()) return ErrorResponse(Internal(std::string(mf.status().message())));
    mf->RecordUpdate(live, object, c.manager, "", c.type.GroupVersion(), Now());
    mf->ToObject(object);
  }

  if (live.is_null()) {
    if (c.dry_run) {
      object["metadata"]["creationTimestamp"] = Now();
      return Render(c, success_code, std::move(object), std::move(warnings));
    }
    absl::StatusOr<nlohmann::json> created = store_.Create(c.type.resource, object);
    if (!created.ok()) return ErrorResponse(FromStatus(created.status(), subject));
    return Render(c, success_code, std::move(*created), std::move(warnings));
  }
  // Keep what the server owns from the live object; the store enforces the rest.
  if (object["metadata"].value("resourceVersion", "").empty()) {
    object["metadata"]["resourceVersion"] = live["metadata"].value("resourceVersion", "");
  }
  if (c.dry_run) {
    nlohmann::json preview = object;
    for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp", "generation"}) {
      if (live["metadata"].contains(f)) preview["metadata"][f] = live["metadata"][f];
    }
    if (live.contains("status")) preview["status"] = live["status"];
    return Render(c, 200, std::move(preview), std::move(warnings));
  }
  absl::StatusOr<nlohmann::json> updated = store_.Update(c.type.resource, object);
  if (!updated.ok()) return ErrorResponse(FromStatus(updated.status(), subject));
  return Render(c, success_code, std::move(*updated), std::move(warnings));
}

ApiResponse ResourceHandler::CommitStatus(const Context& c, const nlohmann::json& live,
                                          const nlohmann::json& next,
                                          std::vector<std::string> warnings) {
  // Validate the whole object as sent (status types and enums), then write only status.
  nlohmann::json candidate = next;
  if (candidate.is_object() && live.is_object())
    candidate["spec"] = live.value("spec", nlohmann::json());
  auto admitted = AdmitObject(c.type, candidate, c.validation, options_.limits);
  if (auto* e = std::get_if<ApiError>(&admitted)) return ErrorResponse(*e);
  Admitted& a = std::get<Admitted>(admitted);
  for (std::string& w : a.warnings) warnings.push_back(std::move(w));
  nlohmann::json request = {
      {"apiVersion", c.type.GroupVersion()},
      {"kind", c.type.kind},
      {"metadata",
       {{"namespace", c.info.ns},
        {"name", c.info.name},
        {"resourceVersion", StringOf(next, {"metadata", "resourceVersion"})}}}};
  if (a.object.contains("status")) request["status"] = a.object["status"];
  if (c.dry_run) {
    nlohmann::json preview = live;
    preview["status"] = request.value("status", nlohmann::json::object());
    return Render(c, 200, std::move(preview), std::move(warnings));
  }
  absl::StatusOr<nlohmann::json> updated = store_.UpdateStatus(c.type.resource, request);
  if (!updated.ok()) return ErrorResponse(FromStatus(updated.status(), c.subject));
  return Render(c, 200, std::move(*updated), std::move(warnings));
}

ApiResponse ResourceHandler::Update(const Context& c) {
  auto body = ParseBody(c.req);
  if (auto* e = std::get_if<ApiError>(&body)) return ErrorResponse(*e);
  nlohmann::json& object = std::get<nlohmann::json>(body);
  if (!object.is_object()) return ErrorResponse(BadRequest("the request body must be an object"));
  nlohmann::json& meta = object["metadata"];
  if (!meta.is_object()) meta = nlohmann::json::object();
  std::string name = meta.value("name", "");
  if (name != c.info.name) {
    return ErrorResponse(
        BadRequest(Cat("the name of the object (", name, ") does not match the name on the URL (",
                       c.info.name, ")")));
  }
  std::string ns = meta.value("namespace", "");
  if (!ns.empty() && ns != c.info.ns) {
    return ErrorResponse(BadRequest(
        "the namespace of the provided object does not match the namespace sent on the request"));
  }
  meta["namespace"] = c.info.ns;
  absl::StatusOr<nlohmann::json> live = store_.Get(c.type.resource, c.info.ns, c.info.name);
  if (!live.ok()) return ErrorResponse(FromStatus(live.status(), c.subject));
  if (c.status) {
    if (meta.value("resourceVersion", "").empty()) {
      meta["resourceVersion"] = (*live)["metadata"].value("resourceVersion", "");
    }
    return CommitStatus(c, *live, object, {});
  }
  return Commit(c, *live, std::move(object), {}, 200);
}

ApiResponse ResourceHandler::Patch(const Context& c) {
  std::string type = MediaType(c.req);
  if (type == "application/strategic-merge-patch+json")
    return ErrorResponse(UnsupportedMediaType(type));
  if (type != "application/merge-patch+json" && type != "application/json-patch+json" &&
      type != "application/apply-patch+yaml") {
    return ErrorResponse(UnsupportedMediaType(type));
  }
  if (type == "application/apply-patch+yaml") {
    absl::StatusOr<nlohmann::json> live = store_.Get(c.type.resource, c.info.ns, c.info.name);
    if (!live.ok() && live.status().code() != absl::StatusCode::kNotFound) {
      return ErrorResponse(FromStatus(live.status(), c.subject));
    }
    return Apply(c, live.ok() ? *live : nlohmann::json());
  }
  auto body = ParseBody(c.req);
  if (auto* e = std::get_if<ApiError>(&body)) return ErrorResponse(*e);
  const nlohmann::json& patch = std::get<nlohmann::json>(body);
  if (type == "application/merge-patch+json" && !patch.is_object()) {
    return ErrorResponse(BadRequest("a merge patch must be a JSON object"));
  }

  // Optimistic concurrency: re-read and re-apply when another write got in between, unless the
  // patch itself names a resourceVersion (then the conflict is the client's to see).
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<nlohmann::json> live = store_.Get(c.type.resource, c.info.ns, c.info.name);
    if (!live.ok()) return ErrorResponse(FromStatus(live.status(), c.subject));
    nlohmann::json next;
    if (type == "application/merge-patch+json") {
      next = MergePatch(*live, patch);
    } else {
      absl::StatusOr<nlohmann::json> patched = JsonPatch(*live, patch);
      if (!patched.ok()) {
        // As kube-apiserver: 422 without a reason, so kubectl prints the message itself.
        ApiError e;
        e.code = 422;
        e.message = Cat("the JSON patch could not be applied: ", patched.status().message());
        e.name = c.info.name;
        e.group = c.type.group;
        e.kind = c.type.resource;
        return ErrorResponse(e);
      }
      next = std::move(*patched);
    }
    if (!next.is_object()) return ErrorResponse(BadRequest("the patched object is not an object"));
    // Identity cannot be patched away.
    nlohmann::json& meta = next["metadata"];
    if (!meta.is_object()) meta = nlohmann::json::object();
    if (meta.value("name", "") != c.info.name || meta.value("namespace", "") != c.info.ns) {
      return ErrorResponse(BadRequest("metadata.name and metadata.namespace cannot be patched"));
    }
    std::string live_rv = (*live)["metadata"].value("resourceVersion", "");
    bool client_rv = meta.value("resourceVersion", "") != live_rv;
    if (!client_rv) meta["resourceVersion"] = live_rv;
    ApiResponse r = c.status ? CommitStatus(c, *live, next, {}) : Commit(c, *live, next, {}, 200);
    bool conflict = r.code == 409 && r.body.value("reason", "") == "Conflict";
    if (!conflict || client_rv || attempt >= kMaxConflictRetries) return r;
  }
}

ApiResponse ResourceHandler::Apply(const Context& c, const nlohmann::json& live) {
  if (c.req.Query("fieldManager").empty()) {
    return ErrorResponse(
        BadRequest("PATCH, application/apply-patch+yaml requires the fieldManager parameter"));
  }
  auto body = ParseBody(c.req);
  if (auto* e = std::get_if<ApiError>(&body)) return ErrorResponse(*e);
  nlohmann::json config = std::move(std::get<nlohmann::json>(body));
  if (!config.is_object())
    return ErrorResponse(BadRequest("an applied configuration must be an object"));
  if (config.value("apiVersion", "") != c.type.GroupVersion() ||
      config.value("kind", "") != c.type.kind) {
    return ErrorResponse(BadRequest(Cat("the applied configuration must have apiVersion ",
                                        c.type.GroupVersion(), " and kind ", c.type.kind)));
  }
  nlohmann::json& meta = config["metadata"];
  if (!meta.is_object()) meta = nlohmann::json::object();
  if (meta.value("name", c.info.name) != c.info.name ||
      meta.value("namespace", c.info.ns) != c.info.ns) {
    return ErrorResponse(
        BadRequest("metadata.name and metadata.namespace of the applied "
                   "configuration must match the URL"));
  }
  meta["name"] = c.info.name;
  meta["namespace"] = c.info.ns;
  std::string precondition_rv = meta.value("resourceVersion", "");
  for (const char* f : {"resourceVersion", "uid", "creationTimestamp", "generation",
                        "managedFields", "deletionTimestamp", "selfLink"}) {
    meta.erase(f);
  }
  if (c.status && live.is_null()) return ErrorResponse(NotFound(c.subject));

  absl::StatusOr<ManagedFields> mf =
      ManagedFields::FromObject(live.is_null() ? nlohmann::json::object() : live);
  if (!mf.ok()) return ErrorResponse(Internal(std::string(mf.status().message())));
  std::vector<ApplyConflict> conflicts;
  absl::StatusOr<nlohmann::json> merged =
      mf->Apply(live, config, c.manager, c.status ? "status" : "", IsTrue(c.req.Query("force")),
                c.type.GroupVersion(), Now(), &conflicts);
  if (!merged.ok()) {
    ApiError e;
    e.code = 409;
    e.reason = "Conflict";
    std::vector<std::string> parts;
    for (const ApplyConflict& conflict : conflicts) {
      std::string field = FieldPathString(conflict.path);
      parts.push_back(Cat("conflict with \"", conflict.manager, "\": ", field));
      e.causes.push_back(
          {"FieldManagerConflict", Cat("conflict with \"", conflict.manager, "\""), field});
    }
    e.message = Cat("Apply failed with ", conflicts.size(), " conflict",
                    conflicts.size() == 1 ? "" : "s", ": ", Join(parts, "\n"));
    e.name = c.info.name;
    e.group = c.type.group;
    e.kind = c.type.kind;
    return ErrorResponse(e);
  }
  nlohmann::json next = std::move(*merged);
  if (c.status) {
    next["metadata"]["resourceVersion"] =
        precondition_rv.empty() ? live["metadata"].value("resourceVersion", "") : precondition_rv;
    return CommitStatus(c, live, next, {});
  }
  if (!live.is_null() && live.contains("status")) next["status"] = live["status"];
  mf->ToObject(next);
  if (!live.is_null()) {
    // A no-op apply (same object, same ownership) writes nothing, as in kube.
    nlohmann::json a = WithoutManagedTimes(next), b = WithoutManagedTimes(live);
    a["metadata"].erase("resourceVersion");
    b["metadata"].erase("resourceVersion");
    if (a == b) return Render(c, 200, live);
    if (!precondition_rv.empty()) next["metadata"]["resourceVersion"] = precondition_rv;
  }
  return Commit(c, live, std::move(next), {}, live.is_null() ? 201 : 200);
}

ApiResponse ResourceHandler::Delete(const Context& c) {
  if (c.status) return ErrorResponse(MethodNotAllowed(c.req.method, "status"));
  store::DeletePreconditions pre;
  bool dry_run = c.dry_run;
  if (!Trim(c.req.body).empty()) {
    auto body = ParseBody(c.req);
    if (auto* e = std::get_if<ApiError>(&body)) return ErrorResponse(*e);
    const nlohmann::json& options = std::get<nlohmann::json>(body);
    if (!options.is_object()) return ErrorResponse(BadRequest("DeleteOptions must be an object"));
    pre.uid = StringOf(options, {"preconditions", "uid"});
    pre.resource_version = StringOf(options, {"preconditions", "resourceVersion"});
    auto dr = options.find("dryRun");
    if (dr != options.end() && dr->is_array()) {
      for (const auto& v : *dr) {
        if (v != "All") return ErrorResponse(BadRequest("dryRun: Unsupported value"));
        dry_run = true;
      }
    }
  }
  if (dry_run) {
    absl::StatusOr<nlohmann::json> live = store_.Get(c.type.resource, c.info.ns, c.info.name);
    if (!live.ok()) return ErrorResponse(FromStatus(live.status(), c.subject));
    if ((!pre.uid.empty() && pre.uid != StringOf(*live, {"metadata", "uid"})) ||
        (!pre.resource_version.empty() &&
         pre.resource_version != StringOf(*live, {"metadata", "resourceVersion"}))) {
      return ErrorResponse(Conflict(c.subject,
                                    "the object's uid or resourceVersion does not "
                                    "match the preconditions"));
    }
    nlohmann::json preview = *live;
    preview["metadata"]["deletionTimestamp"] = Now();
    return Render(c, 200, std::move(preview));
  }
  absl::StatusOr<store::DeleteResult> result =
      store_.Delete(c.type.resource, c.info.ns, c.info.name, pre);
  if (!result.ok()) return ErrorResponse(FromStatus(result.status(), c.subject));
  if (!result->removed) return Render(c, 200, std::move(result->object));
  nlohmann::json status = {{"kind", "Status"},
                           {"apiVersion", "v1"},
                           {"metadata", nlohmann::json::object()},
                           {"status", "Success"},
                           {"details",
                            {{"name", c.info.name},
                             {"group", c.type.group},
                             {"kind", c.type.resource},
                             {"uid", StringOf(result->object, {"metadata", "uid"})}}}};
  return {200, std::move(status), {}};
}

ApiResponse ResourceHandler::DeleteCollection(const Context& c) {
  auto parsed = ParseListOptions(c.req, c.type);
  if (auto* e = std::get_if<ApiError>(&parsed)) return ErrorResponse(*e);
  store::ListOptions options = std::get<store::ListOptions>(parsed);
  options.limit = 0;
  options.continue_token.clear();
  absl::StatusOr<store::ObjectList> list = store_.List(c.type.resource, c.info.ns, options);
  if (!list.ok()) return ErrorResponse(FromStatus(list.status(), c.subject));
  nlohmann::json items = nlohmann::json::array();
  for (const nlohmann::json& o : list->items) {
    std::string name = StringOf(o, {"metadata", "name"});
    if (c.dry_run) {
      items.push_back(o);
      continue;
    }
    absl::StatusOr<store::DeleteResult> r = store_.Delete(c.type.resource, c.info.ns, name);
    if (r.ok()) {
      items.push_back(r->object);
    } else if (r.status().code() != absl::StatusCode::kNotFound) {
      ErrorSubject s = c.subject;
      s.name = name;
      return ErrorResponse(FromStatus(r.status(), s));
    }
  }
  return {200,
          {{"apiVersion", c.type.GroupVersion()},
           {"kind", c.type.list_kind},
           {"metadata", {{"resourceVersion", std::to_string(store_.CurrentResourceVersion())}}},
           {"items", items}},
          {}};
}

ApiResponse ResourceHandler::Namespaces(const Context& c) {
  if (c.info.verb != "get" && c.info.verb != "list") {
    return ErrorResponse(MethodNotAllowed(c.req.method, "namespaces"));
  }
  std::set<std::string> names = {"default"};
  for (const ResourceType& t : ResourceTypes()) {
    if (!t.namespaced) continue;
    absl::StatusOr<store::ObjectList> list = store_.List(t.resource, "");
    if (!list.ok()) continue;
    for (const nlohmann::json& o : list->items)
      names.insert(StringOf(o, {"metadata", "namespace"}));
  }
  auto render_ns = [&](const std::string& name) {
    return nlohmann::json{{"apiVersion", "v1"},
                          {"kind", "Namespace"},
                          {"metadata", {{"name", name}, {"creationTimestamp", started_}}},
                          {"spec", {{"finalizers", {"kubernetes"}}}},
                          {"status", {{"phase", "Active"}}}};
  };
  if (c.info.verb == "get") {
    if (!names.count(c.info.name)) return ErrorResponse(NotFound(c.subject));
    return Render(c, 200, render_ns(c.info.name));
  }
  std::vector<nlohmann::json> items;
  for (const std::string& n : names) items.push_back(render_ns(n));
  nlohmann::json meta = {{"resourceVersion", std::to_string(store_.CurrentResourceVersion())}};
  if (c.table.has_value()) {
    return {200, RenderTable(c.type, items, meta, *c.table, clock_.WallNow()), {}};
  }
  return {200,
          {{"apiVersion", "v1"}, {"kind", "NamespaceList"}, {"metadata", meta}, {"items", items}},
          {}};
}

}  // namespace sandboxlet::rest
