#include "runtime/snapshot/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"
#include "runtime/snapshot/dir_size.h"

namespace sandboxlet {

namespace {

constexpr std::string_view kTmpPrefix = ".tmp-";
constexpr std::string_view kTrashPrefix = ".trash-";
// Keeps temporary names within NAME_MAX whatever the id's length; the random suffix makes them
// unique.
constexpr size_t kIdInTempName = 100;

std::string Context(std::string_view id) { return Cat("snapshot ", id); }

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t v = rng();
  std::string out(12, '0');
  for (char& c : out) {
    c = kHex[v & 15];
    v >>= 4;
  }
  return out;
}

bool IsRegularAt(const std::string& dir, const char* file) {
  struct stat st;
  std::string path = Cat(dir, "/", file);
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The files a snapshot directory lacks to be restorable; empty when complete.
std::vector<std::string> MissingFiles(const std::string& dir) {
  std::vector<std::string> missing;
  for (const char* f :
       {kSnapshotConfigFile, kSnapshotStateFile, kSnapshotMemoryRangesFile, kSnapshotMetaFile}) {
    if (!IsRegularAt(dir, f)) missing.emplace_back(f);
  }
  if (!IsRegularAt(dir, kSnapshotRootfsFile) && !IsRegularAt(dir, kSnapshotCowFile)) {
    missing.push_back(Cat(kSnapshotRootfsFile, " or ", kSnapshotCowFile));
  }
  return missing;
}

bool IsComplete(const std::string& dir) {
  struct stat st;
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && MissingFiles(dir).empty();
}

// fsyncs every regular file and directory under the open directory `dirfd` (not `dirfd` itself).
absl::Status FsyncContents(int dirfd, const std::string& shown) {
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return ErrnoStatus(errno, Cat("dup ", shown));
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return ErrnoStatus(errno, Cat("opendir ", shown));
  }
  absl::Status result;
  while (struct dirent* ent = ::readdir(d)) {
    std::string_view name = ent->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(dirfd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      result = ErrnoStatus(errno, Cat("stat ", shown, "/", name));
      break;
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) continue;
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
    UniqueFd fd(::openat(dirfd, ent->d_name, flags));
    if (!fd.valid()) {
      result = ErrnoStatus(errno, Cat("open ", shown, "/", name));
      break;
    }
    if (S_ISDIR(st.st_mode)) {
      result = FsyncContents(fd.get(), Cat(shown, "/", name));
      if (!result.ok()) break;
    }
    if (::fsync(fd.get()) != 0) {
      result = ErrnoStatus(errno, Cat("fsync ", shown, "/", name));
      break;
    }
  }
  ::closedir(d);
  return result;
}

// Copies `src` to a new file `dst` keeping holes: a reflink when the file system can, else the
// data extents (SEEK_DATA/SEEK_HOLE) through copy_file_range.
absl::Status CopySparse(const std::string& src, const std::string& dst) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return ErrnoStatus(errno, Cat("open ", src));
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", src));
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.valid()) return ErrnoStatus(errno, Cat("create ", dst));
  if (::ioctl(out.get(), FICLONE, in.get()) == 0) return absl::OkStatus();
  auto fail = [&](int err, std::string_view what) {
    ::unlink(dst.c_str());
    return ErrnoStatus(err, Cat(what, " ", src, " to ", dst));
  };
  bool use_copy_file_range = true;
  constexpr size_t kBufSize = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kBufSize]);
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      return fail(errno, "seek data in");
    }
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) return fail(errno, "seek hole in");
    off_t off_in = data, off_out = data;
    while (off_in < hole) {
      size_t want = static_cast<size_t>(hole - off_in);
      ssize_t n = -1;
      if (use_copy_file_range) {
        n = ::copy_file_range(in.get(), &off_in, out.get(), &off_out, want, 0);
        if (n < 0 &&
            (errno == EXDEV || errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) {
          use_copy_file_range = false;  // e.g. between different file-system types
          continue;
        }
      } else {
        // Plain read/write through a buffer.
        n = ::pread(in.get(), buf.get(), std::min(want, kBufSize), off_in);
        if (n > 0) {
          for (ssize_t done = 0; done < n;) {
            ssize_t w = ::pwrite(out.get(), buf.get() + done, static_cast<size_t>(n - done),
                                 off_out + done);
            if (w < 0) {
              if (errno == EINTR) continue;
              return fail(errno, "write copy of");
            }
            done += w;
          }
          off_in += n;
          off_out += n;
        }
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(errno, "copy");
      }
      if (n == 0) break;  // file shrank under us
    }
    pos = hole;
  }
  if (::ftruncate(out.get(), st.st_size) != 0) return fail(errno, "size copy of");
  return absl::OkStatus();
}

