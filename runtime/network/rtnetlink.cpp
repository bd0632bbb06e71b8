#include "runtime/network/rtnetlink.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::network {
namespace {

constexpr size_t kRecvBuffer = 1 << 16;

// Builds one netlink message in a byte vector; nested attributes are closed by offset.
class MessageBuilder {
 public:
  MessageBuilder(uint16_t type, uint16_t flags) {
    buf_.resize(NLMSG_HDRLEN);
    auto* h = Header();
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
    h->nlmsg_len = NLMSG_HDRLEN;
  }
  template <typename T>
  void PutFixed(const T& value) {
    Append(&value, sizeof(value));
  }
  void PutAttr(uint16_t type, const void* data, size_t len) {
    rtattr attr{};
    attr.rta_type = type;
    attr.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    Append(&attr, sizeof(attr), /*align=*/false);
    Append(data, len);
  }
  void PutString(uint16_t type, const std::string& s) { PutAttr(type, s.c_str(), s.size() + 1); }
  void PutU32(uint16_t type, uint32_t v) { PutAttr(type, &v, sizeof(v)); }
  size_t BeginNest(uint16_t type) {
    size_t off = buf_.size();
    PutAttr(type, nullptr, 0);
    return off;
  }
  void EndNest(size_t off) {
    auto* attr = reinterpret_cast<rtattr*>(buf_.data() + off);
    attr->rta_len = static_cast<uint16_t>(buf_.size() - off);
  }
  std::vector<char>& Bytes() { return buf_; }

 private:
  nlmsghdr* Header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  void Append(const void* data, size_t len, bool align = true) {
    size_t off = buf_.size();
    size_t padded = align ? NLMSG_ALIGN(len) : len;
    buf_.resize(off + padded, 0);
    if (len > 0) std::memcpy(buf_.data() + off, data, len);
    Header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
  }
  std::vector<char> buf_;
};

// Receives datagrams until `on_message` returns true (done) or an error arrives.
// ENODEV (unknown link) becomes NotFound so callers can treat "already gone" as done.
absl::Status Receive(int fd, uint32_t seq, const std::string& what,
                     const std::function<bool(const nlmsghdr*)>& on_message) {
  std::vector<char> buf(kRecvBuffer);
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, Cat(what, ": netlink recv"));
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;  // a stale reply to an earlier, abandoned request
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* err = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (err->error == 0) return absl::OkStatus();
        if (err->error == -ENODEV) return absl::NotFoundError(Cat(what, ": no such device"));
        return ErrnoStatus(-err->error, what);
      }
      if (h->nlmsg_type == NLMSG_DONE) return absl::OkStatus();
      if (on_message(h)) return absl::OkStatus();
    }
  }
}

absl::Status Send(int fd, std::vector<char>& msg, uint32_t seq, const std::string& what) {
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_seq = seq;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = ::sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                         sizeof(kernel));
    if (n >= 0) return absl::OkStatus();
    if (errno != EINTR) return ErrnoStatus(errno, Cat(what, ": netlink send"));
  }
}

}  // namespace

absl::StatusOr<RtNetlink> RtNetlink::Open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd.valid()) return ErrnoStatus(errno, "open rtnetlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    return ErrnoStatus(errno, "bind rtnetlink socket");
  }
  int one = 1;
  // Extended acks give the kernel's reason text; harmless where unsupported.
  ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  return RtNetlink(std::move(fd));
}

absl::Status RtNetlink::Transact(std::vector<char>& msg, const std::string& what) {
  uint32_t seq = ++seq_;
  SBL_RETURN_IF_ERROR(Send(fd_.get(), msg, seq, what));
  return Receive(fd_.get(), seq, what, [](const nlmsghdr*) { return false; });
}

