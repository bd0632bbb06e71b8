#include "runtime/volume/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBuffer = 1 << 20;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

void PutLe64(unsigned char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

nlohmann::json KeyOf(const struct stat& st) {
  return {{"dev", static_cast<uint64_t>(st.st_dev)},
          {"ino", static_cast<uint64_t>(st.st_ino)},
          {"size", static_cast<int64_t>(st.st_size)},
          {"mtime_ns", Nanos(st.st_mtim)},
          {"ctime_ns", Nanos(st.st_ctim)}};
}

}  // namespace

absl::StatusOr<std::string> ComputeBaseDigest(const std::string& path) {
  std::string what = Cat("digest of base image ", path);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, what);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, what);
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(Cat(what, ": not a regular file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError(Cat(what, ": sha256 init failed"));
  }
  unsigned char le[8];
  PutLe64(le, size);
  EVP_DigestUpdate(ctx.get(), le, sizeof(le));

  std::vector<char> buf(kBuffer);
  uint64_t off = 0;
  while (off < size) {
    // Visit data extents only, widened to whole 4 KiB blocks so the result does not depend on
    // the filesystem's allocation granularity.
    uint64_t begin = off, end = size;
    off_t data = ::lseek(fd.get(), static_cast<off_t>(off), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;
    if (data >= 0) {
      off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
      begin = static_cast<uint64_t>(data) / kBlock * kBlock;
      if (begin < off) begin = off;
      if (hole >= 0)
        end =
            std::min<uint64_t>(size, (static_cast<uint64_t>(hole) + kBlock - 1) / kBlock * kBlock);
    }
    for (uint64_t pos = begin; pos < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kBuffer, end - pos));
      ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(pos));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, Cat(what, ": read at offset ", pos));
      }
      if (n == 0) {
        end = pos;
        break;
      }
      for (size_t i = 0; i < static_cast<size_t>(n); i += kBlock) {
        size_t len = std::min<size_t>(kBlock, static_cast<size_t>(n) - i);
        if (AllZero(buf.data() + i, len)) continue;
        PutLe64(le, pos + i);
        EVP_DigestUpdate(ctx.get(), le, sizeof(le));
        EVP_DigestUpdate(ctx.get(), buf.data() + i, len);
      }
      pos += static_cast<uint64_t>(n);
    }
    if (end <= off) break;
    off = end;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &md_len) != 1) {
    return absl::InternalError(Cat(what, ": sha256 final failed"));
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned int i = 0; i < md_len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

void BaseDigests::LoadLocked() {
  if (loaded_) return;
  loaded_ = true;
  cache_ = nlohmann::json::object();
  auto data = ReadFile(cache_path_);
  if (!data.ok()) return;  // first use
  auto parsed = nlohmann::json::parse(*data, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) {
    cache_ = std::move(parsed);
  } else {
    log::Warn("ignoring unreadable base digest cache", {{"path", cache_path_}});
  }
}

absl::StatusOr<std::string> BaseDigests::Of(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("base image ", path));
  nlohmann::json key = KeyOf(st);
  {
    std::lock_guard<std::mutex> lock(mu_);
    LoadLocked();
    auto it = cache_.find(path);
    if (it != cache_.end() && it->is_object()) {
      nlohmann::json entry = *it;
      auto digest = entry.find("digest");
      if (digest != entry.end() && digest->is_string()) {
        std::string value = digest->get<std::string>();
        entry.erase("digest");
        if (entry == key) return value;
      }
    }
  }
  SBL_ASSIGN_OR_RETURN(std::string digest, ComputeBaseDigest(path));
  // The image must not have changed while it was hashed; if it did, do not cache.
  struct stat after;
  if (::stat(path.c_str(), &after) != 0 || KeyOf(after) != key) {
    return absl::AbortedError(Cat("base image ", path, " changed while its digest was computed"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json entry = key;
  entry["digest"] = digest;
  cache_[path] = entry;
  absl::Status st2 = WriteFileAtomic(cache_path_, cache_.dump(1));
  if (!st2.ok()) {
    log::Warn("cannot store base digest cache", {{"path", cache_path_}, {"error", st2.message()}});
  }
  return digest;
}

}  // namespace sandboxlet
