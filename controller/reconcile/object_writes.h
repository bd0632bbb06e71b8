// The writes both reconcilers make to their objects, with Kubernetes' optimistic concurrency:
// each write carries the resourceVersion it was computed from, and on a conflict (Aborted) the
// object is read again and the same change re-applied, a bounded number of times.
// Thread-safe: stateless functions over the (thread-safe) store.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/store/object_store.h"

namespace sandboxlet::controller {

bool HasFinalizer(const nlohmann::json& object, const std::string& finalizer);
bool BeingDeleted(const nlohmann::json& object);

// Adds `finalizer` unless present or the object is being deleted (no finalizer may be added
// then). Returns the object as stored afterwards.
absl::StatusOr<nlohmann::json> EnsureFinalizer(store::ObjectStore& store,
                                               const std::string& resource, nlohmann::json object,
                                               const std::string& finalizer);
// Removes `finalizer`; the store removes the object when it was the last one during deletion.
// NotFound (already gone) counts as success.
absl::Status RemoveFinalizer(store::ObjectStore& store, const std::string& resource,
                             nlohmann::json object, const std::string& finalizer);
// Writes `status` through the status subresource. Status has one writer per object (the
// reconciler of its key), so on a conflict only the resourceVersion is refreshed. Fails with
// Aborted when the object was replaced by another of the same name (different uid).
absl::StatusOr<nlohmann::json> WriteStatusOf(store::ObjectStore& store, const std::string& resource,
                                             const nlohmann::json& object,
                                             const nlohmann::json& status);

}  // namespace sandboxlet::controller
