// EventRecorder: posts Kubernetes core/v1 Event objects into the store's "events" resource for
// the transitions a user wants to see in `kubectl describe` (Started, Paused, Hibernated,
// Restored, SnapshotReady, BackOff, Killing, ...). Repeats of the same event (same object, type,
// reason and message) are folded into one Event whose count and lastTimestamp grow, as
// client-go's event aggregation does. Recording is best effort: a failure is logged and never
// fails a reconcile.
// Thread-safe: every method may be called from many threads.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "controller/store/object_store.h"
#include "runtime/base/clock.h"

namespace sandboxlet::controller {

inline constexpr char kEventsResource[] = "events";

class EventRecorder {
 public:
  enum class Type { kNormal, kWarning };

  // `component` becomes source.component (and reportingComponent); `host` source.host if set.
  EventRecorder(store::ObjectStore& store, Clock& clock, std::string component = "sandboxlet",
                std::string host = "");

  // `object` is the involved object as stored (apiVersion, kind, metadata).
  void Record(const nlohmann::json& object, Type type, std::string_view reason,
              std::string_view message);
  void Normal(const nlohmann::json& object, std::string_view reason, std::string_view message) {
    Record(object, Type::kNormal, reason, message);
  }
  void Warning(const nlohmann::json& object, std::string_view reason, std::string_view message) {
    Record(object, Type::kWarning, reason, message);
  }

 private:
  store::ObjectStore& store_;
  Clock& clock_;
  const std::string component_;
  const std::string host_;
};

}  // namespace sandboxlet::controller
