// SandboxNetwork gives each sandbox its own network: a named netns "<prefix>-<id>", a veth pair
// to the host ("<prefix>v<slot>" on the host, "veth0" inside), and inside the netns a persistent
// tap "tap0" that the VMM opens by name (CONTRACT §6 net[].tap). The guest address, gateway,
// tap name and guest MAC are the same in every netns, so a snapshot (which bakes net[].tap and
// the guest's addresses in, CONTRACT §5) restores into any sandbox's netns.
//
// Addressing (slot N of the host CIDR, see SlotAllocator):
//   host  <prefix>vN  host_ip/31  ──veth──  veth0 slot_ip/31 (netns)   tap0 gateway 169.254.0.22/30
//   guest 169.254.0.21/30 behind tap0, default route via the gateway.
// The slot address is host-routable (connected /31 on the host). Inside the netns one nftables
// table "sandboxlet" DNATs slot_ip → guest (ingress), SNATs guest → slot_ip (egress), drops
// spoofed guest sources and, when egress is off, rejects guest traffic to anything but the host
// end of the veth. Those rules live and die with the netns, so they cannot leak.
//
// Host rules: one nftables table "ip <prefix>" shared by all sandboxes, (re)installed atomically
// by Open(): sandbox↔sandbox forwarding is rejected, traffic from sandbox veths to the host's own
// addresses is rejected except established flows and the configured host TCP ports, and egress
// from the CIDR is masqueraded. It matches veths by name wildcard ("<prefix>v*"), so there is no
// per-sandbox host rule to leak. Open() also sets net.ipv4.ip_forward=1 on the host (needed for
// egress and ingress) and in each netns. We use nftables, not iptables: a private table is
// replaced atomically and never interleaves with other software's chains. Known limit: base
// chains of separate tables all run, so a host whose iptables FORWARD policy is DROP (Docker)
// must also accept "<prefix>v+" there; we don't edit other software's tables.
//
// Thread-safety: Create/Remove/Lookup for different ids may run concurrently; calls for the same
// id must be serialized by the caller (the sandbox's lock). Create of an id whose netns already
// exists fails with AlreadyExists (use Lookup to adopt it, or Remove first).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/network/slot_allocator.h"

