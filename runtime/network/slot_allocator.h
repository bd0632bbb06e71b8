// SlotAllocator hands each sandbox a numbered slot of a host CIDR: a /31 pair of addresses for the
// veth between the host and the sandbox's network namespace. The host end is the pair's first
// address, the netns end the second; the netns end doubles as the sandbox's host-routable "slot
// address" (the host reaches it over the connected /31 route and the netns DNATs it to the guest).
// Assignments are persisted in one JSON file replaced atomically (rename) before Acquire returns,
// so a restarted agent never hands out a slot that a live sandbox still holds. The file records
// the kernel boot id: after a reboot no veth or netns survives, so older state is ignored, and for
// the same reason it is not fsynced (see ReplaceFile in the .cpp).
// Thread-safe: every method takes mu_.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet::network {

// An IPv4 network in host byte order, e.g. 10.200.0.0/16.
struct Ipv4Cidr {
  uint32_t base = 0;  // network address (host bits zero)
  int prefix_len = 0;

  // Parses "a.b.c.d/n"; host bits must be zero.
  static absl::StatusOr<Ipv4Cidr> Parse(const std::string& text);
  std::string ToString() const;
  uint64_t Size() const { return uint64_t{1} << (32 - prefix_len); }
};

// "10.0.0.1" ↔ host-order integer.
absl::StatusOr<uint32_t> ParseIpv4(const std::string& text);
std::string FormatIpv4(uint32_t addr);

struct Slot {
  std::string id;        // owner (the sandbox id passed to Acquire)
  uint32_t index = 0;    // 0 .. Capacity()-1
  uint32_t host_ip = 0;  // host end of the veth /31
  uint32_t slot_ip = 0;  // netns end of the veth /31 = host-routable address of the sandbox
};

class SlotAllocator {
 public:
  // Slots of `cidr` (prefix length 1..31), persisted in `state_file` (its directory is created).
  // Loads existing assignments; a state file written for another CIDR is an error, because its
  // slot numbers would map to different addresses.
  static absl::StatusOr<std::unique_ptr<SlotAllocator>> Open(const std::string& cidr,
                                                             const std::string& state_file);

  // Returns `id`'s slot, assigning the lowest free one if it has none (idempotent). The
  // assignment is durable when this returns. ResourceExhausted when every slot is taken.
  absl::StatusOr<Slot> Acquire(const std::string& id);
  // Frees `id`'s slot (durably). Releasing an id without a slot is OK.
  absl::Status Release(const std::string& id);
  // Releases several ids with one durable write (reclaim of hundreds of leftovers).
  absl::Status ReleaseMany(const std::vector<std::string>& ids);
  // NotFound if `id` holds no slot.
  absl::StatusOr<Slot> Lookup(const std::string& id) const;
  // The id holding slot `index`, NotFound if free.
  absl::StatusOr<std::string> OwnerOf(uint32_t index) const;
  // All assignments, ordered by slot index.
  std::vector<Slot> List() const;

  uint32_t Capacity() const { return capacity_; }
  const Ipv4Cidr& cidr() const { return cidr_; }
  // Addresses of slot `index` (no ownership check).
  Slot Describe(uint32_t index) const;

 private:
  SlotAllocator(Ipv4Cidr cidr, std::string state_file);
  absl::Status Load();
  absl::Status SaveLocked() const;

  const Ipv4Cidr cidr_;
  const uint32_t capacity_;
  const std::string state_file_;
  const std::string boot_id_;
  mutable std::mutex mu_;
  std::map<std::string, uint32_t> by_id_;     // guarded by mu_
  std::map<uint32_t, std::string> by_index_;  // guarded by mu_
};

}  // namespace sandboxlet::network
