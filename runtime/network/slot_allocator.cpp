#include "runtime/network/slot_allocator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::network {

absl::StatusOr<uint32_t> ParseIpv4(const std::string& text) {
  in_addr addr{};
  if (::inet_pton(AF_INET, text.c_str(), &addr) != 1) {
    return absl::InvalidArgumentError(Cat("invalid IPv4 address \"", text, "\""));
  }
  return ntohl(addr.s_addr);
}

std::string FormatIpv4(uint32_t addr) {
  return Cat((addr >> 24) & 0xff, ".", (addr >> 16) & 0xff, ".", (addr >> 8) & 0xff, ".",
             addr & 0xff);
}

namespace {

// The kernel's id of the current boot: slot state from another boot describes veths and netns
// that no longer exist.
std::string CurrentBootId() {
  auto id = ReadFile("/proc/sys/kernel/random/boot_id");
  return id.ok() ? std::string(Trim(*id)) : "";
}

// Replaces `path` atomically (temp file + rename) WITHOUT fsync. The slots describe kernel objects
// (veths, netns) that do not outlive the boot, so the file only has to survive a crash of the
// agent, which the page cache guarantees; after a power loss its content is moot (Load ignores
// state from an earlier boot). Skipping two fsyncs keeps Acquire/Release well under a
// millisecond instead of ~10 ms each on a virtual disk.
absl::Status ReplaceFile(const std::string& path, std::string_view data) {
  std::string tmp = Cat(path, ".tmp-", ::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("create ", tmp));
  while (!data.empty()) {
    ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoStatus(err, Cat("write ", tmp));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, Cat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Ipv4Cidr> Ipv4Cidr::Parse(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos) {
    return absl::InvalidArgumentError(Cat("CIDR \"", text, "\": missing /prefix-length"));
  }
  SBL_ASSIGN_OR_RETURN(uint32_t base, ParseIpv4(text.substr(0, slash)));
  std::string len_text = text.substr(slash + 1);
  int len = -1;
  auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (ec != std::errc() || ptr != len_text.data() + len_text.size() || len < 0 || len > 32) {
    return absl::InvalidArgumentError(Cat("CIDR \"", text, "\": invalid prefix length"));
  }
  uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
  if ((base & ~mask) != 0) {
    return absl::InvalidArgumentError(Cat("CIDR \"", text, "\": host bits set (network is ",
                                          FormatIpv4(base & mask), "/", len, ")"));
  }
  return Ipv4Cidr{base, len};
}

std::string Ipv4Cidr::ToString() const { return Cat(FormatIpv4(base), "/", prefix_len); }

SlotAllocator::SlotAllocator(Ipv4Cidr cidr, std::string state_file)
    : cidr_(cidr),
      capacity_(static_cast<uint32_t>(cidr.Size() / 2)),
      state_file_(std::move(state_file)),
      boot_id_(CurrentBootId()) {}

absl::StatusOr<std::unique_ptr<SlotAllocator>> SlotAllocator::Open(const std::string& cidr,
                                                                   const std::string& state_file) {
  SBL_ASSIGN_OR_RETURN(Ipv4Cidr parsed, Ipv4Cidr::Parse(cidr));
  if (parsed.prefix_len < 1 || parsed.prefix_len > 31) {
    return absl::InvalidArgumentError(Cat("slot CIDR ", cidr,
                                          ": too small or too large for sandbox slots (each slot "
                                          "needs a /31; prefix length must be 1..31)"));
  }
  std::unique_ptr<SlotAllocator> alloc(new SlotAllocator(parsed, state_file));
  SBL_RETURN_IF_ERROR(MakeDirs(Dirname(state_file), 0700));
  SBL_RETURN_IF_ERROR(alloc->Load());
  return alloc;
}

Slot SlotAllocator::Describe(uint32_t index) const {
  Slot s;
  s.index = index;
  s.host_ip = cidr_.base + 2 * index;
  s.slot_ip = s.host_ip + 1;
  return s;
}

absl::Status SlotAllocator::Load() {
  if (!PathExists(state_file_)) return absl::OkStatus();
  SBL_ASSIGN_OR_RETURN(std::string text, ReadFile(state_file_));
  std::string where = Cat("slot state ", state_file_);
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    std::string boot_id = j.value("boot_id", "");
    if (!boot_id.empty() && boot_id != boot_id_) {
      log::Info("network slot state is from an earlier boot; starting with every slot free",
                {{"file", state_file_}});
      return absl::OkStatus();
    }
    std::string cidr = j.at("cidr").get<std::string>();
    if (cidr != cidr_.ToString()) {
      return absl::FailedPreconditionError(
          Cat(where, ": written for CIDR ", cidr, ", configured CIDR is ", cidr_.ToString(),
              "; release every sandbox network (or move the file away) before changing it"));
    }
    for (const auto& [id, index_json] : j.at("slots").items()) {
      uint32_t index = index_json.get<uint32_t>();
      if (index >= capacity_ || by_index_.count(index) != 0 || id.empty()) {
        return absl::DataLossError(
            Cat(where, ": invalid or duplicate slot ", index, " for \"", id, "\""));
      }
      by_id_[id] = index;
      by_index_[index] = id;
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(Cat(where, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SlotAllocator::SaveLocked() const {
  nlohmann::json slots = nlohmann::json::object();
  for (const auto& [id, index] : by_id_) slots[id] = index;
  nlohmann::json j = {
      {"version", 1}, {"boot_id", boot_id_}, {"cidr", cidr_.ToString()}, {"slots", slots}};
  return Annotate(ReplaceFile(state_file_, j.dump()), "save slot state");
}

absl::StatusOr<Slot> SlotAllocator::Acquire(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("acquire slot: empty sandbox id");
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = by_id_.find(id); it != by_id_.end()) {
    Slot s = Describe(it->second);
    s.id = id;
    return s;
  }
  // Lowest free index: walk the ordered map until a gap.
  uint32_t index = 0;
  for (const auto& [used, owner] : by_index_) {
    if (used != index) break;
    ++index;
  }
  if (index >= capacity_) {
    return absl::ResourceExhaustedError(Cat("sandbox ", id, ": no free network slot in ",
                                            cidr_.ToString(), " (", capacity_,
                                            " slots, all in use)"));
  }
  by_id_[id] = index;
  by_index_[index] = id;
  if (absl::Status st = SaveLocked(); !st.ok()) {
    by_id_.erase(id);
    by_index_.erase(index);
    return Annotate(st, Cat("sandbox ", id));
  }
  Slot s = Describe(index);
  s.id = id;
  return s;
}

absl::Status SlotAllocator::Release(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return absl::OkStatus();
  uint32_t index = it->second;
  by_id_.erase(it);
  by_index_.erase(index);
  if (absl::Status st = SaveLocked(); !st.ok()) {
    by_id_[id] = index;
    by_index_[index] = id;
    return Annotate(st, Cat("sandbox ", id, ": release slot ", index));
  }
  return absl::OkStatus();
}

absl::Status SlotAllocator::ReleaseMany(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, uint32_t> removed;
  for (const std::string& id : ids) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) continue;
    removed[id] = it->second;
    by_index_.erase(it->second);
    by_id_.erase(it);
  }
  if (removed.empty()) return absl::OkStatus();
  if (absl::Status st = SaveLocked(); !st.ok()) {
    for (const auto& [id, index] : removed) {
      by_id_[id] = index;
      by_index_[index] = id;
    }
    return Annotate(st, Cat("release ", removed.size(), " network slots"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Slot> SlotAllocator::Lookup(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return absl::NotFoundError(Cat("sandbox ", id, ": no network slot"));
  Slot s = Describe(it->second);
  s.id = id;
  return s;
}

absl::StatusOr<std::string> SlotAllocator::OwnerOf(uint32_t index) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_index_.find(index);
  if (it == by_index_.end()) return absl::NotFoundError(Cat("network slot ", index, " is free"));
  return it->second;
}

std::vector<Slot> SlotAllocator::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Slot> out;
  out.reserve(by_index_.size());
  for (const auto& [index, id] : by_index_) {
    Slot s = Describe(index);
    s.id = id;
    out.push_back(s);
  }
  return out;
}

}  // namespace sandboxlet::network
