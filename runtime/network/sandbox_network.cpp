#include "runtime/network/sandbox_network.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"
#include "runtime/network/netns.h"
#include "runtime/network/nftables.h"
#include "runtime/network/rtnetlink.h"

namespace sandboxlet::network {
namespace {

constexpr char kNetnsTable[] = "sandboxlet";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

absl::Status ValidatePrefix(const std::string& prefix) {
  bool ok = !prefix.empty() && prefix.size() <= 8 && prefix[0] >= 'a' && prefix[0] <= 'z';
  for (char c : prefix) ok = ok && IsLowerAlnum(c);
  if (!ok) {
    return absl::InvalidArgumentError(Cat("network name prefix \"", prefix,
                                          "\": want 1-8 chars of [a-z0-9] starting with a letter"));
  }
  return absl::OkStatus();
}

// Writes "1" to a sysctl file unless it already holds it.
absl::Status EnableSysctl(const std::string& path) {
  auto current = ReadFile(path);
  if (current.ok() && Trim(*current) == "1") return absl::OkStatus();
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("open ", path));
  if (::write(fd.get(), "1\n", 2) != 2) return ErrnoStatus(errno, Cat("write ", path));
  return absl::OkStatus();
}

// Creates a persistent tap in the calling thread's namespace. The VMM later opens it by name with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (the kernel lets the opener change those, but not
// IFF_MULTI_QUEUE, hence the flag).
absl::Status CreatePersistentTap(const std::string& name, bool multi_queue) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open /dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return ErrnoStatus(errno, Cat("create tap ", name));
  if (::ioctl(fd.get(), TUNSETPERSIST, 1) != 0) {
    return ErrnoStatus(errno, Cat("make tap ", name, " persistent"));
  }
  return absl::OkStatus();
}

std::string NetnsRules(const NetworkInfo& info, bool egress) {
  std::string s = Cat("table ip ", kNetnsTable, " {\n",                                   //
                      "  chain prerouting {\n",                                           //
                      "    type nat hook prerouting priority dstnat; policy accept;\n",   //
                      "    iifname \"", kNetnsVethName, "\" ip daddr ", info.slot_ip,     //
                      " dnat to ", info.guest_ip, "\n",                                   //
                      "  }\n",                                                            //
                      "  chain postrouting {\n",                                          //
                      "    type nat hook postrouting priority srcnat; policy accept;\n",  //
                      "    oifname \"", kNetnsVethName, "\" ip saddr ", info.guest_ip,    //
                      " snat to ", info.slot_ip, "\n",                                    //
                      "  }\n",                                                            //
                      "  chain forward {\n",                                              //
                      "    type filter hook forward priority filter; policy accept;\n",   //
                      "    iifname \"", kTapName, "\" ip saddr != ", info.guest_ip, " drop\n");
  if (!egress) {
    s += Cat("    iifname \"", kTapName, "\" ct state established,related accept\n",  //
             "    iifname \"", kTapName, "\" ip daddr != ", info.host_ip,
             " reject with icmp type admin-prohibited\n");
  }
  s += "  }\n}\n";
  return s;
}

}  // namespace

std::string_view SetupStepName(SetupStep step) {
  switch (step) {
    case SetupStep::kAcquireSlot:
      return "acquire-slot";
    case SetupStep::kCreateNetns:
      return "create-netns";
    case SetupStep::kCreateVeth:
      return "create-veth";
    case SetupStep::kConfigureHostVeth:
      return "configure-host-veth";
    case SetupStep::kConfigureNetnsVeth:
      return "configure-netns-veth";
    case SetupStep::kCreateTap:
      return "create-tap";
    case SetupStep::kEnableForwarding:
      return "enable-forwarding";
    case SetupStep::kInstallNat:
      return "install-nat";
  }
  return "unknown";
}

absl::Status ValidateNetworkId(const std::string& id) {
  if (id.size() > 63 || !IsDns1123Subdomain(id)) {
    return absl::InvalidArgumentError(
        Cat("sandbox network id \"", id, "\": want a DNS-1123 subdomain of at most 63 chars"));
  }
  return absl::OkStatus();
}

SandboxNetwork::SandboxNetwork(NetworkConfig config, std::unique_ptr<SlotAllocator> slots)
    : config_(std::move(config)), slots_(std::move(slots)) {}

