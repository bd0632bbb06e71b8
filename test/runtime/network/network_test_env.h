// Shared set-up for the network tests: a per-process name prefix, CIDR and state directory, so
// test processes (ctest runs each test case as its own process, possibly in parallel) never share
// a netns, veth, host table or address; and a skip when netns cannot be created here.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "runtime/network/netns.h"
#include "runtime/network/sandbox_network.h"

namespace sandboxlet::network::testing {

// "n" + base-36 pid: at most 6 chars for any Linux pid.
inline std::string ProcessPrefix(char lead = 'n') {
  std::string digits;
  for (unsigned v = static_cast<unsigned>(::getpid()); v > 0; v /= 36) {
    digits.insert(digits.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36]);
  }
  return std::string(1, lead) + digits;
}

// A /24 inside 100.64.0.0/11 chosen by pid (100.64.0.0 - 100.95.255.0).
inline std::string ProcessCidr() {
  unsigned k = static_cast<unsigned>(::getpid()) % (32 * 256);
  return Cat("100.", 64 + k / 256, ".", k % 256, ".0/24");
}

// Empty string if netns work is possible, else the reason to skip.
inline std::string NetnsUnavailableReason() {
  if (::geteuid() != 0) return "needs root to create network namespaces";
  std::string probe = ProcessPrefix('p') + "-probe";
  auto fd = CreateNamedNetns(kDefaultNetnsDir, probe);
  if (!fd.ok()) return Cat("cannot create a network namespace: ", fd.status().message());
  fd->Reset();
  (void)DeleteNamedNetns(kDefaultNetnsDir, probe);
  return "";
}

inline std::string MakeTempDir() {
  char tmpl[] = "/tmp/sbl-net-test-XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  return dir == nullptr ? "" : dir;
}

}  // namespace sandboxlet::network::testing
