// Watch responses of the local REST API: a chunked HTTP response carrying one JSON line per event,
// `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`, from an ObjectStore watch.
// Follows kube-apiserver: without a resourceVersion (or "0") the current objects come first as
// ADDED; a resourceVersion too old for the store's history yields a single ERROR event whose
// object is a Status with code 410 and reason Expired (the HTTP status stays 200); BOOKMARK events
// (apiVersion/kind/metadata.resourceVersion only) come periodically when allowWatchBookmarks is
// set; sendInitialEvents=true ends the initial ADDED events with a BOOKMARK annotated
// "k8s.io/initial-events-end"; timeoutSeconds ends the stream. When the client asked for a Table
// each event's object is a Table holding that one row.
// Thread-safe: ServeWatch runs on the request's thread and shares nothing but the store.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "controller/rest/api_error.h"
#include "controller/rest/http_server.h"
#include "controller/rest/router.h"
#include "controller/rest/table.h"
#include "controller/store/object_store.h"
#include "runtime/base/clock.h"

namespace sandboxlet::rest {

struct WatchRequest {
  std::string ns;  // "" = all namespaces
  store::WatchOptions options;
  std::chrono::seconds timeout{1800};
  std::optional<TableOptions> table;  // set when the client asked for Table events
};

// Streams the watch until the timeout, the client going away, the store closing or an ERROR
// event. Errors before the stream starts (bad selector, future version) are returned so the
// caller answers them as a Status; "too old" is delivered in-stream as kube does.
std::optional<ApiError> ServeWatch(store::ObjectStore& store, const ResourceType& type,
                                   const WatchRequest& request, Clock& clock,
                                   ResponseWriter& writer);

}  // namespace sandboxlet::rest
