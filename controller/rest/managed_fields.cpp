#include "controller/rest/managed_fields.h"

#include <algorithm>
#include <functional>

#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

constexpr const char* kTrackedMetadata[] = {"labels", "annotations", "finalizers",
                                            "ownerReferences"};

bool IsKeyedList(const nlohmann::json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& e : v) {
    if (!e.is_object()) return false;
    auto it = e.find("name");
    if (it == e.end() || !it->is_string()) return false;
  }
  return true;
}

std::string KeyStep(const nlohmann::json& element) {
  return Cat("k:", nlohmann::json{{"name", element["name"]}}.dump());
}

void Walk(const nlohmann::json& node, FieldPath& path, FieldSet& out) {
  if (node.is_object() && !node.empty()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      path.push_back(Cat("f:", it.key()));
      Walk(it.value(), path, out);
      path.pop_back();
    }
    return;
  }
  if (IsKeyedList(node)) {
    for (const auto& element : node) {
      path.push_back(KeyStep(element));
      Walk(element, path, out);
      path.pop_back();
    }
    return;
  }
  if (!path.empty()) out.insert(path);
}

bool IsPrefix(const FieldPath& prefix, const FieldPath& path) {
  return prefix.size() <= path.size() && std::equal(prefix.begin(), prefix.end(), path.begin());
}

bool Related(const FieldPath& a, const FieldPath& b) { return IsPrefix(a, b) || IsPrefix(b, a); }

// The element of `list` whose key matches the k: step, or end.
nlohmann::json::const_iterator FindKeyed(const nlohmann::json& list, std::string_view step) {
  if (!list.is_array()) return list.end();
  nlohmann::json key = nlohmann::json::parse(step.substr(2), nullptr, false);
  if (!key.is_object()) return list.end();
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (!it->is_object()) continue;
    bool match = true;
    for (auto k = key.begin(); k != key.end(); ++k) {
      auto f = it->find(k.key());
      match = match && f != it->end() && *f == k.value();
    }
    if (match) return it;
  }
  return list.end();
}

const nlohmann::json* Child(const nlohmann::json& node, const std::string& step) {
  if (StartsWith(step, "f:")) {
    if (!node.is_object()) return nullptr;
    auto it = node.find(step.substr(2));
    return it == node.end() ? nullptr : &*it;
  }
  if (StartsWith(step, "k:")) {
    auto it = FindKeyed(node, step);
    return it == node.end() ? nullptr : &*it;
  }
  return nullptr;
}

// Removes the value at `path` from `object` (no-op when absent).
void RemoveAt(nlohmann::json& object, const FieldPath& path) {
  if (path.empty()) return;
  nlohmann::json* node = &object;
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    const nlohmann::json* child = Child(*node, path[i]);
    if (child == nullptr) return;
    node = const_cast<nlohmann::json*>(child);
  }
  const std::string& last = path.back();
  if (StartsWith(last, "f:") && node->is_object()) {
    node->erase(last.substr(2));
  } else if (StartsWith(last, "k:") && node->is_array()) {
    auto it = FindKeyed(*node, last);
    if (it != node->end()) node->erase(node->begin() + (it - node->cbegin()));
  }
}

// Merges an applied configuration into the live value (see the header).
nlohmann::json MergeApplied(const nlohmann::json& live, const nlohmann::json& config) {
  if (config.is_object() && live.is_object()) {
    nlohmann::json out = live;
    for (auto it = config.begin(); it != config.end(); ++it) {
      if (it.value().is_null()) {
        out.erase(it.key());
        continue;
      }
      auto l = live.find(it.key());
      out[it.key()] = l == live.end() ? it.value() : MergeApplied(*l, it.value());
    }
    return out;
  }
  if (IsKeyedList(config) && (IsKeyedList(live) || (live.is_array() && live.empty()))) {
    nlohmann::json out = live;
    for (const auto& element : config) {
      auto it = FindKeyed(out, KeyStep(element));
      if (it == out.end()) {
        out.push_back(element);
      } else {
        size_t index = static_cast<size_t>(it - out.cbegin());
        out[index] = MergeApplied(out[index], element);
      }
    }
    return out;
  }
  return config;
}

}  // namespace

std::string FieldPathString(const FieldPath& path) {
  std::string out;
  for (const std::string& step : path) {
    if (StartsWith(step, "f:")) {
      out += "." + step.substr(2);
    } else if (StartsWith(step, "k:")) {
      nlohmann::json key = nlohmann::json::parse(step.substr(2), nullptr, false);
      std::vector<std::string> parts;
      if (key.is_object()) {
        for (auto it = key.begin(); it != key.end(); ++it) {
          parts.push_back(Cat(it.key(), "=", it.value().dump()));
        }
      }
      out += Cat("[", Join(parts, ","), "]");
    } else {
      out += Cat("[", step, "]");
    }
  }
  return out;
}

