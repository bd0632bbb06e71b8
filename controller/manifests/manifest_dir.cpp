#include "controller/manifests/manifest_dir.h"

#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <vector>

#include "controller/manifests/apply.h"
#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;

constexpr const char* kResources[] = {"sandboxes", "sandboxsnapshots"};
constexpr int kSettleMs = 50;

std::string NowRfc3339() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string ManifestOf(const json& object) {
  const json& meta = object.value("metadata", json::object());
  auto annotations = meta.find("annotations");
  if (annotations == meta.end() || !annotations->is_object()) return "";
  auto it = annotations->find(kManifestAnnotation);
  return it != annotations->end() && it->is_string() ? it->get<std::string>() : "";
}

std::string ObjectId(const std::string& resource, const json& object) {
  const json& meta = object.at("metadata");
  return Cat(resource, "/", meta.value("namespace", ""), "/", meta.value("name", ""));
}

}  // namespace

ManifestDirectory::ManifestDirectory(store::ObjectStore* store, ManifestDirectoryOptions options)
    : store_(store), options_(std::move(options)) {}

ManifestDirectory::~ManifestDirectory() { Stop(); }

bool ManifestDirectory::IsManifestName(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return EndsWith(name, ".yaml") || EndsWith(name, ".yml") || EndsWith(name, ".json");
}

absl::Status ManifestDirectory::Start() {
  const std::string& dir = options_.dir;
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(
        Cat("manifests directory \"", dir, "\": must be an absolute path"));
  }
  SBL_RETURN_IF_ERROR(Annotate(MakeDirs(dir), "manifests directory"));
  inotify_.Reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_.valid()) return ErrnoStatus(errno, "manifests directory: inotify_init1");
  constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM |
                             IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
  // Watch first, then scan, so that nothing written in between is missed.
  if (::inotify_add_watch(inotify_.get(), dir.c_str(), kMask) < 0) {
    return ErrnoStatus(errno, Cat("manifests directory ", dir, ": inotify_add_watch"));
  }
  wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return ErrnoStatus(errno, "manifests directory: eventfd");
  log::Info("watching manifests directory", {{"dir", dir}});
  Rescan();
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void ManifestDirectory::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

std::map<std::string, std::string> ManifestDirectory::FileErrors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return errors_;
}

void ManifestDirectory::Run() {
  std::vector<char> buf(64 * 1024);
  auto next_rescan = std::chrono::steady_clock::now() + options_.rescan_interval;
  while (true) {
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_rescan - std::chrono::steady_clock::now());
    int n = ::poll(fds, 2, static_cast<int>(std::max<int64_t>(0, wait.count())));
    if (n < 0 && errno != EINTR) {
      log::Error("manifests directory: poll failed; watching stopped",
                 {{"dir", options_.dir}, {"error", std::string(strerror(errno))}});
      return;
    }
    if (fds[1].revents != 0) return;
    if (n == 0) {
      Rescan();
      next_rescan = std::chrono::steady_clock::now() + options_.rescan_interval;
      continue;
    }
    if ((fds[0].revents & POLLIN) == 0) continue;

    // One read can hold many events; files are handled in event order, each once per batch for
    // its last event, so that a burst of writes to one file applies it once.
    std::vector<std::pair<std::string, bool>> batch;  // name, exists-after-event
    bool rescan = false;
    while (true) {
      ssize_t len = ::read(inotify_.get(), buf.data(), buf.size());
      if (len <= 0) {
        // Let a burst settle (a tool rewriting several files, or truncating and rewriting one)
        // so that a file is read once its writers are done.
        pollfd settle = {inotify_.get(), POLLIN, 0};
        if (::poll(&settle, 1, kSettleMs) > 0) continue;
        break;
      }
      for (char* p = buf.data(); p < buf.data() + len;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        p += sizeof(inotify_event) + ev->len;
        if (ev->mask & IN_Q_OVERFLOW) {
          rescan = true;
          continue;
        }
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
          log::Error("manifests directory was removed or moved; its files are no longer followed",
                     {{"dir", options_.dir}});
          continue;
        }
        std::string name = ev->len > 0 ? std::string(ev->name) : "";
        if (name == "..data") rescan = true;  // a ConfigMap volume swapped its contents
        if (!IsManifestName(name)) continue;
        bool exists = (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) != 0;
        std::erase_if(batch, [&](const auto& e) { return e.first == name; });
        batch.emplace_back(name, exists);
      }
    }
    if (rescan) {
      Rescan();
      continue;
    }
    for (const auto& [name, exists] : batch) {
      std::string path = Cat(options_.dir, "/", name);
      if (exists) {
        SyncFile(path);
      } else {
        Report(path, RemoveObjectsOf(path, {}));
      }
    }
  }
}