absl::StatusOr<std::unique_ptr<SandboxNetwork>> SandboxNetwork::Open(NetworkConfig config) {
  SBL_RETURN_IF_ERROR(ValidatePrefix(config.name_prefix));
  if (config.state_dir.empty()) return absl::InvalidArgumentError("network: empty state_dir");
  SBL_ASSIGN_OR_RETURN(
      auto slots, SlotAllocator::Open(config.cidr, Cat(config.state_dir, "/network/slots.json")));
  std::string largest = Cat(config.name_prefix, "v", slots->Capacity() - 1);
  if (largest.size() > IFNAMSIZ - 1) {
    return absl::InvalidArgumentError(Cat("network CIDR ", config.cidr, " with prefix \"",
                                          config.name_prefix, "\": veth name ", largest,
                                          " of the largest slot exceeds ", IFNAMSIZ - 1,
                                          " chars; use a smaller CIDR or a shorter prefix"));
  }
  std::unique_ptr<SandboxNetwork> net(new SandboxNetwork(std::move(config), std::move(slots)));
  if (net->config_.install_host_rules) {
    SBL_RETURN_IF_ERROR(Annotate(EnableSysctl("/proc/sys/net/ipv4/ip_forward"),
                                 "network: enable host IPv4 forwarding"));
    SBL_RETURN_IF_ERROR(net->InstallHostRules());
  }
  return net;
}

absl::Status SandboxNetwork::InstallHostRules() const {
  const std::string& p = config_.name_prefix;
  std::string veths = Cat("\"", p, "v*\"");
  std::string ports;
  for (uint16_t port : config_.host_tcp_ports) ports += Cat(ports.empty() ? "" : ", ", port);
  // "add; delete; define" in one transaction replaces the table atomically.
  std::string s =
      Cat("add table ip ", p, "\ndelete table ip ", p, "\ntable ip ", p, " {\n",
          "  chain forward {\n", "    type filter hook forward priority filter; policy accept;\n",
          "    iifname ", veths, " oifname ", veths,
          " meta l4proto tcp reject with tcp reset\n",  //
          "    iifname ", veths, " oifname ", veths,
          " reject with icmp type admin-prohibited\n",  //
          "  }\n",                                      //
          "  chain input {\n", "    type filter hook input priority filter; policy accept;\n",
          "    iifname ", veths, " ct state established,related accept\n");
  if (!ports.empty()) s += Cat("    iifname ", veths, " tcp dport { ", ports, " } accept\n");
  s += Cat("    iifname ", veths, " meta l4proto tcp reject with tcp reset\n",  //
           "    iifname ", veths, " reject with icmp type admin-prohibited\n",  //
           "  }\n",                                                             //
           "  chain postrouting {\n",
           "    type nat hook postrouting priority srcnat; policy accept;\n", "    ip saddr ",
           slots_->cidr().ToString(), " oifname != ", veths, " masquerade\n", "  }\n}\n");
  return RunNft(s, Cat("network: install host table ip ", p)).status();
}

absl::Status SandboxNetwork::RemoveHostRules() const {
  const std::string& p = config_.name_prefix;
  return RunNft(Cat("add table ip ", p, "\ndelete table ip ", p, "\n"),
                Cat("network: delete host table ip ", p))
      .status();
}

std::string SandboxNetwork::HostVethName(uint32_t index) const {
  return Cat(config_.name_prefix, "v", index);
}

int64_t SandboxNetwork::SlotOfHostVeth(const std::string& name) const {
  std::string head = Cat(config_.name_prefix, "v");
  if (!StartsWith(name, head) || name.size() == head.size()) return -1;
  uint32_t index = 0;
  const char* first = name.data() + head.size();
  const char* last = name.data() + name.size();
  auto [ptr, ec] = std::from_chars(first, last, index);
  if (ec != std::errc() || ptr != last || (*first == '0' && last - first > 1)) return -1;
  return index;
}

std::string SandboxNetwork::NetnsName(const std::string& id) const {
  return Cat(config_.name_prefix, "-", id);
}

NetworkInfo SandboxNetwork::Describe(const std::string& id, const Slot& slot) const {
  NetworkInfo info;
  info.id = id;
  info.slot = slot.index;
  info.netns_name = NetnsName(id);
  info.netns_path = Cat(config_.netns_dir, "/", info.netns_name);
  info.host_veth = HostVethName(slot.index);
  info.netns_veth = kNetnsVethName;
  info.tap = kTapName;
  info.guest_ip = kGuestIp;
  info.gateway_ip = kGatewayIp;
  info.guest_mask = kGuestMask;
  info.guest_prefix_len = kGuestPrefixLen;
  info.guest_mac = kGuestMac;
  info.host_ip = FormatIpv4(slot.host_ip);
  info.slot_ip = FormatIpv4(slot.slot_ip);
  return info;
}

