#include "controller/store/watch.h"

#include <charconv>

#include "runtime/base/strings.h"

namespace sandboxlet::store {
namespace {

using internal::Change;
using internal::QueuedEvent;
using internal::WatchState;

bool Matches(const WatchState& s, const nlohmann::json& object) {
  return s.options.labels.MatchesObject(object) && s.options.fields.Matches(object);
}

// The event a stream sees for a change, given its selectors; false if it sees nothing.
bool EffectiveType(const WatchState& s, const Change& c, WatchEventType* type) {
  if (!s.ns.empty() && s.ns != c.ns) return false;
  bool now = Matches(s, *c.object);
  if (c.type != WatchEventType::kModified) {
    *type = c.type;
    return now;
  }
  bool before = c.previous != nullptr && Matches(s, *c.previous);
  if (before && now) {
    *type = WatchEventType::kModified;
  } else if (now) {
    *type = WatchEventType::kAdded;
  } else if (before) {
    *type = WatchEventType::kDeleted;
  } else {
    return false;
  }
  return true;
}

std::shared_ptr<const nlohmann::json> ExpiredStatus(const std::string& message) {
  return std::make_shared<const nlohmann::json>(nlohmann::json{
      {"apiVersion", "v1"},
      {"kind", "Status"},
      {"metadata", nlohmann::json::object()},
      {"status", "Failure"},
      {"message", message},
      {"reason", "Expired"},
      {"code", 410},
  });
}

// Appends to a stream's queue; ends the stream with ERROR/Expired when the consumer is too far
// behind. Requires s.mu.
void Enqueue(WatchState& s, QueuedEvent event, size_t queue_limit) {
  if (!s.end_reason.empty() || s.stopped) return;
  if (s.queue.size() >= queue_limit) {
    std::string message = Cat("watch of ", s.resource, " fell more than ", queue_limit,
                              " events behind; it was closed, re-list and watch again");
    s.queue.clear();
    s.queue.push_back({WatchEventType::kError, 0, ExpiredStatus(message)});
    s.end_reason = message;
    return;
  }
  s.queue.push_back(std::move(event));
}

bool ParseResourceVersion(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  auto r = std::from_chars(text.data(), text.data() + text.size(), *out);
  return r.ec == std::errc() && r.ptr == text.data() + text.size() && *out >= 0;
}

std::shared_ptr<const nlohmann::json> Bookmark(int64_t rv, bool initial_events_end) {
  nlohmann::json meta = {{"resourceVersion", std::to_string(rv)}};
  if (initial_events_end) meta["annotations"] = {{"k8s.io/initial-events-end", "true"}};
  return std::make_shared<const nlohmann::json>(nlohmann::json{{"metadata", std::move(meta)}});
}

}  // namespace

std::string_view WatchEventTypeName(WatchEventType type) {
  switch (type) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
    case WatchEventType::kError:
      return "ERROR";
  }
  return "UNKNOWN";
}

absl::StatusOr<WatchEvent> WatchStream::Next(std::chrono::steady_clock::time_point deadline) {
  WatchState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  const auto interval = s.options.bookmark_interval;
  while (true) {
    if (s.stopped) return absl::CancelledError(Cat("watch of ", s.resource, " stopped"));
    if (!s.queue.empty()) {
      QueuedEvent e = std::move(s.queue.front());
      s.queue.pop_front();
      if (e.resource_version > s.sent_rv) s.sent_rv = e.resource_version;
      if (interval.count() > 0) s.next_bookmark = std::chrono::steady_clock::now() + interval;
      return WatchEvent{e.type, *e.object};
    }
    if (!s.end_reason.empty()) {
      return absl::CancelledError(Cat("watch of ", s.resource, " ended: ", s.end_reason));
    }
    auto now = std::chrono::steady_clock::now();
    if (interval.count() > 0 && now >= s.next_bookmark) {
      s.next_bookmark = now + interval;
      if (s.progress_rv > s.sent_rv) {
        s.sent_rv = s.progress_rv;
        return WatchEvent{WatchEventType::kBookmark, *Bookmark(s.progress_rv, false)};
      }
    }
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          Cat("watch of ", s.resource, ": no event before the deadline"));
    }
    auto wake = deadline;
    if (interval.count() > 0 && s.next_bookmark < wake) wake = s.next_bookmark;
    s.cv.wait_until(lock, wake);
  }
}

void WatchStream::Stop() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stopped = true;
    state_->queue.clear();
  }
  state_->cv.notify_all();
}

