// Kubernetes-shaped YAML/JSON for the sandboxlet.dev/v1alpha1 messages, and nlohmann::json (the
// store's representation) to and from messages.
//
// Decoding: text → nlohmann::json (YAML via yaml-cpp, one value per `---` document; plain scalars
// resolved by the YAML 1.2 core schema, so `yes` is a string and `"8"` stays a string) → dispatch
// on apiVersion/kind → CheckStructure (unknown fields per FieldValidation, type errors with their
// path) → protobuf's JSON parser. Decoding neither defaults nor validates values: callers run
// SetDefaults + Validate (api/validation.h) where the API server would.
//
// Encoding: protobuf's JSON printer (json_name field names, default values omitted like
// Kubernetes' omitempty) → int64 strings turned back into JSON numbers (`sizeBytes: 1234`) →
// fields in .proto declaration order (apiVersion, kind, metadata, spec, status) for text output.
//
// Errors are InvalidArgument; those caused by fields carry FieldErrors (FieldErrorsOf()).
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "api/object.h"
#include "api/validation.h"

namespace sandboxlet::api {

struct DecodeOptions {
  FieldValidation field_validation = FieldValidation::kStrict;
};

// A decoded object and the warnings about it (unknown fields dropped in Warn mode), rendered as
// FieldError::ToString() for kubectl's Warning header.
struct Decoded {
  Object object;
  std::vector<std::string> warnings;
};

// Parses a YAML stream into one JSON value per non-empty document. Errors name the document and
// line. Duplicate keys in a mapping are errors.
absl::StatusOr<std::vector<nlohmann::json>> ParseYamlDocuments(std::string_view text);
// Parses JSON text, turning parse errors into InvalidArgument.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text);

// Decodes one object, dispatching on apiVersion and kind.
absl::StatusOr<Decoded> DecodeObject(const nlohmann::json& json, const DecodeOptions& options = {});
// Decodes manifests: JSON (text starting with '{') or a YAML stream of `---`-separated documents.
// Kubernetes lists (kind List, SandboxList, SandboxSnapshotList) are expanded into their items.
// The first bad document fails the whole call, with its index in the message.
absl::StatusOr<std::vector<Decoded>> DecodeManifests(std::string_view text,
                                                     const DecodeOptions& options = {});
// Decodes `json` into `message` of any API type (no apiVersion/kind dispatch), e.g. a list or a
// spec. Unknown fields dropped in Warn mode are appended to `warnings` if given.
absl::Status DecodeMessage(const nlohmann::json& json, google::protobuf::Message& message,
                           const DecodeOptions& options = {},
                           std::vector<std::string>* warnings = nullptr);

// Decodes an object that must be of kind M (v1alpha1::Sandbox or v1alpha1::SandboxSnapshot).
template <typename M>
absl::StatusOr<M> DecodeAs(const nlohmann::json& json, const DecodeOptions& options = {}) {
  absl::StatusOr<Decoded> decoded = DecodeObject(json, options);
  if (!decoded.ok()) return decoded.status();
  if (M* m = std::get_if<M>(&decoded->object)) return std::move(*m);
  return absl::InvalidArgumentError(std::string("kind: expected ") + M::descriptor()->name() +
                                    ", got " + std::string(KindName(KindOf(decoded->object))));
}

// Kubernetes-shaped JSON of any API message, as the store keeps it.
absl::StatusOr<nlohmann::json> ToJson(const google::protobuf::Message& message);
absl::StatusOr<nlohmann::json> ToJson(const Object& object);
// JSON text with fields in declaration order; indent < 0 gives one line.
absl::StatusOr<std::string> EncodeJson(const google::protobuf::Message& message, int indent = -1);
// YAML document (no leading `---`) with fields in declaration order.
absl::StatusOr<std::string> EncodeYaml(const google::protobuf::Message& message);
// YAML rendering of any JSON value. Strings that would read back as another type ("true", "12",
// "") are quoted, so ParseYamlDocuments(EncodeYaml(j)) == j.
std::string EncodeYaml(const nlohmann::json& json);
std::string EncodeYaml(const nlohmann::ordered_json& json);

}  // namespace sandboxlet::api
