#include "runtime/vmm/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <thread>

#include "runtime/base/errors.h"
#include "runtime/base/fd.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::vmm {

namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr milliseconds kRemoveRetryInterval{10};

std::string StripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string Basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// /proc/mounts escapes space, tab, newline and backslash in paths as \ooo.
std::string UnescapeMountPath(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool IsV2Hierarchy(const std::string& dir) { return PathExists(Cat(dir, "/cgroup.controllers")); }

// Writes a control file of a cgroup in place (cgroup files cannot be replaced by rename).
absl::Status WriteControl(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, Cat("open ", path));
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, Cat("write \"", value, "\" to ", path));
  return absl::OkStatus();
}

// A new v1 cpuset cgroup starts with empty cpus and mems, and no process can join it until they
// are set (ENOSPC); give it its parent's.
absl::Status InheritCpuset(const std::string& dir) {
  if (IsV2Hierarchy(dir) || !PathExists(Cat(dir, "/cpuset.cpus"))) return absl::OkStatus();
  for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
    std::string path = Cat(dir, "/", file);
    SBL_ASSIGN_OR_RETURN(std::string have, ReadFile(path));
    if (!Trim(have).empty()) continue;
    SBL_ASSIGN_OR_RETURN(std::string parent, ReadFile(Cat(Dirname(dir), "/", file)));
    SBL_RETURN_IF_ERROR(WriteControl(path, Trim(parent)));
  }
  return absl::OkStatus();
}

// mkdir that accepts an existing directory; `*created` says whether this call made it.
absl::Status MakeCgroupDir(const std::string& dir, bool* created) {
  *created = false;
  if (::mkdir(dir.c_str(), 0755) == 0) {
    *created = true;
  } else if (errno != EEXIST) {
    return ErrnoStatus(errno, Cat("create cgroup ", dir));
  }
  if (absl::Status st = InheritCpuset(dir); !st.ok()) {
    if (*created) ::rmdir(dir.c_str());
    *created = false;
    return Annotate(st, Cat("cgroup ", dir));
  }
  return absl::OkStatus();
}

