// Label and field selectors in Kubernetes syntax, used by ObjectStore::List and ObjectStore::Watch
// (and by the REST layer to parse `?labelSelector=` / `?fieldSelector=`).
//
// Label selector grammar (comma-separated requirements, all must hold):
//   key=value  key==value  key!=value  key in (v1,v2)  key notin (v1,v2)  key  !key
//   key>N  key<N   (N an integer; the label must exist and parse as an integer)
// As in Kubernetes, `!=` and `notin` also match objects that do not carry the key.
// Field selector grammar: path=value, path==value, path!=value, comma-separated; `\,` `\=` `\\`
// escape those characters in values. A path is dotted into the object ("metadata.name",
// "spec.nodeName"); a missing field compares as "".
//
// Thread-safety: immutable after parsing; Matches() may be called from many threads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet::store {

// Validation shared by selectors and object metadata. Each returns InvalidArgument whose message
// starts with `field` (e.g. "metadata.labels") and names the bad value.
absl::Status ValidateLabelKey(std::string_view key, std::string_view field);
absl::Status ValidateLabelValue(std::string_view value, std::string_view field);

class LabelSelector {
 public:
  enum class Op {
    kEquals,
    kNotEquals,
    kIn,
    kNotIn,
    kExists,
    kDoesNotExist,
    kGreaterThan,
    kLessThan
  };
  struct Requirement {
    std::string key;
    Op op;
    std::vector<std::string> values;  // one for =, !=, >, <; one or more for in/notin
  };

  // The empty selector: matches everything.
  LabelSelector() = default;

  // Parses the Kubernetes syntax. Errors are InvalidArgument naming the selector, the position
  // and what was expected, e.g. `label selector "a in (x": expected ',' or ')' at offset 8`.
  static absl::StatusOr<LabelSelector> Parse(std::string_view text);

  bool Empty() const { return requirements_.empty(); }
  // `labels` is the object's metadata.labels (null or an object of strings).
  bool Matches(const nlohmann::json& labels) const;
  // Convenience: matches against object["metadata"]["labels"].
  bool MatchesObject(const nlohmann::json& object) const;

  const std::vector<Requirement>& requirements() const { return requirements_; }
  // Canonical text (what Parse would accept back).
  std::string ToString() const;

 private:
  std::vector<Requirement> requirements_;
};

class FieldSelector {
 public:
  struct Requirement {
    std::vector<std::string> path;  // "metadata.name" → {"metadata", "name"}
    std::string field;              // the dotted form, for messages
    bool equals;                    // false for !=
    std::string value;
  };

  FieldSelector() = default;
  static absl::StatusOr<FieldSelector> Parse(std::string_view text);

  bool Empty() const { return requirements_.empty(); }
  bool Matches(const nlohmann::json& object) const;
  const std::vector<Requirement>& requirements() const { return requirements_; }

 private:
  std::vector<Requirement> requirements_;
};

}  // namespace sandboxlet::store
