#include "controller/rest/watch_stream.h"

#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

// How often a quiet stream checks whether its client is still there.
constexpr std::chrono::seconds kPeerCheckInterval{1};

std::string EventLine(std::string_view type, const nlohmann::json& object) {
  return Cat(nlohmann::json{{"type", type}, {"object", object}}.dump(), "\n");
}

}  // namespace

std::optional<ApiError> ServeWatch(store::ObjectStore& store, const ResourceType& type,
                                   const WatchRequest& request, Clock& clock,
                                   ResponseWriter& writer) {
  ErrorSubject subject{type.group, type.resource, type.kind, ""};
  absl::StatusOr<std::unique_ptr<store::WatchStream>> stream =
      store.Watch(type.resource, request.ns, request.options);
  HttpHeaders headers = {{"Content-Type", "application/json"}, {"Cache-Control", "no-cache"}};
  if (!stream.ok()) {
    if (stream.status().code() != absl::StatusCode::kOutOfRange) {
      ApiError e = FromStatus(stream.status(), subject);
      if (e.code == 422) e = BadRequest(std::string(stream.status().message()));
      return e;
    }
    // Too old: kube-apiserver answers 200 and one ERROR event carrying a 410 Status.
    if (writer.StartStream(200, headers)) {
      writer.WriteChunk(
          EventLine("ERROR", Expired(std::string(stream.status().message())).ToStatus()));
    }
    return std::nullopt;
  }
  if (!writer.StartStream(200, headers)) return std::nullopt;

  const auto deadline = std::chrono::steady_clock::now() + request.timeout;
  bool first_table = true;
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    auto wait_until = std::min(deadline, now + kPeerCheckInterval);
    absl::StatusOr<store::WatchEvent> event = (*stream)->Next(wait_until);
    if (!event.ok()) {
      if (event.status().code() == absl::StatusCode::kDeadlineExceeded) {
        if (writer.PeerClosed()) return std::nullopt;
        continue;
      }
      return std::nullopt;  // stopped, store closed
    }
    std::string_view name = store::WatchEventTypeName(event->type);
    nlohmann::json object = std::move(event->object);
    if (event->type == store::WatchEventType::kBookmark) {
      object["apiVersion"] = type.GroupVersion();
      object["kind"] = type.kind;
    } else if (event->type != store::WatchEventType::kError && request.table.has_value()) {
      TableOptions options = *request.table;
      options.no_headers = !first_table;
      first_table = false;
      object = RenderTable(type, {object}, nlohmann::json::object(), options, clock.WallNow());
    }
    if (!writer.WriteChunk(EventLine(name, object))) return std::nullopt;
    if (event->type == store::WatchEventType::kError) return std::nullopt;
  }
}

}  // namespace sandboxlet::rest