WatchHub::WatchHub(size_t history_per_resource, size_t queue_limit, int64_t current_rv)
    : history_per_resource_(history_per_resource == 0 ? 1 : history_per_resource),
      queue_limit_(queue_limit == 0 ? 1 : queue_limit),
      open_rv_(current_rv) {}

WatchHub::~WatchHub() { CloseAll(); }

WatchHub::ResourceHistory& WatchHub::HistoryFor(const std::string& resource) {
  auto it = resources_.find(resource);
  if (it == resources_.end()) {
    it = resources_.emplace(resource, ResourceHistory{}).first;
    it->second.start_rv = open_rv_;
  }
  return it->second;
}

void WatchHub::Publish(std::shared_ptr<const Change> change) {
  std::lock_guard<std::mutex> lock(mu_);
  ResourceHistory& h = HistoryFor(change->resource);
  h.changes.push_back(change);
  while (h.changes.size() > history_per_resource_) {
    h.start_rv = h.changes.front()->resource_version;
    h.changes.pop_front();
  }
  // Deliver, and drop streams whose consumer has gone away.
  auto& streams = h.streams;
  for (size_t i = 0; i < streams.size();) {
    WatchState& s = *streams[i];
    bool gone;
    {
      std::lock_guard<std::mutex> slock(s.mu);
      gone = s.stopped || !s.end_reason.empty();
      if (!gone) {
        WatchEventType type;
        if (EffectiveType(s, *change, &type)) {
          Enqueue(s, {type, change->resource_version, change->object}, queue_limit_);
        }
        s.progress_rv = change->resource_version;
      }
    }
    s.cv.notify_all();
    if (gone) {
      streams[i] = std::move(streams.back());
      streams.pop_back();
    } else {
      ++i;
    }
  }
}

absl::StatusOr<std::unique_ptr<WatchStream>> WatchHub::Register(
    const std::string& resource, const std::string& ns, const WatchOptions& options,
    int64_t current_rv, const std::vector<std::shared_ptr<const nlohmann::json>>& existing) {
  int64_t from = current_rv;
  const std::string& rv_text = options.resource_version;
  if (!rv_text.empty() && rv_text != "0") {
    if (!ParseResourceVersion(rv_text, &from)) {
      return absl::InvalidArgumentError(Cat("watch ", resource,
                                            ": resourceVersion: Invalid value: \"", rv_text,
                                            "\": must be a non-negative integer"));
    }
    if (from > current_rv) {
      return absl::InvalidArgumentError(Cat(
          "watch ", resource, ": too large resource version: ", from, ", current: ", current_rv));
    }
  }

  auto state = std::make_shared<WatchState>(resource, ns, options);
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return absl::CancelledError(Cat("watch ", resource, ": the store is closed"));
  ResourceHistory& h = HistoryFor(resource);
  {
    std::lock_guard<std::mutex> slock(state->mu);
    if (options.send_initial_events) {
      // Initial state at current_rv, then live changes; `from` only bounds how old it may be.
      if (from < h.start_rv) {
        return absl::OutOfRangeError(
            Cat("too old resource version: ", from, " (", h.start_rv, ")"));
      }
      for (const auto& object : existing) {
        bool in_ns = ns.empty() || (*object)["metadata"].value("namespace", "") == ns;
        if (in_ns && Matches(*state, *object)) {
          state->queue.push_back({WatchEventType::kAdded, 0, object});
        }
      }
      if (options.initial_events_end_bookmark) {
        state->queue.push_back({WatchEventType::kBookmark, current_rv, Bookmark(current_rv, true)});
      }
    } else if (from < current_rv) {
      if (from < h.start_rv) {
        return absl::OutOfRangeError(
            Cat("too old resource version: ", from, " (", h.start_rv, ")"));
      }
      for (const auto& change : h.changes) {
        if (change->resource_version <= from) continue;
        WatchEventType type;
        if (EffectiveType(*state, *change, &type)) {
          state->queue.push_back({type, change->resource_version, change->object});
        }
      }
    }
    state->progress_rv = current_rv;
    state->sent_rv = from;
    if (options.bookmark_interval.count() > 0) {
      state->next_bookmark = std::chrono::steady_clock::now() + options.bookmark_interval;
    }
  }
  h.streams.push_back(state);
  return std::make_unique<WatchStream>(std::move(state));
}

void WatchHub::CloseAll() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  for (auto& [resource, h] : resources_) {
    for (auto& s : h.streams) {
      {
        std::lock_guard<std::mutex> slock(s->mu);
        if (s->end_reason.empty()) s->end_reason = "the store was closed";
      }
      s->cv.notify_all();
    }
    h.streams.clear();
  }
}

}  // namespace sandboxlet::store
