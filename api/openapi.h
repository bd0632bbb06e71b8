// The openAPIV3Schema of the API's kinds, derived from the protobuf descriptors: property names are
// the JSON names, enums list their PascalCase values, (minimum)/(maximum)/(required) options
// become minimum/maximum/required, and the .proto's leading comments become descriptions. The CRD
// (deploy/, charts/) and the local REST API's OpenAPI both come from here, so the three renderings
// of the schema (proto, JSON, OpenAPI) cannot drift apart.
// Thread-safe: the comment index is built once on first use (function-local static).
#pragma once

#include <nlohmann/json.hpp>

#include "api/object.h"

namespace sandboxlet::api {

// Structural schema of a kind as a CRD wants it: every node typed, metadata left to the API server
// ({type: object}), required spec.
nlohmann::json OpenApiSchema(Kind kind);

// Schema of any message of the API with every nested message expanded (ObjectMeta included), for
// the REST API's /openapi/v3 document.
nlohmann::json OpenApiSchemaOf(const google::protobuf::Descriptor& type);

// The apiextensions.k8s.io/v1 CustomResourceDefinition of a kind: names, Namespaced scope, the
// v1alpha1 version with OpenApiSchema(), the status subresource and kubectl printer columns.
nlohmann::json CustomResourceDefinition(Kind kind);

}  // namespace sandboxlet::api