FieldSet LeafFields(const nlohmann::json& object, std::string_view subresource) {
  FieldSet out;
  if (!object.is_object()) return out;
  FieldPath path;
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    if (key == "apiVersion" || key == "kind") continue;
    if ((subresource == "status") != (key == "status")) continue;
    if (key == "metadata") {
      if (!it.value().is_object()) continue;
      for (const char* m : kTrackedMetadata) {
        auto f = it.value().find(m);
        if (f == it.value().end() || f->is_null()) continue;
        path = {"f:metadata", Cat("f:", m)};
        Walk(*f, path, out);
      }
      continue;
    }
    path = {Cat("f:", key)};
    Walk(it.value(), path, out);
  }
  return out;
}

nlohmann::json ToFieldsV1(const FieldSet& set) {
  nlohmann::json root = nlohmann::json::object();
  for (const FieldPath& path : set) {
    nlohmann::json* node = &root;
    for (const std::string& step : path) {
      if (!node->contains(step)) (*node)[step] = nlohmann::json::object();
      node = &(*node)[step];
    }
  }
  return root;
}

FieldSet FromFieldsV1(const nlohmann::json& fields) {
  FieldSet out;
  FieldPath path;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& node) {
    bool has_children = false;
    if (node.is_object()) {
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it.key() == ".") continue;
        has_children = true;
        path.push_back(it.key());
        walk(it.value());
        path.pop_back();
      }
    }
    if (!has_children && !path.empty()) out.insert(path);
  };
  walk(fields);
  return out;
}

std::optional<nlohmann::json> ValueAt(const nlohmann::json& object, const FieldPath& path) {
  const nlohmann::json* node = &object;
  for (const std::string& step : path) {
    node = Child(*node, step);
    if (node == nullptr) return std::nullopt;
  }
  return *node;
}