std::string NsLink(const char* path) {
  char buf[128];
  ssize_t n = ::readlink(path, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// Forks a child that joins a probe cgroup in every hierarchy and exits. mkdir working does not
// prove that a process can join: the kernel refuses (ENOENT) a move to a cgroup outside the
// writer's cgroup namespace on a cgroup2 mounted with nsdelegate, as systemd mounts it.
absl::Status ProbeJoin(const std::vector<std::string>& hierarchies, const std::string& parent,
                       milliseconds patience) {
  std::vector<std::string> dirs;
  std::vector<UniqueFd> fds;
  auto finish = [&](absl::Status st) {
    fds.clear();
    if (absl::Status rm = RemoveCgroupDirs(dirs, patience); !rm.ok()) {
      log::Warn("vmm cgroups: probe cgroup not removed", {{"error", rm.message()}});
    }
    return st;
  };
  for (const auto& h : hierarchies) {
    std::string dir = Cat(h, "/", parent, "/probe-", ::getpid());
    bool created;
    if (absl::Status st = MakeCgroupDir(dir, &created); !st.ok()) return finish(st);
    dirs.push_back(dir);
    std::string procs = Cat(dir, "/cgroup.procs");
    UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return finish(ErrnoStatus(errno, Cat("open ", procs)));
    fds.push_back(std::move(fd));
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return finish(ErrnoStatus(errno, "probe cgroups: pipe"));
  UniqueFd report_r(report[0]), report_w(report[1]);
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::fork();
  if (pid == 0) {
    // Async-signal-safe calls only.
    for (size_t i = 0; i < fds.size(); ++i) {
      if (::write(fds[i].get(), "0", 1) != 1) {
        int failure[2] = {static_cast<int>(i), errno};
        (void)!::write(report_w.get(), failure, sizeof(failure));
        ::_exit(1);
      }
    }
    ::_exit(0);
  }
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return finish(ErrnoStatus(fork_errno, "probe cgroups: fork"));
  report_w.Reset();
  int failure[2] = {0, 0};
  ssize_t got;
  do {
    got = ::read(report_r.get(), failure, sizeof(failure));
  } while (got < 0 && errno == EINTR);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof(failure))) {
    size_t i = static_cast<size_t>(failure[0]);
    std::string where = i < dirs.size() ? dirs[i] : "a probe cgroup";
    return finish(ErrnoStatus(failure[1], Cat("a process cannot join ", where)));
  }
  return finish(absl::OkStatus());
}

CgroupDetection None(std::string reason) {
  CgroupDetection d;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

std::string_view CgroupVersionName(CgroupVersion version) {
  switch (version) {
    case CgroupVersion::kNone:
      return "none";
    case CgroupVersion::kV1:
      return "v1";
    case CgroupVersion::kV2:
      return "v2";
  }
  return "unknown";
}

CgroupDetection VmmCgroups::Detect(const VmmCgroupOptions& options) {
  const std::string root = StripTrailingSlashes(options.root);
  if (absl::Status st = ValidatePathComponent(options.parent, "cgroup parent"); !st.ok()) {
    return None(std::string(st.message()));
  }
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) {
    return None(Cat("cgroup root ", root, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) return None(Cat("cgroup root ", root, " is not a directory"));
  struct statfs fs;
  const bool have_fs = ::statfs(root.c_str(), &fs) == 0;

  CgroupDetection d;
  if (IsV2Hierarchy(root)) {
    d.version = CgroupVersion::kV2;
    d.hierarchies = {root};
    d.reason = have_fs && fs.f_type == CGROUP2_SUPER_MAGIC
                   ? Cat("cgroup2 mounted at ", root)
                   : Cat(root, " is laid out as cgroup2 (has cgroup.controllers)");
  } else if (have_fs && fs.f_type == CGROUP_SUPER_MAGIC) {
    d.version = CgroupVersion::kV1;
    d.hierarchies = {root};
    d.reason = Cat("a single cgroup v1 hierarchy mounted at ", root);
  } else {
    auto mounts = ReadFile(options.mounts_file);
    if (!mounts.ok()) return None(std::string(mounts.status().message()));
    std::vector<std::string> v1, names;
    std::string unified;
    for (const auto& line : Split(*mounts, '\n')) {
      std::vector<std::string> f = Split(line, ' ');
      if (f.size() < 3) continue;
      std::string mount_point = UnescapeMountPath(f[1]);
      if (Dirname(mount_point) != root || mount_point == root) continue;
      if (f[2] == "cgroup" && std::find(v1.begin(), v1.end(), mount_point) == v1.end()) {
        v1.push_back(mount_point);
        names.push_back(Basename(mount_point));
      } else if (f[2] == "cgroup2" && unified.empty()) {
        unified = mount_point;
      }
    }
    if (v1.empty()) {
      return None(Cat("no cgroup2 file system at ", root, " and no cgroup v1 hierarchy under it"));
    }
    d.version = CgroupVersion::kV1;
    d.hierarchies = v1;
    d.reason = Cat("cgroup v1 hierarchies under ", root, ": ", Join(names, ","));
    // Hybrid mode: systemd tracks its units' processes in the unified hierarchy.
    if (!unified.empty()) {
      d.hierarchies.push_back(unified);
      d.reason += Cat(" + unified cgroup2 at ", unified, " (hybrid)");
    }
  }
  for (const auto& h : d.hierarchies) {
    // access(W_OK) reports a read-only mount (EROFS) even to root.
    if (::access(h.c_str(), W_OK) != 0) {
      return None(Cat(d.reason, "; but ", h, " is not writable: ", std::strerror(errno)));
    }
  }
  // In a private cgroup namespace a VMM may not be able to leave the container's cgroup (on a
  // cgroup2 mounted with nsdelegate the kernel refuses the move; Open's probe finds out). Only
  // visible when /proc/1 is the host's init (hostPID).
  std::string self_ns = NsLink("/proc/self/ns/cgroup"), init_ns = NsLink("/proc/1/ns/cgroup");
  if (!self_ns.empty() && !init_ns.empty() && self_ns != init_ns) {
    d.warning = Cat("sandboxlet runs in a cgroup namespace (", self_ns, ") other than pid 1's (",
                    init_ns, "): VMMs may not be able to leave the container's cgroup");
  }
  return d;
}

std::unique_ptr<VmmCgroups> VmmCgroups::Open(VmmCgroupOptions options) {
  options.root = StripTrailingSlashes(options.root);
  CgroupDetection d = Detect(options);
  for (const auto& h : d.hierarchies) {
    if (d.version == CgroupVersion::kNone) break;
    bool created;
    if (absl::Status st = MakeCgroupDir(Cat(h, "/", options.parent), &created); !st.ok()) {
      d = None(Cat(d.reason, "; but ", st.message()));
    }
  }
  if (d.version != CgroupVersion::kNone && options.verify_join) {
    if (absl::Status st = ProbeJoin(d.hierarchies, options.parent, options.remove_patience);
        !st.ok()) {
      d = None(Cat(d.reason, "; but ", st.message(),
                   d.version == CgroupVersion::kV2
                       ? " (a private cgroup namespace? the pod needs the host's)"
                       : ""));
    }
  }
  if (d.version == CgroupVersion::kNone) {
    log::Warn(
        "vmm cgroups unavailable: VMs will run in sandboxlet's own cgroup and will not "
        "survive a restart of its unit or pod",
        {{"root", options.root}, {"reason", d.reason}});
  } else {
    log::Info("vmm cgroups", {{"version", CgroupVersionName(d.version)},
                              {"parent", options.parent},
                              {"hierarchies", d.hierarchies.size()},
                              {"reason", d.reason}});
    if (!d.warning.empty()) log::Warn("vmm cgroups may not keep VMs alive", {{"why", d.warning}});
  }
  return std::unique_ptr<VmmCgroups>(new VmmCgroups(std::move(options), std::move(d)));
}

std::unique_ptr<VmmCgroups> VmmCgroups::Disabled(std::string why) {
  log::Warn("vmm cgroups off: VMs will not survive a restart of sandboxlet's unit or pod",
            {{"reason", why}});
  return std::unique_ptr<VmmCgroups>(new VmmCgroups(VmmCgroupOptions{}, None(std::move(why))));
}

absl::StatusOr<std::vector<std::string>> VmmCgroups::Dirs(const std::string& uid) const {
  SBL_RETURN_IF_ERROR(ValidatePathComponent(uid, "sandbox uid"));
  std::vector<std::string> dirs;
  if (!enabled()) return dirs;
  for (const auto& h : detection_.hierarchies) {
    dirs.push_back(Cat(h, "/", options_.parent, "/", kLeafPrefix, uid));
  }
  return dirs;
}

absl::StatusOr<std::vector<std::string>> VmmCgroups::Prepare(const std::string& uid) const {
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> dirs, Dirs(uid));
  std::vector<std::string> procs, created;
  for (const auto& dir : dirs) {
    bool made_parent = false, made_leaf = false;
    absl::Status st = MakeCgroupDir(Dirname(dir), &made_parent);
    if (st.ok()) st = MakeCgroupDir(dir, &made_leaf);
    if (!st.ok()) {
      for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
      return Annotate(st, Cat("cgroup of vmm ", uid));
    }
    if (made_leaf) created.push_back(dir);
    procs.push_back(Cat(dir, "/cgroup.procs"));
  }
  return procs;
}

absl::Status VmmCgroups::Remove(const std::string& uid) const {
  SBL_ASSIGN_OR_RETURN(std::vector<std::string> dirs, Dirs(uid));
  return Annotate(RemoveCgroupDirs(dirs, options_.remove_patience), Cat("cgroup of vmm ", uid));
}

absl::StatusOr<std::vector<std::string>> VmmCgroups::ListLeftovers() const {
  std::vector<std::string> out;
  if (!enabled()) return out;
  std::map<std::string, bool> occupied;  // uid → has a process in some hierarchy
  for (const auto& h : detection_.hierarchies) {
    const std::string parent = Cat(h, "/", options_.parent);
    DIR* dir = ::opendir(parent.c_str());
    if (!dir) {
      if (errno == ENOENT) continue;
      return ErrnoStatus(errno, Cat("list vmm cgroups in ", parent));
    }
    while (struct dirent* e = ::readdir(dir)) {
      std::string name = e->d_name;
      if (!StartsWith(name, kLeafPrefix) || name.size() == std::strlen(kLeafPrefix)) continue;
      std::string path = Cat(parent, "/", name);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      std::string uid = name.substr(std::strlen(kLeafPrefix));
      auto procs = ReadCgroupProcs(Cat(path, "/cgroup.procs"));
      // Unreadable: assume it holds something rather than reclaim a live VM's cgroup.
      bool busy = !procs.ok() || !procs->empty();
      occupied[uid] = occupied[uid] || busy;
    }
    ::closedir(dir);
  }
  for (const auto& [uid, busy] : occupied) {
    if (!busy) out.push_back(uid);
  }
  return out;
}

absl::Status RemoveCgroupDirs(const std::vector<std::string>& dirs, milliseconds patience) {
  const auto deadline = Steady::now() + patience;
  absl::Status first;
  for (const auto& dir : dirs) {
    while (true) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      int err = errno;
      if (err == EBUSY && Steady::now() < deadline) {
        std::this_thread::sleep_for(kRemoveRetryInterval);
        continue;
      }
      std::string why;
      if (err == EBUSY) {
        auto procs = ReadCgroupProcs(Cat(dir, "/cgroup.procs"));
        if (procs.ok() && !procs->empty()) {
          std::vector<std::string> pids;
          for (int pid : *procs) pids.push_back(Cat(pid));
          why = Cat(" (still holds pids ", Join(pids, ","), ")");
        }
      }
      if (first.ok()) first = ErrnoStatus(err, Cat("remove cgroup ", dir, why));
      break;
    }
  }
  return first;
}

absl::StatusOr<std::vector<int>> ReadCgroupProcs(const std::string& procs_path) {
  std::vector<int> pids;
  auto text = ReadFile(procs_path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return pids;
    return text.status();
  }
  for (const auto& line : Split(*text, '\n')) {
    std::string_view t = Trim(line);
    if (t.empty()) continue;
    int pid = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), pid);
    if (ec != std::errc() || end != t.data() + t.size()) {
      return absl::DataLossError(Cat(procs_path, ": not a pid: \"", t, "\""));
    }
    pids.push_back(pid);
  }
  return pids;
}

}  // namespace sandboxlet::vmm
