// Errors as Cloud Hypervisor reports them: a chain of messages, outermost first (CONTRACT §3),
// carried inside an absl::Status whose message holds one chain link per line. The status code
// says how the HTTP layer maps the error: InvalidArgument → 400, FailedPrecondition (VM not
// created) → 404 on v53+ or 500, anything else → 500. Thread-safe: pure functions.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sandboxlet::chsim {

// An internal error (HTTP 500) with the given chain.
absl::Status ChainError(std::initializer_list<std::string> chain);
// Same chain but with an explicit code.
absl::Status ChainError(absl::StatusCode code, std::initializer_list<std::string> chain);
// Prepends `outer` to the chain, keeping the code.
absl::Status Wrap(const absl::Status& inner, const std::string& outer);
// The chain links of a status (one per line of its message).
std::vector<std::string> ChainOf(const absl::Status& status);
// Rust's io::Error display: "No such file or directory (os error 2)".
std::string OsError(int err);
// An error whose innermost cause is errno `err`.
absl::Status OsChain(int err, std::initializer_list<std::string> outer);

// The VM config is absent (CH's VmNotCreated / VmMissingConfig).
absl::Status NotCreated(const std::string& action);

// Prints "Error: Cloud Hypervisor exited with the following chain of errors:" and "  N: msg"
// lines to stderr (CONTRACT §2).
void PrintFatalChain(const std::vector<std::string>& chain);

}  // namespace sandboxlet::chsim