// Puts `src` at `dst` without copying when possible (hard link); replaces an existing `dst`.
absl::Status LinkOrCopy(const std::string& src, const std::string& dst) {
  if (::unlink(dst.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, Cat("remove stale ", dst));
  }
  if (::link(src.c_str(), dst.c_str()) == 0) return absl::OkStatus();
  int err = errno;
  if (err != EXDEV && err != EPERM && err != EMLINK && err != EOPNOTSUPP) {
    return ErrnoStatus(err, Cat("link ", src, " to ", dst));
  }
  return CopySparse(src, dst);
}

// Replaces string values of a CH config that equal a key of `rewrites`; counts replacements.
int RewriteStrings(nlohmann::ordered_json& j, const std::map<std::string, std::string>& rewrites) {
  int n = 0;
  if (j.is_string()) {
    auto it = rewrites.find(j.get_ref<const std::string&>());
    if (it != rewrites.end() && it->second != it->first) {
      j = it->second;
      ++n;
    }
  } else if (j.is_structured()) {
    for (auto& v : j) n += RewriteStrings(v, rewrites);
  }
  return n;
}

}  // namespace

// ---- PendingSnapshot ----

PendingSnapshot::PendingSnapshot(PendingSnapshot&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      id_(std::move(other.id_)),
      tmp_name_(std::move(other.tmp_name_)),
      dir_(std::move(other.dir_)) {}

PendingSnapshot& PendingSnapshot::operator=(PendingSnapshot&& other) noexcept {
  if (this != &other) {
    (void)Abort();
    store_ = std::exchange(other.store_, nullptr);
    id_ = std::move(other.id_);
    tmp_name_ = std::move(other.tmp_name_);
    dir_ = std::move(other.dir_);
  }
  return *this;
}

PendingSnapshot::~PendingSnapshot() {
  absl::Status st = Abort();
  if (!st.ok()) {
    log::Warn("abandoned snapshot not removed; RecoverAtStartup will",
              {{"snapshot", id_}, {"error", st.message()}});
  }
}

std::string PendingSnapshot::FilePath(std::string_view file) const { return Cat(dir_, "/", file); }

absl::Status PendingSnapshot::WriteMeta(const RootfsMeta& meta) {
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(Cat(Context(id_), ": pending snapshot is spent"));
  }
  return Annotate(WriteRootfsMeta(FilePath(kSnapshotMetaFile), meta), Context(id_));
}

absl::Status PendingSnapshot::Commit() {
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        Cat(Context(id_), ": pending snapshot already committed or aborted"));
  }
  return store_->CommitPending(*this);
}

absl::Status PendingSnapshot::Abort() {
  if (store_ == nullptr) return absl::OkStatus();
  SnapshotStore* store = std::exchange(store_, nullptr);
  absl::Status st = RemoveAll(dir_);
  store->ForgetPending(tmp_name_);
  return Annotate(st, Cat(Context(id_), ": abort"));
}

// ---- SnapshotStore ----

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(SnapshotStoreOptions options) {
  if (options.base_dir.empty() || options.base_dir.front() != '/') {
    return absl::InvalidArgumentError(
        Cat("snapshot store: base directory \"", options.base_dir, "\" must be an absolute path"));
  }
  while (options.base_dir.size() > 1 && options.base_dir.back() == '/') options.base_dir.pop_back();
  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(options.base_dir, 0700), "snapshot store"));
  return std::unique_ptr<SnapshotStore>(new SnapshotStore(std::move(options)));
}

