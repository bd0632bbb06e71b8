#include "test/chsim/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"
#include "test/chsim/chain.h"

namespace sandboxlet::chsim {
namespace {

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

absl::Status WriteAllAt(int fd, const char* data, size_t n, uint64_t offset,
                        const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return OsChain(errno, {Cat("Failed to write \"", path, "\"")});
    data += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> CreateNew(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return OsChain(errno, {Cat("Failed to create \"", path, "\"")});
  return fd;
}

absl::Status WriteJsonFile(const std::string& path, const Json& j) {
  SBL_ASSIGN_OR_RETURN(UniqueFd fd, CreateNew(path));
  std::string text = j.dump();
  return WriteAllAt(fd.get(), text.data(), text.size(), 0, path);
}

absl::Status EnospcAfterPartialWrite(const std::string& path) {
  return OsChain(ENOSPC, {Cat("Failed to write \"", path, "\"")});
}

absl::Status WriteMemoryRanges(const std::string& path, const GuestMemory& mem, bool sparse,
                               bool inject_enospc) {
  SBL_ASSIGN_OR_RETURN(UniqueFd fd, CreateNew(path));
  std::vector<uint64_t> pages = mem.TouchedPages();
  std::string page(GuestMemory::kPageSize, '\0');
  if (sparse) {
    if (::ftruncate(fd.get(), static_cast<off_t>(mem.size())) != 0) {
      return OsChain(errno, {Cat("Failed to size \"", path, "\"")});
    }
    size_t limit = inject_enospc ? pages.size() / 2 : pages.size();
    for (size_t i = 0; i < limit; ++i) {
      mem.FillPage(pages[i], page.data());
      SBL_RETURN_IF_ERROR(WriteAllAt(fd.get(), page.data(), page.size(), pages[i], path));
    }
    if (inject_enospc) return EnospcAfterPartialWrite(path);
    return absl::OkStatus();
  }
  // Dense: every byte of guest RAM is written, touched pages in place.
  constexpr uint64_t kChunk = 1 << 20;
  std::string chunk;
  size_t next_page = 0;
  const uint64_t limit = inject_enospc ? mem.size() / 2 : mem.size();
  for (uint64_t off = 0; off < limit; off += kChunk) {
    uint64_t len = std::min(kChunk, limit - off);
    chunk.assign(len, '\0');
    while (next_page < pages.size() && pages[next_page] < off + len) {
      if (pages[next_page] + GuestMemory::kPageSize <= off + len) {
        mem.FillPage(pages[next_page], chunk.data() + (pages[next_page] - off));
      }
      ++next_page;
    }
    SBL_RETURN_IF_ERROR(WriteAllAt(fd.get(), chunk.data(), len, off, path));
  }
  if (inject_enospc) return EnospcAfterPartialWrite(path);
  return absl::OkStatus();
}

absl::StatusOr<Json> ReadJsonFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return ChainError({Cat("Failed to read \"", path, "\""), std::string(text.status().message())});
  }
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return ChainError({Cat("Failed to parse \"", path, "\""), "invalid JSON object"});
  }
  return j;
}

absl::Status VerifyMemoryRanges(const std::string& path, const GuestMemory& mem) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return OsChain(errno, {Cat("Failed to open \"", path, "\"")});
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return OsChain(errno, {Cat("Failed to stat \"", path, "\"")});
  if (static_cast<uint64_t>(st.st_size) != mem.size()) {
    return ChainError(
        {Cat("Invalid memory ranges file \"", path, "\""),
         Cat("size ", st.st_size, " does not match guest RAM of ", mem.size(), " bytes")});
  }
  std::string want(GuestMemory::kPageSize, '\0');
  std::string got(GuestMemory::kPageSize, '\0');
  for (uint64_t offset : mem.TouchedPages()) {
    mem.FillPage(offset, want.data());
    ssize_t n = ::pread(fd.get(), got.data(), got.size(), static_cast<off_t>(offset));
    if (n != static_cast<ssize_t>(got.size()) || got != want) {
      return ChainError({Cat("Invalid memory ranges file \"", path, "\""),
                         Cat("guest page at offset ", offset, " does not match the snapshot")});
    }
  }
  return absl::OkStatus();
}

}  // namespace

