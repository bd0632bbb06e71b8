// Runs an external program (ip, iptables, dmsetup, losetup, `<vmm-bin> --version`, ...) with a
// deadline, capturing its output. Thread-safe: each call is independent.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sandboxlet {

struct CommandResult {
  int exit_code = -1;   // exit status if the program exited, else -1
  int term_signal = 0;  // the signal that ended it, else 0
  std::string out;      // standard output
  std::string err;      // standard error
  bool ok() const { return exit_code == 0; }
};

struct CommandOptions {
  std::chrono::milliseconds timeout{10000};
  std::string stdin_data;
  // Extra "KEY=value" entries added to (or replacing in) the inherited environment.
  std::vector<std::string> env;
};

// Runs argv[0] (looked up on PATH when it has no '/'). A program that cannot be started gives
// NotFound/PermissionDenied naming it; one still running at the deadline is killed (SIGKILL) and
// gives DeadlineExceeded. A non-zero exit is NOT an error here: inspect the result.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const CommandOptions& options = {});

// RunCommand, then a non-zero exit becomes an error "<argv joined>: exit N: <stderr>".
absl::StatusOr<CommandResult> RunChecked(const std::vector<std::string>& argv,
                                         const CommandOptions& options = {});

// "a b 'c d'" for messages.
std::string ShellJoin(const std::vector<std::string>& argv);

}  // namespace sandboxlet