void ManifestDirectory::Rescan() {
  std::set<std::string> present;
  if (DIR* d = ::opendir(options_.dir.c_str()); d != nullptr) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (!IsManifestName(name)) continue;
      std::string path = Cat(options_.dir, "/", name);
      struct stat st;
      if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) present.insert(path);
    }
    ::closedir(d);
  } else {
    log::Error("manifests directory cannot be read",
               {{"dir", options_.dir}, {"error", std::string(strerror(errno))}});
    return;
  }
  for (const std::string& path : present) SyncFile(path);

  // Objects of files of this directory that are gone (removed while sandboxlet was down).
  std::set<std::string> orphaned_files;
  for (const char* resource : kResources) {
    absl::StatusOr<store::ObjectList> list = store_->List(resource, "");
    if (!list.ok()) {
      log::Error("manifests directory: listing objects failed",
                 {{"resource", resource}, {"error", list.status().ToString()}});
      return;
    }
    for (const json& object : list->items) {
      std::string file = ManifestOf(object);
      if (!file.empty() && Dirname(file) == options_.dir && !present.contains(file)) {
        orphaned_files.insert(file);
      }
    }
  }
  for (const std::string& file : orphaned_files) Report(file, RemoveObjectsOf(file, {}));
}

void ManifestDirectory::SyncFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      // Gone again before we got to it: the delete event follows, or this is a rescan race.
      Report(path, RemoveObjectsOf(path, {}));
    } else {
      Report(path, text.status());
    }
    return;
  }
  ApplyOptions options;
  options.limits = options_.limits;
  options.annotations[kManifestAnnotation] = path;
  std::vector<std::string> warnings;
  absl::StatusOr<std::vector<ApplyResult>> applied =
      ApplyManifests(*store_, *text, options, &warnings);
  if (!applied.ok()) {
    Report(path, applied.status());
    return;
  }
  std::set<std::string> keep;
  for (const ApplyResult& r : *applied) {
    const std::string kind = r.stored.value("kind", "");
    const char* resource = kind == "SandboxSnapshot" ? "sandboxsnapshots" : "sandboxes";
    keep.insert(ObjectId(resource, r.stored));
    if (r.action != ApplyAction::kUnchanged) {
      const json& meta = r.stored.at("metadata");
      log::Info(
          "manifest applied",
          {{"file", path},
           {"object", Cat(kind, " ", meta.value("namespace", ""), "/", meta.value("name", ""))},
           {"action", ApplyActionName(r.action)}});
    }
  }
  Report(path, RemoveObjectsOf(path, keep));
}

absl::Status ManifestDirectory::RemoveObjectsOf(const std::string& path,
                                                const std::set<std::string>& keep) {
  for (const char* resource : kResources) {
    SBL_ASSIGN_OR_RETURN(store::ObjectList list, store_->List(resource, ""));
    for (const json& object : list.items) {
      if (ManifestOf(object) != path || keep.contains(ObjectId(resource, object))) continue;
      const json& meta = object.at("metadata");
      if (meta.contains("deletionTimestamp")) continue;
      std::string ns = meta.value("namespace", "");
      std::string name = meta.value("name", "");
      absl::StatusOr<store::DeleteResult> deleted =
          store_->Delete(resource, ns, name, {.uid = meta.value("uid", "")});
      if (!deleted.ok() && deleted.status().code() != absl::StatusCode::kNotFound) {
        return Annotate(deleted.status(), Cat("delete ", resource, " ", ns, "/", name));
      }
      log::Info("manifest object deleted: no longer in its file",
                {{"file", path}, {"object", Cat(resource, " ", ns, "/", name)}});
    }
  }
  return absl::OkStatus();
}

void ManifestDirectory::Report(const std::string& path, const absl::Status& result) {
  bool changed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (result.ok()) {
      errors_.erase(path);
    } else {
      std::string message(result.message());
      auto [it, inserted] = errors_.try_emplace(path, message);
      changed = inserted || it->second != message;
      it->second = message;
    }
  }
  if (!result.ok()) {
    log::Error("manifest file skipped", {{"file", path}, {"error", result.ToString()}});
    // One Event per distinct error, not one per rescan.
    if (changed) PostEvent(path, std::string(result.message()));
  }
  if (options_.on_file) options_.on_file(path, result);
}

void ManifestDirectory::PostEvent(const std::string& path, const std::string& message) {
  std::string now = NowRfc3339();
  json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"generateName", "manifest-"}, {"namespace", "default"}}},
      {"involvedObject", {{"apiVersion", "v1"}, {"kind", "Node"}, {"name", options_.node_name}}},
      {"reason", "ManifestInvalid"},
      {"message", Cat(path, ": ", message)},
      {"type", "Warning"},
      {"source", {{"component", "sandboxlet"}, {"host", options_.node_name}}},
      {"firstTimestamp", now},
      {"lastTimestamp", now},
      {"count", 1},
  };
  if (absl::StatusOr<json> created = store_->Create("events", event); !created.ok()) {
    log::Warn("posting an Event failed", {{"file", path}, {"error", created.status().ToString()}});
  }
}

}  // namespace sandboxlet::controller
