// ApiError: a failure of the local REST API as Kubernetes reports it — an HTTP code, a
// StatusReason ("NotFound", "Invalid", "Conflict", ...), a message and details (name, group, kind,
// causes) — and its rendering as a `Status` object (kind: Status, apiVersion: v1), the body
// kubectl decodes and prints. Errors are mapped here once, at the edge: store and api/ statuses
// come in as absl::Status and leave as Status objects.
// Thread-safe: value types and pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "api/validation.h"

namespace sandboxlet::rest {

struct StatusCause {
  std::string reason;   // "FieldValueInvalid", "FieldManagerConflict", ...
  std::string message;  // "Invalid value: 0: must be between 1 and 256"
  std::string field;    // "spec.vcpus"
};

struct ApiError {
  int code = 500;
  std::string reason;  // Kubernetes StatusReason; "" for none
  std::string message;
  // details
  std::string name;
  std::string group;
  std::string kind;  // the kind ("Sandbox") for Invalid, the resource ("sandboxes") otherwise
  std::vector<StatusCause> causes;
  int retry_after_seconds = 0;

  nlohmann::json ToStatus() const;
};

// What an error is about, to fill messages and details the way kube-apiserver does:
// `sandboxes.sandboxlet.dev "demo" not found`.
struct ErrorSubject {
  std::string group;     // "sandboxlet.dev", "" for core
  std::string resource;  // "sandboxes"
  std::string kind;      // "Sandbox"
  std::string name;

  std::string Qualified() const;  // "sandboxes.sandboxlet.dev" or "events"
};

ApiError BadRequest(std::string message);
ApiError NotFound(const ErrorSubject& subject);
ApiError NotFoundPath(std::string_view path);  // a URL the server does not serve
ApiError AlreadyExists(const ErrorSubject& subject);
ApiError Conflict(const ErrorSubject& subject, std::string_view why);
ApiError Invalid(const ErrorSubject& subject, const std::vector<api::FieldError>& errors);
ApiError MethodNotAllowed(std::string_view method, std::string_view what);
ApiError UnsupportedMediaType(std::string_view content_type);
ApiError NotAcceptable(std::string_view what);
ApiError TooLarge(size_t limit);
ApiError Unauthorized();
ApiError Expired(std::string message);  // 410, as watches and lists with an old version get
ApiError Internal(std::string message);

// Maps a status from the store or api/ (NotFound, AlreadyExists, Aborted → Conflict,
// InvalidArgument → Invalid with the field errors or one cause parsed from "field: why",
// OutOfRange → 410 Expired, others → 500).
ApiError FromStatus(const absl::Status& status, const ErrorSubject& subject);

// The message of a cause as kubectl prints it after the field: FieldError::ToString() without the
// leading "path: ".
std::string CauseMessage(const api::FieldError& error);

}  // namespace sandboxlet::rest
