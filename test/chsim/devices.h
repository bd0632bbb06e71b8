// The host resources a simulated VM holds, opened the way CH opens them so that the runtime
// meets the same failures: disk images (with CH's OFD locks, v46+), taps via /dev/net/tun in the
// current network namespace, the vsock proxy socket, and serial/console outputs.
// Thread-safe: no — used from the simulator's single thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/base/fd.h"

namespace sandboxlet::chsim {

// Opens a disk image read-write (or read-only) and takes a whole-file OFD lock: a write lock for
// a writable disk, a read lock for a read-only one. A conflicting lock fails like CH's
// LockingError.
absl::StatusOr<UniqueFd> OpenDisk(const std::string& path, bool readonly);

// "Qcow2" if the image starts with the QCOW magic, "Vhdx" for VHDX, else "Raw" (v51+).
std::string DetectImageType(int fd);

// Opens `queue_pairs` queues of the tap `name` (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, plus
// IFF_MULTI_QUEUE when more than one) and sets it up. At boot a missing named tap is created, as
// TUNSETIFF does; with `must_exist` (restore) a missing tap is an error. An empty name lets the
// kernel pick "vmtap%d"; `*actual_name` receives the name.
absl::StatusOr<std::vector<UniqueFd>> OpenTap(const std::string& name, int queue_pairs,
                                              bool must_exist, std::string* actual_name);

// Binds and listens on a Unix socket; an existing path fails with EADDRINUSE.
absl::StatusOr<UniqueFd> BindUnixSocket(const std::string& path);

// Where guest console output goes: Off/Null discard, Tty → stdout, File → the file (truncated),
// Pty → a new pseudo-terminal (its path in `*pty_path`), Socket → a listening Unix socket.
struct ConsoleSink {
  UniqueFd fd;        // where output is written, invalid = discard
  UniqueFd listener;  // Socket mode
  std::string pty_path;
};
absl::StatusOr<ConsoleSink> OpenConsole(const std::string& mode, const std::string& file,
                                        const std::string& socket);

}  // namespace sandboxlet::chsim
