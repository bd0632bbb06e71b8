#include "runtime/base/errors.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "runtime/base/strings.h"

namespace sandboxlet {

absl::Status ErrnoStatus(int err, std::string_view what) {
  std::string msg = Cat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ESRCH:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ETIMEDOUT:
      return absl::DeadlineExceededError(msg);
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
      return absl::InvalidArgumentError(msg);
    case EBUSY:
    case EAGAIN:
      return absl::UnavailableError(msg);
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::UnimplementedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), Cat(context, ": ", status.message()));
}

}  // namespace sandboxlet
