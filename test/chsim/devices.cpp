#include "test/chsim/devices.h"

#include <fcntl.h>
#include <net/if.h>
// after net/if.h, which must not meet linux/if.h
#include <linux/if_tun.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/strings.h"
#include "test/chsim/chain.h"

namespace sandboxlet::chsim {

absl::StatusOr<UniqueFd> OpenDisk(const std::string& path, bool readonly) {
  UniqueFd fd(::open(path.c_str(), (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!fd.valid()) {
    return OsChain(errno, {Cat("Failed to open disk image \"", path, "\"")});
  }
  struct flock fl {};
  fl.l_type = readonly ? F_RDLCK : F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd.get(), F_OFD_SETLK, &fl) != 0) {
    int err = errno;
    if (err == EAGAIN || err == EACCES) {
      return ChainError(
          {Cat("Failed to lock disk image \"", path, "\""),
           Cat("The file is already locked (", readonly ? "read" : "write", " lock requested)"),
           OsError(err)});
    }
    return OsChain(err, {Cat("Failed to lock disk image \"", path, "\"")});
  }
  return fd;
}

std::string DetectImageType(int fd) {
  unsigned char magic[8] = {};
  ssize_t n = ::pread(fd, magic, sizeof(magic), 0);
  if (n >= 4 && std::memcmp(magic, "QFI\xfb", 4) == 0) return "Qcow2";
  if (n >= 8 && std::memcmp(magic, "vhdxfile", 8) == 0) return "Vhdx";
  return "Raw";
}

absl::StatusOr<std::vector<UniqueFd>> OpenTap(const std::string& name, int queue_pairs,
                                              bool must_exist, std::string* actual_name) {
  const std::string what = Cat("Failed to open tap \"", name.empty() ? "vmtap%d" : name, "\"");
  if (name.size() >= IFNAMSIZ) {
    return ChainError({what, Cat("interface name longer than ", IFNAMSIZ - 1, " bytes")});
  }
  if (must_exist && !name.empty() && ::if_nametoindex(name.c_str()) == 0) {
    return OsChain(ENODEV,
                   {what, Cat("tap \"", name, "\" does not exist in this network namespace")});
  }
  std::vector<UniqueFd> fds;
  std::string ifname = name.empty() ? "vmtap%d" : name;
  for (int q = 0; q < std::max(queue_pairs, 1); ++q) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) return OsChain(errno, {what, "Failed to open /dev/net/tun"});
    struct ifreq ifr {};
    std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (queue_pairs > 1 ? IFF_MULTI_QUEUE : 0);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
      return OsChain(errno, {what, "TUNSETIFF failed"});
    }
    ifname = ifr.ifr_name;
    fds.push_back(std::move(fd));
  }
  // CH brings the tap up once it is open.
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (!sock.valid() || ::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) {
    return OsChain(errno, {what, "SIOCGIFFLAGS failed"});
  }
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) {
    return OsChain(errno, {what, "SIOCSIFFLAGS failed"});
  }
  *actual_name = ifname;
  return fds;
}

absl::StatusOr<UniqueFd> BindUnixSocket(const std::string& path) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return ChainError({Cat("Error binding to UNIX socket \"", path, "\""), "path too long"});
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return OsChain(errno, {"Error creating UNIX socket"});
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd.get(), 128) != 0) {
    return OsChain(errno, {Cat("Error binding to UNIX socket \"", path, "\"")});
  }
  return fd;
}

absl::StatusOr<ConsoleSink> OpenConsole(const std::string& mode, const std::string& file,
                                        const std::string& socket) {
  ConsoleSink sink;
  if (mode == "Off" || mode == "Null") return sink;
  if (mode == "Tty") {
    sink.fd.Reset(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0));
    return sink;
  }
  if (mode == "File") {
    if (file.empty()) return ChainError({"Error creating console", "File mode needs a file path"});
    sink.fd.Reset(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!sink.fd.valid()) return OsChain(errno, {Cat("Error opening console file \"", file, "\"")});
    return sink;
  }
  if (mode == "Pty") {
    sink.fd.Reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!sink.fd.valid() || ::grantpt(sink.fd.get()) != 0 || ::unlockpt(sink.fd.get()) != 0) {
      return OsChain(errno, {"Error creating console", "Failed to create a pty"});
    }
    // Nobody may read the pty: output must never block the VMM.
    ::fcntl(sink.fd.get(), F_SETFL, ::fcntl(sink.fd.get(), F_GETFL) | O_NONBLOCK);
    sink.pty_path = ::ptsname(sink.fd.get());
    return sink;
  }
  if (mode == "Socket") {
    if (socket.empty())
      return ChainError({"Error creating console", "Socket mode needs a socket path"});
    absl::StatusOr<UniqueFd> listener = BindUnixSocket(socket);
    if (!listener.ok()) return Wrap(listener.status(), "Error creating console");
    sink.listener = *std::move(listener);
    return sink;
  }
  return ChainError({"Error creating console", Cat("unsupported mode ", mode)});
}

}  // namespace sandboxlet::chsim
