// The writes both reconcilers make to their objects, with Kubernetes' optimistic concurrency:
// each write carries the resourceVersion it was computed from, and on a conflict (Aborted) the
// object is read again and the same change re-applied, a bounded number of times.
// Thread-safe: stateless functions over the (thread-safe) store.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/codec.h"
#include "controller/reconcile/conditions.h"
#include "controller/store/object_store.h"
#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

#include <google/protobuf/util/message_differencer.h>

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

// Stamps observedGeneration on `status` and its conditions and, unless it equals `*stored`,
// writes it with WriteStatusOf; then `object` is the stored object and `*stored` the new status.
// `what` names the object in errors ("sandbox default/x"). Both reconcilers end a pass with it.
template <typename StatusMessage>
absl::Status WriteStatusIfChanged(store::ObjectStore& store, const std::string& resource,
                                  const std::string& what, int64_t generation,
                                  StatusMessage& status, StatusMessage* stored,
                                  nlohmann::json& object) {
  status.set_observed_generation(generation);
  SetObservedGeneration(status.mutable_conditions(), generation);
  if (google::protobuf::util::MessageDifferencer::Equals(status, *stored)) {
    return absl::OkStatus();
  }
  absl::StatusOr<nlohmann::json> status_json = api::ToJson(status);
  if (!status_json.ok()) return Annotate(status_json.status(), Cat(what, ": encode status"));
  absl::StatusOr<nlohmann::json> updated = WriteStatusOf(store, resource, object, *status_json);
  if (!updated.ok()) return updated.status();
  object = std::move(*updated);
  *stored = status;
  return absl::OkStatus();
}

}  // namespace sandboxlet::controller
