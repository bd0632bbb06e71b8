#include "controller/manifests/apply.h"

#include <algorithm>

#include "api/codec.h"
#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;

constexpr int kMaxConflictRetries = 8;
constexpr std::string_view kSystemAnnotationPrefix = "sandboxlet.dev/";

// Fills apiVersion/kind, defaults, adds the annotations and validates.
absl::Status Prepare(api::Object& object, const ApplyOptions& options) {
  google::protobuf::Message& message = api::MutableMessageOf(object);
  const auto* desc = message.GetDescriptor();
  const auto* reflection = message.GetReflection();
  const auto* api_version = desc->FindFieldByName("api_version");
  const auto* kind = desc->FindFieldByName("kind");
  if (reflection->GetString(message, api_version).empty()) {
    reflection->SetString(&message, api_version, std::string(api::kApiVersion));
  }
  if (reflection->GetString(message, kind).empty()) {
    reflection->SetString(&message, kind, std::string(api::KindName(api::KindOf(object))));
  }
  api::SetDefaults(object);
  auto& annotations = *api::MutableMetadataOf(object).mutable_annotations();
  for (const auto& [k, v] : options.annotations) annotations[k] = v;
  return api::ValidateObject(object, options.limits);
}

json StringMap(const json& meta, const char* field) {
  auto it = meta.find(field);
  return it != meta.end() && it->is_object() ? *it : json::object();
}

// The stored object with the request's labels, annotations, finalizers and spec merged in as the
// header comment describes.
json Merge(const json& stored, const json& request) {
  json next = stored;
  json& meta = next["metadata"];
  const json& req_meta = request.at("metadata");

  json labels = StringMap(req_meta, "labels");
  if (labels.empty()) {
    meta.erase("labels");
  } else {
    meta["labels"] = labels;
  }

  json annotations = StringMap(req_meta, "annotations");
  const json stored_annotations = StringMap(meta, "annotations");
  for (const auto& [k, v] : stored_annotations.items()) {
    if (StartsWith(k, kSystemAnnotationPrefix) && !annotations.contains(k)) annotations[k] = v;
  }
  if (annotations.empty()) {
    meta.erase("annotations");
  } else {
    meta["annotations"] = annotations;
  }

  std::vector<std::string> finalizers;
  for (const json* source : std::initializer_list<const json*>{&meta, &req_meta}) {
    auto it = source->find("finalizers");
    if (it == source->end() || !it->is_array()) continue;
    for (const json& f : *it) {
      if (f.is_string() && std::find(finalizers.begin(), finalizers.end(), f.get<std::string>()) ==
                               finalizers.end()) {
        finalizers.push_back(f.get<std::string>());
      }
    }
  }
  if (finalizers.empty()) {
    meta.erase("finalizers");
  } else {
    meta["finalizers"] = finalizers;
  }

  auto spec = request.find("spec");
  if (spec != request.end()) {
    next["spec"] = *spec;
  } else {
    next.erase("spec");
  }
  return next;
}

