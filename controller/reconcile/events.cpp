#include "controller/reconcile/events.h"

#include <cstdint>
#include <cstdio>

#include "controller/reconcile/conditions.h"
#include "runtime/base/log.h"
#include "runtime/base/strings.h"

namespace sandboxlet::controller {
namespace {

using nlohmann::json;

std::string StringAt(const json& object, const char* field) {
  auto it = object.find(field);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

// FNV-1a: a stable name for "the same event", so repeats land on one object.
uint64_t Fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

EventRecorder::EventRecorder(store::ObjectStore& store, Clock& clock, std::string component,
                             std::string host)
    : store_(store), clock_(clock), component_(std::move(component)), host_(std::move(host)) {}

void EventRecorder::Record(const json& object, Type type, std::string_view reason,
                           std::string_view message) {
  if (!object.is_object() || !object.contains("metadata") || !object["metadata"].is_object()) {
    return;
  }
  const json& meta = object["metadata"];
  const std::string ns = StringAt(meta, "namespace");
  const std::string name = StringAt(meta, "name");
  const std::string uid = StringAt(meta, "uid");
  const std::string type_name = type == Type::kNormal ? "Normal" : "Warning";
  if (name.empty()) return;

  uint64_t h = Fnv1a(uid);
  for (std::string_view part : {std::string_view(type_name), reason, message}) {
    h = Fnv1a("\x1f", h);
    h = Fnv1a(part, h);
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  // The event name must stay a DNS-1123 subdomain (≤ 253 characters).
  std::string event_name = Cat(name.substr(0, 200), ".", hex);
  const std::string now = FormatTimestamp(clock_.WallNow());
  const std::string key = Cat(ns, "/", name);

  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<json> existing = store_.Get(kEventsResource, ns, event_name);
    absl::Status st;
    if (existing.ok()) {
      json next = *existing;
      next["count"] = next.value("count", int64_t{1}) + 1;
      next["lastTimestamp"] = now;
      absl::StatusOr<json> updated = store_.Update(kEventsResource, next);
      st = updated.status();
    } else if (existing.status().code() == absl::StatusCode::kNotFound) {
      json involved = {{"apiVersion", StringAt(object, "apiVersion")},
                       {"kind", StringAt(object, "kind")},
                       {"namespace", ns},
                       {"name", name},
                       {"uid", uid},
                       {"resourceVersion", StringAt(meta, "resourceVersion")}};
      json source = {{"component", component_}};
      if (!host_.empty()) source["host"] = host_;
      json event = {{"apiVersion", "v1"},
                    {"kind", "Event"},
                    {"metadata", {{"name", event_name}, {"namespace", ns}}},
                    {"involvedObject", std::move(involved)},
                    {"reason", std::string(reason)},
                    {"message", std::string(message)},
                    {"type", type_name},
                    {"firstTimestamp", now},
                    {"lastTimestamp", now},
                    {"count", 1},
                    {"source", std::move(source)},
                    {"reportingComponent", component_}};
      absl::StatusOr<json> created = store_.Create(kEventsResource, event);
      st = created.status();
    } else {
      st = existing.status();
    }
    if (st.ok()) return;
    // A concurrent writer of the same event: read it again and count on top of it.
    if (st.code() == absl::StatusCode::kAborted || st.code() == absl::StatusCode::kAlreadyExists) {
      continue;
    }
    log::Warn("cannot record event",
              {{"object", key}, {"reason", reason}, {"error", st.message()}});
    return;
  }
}

}  // namespace sandboxlet::controller
