// RawHttpProbe: a test-only VmmApiProbe that speaks just enough HTTP/1.1 over AF_UNIX for the
// process layer's tests (GET vmm.ping, PUT vmm.shutdown; CONTRACT §1, §4). Production uses the
// CH client through runtime/vm. Thread-safe: each call opens its own connection.
#pragma once

#include <chrono>
#include <string>

#include "runtime/vmm/process.h"

namespace sandboxlet::vmm::testing {

class RawHttpProbe final : public VmmApiProbe {
 public:
  explicit RawHttpProbe(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  absl::Status Ping(std::chrono::milliseconds timeout) override;
  absl::Status ShutdownVmm(std::chrono::milliseconds timeout) override;

 private:
  // Sends one body-less request; OK if the answer's status code is 200.
  absl::Status Call(const char* method, const char* endpoint, std::chrono::milliseconds timeout);
  const std::string socket_path_;
};

}  // namespace sandboxlet::vmm::testing
