// Apply: `kubectl apply` semantics over the object store, shared by the gRPC SandboxService and
// the manifests directory. An applied object is defaulted and validated as the API server would,
// then created, or — when it exists — updated so that the given labels, annotations and spec
// replace the stored ones while what other writers own survives:
//  - status is kept (the store's Update never touches it);
//  - finalizers already on the object (the controller's) are kept, the given ones added;
//  - annotations under "sandboxlet.dev/" that the request does not mention are kept
//    (bookkeeping such as the manifests directory's ownership annotation).
// Optimistic concurrency: a request carrying metadata.resourceVersion is applied only at that
// version (Aborted "conflict" otherwise); without one, the update is made against the version just
// read and retried when a concurrent writer got in between, so no concurrent change is lost.
// An object being deleted cannot be applied (FailedPrecondition).
//
// Thread-safety: the functions are thread-safe (the store is).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "api/object.h"
#include "api/validation.h"
#include "controller/store/object_store.h"

namespace sandboxlet::controller {

// The ownership annotation of objects applied from a manifests directory file.
inline constexpr const char* kManifestAnnotation = "sandboxlet.dev/manifest";

struct ApplyOptions {
  api::FieldValidation field_validation = api::FieldValidation::kStrict;
  bool dry_run = false;
  api::ValidationLimits limits;
  // Set on every applied object (after the object's own annotations, so these win).
  std::map<std::string, std::string> annotations;
};

enum class ApplyAction { kCreated, kConfigured, kUnchanged };
// "created", "configured", "unchanged" as kubectl prints them.
const char* ApplyActionName(ApplyAction action);

struct ApplyResult {
  nlohmann::json stored;  // the object as stored (or as it would be, on a dry run)
  ApplyAction action = ApplyAction::kCreated;
};

// Decodes `text` (YAML stream or JSON, lists expanded), defaults and validates every object, and
// applies them in order only if all are valid. Warnings (unknown fields in Warn mode) are appended
// to `warnings` prefixed with the object they concern.
absl::StatusOr<std::vector<ApplyResult>> ApplyManifests(store::ObjectStore& store,
                                                        std::string_view text,
                                                        const ApplyOptions& options,
                                                        std::vector<std::string>* warnings);

// Defaults, validates and applies one object. apiVersion and kind are filled in when empty.
absl::StatusOr<ApplyResult> ApplyObject(store::ObjectStore& store, api::Object object,
                                        const ApplyOptions& options);

// A stored object (store JSON) as a typed object; fields the API does not know are dropped.
absl::StatusOr<api::Object> ObjectFromStore(const nlohmann::json& stored);

// "Sandbox default/demo" for messages.
std::string Describe(const api::Object& object);

}  // namespace sandboxlet::controller
