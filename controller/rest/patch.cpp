#include "controller/rest/patch.h"

#include <vector>

#include "runtime/base/strings.h"

namespace sandboxlet::rest {

nlohmann::json MergePatch(const nlohmann::json& target, const nlohmann::json& patch) {
  if (!patch.is_object()) return patch;
  nlohmann::json result = target.is_object() ? target : nlohmann::json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.value().is_null()) {
      result.erase(it.key());
    } else {
      auto existing = result.find(it.key());
      result[it.key()] =
          MergePatch(existing != result.end() ? *existing : nlohmann::json(), it.value());
    }
  }
  return result;
}

namespace {

absl::StatusOr<std::vector<std::string>> ParsePointer(std::string_view pointer) {
  std::vector<std::string> tokens;
  if (pointer.empty()) return tokens;
  if (pointer[0] != '/') {
    return absl::InvalidArgumentError(
        Cat("JSON pointer \"", pointer, "\" must be empty or start with '/'"));
  }
  for (const std::string& raw : Split(pointer.substr(1), '/')) {
    std::string token;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~') {
        if (i + 1 < raw.size() && raw[i + 1] == '0') {
          token.push_back('~');
        } else if (i + 1 < raw.size() && raw[i + 1] == '1') {
          token.push_back('/');
        } else {
          return absl::InvalidArgumentError(
              Cat("JSON pointer \"", pointer, "\": '~' must be followed by 0 or 1"));
        }
        ++i;
      } else {
        token.push_back(raw[i]);
      }
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// An array index token: digits without a leading zero. `size` bounds it (inclusive when
// `allow_end`, for add); "-" means the end when allow_end.
absl::StatusOr<size_t> ArrayIndex(const std::string& token, size_t size, bool allow_end) {
  if (token == "-") {
    if (allow_end) return size;
    return absl::InvalidArgumentError("index \"-\" names no existing element");
  }
  bool digits = !token.empty() && token.size() < 19;
  for (char c : token) digits = digits && c >= '0' && c <= '9';
  if (!digits || (token.size() > 1 && token[0] == '0')) {
    return absl::InvalidArgumentError(Cat("\"", token, "\" is not an array index"));
  }
  size_t index = std::stoull(token);
  if (index > size || (index == size && !allow_end)) {
    return absl::InvalidArgumentError(
        Cat("index ", index, " is out of range (array of ", size, ")"));
  }
  return index;
}

// The value at `tokens`, or NotFound-ish InvalidArgument.
absl::StatusOr<nlohmann::json*> Resolve(nlohmann::json& doc, const std::vector<std::string>& tokens,
                                        size_t count) {
  nlohmann::json* cur = &doc;
  for (size_t i = 0; i < count; ++i) {
    const std::string& t = tokens[i];
    if (cur->is_object()) {
      auto it = cur->find(t);
      if (it == cur->end()) return absl::InvalidArgumentError(Cat("no member \"", t, "\""));
      cur = &*it;
    } else if (cur->is_array()) {
      absl::StatusOr<size_t> idx = ArrayIndex(t, cur->size(), false);
      if (!idx.ok()) return idx.status();
      cur = &(*cur)[*idx];
    } else {
      return absl::InvalidArgumentError(Cat("\"", t, "\" is below a ", cur->type_name()));
    }
  }
  return cur;
}

absl::Status Add(nlohmann::json& doc, const std::vector<std::string>& path, nlohmann::json value) {
  if (path.empty()) {
    doc = std::move(value);
    return absl::OkStatus();
  }
  absl::StatusOr<nlohmann::json*> parent = Resolve(doc, path, path.size() - 1);
  if (!parent.ok()) return parent.status();
  const std::string& last = path.back();
  if ((*parent)->is_object()) {
    (**parent)[last] = std::move(value);
  } else if ((*parent)->is_array()) {
    absl::StatusOr<size_t> idx = ArrayIndex(last, (*parent)->size(), true);
    if (!idx.ok()) return idx.status();
    (*parent)->insert((*parent)->begin() + static_cast<long>(*idx), std::move(value));
  } else {
    return absl::InvalidArgumentError(Cat("cannot add below a ", (*parent)->type_name()));
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Remove(nlohmann::json& doc, const std::vector<std::string>& path) {
  if (path.empty()) return absl::InvalidArgumentError("cannot remove the whole document");
  absl::StatusOr<nlohmann::json*> parent = Resolve(doc, path, path.size() - 1);
  if (!parent.ok()) return parent.status();
  const std::string& last = path.back();
  if ((*parent)->is_object()) {
    auto it = (*parent)->find(last);
    if (it == (*parent)->end()) return absl::InvalidArgumentError(Cat("no member \"", last, "\""));
    nlohmann::json old = std::move(*it);
    (*parent)->erase(it);
    return old;
  }
  if ((*parent)->is_array()) {
    absl::StatusOr<size_t> idx = ArrayIndex(last, (*parent)->size(), false);
    if (!idx.ok()) return idx.status();
    nlohmann::json old = std::move((**parent)[*idx]);
    (*parent)->erase(*idx);
    return old;
  }
  return absl::InvalidArgumentError(Cat("cannot remove below a ", (*parent)->type_name()));
}

absl::Status ApplyOne(nlohmann::json& doc, const nlohmann::json& op) {
  if (!op.is_object()) return absl::InvalidArgumentError("operation is not an object");
  auto str = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = op.find(key);
    if (it == op.end() || !it->is_string()) {
      return absl::InvalidArgumentError(Cat("missing string member \"", key, "\""));
    }
    return it->get<std::string>();
  };
  absl::StatusOr<std::string> name = str("op");
  if (!name.ok()) return name.status();
  absl::StatusOr<std::string> path_text = str("path");
  if (!path_text.ok()) return path_text.status();
  absl::StatusOr<std::vector<std::string>> path = ParsePointer(*path_text);
  if (!path.ok()) return path.status();
  auto value = [&]() -> absl::StatusOr<nlohmann::json> {
    auto it = op.find("value");
    if (it == op.end()) return absl::InvalidArgumentError("missing member \"value\"");
    return *it;
  };

  if (*name == "add") {
    absl::StatusOr<nlohmann::json> v = value();
    if (!v.ok()) return v.status();
    return Add(doc, *path, std::move(*v));
  }
  if (*name == "remove") return Remove(doc, *path).status();
  if (*name == "replace") {
    absl::StatusOr<nlohmann::json> v = value();
    if (!v.ok()) return v.status();
    absl::StatusOr<nlohmann::json*> target = Resolve(doc, *path, path->size());
    if (!target.ok()) return target.status();
    **target = std::move(*v);
    return absl::OkStatus();
  }
  if (*name == "test") {
    absl::StatusOr<nlohmann::json> v = value();
    if (!v.ok()) return v.status();
    absl::StatusOr<nlohmann::json*> target = Resolve(doc, *path, path->size());
    if (!target.ok()) return target.status();
    if (**target != *v) {
      return absl::InvalidArgumentError(Cat("value is ", (*target)->dump(), ", not ", v->dump()));
    }
    return absl::OkStatus();
  }
  if (*name == "move" || *name == "copy") {
    absl::StatusOr<std::string> from_text = str("from");
    if (!from_text.ok()) return from_text.status();
    absl::StatusOr<std::vector<std::string>> from = ParsePointer(*from_text);
    if (!from.ok()) return from.status();
    if (*name == "move") {
      if (*from == *path) return absl::OkStatus();
      bool into_itself =
          path->size() > from->size() && std::equal(from->begin(), from->end(), path->begin());
      if (into_itself) {
        return absl::InvalidArgumentError(
            Cat("cannot move \"", *from_text, "\" into one of its children"));
      }
      absl::StatusOr<nlohmann::json> moved = Remove(doc, *from);
      if (!moved.ok()) return moved.status();
      return Add(doc, *path, std::move(*moved));
    }
    absl::StatusOr<nlohmann::json*> source = Resolve(doc, *from, from->size());
    if (!source.ok()) return source.status();
    nlohmann::json copy = **source;
    return Add(doc, *path, std::move(copy));
  }
  return absl::InvalidArgumentError(Cat("unknown operation \"", *name, "\""));
}

}  // namespace

absl::StatusOr<nlohmann::json> JsonPatch(const nlohmann::json& document,
                                         const nlohmann::json& patch) {
  if (!patch.is_array()) {
    return absl::InvalidArgumentError("a JSON patch must be an array of operations");
  }
  nlohmann::json doc = document;
  for (size_t i = 0; i < patch.size(); ++i) {
    absl::Status s = ApplyOne(doc, patch[i]);
    if (!s.ok()) {
      auto member = [&](const char* key) {
        if (!patch[i].is_object()) return std::string("?");
        auto it = patch[i].find(key);
        return it != patch[i].end() && it->is_string() ? it->get<std::string>() : "?";
      };
      std::string what = Cat(member("op"), " ", member("path"));
      return absl::InvalidArgumentError(Cat("op ", i, " (", what, "): ", s.message()));
    }
  }
  return doc;
}

}  // namespace sandboxlet::rest
