#include "controller/rest/api_error.h"

#include "runtime/base/strings.h"

namespace sandboxlet::rest {

nlohmann::json ApiError::ToStatus() const {
  nlohmann::json status = {
      {"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()},
      {"status", "Failure"}, {"message", message}, {"code", code}};
  if (!reason.empty()) status["reason"] = reason;
  nlohmann::json details = nlohmann::json::object();
  if (!name.empty()) details["name"] = name;
  if (!group.empty()) details["group"] = group;
  if (!kind.empty()) details["kind"] = kind;
  if (!causes.empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (const StatusCause& c : causes) {
      nlohmann::json cause = nlohmann::json::object();
      if (!c.reason.empty()) cause["reason"] = c.reason;
      if (!c.message.empty()) cause["message"] = c.message;
      if (!c.field.empty()) cause["field"] = c.field;
      list.push_back(std::move(cause));
    }
    details["causes"] = std::move(list);
  }
  if (retry_after_seconds > 0) details["retryAfterSeconds"] = retry_after_seconds;
  if (!details.empty()) status["details"] = std::move(details);
  return status;
}

std::string ErrorSubject::Qualified() const {
  return group.empty() ? resource : Cat(resource, ".", group);
}

ApiError BadRequest(std::string message) {
  ApiError e;
  e.code = 400;
  e.reason = "BadRequest";
  e.message = std::move(message);
  return e;
}

ApiError NotFound(const ErrorSubject& s) {
  ApiError e;
  e.code = 404;
  e.reason = "NotFound";
  e.message = Cat(s.Qualified(), " \"", s.name, "\" not found");
  e.name = s.name;
  e.group = s.group;
  e.kind = s.resource;
  return e;
}

ApiError NotFoundPath(std::string_view path) {
  ApiError e;
  e.code = 404;
  e.reason = "NotFound";
  e.message = Cat("the server could not find the requested resource (", path, ")");
  return e;
}

ApiError AlreadyExists(const ErrorSubject& s) {
  ApiError e;
  e.code = 409;
  e.reason = "AlreadyExists";
  e.message = Cat(s.Qualified(), " \"", s.name, "\" already exists");
  e.name = s.name;
  e.group = s.group;
  e.kind = s.resource;
  return e;
}

ApiError Conflict(const ErrorSubject& s, std::string_view why) {
  ApiError e;
  e.code = 409;
  e.reason = "Conflict";
  e.message = Cat("Operation cannot be fulfilled on ", s.Qualified(), " \"", s.name, "\": ", why);
  e.name = s.name;
  e.group = s.group;
  e.kind = s.resource;
  return e;
}

std::string CauseMessage(const api::FieldError& error) {
  std::string text = error.ToString();
  std::string prefix = error.path + ": ";
  if (!error.path.empty() && StartsWith(text, prefix)) return text.substr(prefix.size());
  return text;
}

ApiError Invalid(const ErrorSubject& s, const std::vector<api::FieldError>& errors) {
  ApiError e;
  e.code = 422;
  e.reason = "Invalid";
  std::vector<std::string> parts;
  for (const api::FieldError& fe : errors) {
    parts.push_back(fe.ToString());
    e.causes.push_back({std::string(api::CauseReason(fe.type)), CauseMessage(fe), fe.path});
  }
  std::string kind_q = s.group.empty() ? s.kind : Cat(s.kind, ".", s.group);
  e.message =
      Cat(kind_q, " \"", s.name,
          "\" is invalid: ", parts.size() == 1 ? parts[0] : Cat("[", Join(parts, ", "), "]"));
  e.name = s.name;
  e.group = s.group;
  e.kind = s.kind;
  return e;
}

ApiError MethodNotAllowed(std::string_view method, std::string_view what) {
  ApiError e;
  e.code = 405;
  e.reason = "MethodNotAllowed";
  e.message = Cat("the server does not allow this method on the requested resource (", method, " ",
                  what, ")");
  return e;
}

ApiError UnsupportedMediaType(std::string_view content_type) {
  ApiError e;
  e.code = 415;
  e.reason = "UnsupportedMediaType";
  e.message =
      Cat("the body of the request was in an unknown format - accepted media types "
          "include: application/json-patch+json, application/merge-patch+json, "
          "application/apply-patch+yaml (got \"",
          content_type, "\")");
  return e;
}

ApiError NotAcceptable(std::string_view what) {
  ApiError e;
  e.code = 406;
  e.reason = "NotAcceptable";
  e.message = Cat("only the following media types are accepted: application/json (", what, ")");
  return e;
}

ApiError TooLarge(size_t limit) {
  ApiError e;
  e.code = 413;
  e.reason = "RequestEntityTooLarge";
  e.message = Cat("Request entity too large: limit is ", limit, " bytes");
  return e;
}

ApiError Unauthorized() {
  ApiError e;
  e.code = 401;
  e.reason = "Unauthorized";
  e.message = "Unauthorized";
  return e;
}

ApiError Expired(std::string message) {
  ApiError e;
  e.code = 410;
  e.reason = "Expired";
  e.message = std::move(message);
  return e;
}

ApiError Internal(std::string message) {
  ApiError e;
  e.code = 500;
  e.reason = "InternalError";
  e.message = Cat("Internal error occurred: ", message);
  return e;
}

ApiError FromStatus(const absl::Status& status, const ErrorSubject& subject) {
  std::string msg(status.message());
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return NotFound(subject);
    case absl::StatusCode::kAlreadyExists:
      return AlreadyExists(subject);
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      if (msg.find("conflict") != std::string::npos ||
          msg.find("resourceVersion") != std::string::npos) {
        return Conflict(subject,
                        "the object has been modified; please apply your changes to the latest "
                        "version and try again");
      }
      return Conflict(subject, msg);
    case absl::StatusCode::kInvalidArgument: {
      std::vector<api::FieldError> errors = api::FieldErrorsOf(status);
      if (errors.empty()) {
        // The store's messages start with the field path: "metadata.labels: ...".
        api::FieldError fe;
        size_t colon = msg.find(": ");
        if (colon != std::string::npos && msg.find(' ') >= colon) {
          fe.path = msg.substr(0, colon);
          fe.detail = msg.substr(colon + 2);
        } else {
          fe.detail = msg;
        }
        fe.type = api::FieldErrorType::kInvalid;
        errors.push_back(fe);
      }
      return Invalid(subject, errors);
    }
    case absl::StatusCode::kOutOfRange:
      return Expired(msg);
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnavailable: {
      ApiError e;
      e.code = 503;
      e.reason = "ServiceUnavailable";
      e.message = msg;
      e.retry_after_seconds = 1;
      return e;
    }
    default:
      return Internal(msg);
  }
}

}  // namespace sandboxlet::rest