absl::Status RtNetlink::CreateVeth(const std::string& name, const std::string& peer_name,
                                   int peer_netns_fd) {
  MessageBuilder m(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.PutFixed(ifi);
  m.PutString(IFLA_IFNAME, name);
  size_t linkinfo = m.BeginNest(IFLA_LINKINFO);
  m.PutString(IFLA_INFO_KIND, "veth");
  size_t data = m.BeginNest(IFLA_INFO_DATA);
  size_t peer = m.BeginNest(VETH_INFO_PEER);
  ifinfomsg peer_ifi{};
  peer_ifi.ifi_family = AF_UNSPEC;
  m.PutFixed(peer_ifi);
  m.PutString(IFLA_IFNAME, peer_name);
  m.PutU32(IFLA_NET_NS_FD, static_cast<uint32_t>(peer_netns_fd));
  m.EndNest(peer);
  m.EndNest(data);
  m.EndNest(linkinfo);
  return Transact(m.Bytes(), Cat("create veth ", name, " (peer ", peer_name, ")"));
}

absl::StatusOr<int> RtNetlink::LinkIndex(const std::string& name) {
  MessageBuilder m(RTM_GETLINK, NLM_F_REQUEST);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.PutFixed(ifi);
  m.PutString(IFLA_IFNAME, name);
  uint32_t seq = ++seq_;
  std::string what = Cat("look up link ", name);
  SBL_RETURN_IF_ERROR(Send(fd_.get(), m.Bytes(), seq, what));
  int index = 0;
  SBL_RETURN_IF_ERROR(Receive(fd_.get(), seq, what, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return false;
    index = reinterpret_cast<const ifinfomsg*>(NLMSG_DATA(h))->ifi_index;
    return true;
  }));
  if (index <= 0) return absl::NotFoundError(Cat(what, ": no such link"));
  return index;
}

absl::Status RtNetlink::SetLinkUp(int ifindex) {
  MessageBuilder m(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  m.PutFixed(ifi);
  return Transact(m.Bytes(), Cat("set link ", ifindex, " up"));
}

absl::Status RtNetlink::DeleteLink(const std::string& name) {
  MessageBuilder m(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.PutFixed(ifi);
  m.PutString(IFLA_IFNAME, name);
  return Transact(m.Bytes(), Cat("delete link ", name));
}

absl::StatusOr<std::vector<std::string>> RtNetlink::ListLinkNames() {
  MessageBuilder m(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  m.PutFixed(ifi);
  uint32_t seq = ++seq_;
  std::string what = "list links";
  SBL_RETURN_IF_ERROR(Send(fd_.get(), m.Bytes(), seq, what));
  std::vector<std::string> names;
  SBL_RETURN_IF_ERROR(Receive(fd_.get(), seq, what, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return false;
    int len = static_cast<int>(IFLA_PAYLOAD(h));
    for (auto* a = IFLA_RTA(reinterpret_cast<const ifinfomsg*>(NLMSG_DATA(h))); RTA_OK(a, len);
         a = RTA_NEXT(a, len)) {
      if (a->rta_type == IFLA_IFNAME) {
        names.emplace_back(static_cast<const char*>(RTA_DATA(a)));
        break;
      }
    }
    return false;
  }));
  return names;
}

absl::Status RtNetlink::AddAddress(int ifindex, uint32_t addr, int prefix_len) {
  MessageBuilder m(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefix_len);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = static_cast<uint32_t>(ifindex);
  m.PutFixed(ifa);
  uint32_t net = htonl(addr);
  m.PutAttr(IFA_LOCAL, &net, sizeof(net));
  m.PutAttr(IFA_ADDRESS, &net, sizeof(net));
  return Transact(m.Bytes(), Cat("add address to link ", ifindex));
}

absl::Status RtNetlink::AddDefaultRoute(int ifindex, uint32_t gateway) {
  MessageBuilder m(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = RTPROT_BOOT;
  rt.rtm_scope = RT_SCOPE_UNIVERSE;
  rt.rtm_type = RTN_UNICAST;
  m.PutFixed(rt);
  uint32_t gw = htonl(gateway);
  m.PutAttr(RTA_GATEWAY, &gw, sizeof(gw));
  m.PutU32(RTA_OIF, static_cast<uint32_t>(ifindex));
  return Transact(m.Bytes(), Cat("add default route via link ", ifindex));
}

}  // namespace sandboxlet::network