GuestMemory GuestMemory::Fresh(uint64_t size) {
  static std::mt19937_64 rng(std::random_device{}());
  return GuestMemory(size, rng());
}

std::vector<uint64_t> GuestMemory::TouchedPages() const {
  const uint64_t total = size_ / kPageSize;
  const uint64_t count = std::min(total, kMaxTouchedPages);
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < count; ++i) out.push_back(i * total / count * kPageSize);
  return out;
}

void GuestMemory::FillPage(uint64_t offset, char* page) const {
  uint64_t x = seed_ ^ offset;
  for (uint64_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = SplitMix(x);
    std::memcpy(page + i, &v, 8);
  }
}

Json GuestMemory::ToJson() const {
  Json j;
  j["ranges"] = Json::array({{{"gpa", 0}, {"length", size_}}});
  j["page_size"] = kPageSize;
  j["touched_pages"] = TouchedPages().size();
  j["content_seed"] = seed_;
  return j;
}

absl::StatusOr<GuestMemory> GuestMemory::FromJson(const Json& j) {
  const Json* ranges = j.contains("ranges") ? &j["ranges"] : nullptr;
  if (ranges == nullptr || !ranges->is_array() || ranges->size() != 1 ||
      !(*ranges)[0].contains("length") || !(*ranges)[0]["length"].is_number_unsigned() ||
      !j.contains("content_seed") || !j["content_seed"].is_number_unsigned()) {
    return ChainError({"Invalid memory-manager state", "missing ranges or content_seed"});
  }
  return GuestMemory((*ranges)[0]["length"].get<uint64_t>(), j["content_seed"].get<uint64_t>());
}

absl::StatusOr<std::string> DirFromUrl(const std::string& url) {
  if (!StartsWith(url, "file://")) {
    return ChainError({Cat("Invalid snapshot URL \"", url, "\""), "only file:// is supported"});
  }
  std::string dir = url.substr(7);
  if (dir.empty() || dir[0] != '/') {
    return ChainError({Cat("Invalid snapshot URL \"", url, "\""), "path must be absolute"});
  }
  return dir;
}

absl::Status WriteSnapshot(const SnapshotWrite& w) {
  DIR* d = ::opendir(w.dir.c_str());
  if (d == nullptr)
    return OsChain(errno, {Cat("Failed to open snapshot directory \"", w.dir, "\"")});
  bool empty = true;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") empty = false;
  }
  ::closedir(d);
  if (!empty) {
    return ChainError({Cat("Snapshot directory \"", w.dir, "\" is not empty")});
  }
  // config.json, then guest RAM, then state.json: a failure midway (ENOSPC) leaves the first two.
  SBL_RETURN_IF_ERROR(WriteJsonFile(w.dir + "/config.json", w.config));
  SBL_RETURN_IF_ERROR(
      WriteMemoryRanges(w.dir + "/memory-ranges", w.memory, w.sparse, w.inject_enospc));
  return WriteJsonFile(w.dir + "/state.json", w.state);
}

absl::StatusOr<SnapshotRead> ReadSnapshot(const std::string& dir, const ChVersion& version) {
  SnapshotRead r;
  SBL_ASSIGN_OR_RETURN(r.config, ReadJsonFile(dir + "/config.json"));
  SBL_ASSIGN_OR_RETURN(r.state, ReadJsonFile(dir + "/state.json"));
  const Json& data = r.state.contains("snapshot_data") ? r.state["snapshot_data"] : Json();
  if (!data.is_object() || !data.contains("vmm_version") || !r.state.contains("snapshots") ||
      !r.state["snapshots"].contains("memory-manager")) {
    return ChainError({Cat("Invalid snapshot state \"", dir, "/state.json\""),
                       "missing snapshots or snapshot_data"});
  }
  if (data["vmm_version"] != version.CrateVersion()) {
    return ChainError({Cat("Invalid snapshot state \"", dir, "/state.json\""),
                       Cat("snapshot taken by Cloud Hypervisor ", data["vmm_version"].dump(),
                           ", cannot restore with ", version.CrateVersion())});
  }
  SBL_ASSIGN_OR_RETURN(r.memory, GuestMemory::FromJson(r.state["snapshots"]["memory-manager"]));
  SBL_RETURN_IF_ERROR(VerifyMemoryRanges(dir + "/memory-ranges", r.memory));
  return r;
}

}  // namespace sandboxlet::chsim
