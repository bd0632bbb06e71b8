// Small helpers that turn errno values into absl::Status with context.
// Thread-safe: pure functions.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace sandboxlet {

// Returns a Status whose code follows errno (ENOENT → NotFound, EEXIST → AlreadyExists,
// ENOSPC → ResourceExhausted, EACCES/EPERM → PermissionDenied, ETIMEDOUT → DeadlineExceeded, ...)
// and whose message is "<what>: <strerror(err)>".
absl::Status ErrnoStatus(int err, std::string_view what);

// Prefixes a non-OK status's message with "<context>: ", keeping its code.
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace sandboxlet

// Returns from the enclosing function with `expr`'s status if it is not OK.
#define SBL_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status sbl_status_ = (expr);       \
    if (!sbl_status_.ok()) return sbl_status_; \
  } while (0)

#define SBL_CONCAT_INNER(a, b) a##b
#define SBL_CONCAT(a, b) SBL_CONCAT_INNER(a, b)
#define SBL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(*tmp)
// Declares or assigns `lhs` from a StatusOr `expr`, returning its status if not OK.
#define SBL_ASSIGN_OR_RETURN(lhs, expr) \
  SBL_ASSIGN_OR_RETURN_IMPL(SBL_CONCAT(sbl_statusor_, __LINE__), lhs, expr)
