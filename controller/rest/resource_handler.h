// The resource verbs of the local REST API over the ObjectStore, with kube-apiserver's semantics
// for custom resources:
//  - create (POST; generateName; dryRun=All), get, list (labelSelector, fieldSelector on the
//    fields each type supports, limit/continue), update (PUT; resourceVersion precondition),
//    patch (JSON merge patch, JSON patch, server-side apply; strategic merge patch is 415 as for
//    CRDs), delete (preconditions; finalizers keep the object with deletionTimestamp set),
//    deletecollection, and the status subresource (get/update/patch write only status);
//  - objects of the sandboxlet kinds are decoded with the request's fieldValidation
//    (Strict → 400 "strict decoding error: unknown field ...", Warn → Warning headers, Ignore),
//    defaulted and validated (422 Invalid with causes) through api/ before they are stored;
//  - field ownership in metadata.managedFields (managed_fields.h); status writes are not tracked
//    there because the store's status path writes status only;
//  - events are read-only (the controller writes them to the store); namespaces are implicit:
//    "default" and every namespace holding an object exist.
// Watches are streamed by watch_stream.h.
// Thread-safe: handlers keep no per-request state; the store serializes writes.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/validation.h"
#include "controller/rest/api_error.h"
#include "controller/rest/http_server.h"
#include "controller/rest/router.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"

namespace sandboxlet::rest {

struct ResourceHandlerOptions {
  api::ValidationLimits limits;
  // Period of BOOKMARK events on watches with allowWatchBookmarks=true.
  std::chrono::seconds bookmark_interval{60};
  // Length of a watch without timeoutSeconds (kube-apiserver picks 30–60 minutes).
  std::chrono::seconds default_watch_timeout{1800};
  // Upper bound for timeoutSeconds.
  std::chrono::seconds max_watch_timeout{3600};
};

// A finished (non-streamed) answer.
struct ApiResponse {
  int code = 200;
  nlohmann::json body;
  std::vector<std::string> warnings;  // become `Warning: 299 - "..."` headers
};

class ResourceHandler {
 public:
  ResourceHandler(store::ObjectStore& store, Clock& clock, ResourceHandlerOptions options);

  // Serves one resource request. Returns the answer, or nullopt when a watch stream was written
  // to `writer` directly.
  std::optional<ApiResponse> Handle(const HttpRequest& request, const RequestInfo& info,
                                    const ResourceType& type, ResponseWriter& writer);

 private:
  struct Context;  // the parsed request
  ApiResponse Get(const Context& c);
  ApiResponse List(const Context& c);
  std::optional<ApiResponse> Watch(const Context& c, ResponseWriter& writer);
  ApiResponse Create(const Context& c);
  ApiResponse Update(const Context& c);
  ApiResponse Patch(const Context& c);
  ApiResponse Apply(const Context& c, const nlohmann::json& live);
  ApiResponse Delete(const Context& c);
  ApiResponse DeleteCollection(const Context& c);
  ApiResponse Namespaces(const Context& c);

  // Writes a new main-resource state `next` derived from `live` (null for a create).
  ApiResponse Commit(const Context& c, const nlohmann::json& live, nlohmann::json next,
                     std::vector<std::string> warnings, int success_code);
  // Writes status from `next` onto `live`.
  ApiResponse CommitStatus(const Context& c, const nlohmann::json& live, const nlohmann::json& next,
                           std::vector<std::string> warnings);
  ApiResponse Render(const Context& c, int code, nlohmann::json object,
                     std::vector<std::string> warnings = {});
  std::string Now() const;

  store::ObjectStore& store_;
  Clock& clock_;
  const ResourceHandlerOptions options_;
  const std::string started_;  // reported as the creationTimestamp of the implicit namespaces
};

// The admission of an object of a sandboxlet kind, as used for create/update/patch/apply:
// decode with `validation`, default, validate, and return the canonical JSON (server-owned
// metadata the api/ schema does not model — ownerReferences, managedFields — carried through).
struct Admitted {
  nlohmann::json object;
  std::vector<std::string> warnings;
};
std::variant<Admitted, ApiError> AdmitObject(const ResourceType& type, const nlohmann::json& object,
                                             api::FieldValidation validation,
                                             const api::ValidationLimits& limits);

// The field manager of a request: ?fieldManager=, else the User-Agent's program name
// ("kubectl/v1.33.1 (linux/amd64) ..." → "kubectl"), else "unknown".
std::string FieldManagerOf(const HttpRequest& request);

}  // namespace sandboxlet::rest
