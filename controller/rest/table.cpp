#include "controller/rest/table.h"

#include <cstdio>
#include <ctime>

#include "runtime/base/strings.h"

namespace sandboxlet::rest {
namespace {

struct Column {
  std::string name;
  std::string type;
  std::string format;
  std::string description;
  int priority = 0;
};

const nlohmann::json* At(const nlohmann::json& object, std::initializer_list<const char*> path) {
  const nlohmann::json* node = &object;
  for (const char* step : path) {
    if (!node->is_object()) return nullptr;
    auto it = node->find(step);
    if (it == node->end()) return nullptr;
    node = &*it;
  }
  return node;
}

std::string StringAt(const nlohmann::json& object, std::initializer_list<const char*> path) {
  const nlohmann::json* v = At(object, path);
  if (v == nullptr || v->is_null()) return "";
  return v->is_string() ? v->get<std::string>() : v->dump();
}

nlohmann::json Age(const nlohmann::json& object, std::chrono::system_clock::time_point now,
                   std::initializer_list<const char*> path) {
  std::optional<std::chrono::system_clock::time_point> t = ParseTimestamp(StringAt(object, path));
  if (!t.has_value()) return "<unknown>";
  return HumanDuration(std::chrono::duration_cast<std::chrono::seconds>(now - *t));
}

std::vector<Column> ColumnsOf(const ResourceType& type) {
  const std::string name_doc = "Name must be unique within a namespace. Cannot be updated.";
  const std::string age_doc = "Time since the object was created.";
  if (type.resource == "sandboxes") {
    return {{"Name", "string", "name", name_doc},
            {"Phase", "string", "", "Lifecycle phase of the sandbox."},
            {"IP", "string", "", "Address at which the node reaches the sandbox."},
            {"VCPUs", "integer", "", "Virtual CPUs."},
            {"Memory", "string", "", "Guest memory."},
            {"Age", "date", "", age_doc},
            {"Template", "string", "", "Base image the root disk is cloned from.", 1},
            {"Node", "string", "", "Node running the sandbox.", 1}};
  }
  if (type.resource == "sandboxsnapshots") {
    return {{"Name", "string", "name", name_doc},
            {"Sandbox", "string", "", "Snapshotted sandbox."},
            {"Phase", "string", "", "Lifecycle phase of the snapshot."},
            {"Size", "string", "", "Disk space the snapshot occupies (allocated blocks)."},
            {"Age", "date", "", age_doc}};
  }
  if (type.resource == "events") {
    return {{"Last Seen", "string", "", "Time since the event was last seen."},
            {"Type", "string", "", "Normal or Warning."},
            {"Reason", "string", "", "Why the event was emitted."},
            {"Object", "string", "", "The object the event is about."},
            {"Message", "string", "", "Human-readable description."},
            {"Name", "string", "name", name_doc, 1}};
  }
  return {{"Name", "string", "name", name_doc},
          {"Status", "string", "", "Phase of the namespace."},
          {"Age", "date", "", age_doc}};
}

nlohmann::json Cells(const ResourceType& type, const nlohmann::json& o,
                     std::chrono::system_clock::time_point now) {
  std::string name = StringAt(o, {"metadata", "name"});
  auto or_none = [](std::string s) { return s.empty() ? std::string("<none>") : s; };
  if (type.resource == "sandboxes") {
    const nlohmann::json* vcpus = At(o, {"spec", "vcpus"});
    const nlohmann::json* mem = At(o, {"spec", "memoryMiB"});
    std::string phase = StringAt(o, {"status", "phase"});
    if (phase.empty() && At(o, {"metadata", "deletionTimestamp"}) != nullptr) phase = "Terminating";
    return {name,
            or_none(phase),
            or_none(StringAt(o, {"status", "network", "ip"})),
            vcpus != nullptr && vcpus->is_number() ? *vcpus : nlohmann::json(nullptr),
            mem != nullptr && mem->is_number_integer()
                ? nlohmann::json(HumanBytes(mem->get<int64_t>() << 20))
                : nlohmann::json("<none>"),
            Age(o, now, {"metadata", "creationTimestamp"}),
            or_none(StringAt(o, {"spec", "template"})),
            or_none(StringAt(o, {"spec", "nodeName"}))};
  }
  if (type.resource == "sandboxsnapshots") {
    const nlohmann::json* size = At(o, {"status", "sizeBytes"});
    return {name, or_none(StringAt(o, {"spec", "sandboxName"})),
            or_none(StringAt(o, {"status", "phase"})),
            size != nullptr && size->is_number_integer()
                ? nlohmann::json(HumanBytes(size->get<int64_t>()))
                : nlohmann::json("<none>"),
            Age(o, now, {"metadata", "creationTimestamp"})};
  }
  if (type.resource == "events") {
    std::string kind = StringAt(o, {"involvedObject", "kind"});
    for (char& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string object = Cat(kind, "/", StringAt(o, {"involvedObject", "name"}));
    nlohmann::json last = "<unknown>";
    for (auto path : {std::initializer_list<const char*>{"lastTimestamp"},
                      std::initializer_list<const char*>{"eventTime"},
                      std::initializer_list<const char*>{"firstTimestamp"},
                      std::initializer_list<const char*>{"metadata", "creationTimestamp"}}) {
      if (ParseTimestamp(StringAt(o, path)).has_value()) {
        last = Age(o, now, path);
        break;
      }
    }
    return {last,   StringAt(o, {"type"}),    StringAt(o, {"reason"}),
            object, StringAt(o, {"message"}), name};
  }
  std::string phase = StringAt(o, {"status", "phase"});
  return {name, phase.empty() ? "Active" : phase, Age(o, now, {"metadata", "creationTimestamp"})};
}

}  // namespace

std::optional<std::string> TableVersionFromAccept(std::string_view accept) {
  for (const std::string& entry : Split(accept, ',')) {
    std::string_view e = Trim(entry);
    std::string_view type = Trim(e.substr(0, e.find(';')));
    bool table = e.find("as=Table") != std::string_view::npos &&
                 e.find("g=meta.k8s.io") != std::string_view::npos;
    if (table) {
      if (e.find("v=v1beta1") != std::string_view::npos) return std::string("v1beta1");
      if (e.find("v=v1") != std::string_view::npos) return std::string("v1");
      continue;
    }
    if (type == "application/json" || type == "*/*" || type == "application/yaml") {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<IncludeObject> ParseIncludeObject(std::string_view text) {
  if (text.empty() || text == "Metadata") return IncludeObject::kMetadata;
  if (text == "None") return IncludeObject::kNone;
  if (text == "Object") return IncludeObject::kObject;
  return std::nullopt;
}

nlohmann::json RenderTable(const ResourceType& type, const std::vector<nlohmann::json>& items,
                           const nlohmann::json& list_metadata, const TableOptions& options,
                           std::chrono::system_clock::time_point now) {
  nlohmann::json table = {
      {"kind", "Table"},
      {"apiVersion", options.api_version},
      {"metadata", list_metadata.is_object() ? list_metadata : nlohmann::json::object()}};
  nlohmann::json columns = nlohmann::json::array();
  if (!options.no_headers) {
    for (const Column& c : ColumnsOf(type)) {
      columns.push_back({{"name", c.name},
                         {"type", c.type},
                         {"format", c.format},
                         {"description", c.description},
                         {"priority", c.priority}});
    }
  }
  table["columnDefinitions"] = columns;
  nlohmann::json rows = nlohmann::json::array();
  for (const nlohmann::json& o : items) {
    nlohmann::json row = {{"cells", Cells(type, o, now)}};
    if (options.include == IncludeObject::kObject) {
      row["object"] = o;
    } else if (options.include == IncludeObject::kMetadata) {
      std::string ver = options.api_version;
      row["object"] = {{"kind", "PartialObjectMetadata"},
                       {"apiVersion", ver},
                       {"metadata", o.value("metadata", nlohmann::json::object())}};
    }
    rows.push_back(std::move(row));
  }
  table["rows"] = rows;
  return table;
}

std::string HumanDuration(std::chrono::seconds d) {
  int64_t s = d.count();
  if (s < -1) return "<invalid>";
  if (s < 0) return "0s";
  if (s < 120) return Cat(s, "s");
  int64_t m = s / 60;
  if (m < 10) return s % 60 == 0 ? Cat(m, "m") : Cat(m, "m", s % 60, "s");
  if (m < 180) return Cat(m, "m");
  int64_t h = m / 60;
  if (h < 8) return m % 60 == 0 ? Cat(h, "h") : Cat(h, "h", m % 60, "m");
  if (h < 48) return Cat(h, "h");
  if (h < 24 * 8) return h % 24 == 0 ? Cat(h / 24, "d") : Cat(h / 24, "d", h % 24, "h");
  if (h < 24 * 365 * 2) return Cat(h / 24, "d");
  int64_t y = h / (24 * 365);
  if (y < 8) {
    int64_t days = (h / 24) % 365;
    return days == 0 ? Cat(y, "y") : Cat(y, "y", days, "d");
  }
  return Cat(y, "y");
}

std::string HumanBytes(int64_t bytes) {
  static const char* units[] = {"Ki", "Mi", "Gi", "Ti", "Pi"};
  if (bytes < 1024) return Cat(bytes);
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (v == static_cast<double>(static_cast<int64_t>(v))) {
    std::snprintf(buf, sizeof(buf), "%lld%s", static_cast<long long>(v), units[unit]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f%s", v, units[unit]);
  }
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseTimestamp(std::string_view text) {
  std::tm tm{};
  int consumed = 0;
  std::string s(text);
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm(&tm);
  size_t i = static_cast<size_t>(consumed);
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  }
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int hh = 0, mm = 0;
    if (std::sscanf(s.c_str() + i + 1, "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
    int offset = (hh * 60 + mm) * 60;
    t -= s[i] == '+' ? offset : -offset;
  } else if (i >= s.size() || (s[i] != 'Z' && s[i] != 'z')) {
    return std::nullopt;
  }
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace sandboxlet::rest
