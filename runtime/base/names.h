// Names that may reach a file-system path or a kernel object name. Nothing user-supplied is
// joined into a path without passing through here. Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

// RFC 1123 label: 1-63 chars of [a-z0-9-], starting and ending with an alphanumeric.
bool IsDns1123Label(std::string_view s);
// RFC 1123 subdomain: 1-253 chars, dot-separated labels.
bool IsDns1123Subdomain(std::string_view s);

// OK if `component` is a single safe path component: non-empty, at most 255 bytes, not "." or
// "..", no '/', no NUL, no control characters. `what` names the value in the error.
absl::Status ValidatePathComponent(std::string_view component, std::string_view what);

// Joins `base` and a validated single component; refuses anything that would escape `base`.
absl::StatusOr<std::string> JoinUnder(const std::string& base, std::string_view component,
                                      std::string_view what);

}  // namespace sandboxlet
