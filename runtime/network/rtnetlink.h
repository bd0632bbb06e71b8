// A minimal rtnetlink (NETLINK_ROUTE) client for the few link, address and route operations the
// sandbox network needs, so that setting up a sandbox costs a handful of syscalls instead of a
// dozen `ip` processes. A socket acts in the network namespace of the thread that opened it, for
// its whole life — open it inside RunInNetns to act on a sandbox's namespace.
// Thread-safety: one RtNetlink per thread (requests and replies share the socket's sequence).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/base/fd.h"

namespace sandboxlet::network {

class RtNetlink {
 public:
  // Opens a NETLINK_ROUTE socket in the calling thread's current network namespace.
  static absl::StatusOr<RtNetlink> Open();

  // Creates a veth pair: `name` here, `peer_name` directly in the namespace `peer_netns_fd`.
  // AlreadyExists if `name` exists.
  absl::Status CreateVeth(const std::string& name, const std::string& peer_name, int peer_netns_fd);
  // ifindex of `name`, NotFound if absent.
  absl::StatusOr<int> LinkIndex(const std::string& name);
  absl::Status SetLinkUp(int ifindex);
  // Deletes a link by name (deleting one end of a veth deletes both). NotFound if absent.
  absl::Status DeleteLink(const std::string& name);
  // Names of all links in the socket's namespace.
  absl::StatusOr<std::vector<std::string>> ListLinkNames();
  // Adds addr/prefix_len (host byte order) to ifindex.
  absl::Status AddAddress(int ifindex, uint32_t addr, int prefix_len);
  // Adds "default via gateway dev ifindex" to the main table.
  absl::Status AddDefaultRoute(int ifindex, uint32_t gateway);

 private:
  explicit RtNetlink(UniqueFd fd) : fd_(std::move(fd)) {}
  // Sends `msg` with NLM_F_ACK and waits for its acknowledgement; `what` prefixes errors.
  absl::Status Transact(std::vector<char>& msg, const std::string& what);

  UniqueFd fd_;
  uint32_t seq_ = 0;
};

}  // namespace sandboxlet::network
