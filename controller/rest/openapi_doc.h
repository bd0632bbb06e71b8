// OpenAPI documents of the local REST API. v3 is what kubectl 1.27+ reads: `/openapi/v3` (an
// index of group/version documents with a content hash in each URL) and
// `/openapi/v3/apis/sandboxlet.dev/v1alpha1` (paths and operations for sandboxes and
// sandboxsnapshots, with `x-kubernetes-group-version-kind` and `x-kubernetes-action` on every
// operation, and components.schemas from api/openapi.h). The PATCH operations declare the
// `fieldValidation` query parameter, which is how kubectl decides to leave unknown-field checks to
// the server, and accept merge/JSON/apply patches but not strategic merge patch, which makes
// `kubectl apply` compute a JSON merge patch as it does for custom resources.
// v2 (`/openapi/v2`) is served as JSON only (no protobuf rendering here): kubectl 1.27+ use v3.
// Thread-safe: documents are built once (function-local statics) and immutable.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sandboxlet::rest {

// The /openapi/v3 index.
const nlohmann::json& OpenApiV3Index();
// The document of "apis/<group>/<version>" (as listed in the index); nullopt when not served.
const nlohmann::json* OpenApiV3Document(std::string_view gv_path);
// Swagger 2.0 document of the same API (definitions with x-kubernetes-group-version-kind).
const nlohmann::json& OpenApiV2Document();

}  // namespace sandboxlet::rest
