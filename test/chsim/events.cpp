#include "test/chsim/events.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::chsim {
namespace {

// Best-effort write: events and logs never fail the VMM (CONTRACT §2).
void WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

}  // namespace

EventMonitor::EventMonitor() : start_(std::chrono::steady_clock::now()) {}

absl::Status EventMonitor::OpenPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, Cat("event monitor ", path));
  fd_.Reset(fd);
  return absl::OkStatus();
}

absl::Status EventMonitor::AdoptFd(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus(errno, Cat("event monitor fd=", fd));
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  fd_.Reset(fd);
  return absl::OkStatus();
}

void EventMonitor::Emit(const std::string& source, const std::string& event,
                        const Json& properties) {
  if (!fd_.valid()) return;
  auto elapsed = std::chrono::steady_clock::now() - start_;
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(elapsed);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed - secs);
  Json e;
  e["timestamp"] = {{"secs", secs.count()}, {"nanos", nanos.count()}};
  e["source"] = source;
  e["event"] = event;
  e["properties"] = properties;
  WriteAll(fd_.get(), e.dump(2) + "\n\n");
}

Logger::Logger() : start_(std::chrono::steady_clock::now()) {}

absl::Status Logger::OpenFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, Cat("log file ", path));
  fd_.Reset(fd);
  return absl::OkStatus();
}

void Logger::Write(int min_verbosity, const char* level, const std::string& msg) {
  if (verbosity_ < min_verbosity) return;
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  char stamp[32];
  std::snprintf(stamp, sizeof(stamp), "%.6fms", ms);
  std::string line = Cat("cloud-hypervisor: ", stamp, ": <vmm> ", level, ":chsim -- ", msg, "\n");
  WriteAll(fd_.valid() ? fd_.get() : STDERR_FILENO, line);
}

}  // namespace sandboxlet::chsim
