// Field ownership and server-side apply (application/apply-patch+yaml), tracked in
// `metadata.managedFields` as Kubernetes does, at the granularity of leaf field paths:
//  - A field set is a set of paths in FieldsV1 notation: `f:<member>` steps into an object,
//    `k:{"name":"X"}` into the element of a list of objects keyed by "name" (such as spec.env).
//    Other lists, scalars and empty objects are leaves (atomic). This is a simplified FieldsV1:
//    only leaves are listed (no "." entries for intermediate nodes) and non-keyed lists are
//    atomic rather than sets.
//  - Tracked: metadata.labels, .annotations, .finalizers, .ownerReferences, and every other
//    top-level field except apiVersion/kind; status only through the status subresource.
//  - An update (create, PUT, merge/JSON patch) gives its manager (operation "Update") the fields
//    it changed, taking them from other managers; removed fields leave every set.
//  - An apply gives its manager (operation "Apply") exactly the fields of the applied
//    configuration. A field another manager owns and the apply would change to a different value
//    is a conflict (the REST layer answers 409 naming field and manager) unless forced, in which
//    case the other manager loses it. A field equal in both becomes shared. Fields the manager
//    applied before but no longer applies are removed from the object unless another manager
//    owns them. The configuration is merged into the live object: objects member by member,
//    keyed lists element by element, anything else replaced.
// Thread-safe: value type; no shared state.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace sandboxlet::rest {

using FieldPath = std::vector<std::string>;
using FieldSet = std::set<FieldPath>;

// ".spec.vcpus", `.spec.env[name="A"].value`: the way conflicts name fields.
std::string FieldPathString(const FieldPath& path);
// The leaf paths of `object` that a writer of `subresource` ("" or "status") owns.
FieldSet LeafFields(const nlohmann::json& object, std::string_view subresource);
// FieldsV1 JSON of a set ({"f:spec":{"f:vcpus":{}}}) and back.
nlohmann::json ToFieldsV1(const FieldSet& set);
FieldSet FromFieldsV1(const nlohmann::json& fields);
// The value at `path` in `object`, if present.
std::optional<nlohmann::json> ValueAt(const nlohmann::json& object, const FieldPath& path);

struct ManagedFieldsEntry {
  std::string manager;
  std::string operation;    // "Apply" or "Update"
  std::string subresource;  // "" or "status"
  std::string api_version;
  std::string time;  // RFC 3339
  FieldSet fields;
};

struct ApplyConflict {
  std::string manager;
  FieldPath path;
};

class ManagedFields {
 public:
  // Reads metadata.managedFields of `object` (absent = none). InvalidArgument when malformed.
  static absl::StatusOr<ManagedFields> FromObject(const nlohmann::json& object);
  // Writes metadata.managedFields (removed when empty).
  void ToObject(nlohmann::json& object) const;

  // Records an update from `before` (null for a create) to `after` by `manager`.
  void RecordUpdate(const nlohmann::json& before, const nlohmann::json& after,
                    const std::string& manager, const std::string& subresource,
                    const std::string& api_version, const std::string& time);

  // Server-side apply of `config` by `manager` onto `live` (null when the object does not exist
  // yet). Returns the merged object, or FailedPrecondition with `conflicts` filled when other
  // managers own fields the apply would change and `force` is false.
  absl::StatusOr<nlohmann::json> Apply(const nlohmann::json& live, const nlohmann::json& config,
                                       const std::string& manager, const std::string& subresource,
                                       bool force, const std::string& api_version,
                                       const std::string& time,
                                       std::vector<ApplyConflict>* conflicts);

  const std::vector<ManagedFieldsEntry>& entries() const { return entries_; }

 private:
  ManagedFieldsEntry& EntryFor(const std::string& manager, const std::string& operation,
                               const std::string& subresource);
  void DropEmpty();

  std::vector<ManagedFieldsEntry> entries_;
};

}  // namespace sandboxlet::rest
