#include "runtime/vmm/exit_watcher.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "runtime/base/errors.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::vmm {

absl::StatusOr<std::unique_ptr<ExitWatcher>> ExitWatcher::Start(Callback on_exit) {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return ErrnoStatus(errno, "exit watcher: epoll_create1");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus(errno, "exit watcher: eventfd");
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) {
    return ErrnoStatus(errno, "exit watcher: epoll_ctl eventfd");
  }
  return std::unique_ptr<ExitWatcher>(
      new ExitWatcher(std::move(on_exit), std::move(epoll), std::move(wake)));
}

ExitWatcher::ExitWatcher(Callback on_exit, UniqueFd epoll, UniqueFd wake)
    : on_exit_(std::move(on_exit)), epoll_(std::move(epoll)), wake_(std::move(wake)) {
  thread_ = std::thread([this] { Run(); });
}

ExitWatcher::~ExitWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  while (::write(wake_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  thread_.join();
}

absl::Status ExitWatcher::Watch(const std::string& key, const VmmProcess& process) {
  return Add(key, process.pidfd(), process.reaper());
}

absl::Status ExitWatcher::Watch(const std::string& key, int pidfd, pid_t pid, bool is_child) {
  int own = ::fcntl(pidfd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return ErrnoStatus(errno, Cat("watch ", key, ": dup pidfd"));
  return Add(key, pidfd, std::make_shared<Reaper>(UniqueFd(own), pid, is_child));
}

absl::Status ExitWatcher::Add(const std::string& key, int pidfd, std::shared_ptr<Reaper> reaper) {
  // The watcher's own duplicate: epoll keeps watching even if the caller closes its fd.
  UniqueFd own(::fcntl(pidfd, F_DUPFD_CLOEXEC, 0));
  if (!own.valid()) return ErrnoStatus(errno, Cat("watch ", key, ": dup pidfd"));
  std::lock_guard<std::mutex> lock(mu_);
  if (by_key_.count(key)) return absl::AlreadyExistsError(Cat("watch ", key, ": already watched"));
  uint64_t id = next_id_++;
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, own.get(), &ev) != 0) {
    return ErrnoStatus(errno, Cat("watch ", key, ": epoll_ctl"));
  }
  by_key_[key] = id;
  entries_[id] = Entry{key, std::move(own), std::move(reaper)};
  return absl::OkStatus();
}

void ExitWatcher::Unwatch(const std::string& key) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = by_key_.find(key);
  if (it != by_key_.end()) {
    uint64_t id = it->second;
    auto e = entries_.find(id);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, e->second.pidfd.get(), nullptr);
    entries_.erase(e);
    by_key_.erase(it);
    return;
  }
  // Its exit may be being reported right now: wait for that callback, unless we are inside it.
  if (std::this_thread::get_id() == thread_.get_id()) return;
  delivered_.wait(lock, [&] { return !delivering_ || *delivering_ != key; });
}

size_t ExitWatcher::watched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

void ExitWatcher::Run() {
  constexpr int kMaxEvents = 64;
  struct epoll_event events[kMaxEvents];
  while (true) {
    int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::Error("exit watcher: epoll_wait failed", {{"errno", errno}});
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        continue;
      }
      std::shared_ptr<Reaper> reaper;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        auto it = entries_.find(id);
        if (it == entries_.end()) continue;  // unwatched after epoll_wait returned
        reaper = it->second.reaper;
      }
      // The pidfd is readable once the process has exited; Collect reaps our child.
      std::optional<VmmExit> exit = reaper->Collect();
      if (!exit) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = entries_.find(id);
        if (it == entries_.end()) continue;
        exit->key = it->second.key;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.pidfd.get(), nullptr);
        by_key_.erase(it->second.key);
        entries_.erase(it);
        delivering_ = exit->key;
      }
      on_exit_(*exit);
      {
        std::lock_guard<std::mutex> lock(mu_);
        delivering_.reset();
      }
      delivered_.notify_all();
    }
  }
}

}  // namespace sandboxlet::vmm
