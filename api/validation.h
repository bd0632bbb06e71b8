// Validation and defaulting of sandboxlet.dev/v1alpha1 objects, reported the way Kubernetes does:
// a list of field errors (path, type, value, detail) that the REST layer turns into the causes of
// a 422 response, and a one-line summary such as
//   Sandbox.sandboxlet.dev "x" is invalid: [spec.vcpus: Invalid value: 0: must be between 1 and
//   256, spec.env[1].name: Duplicate value: "A"]
// Two stages: CheckStructure walks raw JSON against the message descriptor before protobuf's
// parser sees it (unknown fields with a "did you mean", type errors with their path), and
// Validate checks a decoded message's values (names, ranges, enums, references).
// Ranges and required fields come from the (minimum)/(maximum)/(required) options in the .proto,
// which the openAPIV3Schema reads too.
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/object.h"

namespace sandboxlet::api {

enum class FieldErrorType {
  kRequired,      // a required value is missing
  kInvalid,       // wrong type, bad format or out of range
  kNotSupported,  // not one of the enumerated values
  kDuplicate,     // repeated where values must be unique
  kTooLong,       // longer than allowed
  kForbidden,     // not allowed in this combination
  kUnknown,       // field not declared by the schema
};

// Kubernetes' StatusCause reason for the type: "FieldValueRequired", "FieldValueInvalid", ...;
// kUnknown gives "FieldValueUnknown" (Kubernetes reports unknown fields as a 400 BadRequest
// "strict decoding error" rather than a 422 cause).
std::string_view CauseReason(FieldErrorType type);

struct FieldError {
  std::string path;  // "spec.env[1].name", "metadata.labels[app]"
  FieldErrorType type = FieldErrorType::kInvalid;
  nlohmann::json value;  // the offending value; null when there is none to show
  std::string detail;    // why, e.g. "must be between 1 and 256"

  // Kubernetes-style rendering: `spec.vcpus: Invalid value: 0: must be between 1 and 256`,
  // `spec.vcpu: unknown field; did you mean spec.vcpus?`.
  std::string ToString() const;
  bool operator==(const FieldError&) const = default;
};

// kubectl's --validate / the fieldValidation query parameter: what happens to unknown fields.
enum class FieldValidation {
  kStrict,  // unknown fields are errors
  kWarn,    // unknown fields are dropped and reported as warnings
  kIgnore,  // unknown fields are dropped silently
};

// "Strict", "Warn", "Ignore" (case-insensitive; empty means Strict).
absl::StatusOr<FieldValidation> ParseFieldValidation(std::string_view text);

// Node-specific limits that tighten the schema's ranges.
struct ValidationLimits {
  int32_t max_vcpus = 256;  // CPUs this node can give one sandbox
};

// Walks `value` against `type` (fields by their JSON names) and returns a copy that protobuf's
// JSON parser accepts: unknown fields and nulls removed. Type errors and bad enum values are
// appended to `errors`; unknown fields to `errors` (kStrict) or `warnings` (kWarn) with a "did you
// mean" suggestion. `path` prefixes the reported paths ("" for a top-level object).
nlohmann::json CheckStructure(const nlohmann::json& value, const google::protobuf::Descriptor& type,
                              FieldValidation mode, std::vector<FieldError>* errors,
                              std::vector<FieldError>* warnings, std::string_view path = "");

// Fills unset fields with their defaults, as the API server does before validation:
//   metadata.namespace "default"; spec.power Running; spec.restartPolicy Always;
//   spec.network.enabled true; spec.network.egress = network.enabled (no egress without a
//   network); spec.vcpus 1 and spec.memoryMiB 512 unless spec.restoreFrom is set (a restore takes
//   them from the snapshot; when given they must match it). A SandboxSnapshot gets only the
//   namespace: spec.retain stays false when unset so snapshots go with their sandbox unless kept.
void SetDefaults(v1alpha1::Sandbox& sandbox);
void SetDefaults(v1alpha1::SandboxSnapshot& snapshot);
void SetDefaults(Object& object);

// Checks a (defaulted) object. Sandbox names are DNS-1123 labels (≤ 63 characters) because they
// reach network interface and directory names; snapshot names are DNS-1123 subdomains. An empty
// result means valid.
std::vector<FieldError> Validate(const v1alpha1::Sandbox& sandbox,
                                 const ValidationLimits& limits = {});
std::vector<FieldError> Validate(const v1alpha1::SandboxSnapshot& snapshot);
std::vector<FieldError> Validate(const Object& object, const ValidationLimits& limits = {});

// `Sandbox.sandboxlet.dev "x" is invalid: <error>` or `... is invalid: [<e1>, <e2>]`.
std::string InvalidMessage(Kind kind, std::string_view name, const std::vector<FieldError>& errors);
// InvalidArgument with InvalidMessage() as message and the field errors attached as a payload,
// so that the REST and gRPC edges can recover them with FieldErrorsOf().
absl::Status InvalidStatus(Kind kind, std::string_view name, const std::vector<FieldError>& errors);
// The same for something that is not (yet) an object of a known kind: `<subject> is invalid: ...`.
absl::Status InvalidStatus(std::string_view subject, const std::vector<FieldError>& errors);
// The field errors carried by a status from InvalidStatus(); empty for any other status.
std::vector<FieldError> FieldErrorsOf(const absl::Status& status);

// Validate() as a status: OK, or InvalidStatus() naming the object.
absl::Status ValidateObject(const Object& object, const ValidationLimits& limits = {});

}  // namespace sandboxlet::api