namespace sandboxlet::network {

// The steps of Create, in order. Every step that fails unwinds the earlier ones in reverse.
enum class SetupStep {
  kAcquireSlot,
  kCreateNetns,
  kCreateVeth,
  kConfigureHostVeth,
  kConfigureNetnsVeth,  // lo up, veth0 address, up, default route
  kCreateTap,           // persistent tap0 with the gateway address, up
  kEnableForwarding,    // ip_forward in the netns
  kInstallNat,          // nftables table inside the netns
};
inline constexpr int kSetupStepCount = 8;
std::string_view SetupStepName(SetupStep step);

struct NetworkConfig {
  // Slot assignments are kept in <state_dir>/network/slots.json.
  std::string state_dir;
  std::string cidr = "10.200.0.0/16";
  // Names: netns "<prefix>-<id>", host veth "<prefix>v<slot>", host nft table "<prefix>".
  // 1-8 chars of [a-z0-9], starting with a letter. Tests use their own to run side by side.
  std::string name_prefix = "sbl";
  std::string netns_dir = "/run/netns";
  // Host TCP ports sandboxes may connect to (on the host end of their veth or any host address).
  std::vector<uint16_t> host_tcp_ports;
  // Whether Open() installs the host table and enables host forwarding.
  bool install_host_rules = true;
  // Test seam: called before each setup step; a non-OK result makes that step fail.
  std::function<absl::Status(SetupStep)> fault_injector;
};

struct NetworkSpec {
  std::string id;      // DNS-1123 subdomain, e.g. the Sandbox's uid; at most 63 characters
  bool egress = true;  // false: the guest reaches nothing beyond the host end of its veth
  bool multi_queue_tap = false;  // create tap0 with IFF_MULTI_QUEUE (VMM net num_queues > 2)
};

struct NetworkInfo {
  std::string id;
  uint32_t slot = 0;
  std::string netns_name;  // "<prefix>-<id>"
  std::string netns_path;  // "<netns_dir>/<netns_name>", for setns by the VMM launcher
  std::string host_veth;   // "<prefix>v<slot>" in the host namespace
  std::string netns_veth;  // "veth0"
  std::string tap;         // "tap0"
  std::string guest_ip;    // "169.254.0.21"
  std::string gateway_ip;  // "169.254.0.22" (on tap0)
  std::string guest_mask;  // "255.255.255.252"
  int guest_prefix_len = 30;
  std::string guest_mac;  // "02:00:a9:fe:00:15", same everywhere (one guest per L2 segment)
  std::string host_ip;    // host end of the veth
  std::string slot_ip;    // host-routable address of the sandbox (DNAT to the guest)
};

// What ListLeftovers() finds of ours, whoever it belongs to.
struct NetworkLeftovers {
  std::vector<std::string> netns_ids;   // ids from "<prefix>-<id>" netns names
  std::vector<std::string> host_veths;  // "<prefix>v<N>" links in the host namespace
  std::vector<Slot> slots;              // persisted slot assignments
};

inline constexpr char kTapName[] = "tap0";
inline constexpr char kNetnsVethName[] = "veth0";
inline constexpr char kGuestIp[] = "169.254.0.21";
inline constexpr char kGatewayIp[] = "169.254.0.22";
inline constexpr char kGuestMask[] = "255.255.255.252";
inline constexpr int kGuestPrefixLen = 30;
inline constexpr char kGuestMac[] = "02:00:a9:fe:00:15";

class SandboxNetwork {
 public:
  // Validates `config` (CIDR, prefix, IFNAMSIZ of the largest slot's veth name), loads slots,
  // and unless disabled installs the host table and enables host forwarding.
  static absl::StatusOr<std::unique_ptr<SandboxNetwork>> Open(NetworkConfig config);

  // Builds the sandbox's network (steps above); on failure nothing of it is left behind and the
  // error names the sandbox and the step.
  absl::StatusOr<NetworkInfo> Create(const NetworkSpec& spec);
  // Removes the host veth, the netns (and with it tap, veth peer and netns rules) and the slot.
  // Missing pieces are fine; the slot is kept if anything could not be removed, so a retry or
  // reclaim still knows which veth is the sandbox's.
  absl::Status Remove(const std::string& id);
  // The NetworkInfo of an existing network (adoption after a restart): NotFound unless both the
  // slot and the netns exist.
  absl::StatusOr<NetworkInfo> Lookup(const std::string& id) const;
  // Every netns, host veth and slot record carrying our prefix.
  absl::StatusOr<NetworkLeftovers> ListLeftovers() const;

  // Pieces of Remove for reclaim: each is OK when the object is already gone.
  absl::Status DeleteHostVeth(const std::string& name) const;
  absl::Status DeleteNetns(const std::string& id) const;

  // Deletes the host table (uninstall, tests). Sandboxes lose egress and isolation.
  absl::Status RemoveHostRules() const;

  // "<prefix>v<index>"; the slot index of such a name, or -1.
  std::string HostVethName(uint32_t index) const;
  int64_t SlotOfHostVeth(const std::string& name) const;
  std::string NetnsName(const std::string& id) const;

  SlotAllocator& slots() { return *slots_; }
  const NetworkConfig& config() const { return config_; }

 private:
  SandboxNetwork(NetworkConfig config, std::unique_ptr<SlotAllocator> slots);
  absl::Status InstallHostRules() const;
  NetworkInfo Describe(const std::string& id, const Slot& slot) const;

  const NetworkConfig config_;
  const std::unique_ptr<SlotAllocator> slots_;
};

// OK if `id` can name a sandbox network (DNS-1123 subdomain of at most 63 characters).
absl::Status ValidateNetworkId(const std::string& id);

}  // namespace sandboxlet::network