std::string RvOf(const json& object) {
  const json& meta = object.at("metadata");
  auto it = meta.find("resourceVersion");
  return it != meta.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

const char* ApplyActionName(ApplyAction action) {
  switch (action) {
    case ApplyAction::kCreated:
      return "created";
    case ApplyAction::kConfigured:
      return "configured";
    case ApplyAction::kUnchanged:
      return "unchanged";
  }
  return "unknown";
}

std::string Describe(const api::Object& object) {
  const auto& meta = api::MetadataOf(object);
  std::string ns = meta.namespace_().empty() ? "default" : meta.namespace_();
  std::string name = meta.name().empty() ? Cat(meta.generate_name(), "*") : meta.name();
  return Cat(api::KindName(api::KindOf(object)), " ", ns, "/", name);
}

absl::StatusOr<api::Object> ObjectFromStore(const json& stored) {
  api::DecodeOptions options;
  options.field_validation = api::FieldValidation::kIgnore;
  SBL_ASSIGN_OR_RETURN(api::Decoded decoded, api::DecodeObject(stored, options));
  return std::move(decoded.object);
}

absl::StatusOr<ApplyResult> ApplyObject(store::ObjectStore& store, api::Object object,
                                        const ApplyOptions& options) {
  SBL_RETURN_IF_ERROR(Prepare(object, options));
  SBL_ASSIGN_OR_RETURN(json request, api::ToJson(object));
  request.erase("status");
  const std::string resource(api::ResourceName(api::KindOf(object)));
  const std::string what = Describe(object);
  const v1alpha1::ObjectMeta& meta = api::MetadataOf(object);
  const std::string& want_rv = meta.resource_version();

  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<json> stored = meta.name().empty()
                                      ? absl::NotFoundError("generated name")
                                      : store.Get(resource, meta.namespace_(), meta.name());
    if (!stored.ok() && stored.status().code() != absl::StatusCode::kNotFound) {
      return Annotate(stored.status(), Cat("apply ", what));
    }
    if (!stored.ok()) {
      if (!want_rv.empty()) {
        return absl::NotFoundError(Cat("apply ", what,
                                       ": not found, but the request names "
                                       "resourceVersion ",
                                       want_rv));
      }
      if (options.dry_run) return ApplyResult{request, ApplyAction::kCreated};
      absl::StatusOr<json> created = store.Create(resource, request);
      if (created.ok()) return ApplyResult{*std::move(created), ApplyAction::kCreated};
      // Created by someone else since the Get: apply over it.
      if (created.status().code() == absl::StatusCode::kAlreadyExists &&
          attempt < kMaxConflictRetries) {
        continue;
      }
      return Annotate(created.status(), Cat("apply ", what));
    }

    if (stored->at("metadata").contains("deletionTimestamp")) {
      return absl::FailedPreconditionError(
          Cat("apply ", what, ": the object is being deleted; apply it again once it is gone"));
    }
    const std::string stored_rv = RvOf(*stored);
    if (!want_rv.empty() && want_rv != stored_rv) {
      return absl::AbortedError(
          Cat("apply ", what, ": conflict: the object has been modified (resourceVersion ",
              stored_rv, ", the request has ", want_rv, "); get it again and reapply"));
    }
    json next = Merge(*stored, request);
    next["metadata"]["resourceVersion"] = stored_rv;
    if (options.dry_run) {
      return ApplyResult{next,
                         next == *stored ? ApplyAction::kUnchanged : ApplyAction::kConfigured};
    }
    absl::StatusOr<json> updated = store.Update(resource, next);
    if (updated.ok()) {
      ApplyAction action =
          RvOf(*updated) == stored_rv ? ApplyAction::kUnchanged : ApplyAction::kConfigured;
      return ApplyResult{*std::move(updated), action};
    }
    bool retry = want_rv.empty() && attempt < kMaxConflictRetries &&
                 (updated.status().code() == absl::StatusCode::kAborted ||
                  updated.status().code() == absl::StatusCode::kNotFound);
    if (!retry) return Annotate(updated.status(), Cat("apply ", what));
  }
}

absl::StatusOr<std::vector<ApplyResult>> ApplyManifests(store::ObjectStore& store,
                                                        std::string_view text,
                                                        const ApplyOptions& options,
                                                        std::vector<std::string>* warnings) {
  api::DecodeOptions decode;
  decode.field_validation = options.field_validation;
  SBL_ASSIGN_OR_RETURN(std::vector<api::Decoded> decoded, api::DecodeManifests(text, decode));
  // Everything is checked before anything is written, so a bad document applies nothing.
  for (api::Decoded& d : decoded) {
    SBL_RETURN_IF_ERROR(Prepare(d.object, options));
    if (warnings != nullptr) {
      for (const std::string& w : d.warnings) warnings->push_back(Cat(Describe(d.object), ": ", w));
    }
  }
  std::vector<ApplyResult> results;
  for (api::Decoded& d : decoded) {
    SBL_ASSIGN_OR_RETURN(ApplyResult r, ApplyObject(store, std::move(d.object), options));
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace sandboxlet::controller
