#include "test/chsim/chain.h"

#include <cstdio>
#include <cstring>

#include "runtime/base/strings.h"

namespace sandboxlet::chsim {

absl::Status ChainError(std::initializer_list<std::string> chain) {
  return ChainError(absl::StatusCode::kInternal, chain);
}

absl::Status ChainError(absl::StatusCode code, std::initializer_list<std::string> chain) {
  return absl::Status(code, Join(std::vector<std::string>(chain), "\n"));
}

absl::Status Wrap(const absl::Status& inner, const std::string& outer) {
  if (inner.ok()) return inner;
  return absl::Status(inner.code(), Cat(outer, "\n", inner.message()));
}

std::vector<std::string> ChainOf(const absl::Status& status) {
  std::string message(status.message().data(), status.message().size());
  return Split(message, '\n');
}

std::string OsError(int err) { return Cat(std::strerror(err), " (os error ", err, ")"); }

absl::Status OsChain(int err, std::initializer_list<std::string> outer) {
  std::vector<std::string> chain(outer);
  chain.push_back(OsError(err));
  return absl::InternalError(Join(chain, "\n"));
}

absl::Status NotCreated(const std::string& action) {
  return ChainError(absl::StatusCode::kFailedPrecondition, {action, "VM is not created"});
}

void PrintFatalChain(const std::vector<std::string>& chain) {
  std::string out = "Error: Cloud Hypervisor exited with the following chain of errors:\n";
  for (size_t i = 0; i < chain.size(); ++i) out += Cat("  ", i, ": ", chain[i], "\n");
  std::fputs(out.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace sandboxlet::chsim