absl::StatusOr<NetworkInfo> SandboxNetwork::Create(const NetworkSpec& spec) {
  SBL_RETURN_IF_ERROR(ValidateNetworkId(spec.id));
  const std::string& id = spec.id;
  std::vector<std::function<void()>> undo;  // run in reverse order when a step fails
  auto inject = [&](SetupStep step) {
    return config_.fault_injector ? config_.fault_injector(step) : absl::OkStatus();
  };
  auto fail = [&](SetupStep step, const absl::Status& st) {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    std::string hint;
    if (absl::IsAlreadyExists(st)) hint = " (a leftover? Remove it or run reclaim first)";
    log::Warn("sandbox network setup failed",
              {{"sandbox", id}, {"step", SetupStepName(step)}, {"error", st.message()}});
    return absl::Status(st.code(), Cat("sandbox ", id, ": network setup: ", SetupStepName(step),
                                       ": ", st.message(), hint));
  };

  // 1. Slot. A slot the id already held (adoption, an earlier failed attempt) is not ours to free.
  absl::Status st = inject(SetupStep::kAcquireSlot);
  bool had_slot = slots_->Lookup(id).ok();
  absl::StatusOr<Slot> slot = st.ok() ? slots_->Acquire(id) : absl::StatusOr<Slot>(st);
  if (!slot.ok()) return fail(SetupStep::kAcquireSlot, slot.status());
  if (!had_slot) undo.push_back([this, id] { (void)slots_->Release(id); });
  NetworkInfo info = Describe(id, *slot);

  // 2. Named netns.
  st = inject(SetupStep::kCreateNetns);
  absl::StatusOr<UniqueFd> netns =
      st.ok() ? CreateNamedNetns(config_.netns_dir, info.netns_name) : absl::StatusOr<UniqueFd>(st);
  if (!netns.ok()) return fail(SetupStep::kCreateNetns, netns.status());
  undo.push_back(
      [this, name = info.netns_name] { (void)DeleteNamedNetns(config_.netns_dir, name); });

  // 3. veth pair, the peer created directly inside the netns.
  auto host_nl = RtNetlink::Open();
  if (!host_nl.ok()) return fail(SetupStep::kCreateVeth, host_nl.status());
  st = inject(SetupStep::kCreateVeth);
  if (st.ok()) st = host_nl->CreateVeth(info.host_veth, kNetnsVethName, netns->get());
  if (!st.ok()) return fail(SetupStep::kCreateVeth, st);
  undo.push_back([&host_nl, name = info.host_veth] { (void)host_nl->DeleteLink(name); });

  // 4. Host end: address (the connected /31 is the route to the slot address) and up.
  st = inject(SetupStep::kConfigureHostVeth);
  if (st.ok()) {
    absl::StatusOr<int> index = host_nl->LinkIndex(info.host_veth);
    st = index.status();
    if (st.ok()) st = host_nl->AddAddress(*index, slot->host_ip, 31);
    if (st.ok()) st = host_nl->SetLinkUp(*index);
  }
  if (!st.ok()) return fail(SetupStep::kConfigureHostVeth, st);

  // 5-8 inside the netns. Their undo is the netns deletion above: tap, veth peer, addresses,
  // routes, sysctls and nft rules all go with the namespace.
  SetupStep failed_step = SetupStep::kConfigureNetnsVeth;
  st = RunInNetns(netns->get(), [&]() -> absl::Status {
    SBL_ASSIGN_OR_RETURN(RtNetlink nl, RtNetlink::Open());
    SBL_RETURN_IF_ERROR(inject(SetupStep::kConfigureNetnsVeth));
    SBL_ASSIGN_OR_RETURN(int lo, nl.LinkIndex("lo"));
    SBL_RETURN_IF_ERROR(nl.SetLinkUp(lo));
    SBL_ASSIGN_OR_RETURN(int veth, nl.LinkIndex(kNetnsVethName));
    SBL_RETURN_IF_ERROR(nl.AddAddress(veth, slot->slot_ip, 31));
    SBL_RETURN_IF_ERROR(nl.SetLinkUp(veth));
    SBL_RETURN_IF_ERROR(nl.AddDefaultRoute(veth, slot->host_ip));

    failed_step = SetupStep::kCreateTap;
    SBL_RETURN_IF_ERROR(inject(SetupStep::kCreateTap));
    SBL_RETURN_IF_ERROR(CreatePersistentTap(kTapName, spec.multi_queue_tap));
    SBL_ASSIGN_OR_RETURN(int tap, nl.LinkIndex(kTapName));
    SBL_ASSIGN_OR_RETURN(uint32_t gateway, ParseIpv4(kGatewayIp));
    SBL_RETURN_IF_ERROR(nl.AddAddress(tap, gateway, kGuestPrefixLen));
    SBL_RETURN_IF_ERROR(nl.SetLinkUp(tap));

    failed_step = SetupStep::kEnableForwarding;
    SBL_RETURN_IF_ERROR(inject(SetupStep::kEnableForwarding));
    // /proc/sys/net resolves to the namespace of the thread that opens it: this one.
    SBL_RETURN_IF_ERROR(EnableSysctl("/proc/sys/net/ipv4/ip_forward"));

    failed_step = SetupStep::kInstallNat;
    SBL_RETURN_IF_ERROR(inject(SetupStep::kInstallNat));
    return RunNft(NetnsRules(info, spec.egress), Cat("install table ip ", kNetnsTable)).status();
  });
  if (!st.ok()) return fail(failed_step, st);
  return info;
}

