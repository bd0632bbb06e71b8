// The patch formats of Kubernetes' PATCH verb, over nlohmann::json documents:
//  - JSON merge patch (RFC 7386, application/merge-patch+json): objects merge recursively, null
//    removes a member, anything else (arrays included) replaces.
//  - JSON patch (RFC 6902, application/json-patch+json): add, remove, replace, move, copy, test
//    with JSON pointers (RFC 6901, `-` appends to an array); the operations apply in order and the
//    whole patch fails (document untouched) at the first failing one.
// Server-side apply (application/apply-patch+yaml) lives in managed_fields.h.
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace sandboxlet::rest {

// RFC 7386 MergePatch(target, patch).
nlohmann::json MergePatch(const nlohmann::json& target, const nlohmann::json& patch);

// Applies an RFC 6902 patch (a JSON array of operations). Errors are InvalidArgument naming the
// operation's index and the reason, e.g. `op 2 (test /spec/vcpus): value is 2, not 4`.
absl::StatusOr<nlohmann::json> JsonPatch(const nlohmann::json& document,
                                         const nlohmann::json& patch);

}  // namespace sandboxlet::rest