absl::Status SnapshotStore::ValidateId(std::string_view id) {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(id, "snapshot id"));
  if (id.front() == '.') {
    return absl::InvalidArgumentError(
        Cat("snapshot id \"", id,
            "\": must not start with '.' (reserved for the store's own "
            "temporary directories)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SnapshotStore::Path(std::string_view id) const {
  SBL_RETURN_IF_ERROR(ValidateId(id));
  return Cat(options_.base_dir, "/", id);
}

#define SBL_SNAPSHOT_FILE_PATH(Method, file)                                     \
  absl::StatusOr<std::string> SnapshotStore::Method(std::string_view id) const { \
    SBL_ASSIGN_OR_RETURN(std::string dir, Path(id));                             \
    return Cat(dir, "/", file);                                                  \
  }
SBL_SNAPSHOT_FILE_PATH(ConfigPath, kSnapshotConfigFile)
SBL_SNAPSHOT_FILE_PATH(StatePath, kSnapshotStateFile)
SBL_SNAPSHOT_FILE_PATH(MemoryRangesPath, kSnapshotMemoryRangesFile)
SBL_SNAPSHOT_FILE_PATH(RootfsPath, kSnapshotRootfsFile)
SBL_SNAPSHOT_FILE_PATH(CowPath, kSnapshotCowFile)
SBL_SNAPSHOT_FILE_PATH(MetaPath, kSnapshotMetaFile)
#undef SBL_SNAPSHOT_FILE_PATH

absl::Status SnapshotStore::Step(std::string_view op, std::string_view id,
                                 std::string_view step) const {
  if (!options_.crash_point || options_.crash_point(step)) return absl::OkStatus();
  return absl::AbortedError(
      Cat(Context(id), ": ", op, ": stopped before step \"", step, "\" by the crash_point hook"));
}

void SnapshotStore::ForgetPending(const std::string& tmp_name) {
  std::lock_guard<std::mutex> lock(mu_);
  live_tmp_.erase(tmp_name);
}

absl::StatusOr<PendingSnapshot> SnapshotStore::Begin(std::string_view id) {
  SBL_RETURN_IF_ERROR(ValidateId(id));
  std::string tmpl =
      Cat(options_.base_dir, "/", kTmpPrefix, id.substr(0, kIdInTempName), "-XXXXXX");
  std::lock_guard<std::mutex> lock(mu_);    // so RecoverAtStartup never sees it unregistered
  if (::mkdtemp(tmpl.data()) == nullptr) {  // mode 0700
    return ErrnoStatus(errno, Cat(Context(id), ": create temporary directory ", tmpl));
  }
  std::string name = tmpl.substr(options_.base_dir.size() + 1);
  live_tmp_.insert(name);
  return PendingSnapshot(this, std::string(id), name, std::move(tmpl));
}

absl::Status SnapshotStore::CommitPending(PendingSnapshot& p) {
  const std::string ctx = Context(p.id_);
  std::vector<std::string> missing = MissingFiles(p.dir_);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(Cat(ctx, ": refusing to commit an incomplete snapshot (",
                                             p.dir_, "): missing ", Join(missing, ", ")));
  }
  // A simulated crash leaves everything as it is, for RecoverAtStartup to find.
  auto crashed = [&](absl::Status st) {
    ForgetPending(p.tmp_name_);
    p.store_ = nullptr;
    return st;
  };
#define SBL_COMMIT_STEP(name)                                      \
  do {                                                             \
    absl::Status step_status = Step("commit", p.id_, name);        \
    if (!step_status.ok()) return crashed(std::move(step_status)); \
  } while (0)

  UniqueFd base(::open(options_.base_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!base.valid()) return ErrnoStatus(errno, Cat(ctx, ": open ", options_.base_dir));
  {
    SBL_COMMIT_STEP("fsync-files");
    UniqueFd tmp(::open(p.dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!tmp.valid()) return ErrnoStatus(errno, Cat(ctx, ": open ", p.dir_));
    absl::Status st = FsyncContents(tmp.get(), p.dir_);
    if (!st.ok()) return Annotate(st, ctx);
    SBL_COMMIT_STEP("fsync-tmpdir");
    if (::fsync(tmp.get()) != 0) return ErrnoStatus(errno, Cat(ctx, ": fsync ", p.dir_));
  }

  // Retries cover a concurrent Remove or Commit of the same id between our check and the
  // rename; each rename is atomic either way.
  bool replaced = false;
  for (int attempt = 0;; ++attempt) {
    struct stat st;
    bool exists = ::fstatat(base.get(), p.id_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    int rc;
    if (!exists) {
      SBL_COMMIT_STEP("rename");
      rc =
          ::renameat2(base.get(), p.tmp_name_.c_str(), base.get(), p.id_.c_str(), RENAME_NOREPLACE);
    } else {
      SBL_COMMIT_STEP("exchange");
      rc = ::renameat2(base.get(), p.tmp_name_.c_str(), base.get(), p.id_.c_str(), RENAME_EXCHANGE);
    }
    if (rc == 0) {
      replaced = exists;
      break;
    }
    int err = errno;
    bool raced = (!exists && err == EEXIST) || (exists && err == ENOENT);
    if (raced && attempt < 2) continue;
    if (err == EINVAL) {
      return absl::UnimplementedError(
          Cat(ctx, ": the file system of ", options_.base_dir,
              " does not support atomic rename/exchange (renameat2): ", std::strerror(err)));
    }
    return ErrnoStatus(err, Cat(ctx, ": put ", p.dir_, " in place"));
  }
  SBL_COMMIT_STEP("fsync-base");
  if (::fsync(base.get()) != 0) {
    // The new snapshot is visible but its name may not survive a crash; report it.
    int err = errno;
    ForgetPending(p.tmp_name_);
    p.store_ = nullptr;
    return ErrnoStatus(err, Cat(ctx, ": fsync ", options_.base_dir));
  }
  if (replaced) {
    // The previous snapshot now sits at the temporary name, invisible to readers.
    SBL_COMMIT_STEP("remove-old");
    absl::Status st = RemoveAll(p.dir_);
    if (!st.ok()) {
      log::Warn("previous snapshot not deleted; RecoverAtStartup will",
                {{"snapshot", p.id_}, {"error", st.message()}});
    }
  }
#undef SBL_COMMIT_STEP
  ForgetPending(p.tmp_name_);
  p.store_ = nullptr;
  return absl::OkStatus();
}

absl::StatusOr<bool> SnapshotStore::Exists(std::string_view id) const {
  SBL_ASSIGN_OR_RETURN(std::string dir, Path(id));
  return IsComplete(dir);
}

absl::StatusOr<std::vector<std::string>> SnapshotStore::List() const {
  UniqueFd fd(::open(options_.base_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("list snapshots: open ", options_.base_dir));
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return ErrnoStatus(errno, Cat("list snapshots: opendir ", options_.base_dir));
  fd.Release();
  std::vector<std::string> ids;
  while (struct dirent* ent = ::readdir(d)) {
    if (ent->d_name[0] == '.') continue;  // ".", "..", temporary and trash directories
    if (IsComplete(Cat(options_.base_dir, "/", ent->d_name))) ids.emplace_back(ent->d_name);
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<RootfsMeta> SnapshotStore::ReadMeta(std::string_view id) const {
  SBL_ASSIGN_OR_RETURN(std::string path, MetaPath(id));
  absl::StatusOr<RootfsMeta> meta = ReadRootfsMeta(path);
  if (!meta.ok()) return Annotate(meta.status(), Context(id));
  return meta;
}

absl::StatusOr<int64_t> SnapshotStore::Size(std::string_view id) const {
  SBL_ASSIGN_OR_RETURN(std::string dir, Path(id));
  absl::StatusOr<int64_t> size = DirSize(dir);
  if (!size.ok()) return Annotate(size.status(), Context(id));
  return size;
}

absl::Status SnapshotStore::Remove(std::string_view id) {
  SBL_RETURN_IF_ERROR(ValidateId(id));
  const std::string ctx = Context(id);
  const std::string idstr(id);
  UniqueFd base(::open(options_.base_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!base.valid()) return ErrnoStatus(errno, Cat(ctx, ": open ", options_.base_dir));
  struct stat st;
  if (::fstatat(base.get(), idstr.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus(errno, Cat(ctx, ": stat"));
  }
  std::string trash = Cat(kTrashPrefix, id.substr(0, kIdInTempName), "-", RandomSuffix());
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_tmp_.insert(trash);
  }
  // Like a crash, a stop by the hook leaves the trash for RecoverAtStartup.
  auto step = [&](std::string_view name) {
    absl::Status s = Step("remove", id, name);
    if (!s.ok()) ForgetPending(trash);
    return s;
  };
  SBL_RETURN_IF_ERROR(step("rename-to-trash"));
  if (::renameat2(base.get(), idstr.c_str(), base.get(), trash.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    ForgetPending(trash);
    if (err == ENOENT) return absl::OkStatus();  // removed concurrently
    return ErrnoStatus(err, Cat(ctx, ": rename to ", trash));
  }
  SBL_RETURN_IF_ERROR(step("fsync-base"));
  if (::fsync(base.get()) != 0) {
    int err = errno;
    ForgetPending(trash);
    return ErrnoStatus(err, Cat(ctx, ": fsync ", options_.base_dir));
  }
  SBL_RETURN_IF_ERROR(step("remove-trash"));
  absl::Status removed = RemoveAll(Cat(options_.base_dir, "/", trash));
  ForgetPending(trash);
  return Annotate(removed, Cat(ctx, ": delete"));
}

absl::StatusOr<int> SnapshotStore::RecoverAtStartup() {
  std::vector<std::string> leftovers;
  {
    // Under mu_ so that a directory created by a concurrent Begin/Remove is either registered in
    // live_tmp_ or created after this listing.
    std::lock_guard<std::mutex> lock(mu_);
    DIR* d = ::opendir(options_.base_dir.c_str());
    if (d == nullptr) return ErrnoStatus(errno, Cat("snapshot recovery: open ", options_.base_dir));
    while (struct dirent* ent = ::readdir(d)) {
      std::string_view name = ent->d_name;
      if ((StartsWith(name, kTmpPrefix) || StartsWith(name, kTrashPrefix)) &&
          !live_tmp_.contains(ent->d_name)) {
        leftovers.emplace_back(name);
      }
    }
    ::closedir(d);
  }
  int removed = 0;
  for (const std::string& name : leftovers) {
    std::string path = Cat(options_.base_dir, "/", name);
    absl::Status st = RemoveAll(path);
    if (!st.ok()) return Annotate(st, "snapshot recovery");
    log::Info("removed leftover snapshot directory", {{"path", path}});
    ++removed;
  }
  if (removed > 0) {
    absl::Status st = FsyncPath(options_.base_dir);
    if (!st.ok()) return Annotate(st, "snapshot recovery");
  }
  return removed;
}

absl::StatusOr<std::string> SnapshotStore::StageRestore(
    std::string_view id, const std::string& staging_dir,
    const std::map<std::string, std::string>& path_rewrites) const {
  SBL_ASSIGN_OR_RETURN(std::string dir, Path(id));
  const std::string ctx = Cat(Context(id), ": stage restore");
  if (staging_dir.empty() || staging_dir.front() != '/') {
    return absl::InvalidArgumentError(
        Cat(ctx, ": staging directory \"", staging_dir, "\" must be an absolute path"));
  }
  if (!IsComplete(dir)) {
    return absl::NotFoundError(Cat(ctx, ": no complete snapshot at ", dir));
  }
  const std::string config_path = Cat(dir, "/", kSnapshotConfigFile);
  absl::StatusOr<std::string> config = ReadFile(config_path);
  if (!config.ok()) return Annotate(config.status(), ctx);
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(*config, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(
        Cat(ctx, ": ", config_path, " is not a valid CH config (expected a JSON object)"));
  }
  std::string staged_config = *config;
  if (RewriteStrings(j, path_rewrites) > 0) {
    staged_config = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }

  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(staging_dir, 0700), ctx));
  for (const char* f : {kSnapshotStateFile, kSnapshotMemoryRangesFile}) {
    SBL_RETURN_IF_ERROR(Annotate(LinkOrCopy(Cat(dir, "/", f), Cat(staging_dir, "/", f)), ctx));
  }
  SBL_RETURN_IF_ERROR(Annotate(
      WriteFileAtomic(Cat(staging_dir, "/", kSnapshotConfigFile), staged_config, 0600), ctx));
  return Cat("file://", staging_dir);
}

}  // namespace sandboxlet