absl::Status SandboxNetwork::DeleteHostVeth(const std::string& name) const {
  SBL_ASSIGN_OR_RETURN(RtNetlink nl, RtNetlink::Open());
  absl::Status st = nl.DeleteLink(name);
  return absl::IsNotFound(st) ? absl::OkStatus() : st;
}

absl::Status SandboxNetwork::DeleteNetns(const std::string& id) const {
  return DeleteNamedNetns(config_.netns_dir, NetnsName(id));
}

absl::Status SandboxNetwork::Remove(const std::string& id) {
  SBL_RETURN_IF_ERROR(ValidateNetworkId(id));
  absl::StatusOr<Slot> slot = slots_->Lookup(id);
  // Reverse of Create: the host veth first (deleted synchronously, so its name is free for the
  // slot's next owner even while the kernel tears the netns down in the background), then the
  // netns with everything inside it, then the slot.
  absl::Status veth_st = slot.ok() ? DeleteHostVeth(HostVethName(slot->index)) : absl::OkStatus();
  absl::Status netns_st = DeleteNetns(id);
  if (!veth_st.ok() || !netns_st.ok()) {
    const absl::Status& first = veth_st.ok() ? netns_st : veth_st;
    return absl::Status(first.code(), Cat("sandbox ", id, ": remove network: ", first.message()));
  }
  return Annotate(slots_->Release(id), Cat("sandbox ", id, ": remove network"));
}

absl::StatusOr<NetworkInfo> SandboxNetwork::Lookup(const std::string& id) const {
  SBL_RETURN_IF_ERROR(ValidateNetworkId(id));
  SBL_ASSIGN_OR_RETURN(Slot slot, slots_->Lookup(id));
  absl::StatusOr<UniqueFd> netns = OpenNamedNetns(config_.netns_dir, NetnsName(id));
  if (!netns.ok()) {
    return absl::NotFoundError(Cat("sandbox ", id, ": network: ", netns.status().message()));
  }
  return Describe(id, slot);
}

absl::StatusOr<NetworkLeftovers> SandboxNetwork::ListLeftovers() const {
  NetworkLeftovers out;
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListNamedNetns(config_.netns_dir));
  std::string head = Cat(config_.name_prefix, "-");
  for (const std::string& n : names) {
    if (!StartsWith(n, head)) continue;
    std::string id = n.substr(head.size());
    if (ValidateNetworkId(id).ok()) out.netns_ids.push_back(std::move(id));
  }
  SBL_ASSIGN_OR_RETURN(RtNetlink nl, RtNetlink::Open());
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> links, nl.ListLinkNames());
  for (std::string& l : links) {
    if (SlotOfHostVeth(l) >= 0) out.host_veths.push_back(std::move(l));
  }
  out.slots = slots_->List();
  return out;
}

}  // namespace sandboxlet::network
