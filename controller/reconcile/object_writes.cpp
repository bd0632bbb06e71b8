#include "controller/reconcile/object_writes.h"

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;

constexpr int kConflictRetries = 5;

std::string MetaString(const json& object, const char* field) {
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return "";
  auto it = meta->find(field);
  return it != meta->end() && it->is_string() ? it->get<std::string>() : "";
}

std::string KeyOf(const std::string& resource, const json& object) {
  return Cat(resource, " ", MetaString(object, "namespace"), "/", MetaString(object, "name"));
}

absl::StatusOr<json> Reread(store::ObjectStore& store, const std::string& resource,
                            const json& object) {
  SBL_ASSIGN_OR_RETURN(
      json fresh, store.Get(resource, MetaString(object, "namespace"), MetaString(object, "name")));
  if (MetaString(fresh, "uid") != MetaString(object, "uid")) {
    return absl::AbortedError(Cat(KeyOf(resource, object), ": replaced by a new object"));
  }
  return fresh;
}

}  // namespace

bool HasFinalizer(const json& object, const std::string& finalizer) {
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return false;
  auto list = meta->find("finalizers");
  if (list == meta->end() || !list->is_array()) return false;
  for (const json& f : *list) {
    if (f.is_string() && f.get<std::string>() == finalizer) return true;
  }
  return false;
}

bool BeingDeleted(const json& object) { return !MetaString(object, "deletionTimestamp").empty(); }

absl::StatusOr<json> EnsureFinalizer(store::ObjectStore& store, const std::string& resource,
                                     json object, const std::string& finalizer) {
  for (int attempt = 0;; ++attempt) {
    if (HasFinalizer(object, finalizer) || BeingDeleted(object)) return object;
    json request = object;
    json& list = request["metadata"]["finalizers"];
    if (!list.is_array()) list = json::array();
    list.push_back(finalizer);
    absl::StatusOr<json> updated = store.Update(resource, request);
    if (updated.ok()) return updated;
    if (updated.status().code() != absl::StatusCode::kAborted || attempt + 1 >= kConflictRetries) {
      return Annotate(updated.status(), Cat(KeyOf(resource, object), ": add finalizer"));
    }
    SBL_ASSIGN_OR_RETURN(object, Reread(store, resource, object));
  }
}

absl::Status RemoveFinalizer(store::ObjectStore& store, const std::string& resource, json object,
                             const std::string& finalizer) {
  for (int attempt = 0;; ++attempt) {
    if (!HasFinalizer(object, finalizer)) return absl::OkStatus();
    json request = object;
    json kept = json::array();
    for (const json& f : request["metadata"]["finalizers"]) {
      if (!(f.is_string() && f.get<std::string>() == finalizer)) kept.push_back(f);
    }
    request["metadata"]["finalizers"] = std::move(kept);
    absl::StatusOr<json> updated = store.Update(resource, request);
    if (updated.ok() || updated.status().code() == absl::StatusCode::kNotFound) {
      return absl::OkStatus();
    }
    if (updated.status().code() != absl::StatusCode::kAborted || attempt + 1 >= kConflictRetries) {
      return Annotate(updated.status(), Cat(KeyOf(resource, object), ": remove finalizer"));
    }
    absl::StatusOr<json> fresh = Reread(store, resource, object);
    if (fresh.status().code() == absl::StatusCode::kNotFound) return absl::OkStatus();
    if (!fresh.ok()) return fresh.status();
    object = std::move(*fresh);
  }
}

absl::StatusOr<json> WriteStatusOf(store::ObjectStore& store, const std::string& resource,
                                   const json& object, const json& status) {
  json request = object;
  request["status"] = status;
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<json> updated = store.UpdateStatus(resource, request);
    if (updated.ok()) return updated;
    if (updated.status().code() != absl::StatusCode::kAborted || attempt + 1 >= kConflictRetries) {
      return Annotate(updated.status(), Cat(KeyOf(resource, object), ": write status"));
    }
    // Changed since it was read (spec, metadata): the pass that change enqueued handles it.
    SBL_ASSIGN_OR_RETURN(request, Reread(store, resource, object));
    request["status"] = status;
  }
}

}  // namespace sandboxlet::controller