absl::StatusOr<ManagedFields> ManagedFields::FromObject(const nlohmann::json& object) {
  ManagedFields mf;
  if (!object.is_object()) return mf;
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return mf;
  auto list = meta->find("managedFields");
  if (list == meta->end() || list->is_null()) return mf;
  if (!list->is_array()) {
    return absl::InvalidArgumentError("metadata.managedFields: must be a list");
  }
  for (size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& e = (*list)[i];
    if (!e.is_object()) {
      return absl::InvalidArgumentError(Cat("metadata.managedFields[", i, "]: must be an object"));
    }
    auto str = [&](const char* key) {
      auto it = e.find(key);
      return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    ManagedFieldsEntry entry;
    entry.manager = str("manager");
    entry.operation = str("operation");
    entry.subresource = str("subresource");
    entry.api_version = str("apiVersion");
    entry.time = str("time");
    auto fields = e.find("fieldsV1");
    if (fields != e.end()) entry.fields = FromFieldsV1(*fields);
    if (entry.manager.empty() && entry.fields.empty()) continue;
    mf.entries_.push_back(std::move(entry));
  }
  return mf;
}

void ManagedFields::ToObject(nlohmann::json& object) const {
  if (!object.is_object()) return;
  nlohmann::json& meta = object["metadata"];
  if (entries_.empty()) {
    if (meta.is_object()) meta.erase("managedFields");
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const ManagedFieldsEntry& e : entries_) {
    nlohmann::json j = {{"manager", e.manager},        {"operation", e.operation},
                        {"apiVersion", e.api_version}, {"time", e.time},
                        {"fieldsType", "FieldsV1"},    {"fieldsV1", ToFieldsV1(e.fields)}};
    if (!e.subresource.empty()) j["subresource"] = e.subresource;
    list.push_back(std::move(j));
  }
  meta["managedFields"] = std::move(list);
}

ManagedFieldsEntry& ManagedFields::EntryFor(const std::string& manager,
                                            const std::string& operation,
                                            const std::string& subresource) {
  for (ManagedFieldsEntry& e : entries_) {
    if (e.manager == manager && e.operation == operation && e.subresource == subresource) {
      return e;
    }
  }
  ManagedFieldsEntry e;
  e.manager = manager;
  e.operation = operation;
  e.subresource = subresource;
  entries_.push_back(std::move(e));
  return entries_.back();
}

void ManagedFields::DropEmpty() {
  std::erase_if(entries_, [](const ManagedFieldsEntry& e) { return e.fields.empty(); });
}

void ManagedFields::RecordUpdate(const nlohmann::json& before, const nlohmann::json& after,
                                 const std::string& manager, const std::string& subresource,
                                 const std::string& api_version, const std::string& time) {
  FieldSet after_fields = LeafFields(after, subresource);
  FieldSet before_fields = before.is_null() ? FieldSet{} : LeafFields(before, subresource);
  std::vector<FieldPath> changed;
  for (const FieldPath& p : after_fields) {
    if (ValueAt(before, p) != ValueAt(after, p)) changed.push_back(p);
  }
  std::vector<FieldPath> removed;
  for (const FieldPath& p : before_fields) {
    if (!after_fields.count(p)) removed.push_back(p);
  }
  for (ManagedFieldsEntry& e : entries_) {
    if (e.subresource != subresource) continue;
    std::erase_if(e.fields, [&](const FieldPath& q) {
      for (const FieldPath& p : removed) {
        if (IsPrefix(p, q)) return true;
      }
      if (e.manager == manager && e.operation == "Update") return false;
      for (const FieldPath& p : changed) {
        if (Related(p, q)) return true;
      }
      return false;
    });
  }
  if (!changed.empty()) {
    ManagedFieldsEntry& mine = EntryFor(manager, "Update", subresource);
    for (const FieldPath& p : changed) {
      // A leaf replaces what the same manager owned below or above it.
      std::erase_if(mine.fields, [&](const FieldPath& q) { return q != p && Related(p, q); });
      mine.fields.insert(p);
    }
    mine.api_version = api_version;
    mine.time = time;
  }
  DropEmpty();
}

absl::StatusOr<nlohmann::json> ManagedFields::Apply(
    const nlohmann::json& live, const nlohmann::json& config, const std::string& manager,
    const std::string& subresource, bool force, const std::string& api_version,
    const std::string& time, std::vector<ApplyConflict>* conflicts) {
  FieldSet applied = LeafFields(config, subresource);
  nlohmann::json base = live.is_null() ? nlohmann::json::object() : live;

  // Conflicts: fields another manager owns that this apply sets to a different value.
  const nlohmann::json preview = MergeApplied(base, config);
  std::vector<ApplyConflict> found;
  for (const ManagedFieldsEntry& e : entries_) {
    if (e.manager == manager || e.subresource != subresource) continue;
    for (const FieldPath& q : e.fields) {
      for (const FieldPath& p : applied) {
        if (!Related(p, q)) continue;
        const FieldPath& at = q.size() < p.size() ? q : p;
        std::optional<nlohmann::json> current = ValueAt(base, at);
        if (!current.has_value()) continue;  // ownership of a field that is gone
        if (current != ValueAt(preview, at)) {
          found.push_back({e.manager, at});
          break;
        }
      }
    }
  }
  if (!found.empty() && !force) {
    if (conflicts != nullptr) *conflicts = std::move(found);
    return absl::FailedPreconditionError("apply conflicts with other field managers");
  }
  if (force) {
    for (const ApplyConflict& c : found) {
      for (ManagedFieldsEntry& e : entries_) {
        if (e.manager != c.manager || e.subresource != subresource) continue;
        std::erase_if(e.fields, [&](const FieldPath& q) { return Related(q, c.path); });
      }
    }
  }

  // Fields this manager applied before and no longer applies are removed unless owned by
  // another manager. A keyed element nobody owns anything of any more goes as a whole.
  ManagedFieldsEntry& mine = EntryFor(manager, "Apply", subresource);
  nlohmann::json result = base;
  auto owned_elsewhere = [&](const FieldPath& prefix) {
    for (const FieldPath& p : applied) {
      if (IsPrefix(prefix, p)) return true;
    }
    for (const ManagedFieldsEntry& e : entries_) {
      if (&e == &mine || e.subresource != subresource) continue;
      for (const FieldPath& q : e.fields) {
        if (Related(prefix, q)) return true;
      }
    }
    return false;
  };
  for (const FieldPath& old : mine.fields) {
    if (applied.count(old) || owned_elsewhere(old)) continue;
    FieldPath target = old;
    for (size_t i = 0; i < old.size(); ++i) {
      if (!StartsWith(old[i], "k:")) continue;
      FieldPath element(old.begin(), old.begin() + static_cast<long>(i) + 1);
      if (!owned_elsewhere(element)) {
        target = element;
        break;
      }
    }
    RemoveAt(result, target);
  }
  result = MergeApplied(result, config);
  mine.fields = applied;
  mine.api_version = api_version;
  mine.time = time;
  DropEmpty();
  return result;
}

}  // namespace sandboxlet::rest
