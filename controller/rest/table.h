// Server-side printing: the meta.k8s.io Table kubectl asks for with
// `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints as `kubectl get` output.
// Columns: sandboxes NAME, PHASE, IP, VCPUS, MEMORY, AGE (+ TEMPLATE, NODE with -o wide);
// sandboxsnapshots NAME, SANDBOX, PHASE, SIZE, AGE; events LAST SEEN, TYPE, REASON, OBJECT,
// MESSAGE; namespaces NAME, STATUS, AGE. Rows carry the object as includeObject asks: None,
// Metadata (a PartialObjectMetadata, the default) or Object.
// Thread-safe: pure functions.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/rest/router.h"

namespace sandboxlet::rest {

enum class IncludeObject { kNone, kMetadata, kObject };

struct TableOptions {
  std::string api_version = "meta.k8s.io/v1";  // or meta.k8s.io/v1beta1
  IncludeObject include = IncludeObject::kMetadata;
  bool no_headers = false;  // leave columnDefinitions out (later watch events)
};

// The Table version the Accept header asks for ("v1", "v1beta1"), when a Table comes before plain
// JSON in it; nullopt otherwise.
std::optional<std::string> TableVersionFromAccept(std::string_view accept);
// includeObject=None|Metadata|Object (empty = Metadata). InvalidArgument-ish: nullopt when bad.
std::optional<IncludeObject> ParseIncludeObject(std::string_view text);

// A Table of `items` of `type`; `list_metadata` becomes the Table's metadata.
nlohmann::json RenderTable(const ResourceType& type, const std::vector<nlohmann::json>& items,
                           const nlohmann::json& list_metadata, const TableOptions& options,
                           std::chrono::system_clock::time_point now);

// kubectl's human durations: "42s", "5m3s", "17m", "3h4m", "2d5h", "400d", "3y20d".
std::string HumanDuration(std::chrono::seconds d);
// "512Mi", "1.5Gi", "900" (bytes) for table cells.
std::string HumanBytes(int64_t bytes);
// Parses RFC 3339 ("2024-05-01T10:00:00Z", fractional seconds and offsets accepted).
std::optional<std::chrono::system_clock::time_point> ParseTimestamp(std::string_view text);

}  // namespace sandboxlet::rest
