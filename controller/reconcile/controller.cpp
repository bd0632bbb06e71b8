#include "controller/reconcile/controller.h"

#include <chrono>
#include <utility>

#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;

constexpr char kSandboxPrefix[] = "sandboxes/";
constexpr char kSnapshotPrefix[] = "sandboxsnapshots/";

std::string Meta(const json& object, const char* field) {
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return "";
  auto it = meta->find(field);
  return it != meta->end() && it->is_string() ? it->get<std::string>() : "";
}

std::string Spec(const json& object, const char* field) {
  auto spec = object.find("spec");
  if (spec == object.end() || !spec->is_object()) return "";
  auto it = spec->find(field);
  return it != spec->end() && it->is_string() ? it->get<std::string>() : "";
}

std::string Phase(const json& object) {
  auto status = object.find("status");
  if (status == object.end() || !status->is_object()) return "";
  auto it = status->find("phase");
  return it != status->end() && it->is_string() ? it->get<std::string>() : "";
}

WorkQueueOptions QueueOptions(const ControllerOptions& options, Clock* clock) {
  WorkQueueOptions q = options.queue;
  q.clock = clock;
  q.base_backoff = options.error_backoff_base;
  q.max_backoff = options.error_backoff_max;
  return q;
}

SandboxReconcilerOptions SandboxOptions(const ControllerOptions& options, Clock* clock) {
  SandboxReconcilerOptions o = options.sandbox;
  o.clock = clock;
  if (options.guest != nullptr) o.guest = options.guest;
  return o;
}

}  // namespace

Controller::Controller(store::ObjectStore& store, runtime::SandboxRuntime& runtime,
                       ControllerOptions options)
    : store_(store),
      runtime_(runtime),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : *RealClock::Get()),
      events_(store, clock_, options_.component, options_.node_name),
      locks_(),
      sandboxes_(store, runtime, events_, locks_, SandboxOptions(options_, &clock_)),
      snapshots_(store, runtime, events_, locks_, SnapshotReconcilerOptions{&clock_}),
      queue_(QueueOptions(options_, &clock_)),
      exit_router_(std::make_shared<ExitRouter>()) {
  exit_router_->controller = this;
  std::shared_ptr<ExitRouter> router = exit_router_;
  runtime_.SetExitHandler([router](const std::string& uid, const runtime::VmExitInfo&) {
    std::lock_guard<std::mutex> lock(router->mu);
    if (router->controller != nullptr) router->controller->OnExit(uid);
  });
}

Controller::~Controller() {
  {
    std::lock_guard<std::mutex> lock(exit_router_->mu);
    exit_router_->controller = nullptr;
  }
  Stop();
}

void Controller::OnExit(const std::string& uid) {
  std::string key;
  {
    std::lock_guard<std::mutex> lock(index_mu_);
    auto it = uid_to_key_.find(uid);
    if (it == uid_to_key_.end()) {
      log::Warn("VMM exit of an unknown sandbox", {{"uid", uid}});
      return;
    }
    key = it->second;
  }
  log::Info("VMM exited; reconciling", {{"sandbox", key}, {"uid", uid}});
  queue_.Add(Cat(kSandboxPrefix, key));
}

absl::StatusOr<std::map<std::string, std::string>> Controller::ClaimedSandboxes() {
  std::map<std::string, std::string> claimed;
  std::string token;
  do {
    store::ListOptions lo;
    lo.continue_token = token;
    absl::StatusOr<store::ObjectList> list = store_.List(kSandboxesResource, "", lo);
    if (!list.ok()) return list.status();
    for (const json& item : list->items) {
      std::string uid = Meta(item, "uid");
      if (!uid.empty()) claimed[uid] = Cat(Meta(item, "namespace"), "/", Meta(item, "name"));
    }
    token = list->continue_token;
  } while (!token.empty());
  std::lock_guard<std::mutex> lock(index_mu_);
  for (const auto& [uid, key] : claimed) uid_to_key_[uid] = key;
  return claimed;
}

void Controller::EnqueueSandbox(const std::string& ns, const std::string& name) {
  queue_.Add(Cat(kSandboxPrefix, ns, "/", name));
}

void Controller::EnqueueSnapshot(const std::string& ns, const std::string& name) {
  queue_.Add(Cat(kSnapshotPrefix, ns, "/", name));
}

