// The simulator's two outputs besides HTTP: the event monitor (CONTRACT §2: each event a
// pretty-printed JSON object followed by a blank line; the fd is non-blocking and write errors are
// ignored, so events can be lost) and CH-like log lines (`--log-file`, else stderr).
// Thread-safe: no — the simulator is single-threaded.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "runtime/base/fd.h"

namespace sandboxlet::chsim {

using Json = nlohmann::ordered_json;

class EventMonitor {
 public:
  EventMonitor();
  // Opens `path` (truncating) or adopts `fd`. Without a call, events are discarded.
  absl::Status OpenPath(const std::string& path);
  absl::Status AdoptFd(int fd);

  // Writes {"timestamp":{"secs","nanos"},"source","event","properties"} since VMM start.
  void Emit(const std::string& source, const std::string& event, const Json& properties = nullptr);

 private:
  std::chrono::steady_clock::time_point start_;
  UniqueFd fd_;
};

// Levels as CH maps -v: 0 warn, 1 info, 2 debug, 3 trace.
class Logger {
 public:
  Logger();
  absl::Status OpenFile(const std::string& path);  // truncates, like CH
  void SetVerbosity(int v) { verbosity_ = v; }

  void Error(const std::string& msg) { Write(0, "ERROR", msg); }
  void Warn(const std::string& msg) { Write(0, "WARN", msg); }
  void Info(const std::string& msg) { Write(1, "INFO", msg); }
  void Debug(const std::string& msg) { Write(2, "DEBUG", msg); }

 private:
  void Write(int min_verbosity, const char* level, const std::string& msg);

  std::chrono::steady_clock::time_point start_;
  int verbosity_ = 0;
  UniqueFd fd_;  // invalid = stderr
};

}  // namespace sandboxlet::chsim