void Controller::OnSandbox(const json& object, bool deleted) {
  const std::string ns = Meta(object, "namespace");
  const std::string key = Cat(ns, "/", Meta(object, "name"));
  const std::string uid = Meta(object, "uid");
  const std::string restore = Spec(object, "restoreFrom");
  std::vector<std::string> enqueue = {Cat(kSandboxPrefix, key)};
  {
    std::lock_guard<std::mutex> lock(index_mu_);
    if (auto it = restore_of_.find(key); it != restore_of_.end()) {
      // The snapshot it restored from may be waiting for it to finish before deletion.
      enqueue.push_back(Cat(kSnapshotPrefix, it->second));
      restore_users_[it->second].erase(key);
      if (restore_users_[it->second].empty()) restore_users_.erase(it->second);
      restore_of_.erase(it);
    }
    if (deleted) {
      if (auto it = uid_to_key_.find(uid); it != uid_to_key_.end() && it->second == key) {
        uid_to_key_.erase(it);
      }
    } else {
      if (!uid.empty()) uid_to_key_[uid] = key;
      if (!restore.empty()) {
        std::string snap_key = Cat(ns, "/", restore);
        restore_of_[key] = snap_key;
        restore_users_[snap_key].insert(key);
        enqueue.push_back(Cat(kSnapshotPrefix, snap_key));
      }
    }
    // Snapshots waiting for this sandbox to run.
    if (auto it = open_snapshots_.find(key); it != open_snapshots_.end()) {
      for (const std::string& snap : it->second) enqueue.push_back(Cat(kSnapshotPrefix, snap));
    }
  }
  for (const std::string& k : enqueue) queue_.Add(k);
}

void Controller::OnSnapshot(const json& object, bool deleted) {
  const std::string ns = Meta(object, "namespace");
  const std::string key = Cat(ns, "/", Meta(object, "name"));
  const std::string sandbox = Spec(object, "sandboxName");
  const std::string phase = Phase(object);
  const bool open = !deleted && phase != "Ready" && phase != "Failed";
  std::vector<std::string> enqueue = {Cat(kSnapshotPrefix, key)};
  {
    std::lock_guard<std::mutex> lock(index_mu_);
    if (auto it = source_of_.find(key); it != source_of_.end()) {
      auto open_it = open_snapshots_.find(it->second);
      if (open_it != open_snapshots_.end()) {
        open_it->second.erase(key);
        if (open_it->second.empty()) open_snapshots_.erase(open_it);
      }
      source_of_.erase(it);
    }
    if (!deleted && !sandbox.empty()) {
      std::string sandbox_key = Cat(ns, "/", sandbox);
      source_of_[key] = sandbox_key;
      if (open) open_snapshots_[sandbox_key].insert(key);
      enqueue.push_back(Cat(kSandboxPrefix, sandbox_key));
    }
    if (auto it = restore_users_.find(key); it != restore_users_.end()) {
      for (const std::string& sb : it->second) enqueue.push_back(Cat(kSandboxPrefix, sb));
    }
  }
  for (const std::string& k : enqueue) queue_.Add(k);
}

absl::Status Controller::ListAndEnqueue(const std::string& resource, bool rebuild_index) {
  std::vector<json> items;
  std::string token;
  do {
    store::ListOptions lo;
    lo.continue_token = token;
    lo.limit = 500;
    absl::StatusOr<store::ObjectList> list = store_.List(resource, "", lo);
    if (!list.ok()) return list.status();
    for (json& item : list->items) items.push_back(std::move(item));
    token = list->continue_token;
  } while (!token.empty());
  const bool sandboxes = resource == kSandboxesResource;
  if (!rebuild_index) {
    for (const json& item : items) {
      queue_.Add(Cat(sandboxes ? kSandboxPrefix : kSnapshotPrefix, Meta(item, "namespace"), "/",
                     Meta(item, "name")));
    }
    return absl::OkStatus();
  }
  {
    // Objects deleted while no watch was running must leave the indices too.
    std::lock_guard<std::mutex> lock(index_mu_);
    if (sandboxes) {
      restore_of_.clear();
      restore_users_.clear();
    } else {
      source_of_.clear();
      open_snapshots_.clear();
    }
  }
  for (const json& item : items) {
    if (sandboxes) {
      OnSandbox(item, false);
    } else {
      OnSnapshot(item, false);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<store::WatchStream>> Controller::WatchAndList(
    const std::string& resource) {
  absl::StatusOr<std::unique_ptr<store::WatchStream>> stream = store_.Watch(resource, "");
  if (!stream.ok()) return stream.status();
  if (absl::Status st = ListAndEnqueue(resource, true); !st.ok()) return st;
  return stream;
}

absl::Status Controller::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return absl::FailedPreconditionError("controller: already started");
    started_ = true;
  }
  auto sandbox_watch = WatchAndList(kSandboxesResource);
  auto snapshot_watch =
      sandbox_watch.ok()
          ? WatchAndList(kSnapshotsResource)
          : absl::StatusOr<std::unique_ptr<store::WatchStream>>(sandbox_watch.status());
  if (!snapshot_watch.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = false;  // may be tried again
    return snapshot_watch.status();
  }

  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::CancelledError("controller: stopped before it started");
  threads_.emplace_back(&Controller::WatchLoop, this, std::string(kSandboxesResource),
                        std::move(*sandbox_watch));
  threads_.emplace_back(&Controller::WatchLoop, this, std::string(kSnapshotsResource),
                        std::move(*snapshot_watch));
  threads_.emplace_back(&Controller::ResyncLoop, this);
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    threads_.emplace_back(&Controller::Work, this);
  }
  log::Info("controller started", {{"workers", options_.workers}});
  return absl::OkStatus();
}

void Controller::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [resource, stream] : streams_) {
      if (stream != nullptr) stream->Stop();
    }
    threads.swap(threads_);
    cv_.notify_all();
  }
  queue_.ShutDown();
  for (std::thread& t : threads) t.join();
}

bool Controller::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void Controller::Work() {
  while (std::optional<std::string> key = queue_.Get()) {
    Process(*key);
    queue_.Done(*key);
  }
}

void Controller::Process(const std::string& key) {
  const bool is_sandbox = StartsWith(key, kSandboxPrefix);
  const bool is_snapshot = StartsWith(key, kSnapshotPrefix);
  std::string rest = key.substr(is_sandbox    ? sizeof(kSandboxPrefix) - 1
                                : is_snapshot ? sizeof(kSnapshotPrefix) - 1
                                              : 0);
  size_t slash = rest.find('/');
  if ((!is_sandbox && !is_snapshot) || slash == std::string::npos) {
    log::Error("controller: malformed queue key", {{"key", key}});
    queue_.Forget(key);
    return;
  }
  const std::string ns = rest.substr(0, slash);
  const std::string name = rest.substr(slash + 1);
  const auto t0 = std::chrono::steady_clock::now();
  ReconcileResult result =
      is_sandbox ? sandboxes_.Reconcile(ns, name) : snapshots_.Reconcile(ns, name);
  const auto duration = std::chrono::steady_clock::now() - t0;
  std::string_view outcome = "success";
  if (!result.error.ok()) {
    outcome = "error";
    log::Warn("reconcile failed; backing off", {{"key", key},
                                                {"error", result.error.message()},
                                                {"retries", queue_.NumRequeues(key) + 1}});
    queue_.AddRateLimited(key);
  } else {
    queue_.Forget(key);
  }
  if (result.requeue_after) {
    if (result.error.ok()) outcome = "requeue";
    queue_.AddAfter(key, *result.requeue_after);
  }
  if (options_.on_reconcile) {
    options_.on_reconcile(is_sandbox ? "Sandbox" : "SandboxSnapshot", outcome, duration);
  }
}

void Controller::WatchLoop(const std::string& resource,
                           std::unique_ptr<store::WatchStream> stream) {
  const bool sandboxes = resource == kSandboxesResource;
  while (!Stopping()) {
    if (stream == nullptr) {
      absl::StatusOr<std::unique_ptr<store::WatchStream>> next = WatchAndList(resource);
      if (!next.ok()) {
        log::Warn("controller: watch failed; retrying",
                  {{"resource", resource}, {"error", next.status().message()}});
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
        continue;
      }
      stream = std::move(*next);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      streams_[resource] = stream.get();
    }
    while (true) {
      absl::StatusOr<store::WatchEvent> event =
          stream->Next(std::chrono::steady_clock::now() + std::chrono::seconds(1));
      if (!event.ok()) {
        if (event.status().code() == absl::StatusCode::kDeadlineExceeded && !Stopping()) continue;
        break;  // stopped, or the watch ended: watch and list again
      }
      if (event->type == store::WatchEventType::kError) break;
      if (event->type == store::WatchEventType::kBookmark) continue;
      const bool deleted = event->type == store::WatchEventType::kDeleted;
      if (sandboxes) {
        OnSandbox(event->object, deleted);
      } else {
        OnSnapshot(event->object, deleted);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      streams_.erase(resource);
    }
    stream.reset();
  }
}

void Controller::ResyncLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  Clock::TimePoint next = clock_.Now() + options_.resync_period;
  while (!stopping_) {
    if (clock_.Now() >= next) {
      lock.unlock();
      for (const char* resource : {kSandboxesResource, kSnapshotsResource}) {
        if (absl::Status st = ListAndEnqueue(resource, false); !st.ok()) {
          log::Warn("controller: resync list failed",
                    {{"resource", resource}, {"error", st.message()}});
        }
      }
      lock.lock();
      next = clock_.Now() + options_.resync_period;
      continue;
    }
    clock_.WaitUntil(lock, cv_, next);
  }
}

}  // namespace sandboxlet::controller
