#include "api/codec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <optional>
#include <regex>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"

namespace sandboxlet::api {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Prefixes a status's message with `context`, keeping its code and payloads (the field errors).
absl::Status WithContext(const absl::Status& status, std::string_view context) {
  absl::Status out(status.code(), Cat(context, ": ", status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

// ---- YAML → JSON -------------------------------------------------------------------------------

// Resolves a plain (unquoted, untagged) scalar by the YAML 1.2 core schema. Returns a string
// value when the scalar is not a null, boolean or number.
nlohmann::json ResolvePlain(const std::string& s) {
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kOct("0o[0-7]+");
  static const std::regex kHex("0x[0-9a-fA-F]+");
  static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  auto integer = [&](std::string_view digits, int base, bool negative) -> nlohmann::json {
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) return s;  // overflow
    if (!negative) return v;
    if (v > static_cast<uint64_t>(INT64_MAX) + 1) return s;
    return static_cast<int64_t>(0 - v);
  };
  if (std::regex_match(s, kInt)) {
    bool negative = s[0] == '-';
    std::string_view digits(s);
    if (s[0] == '-' || s[0] == '+') digits.remove_prefix(1);
    return integer(digits, 10, negative);
  }
  if (std::regex_match(s, kOct)) return integer(std::string_view(s).substr(2), 8, false);
  if (std::regex_match(s, kHex)) return integer(std::string_view(s).substr(2), 16, false);
  if (std::regex_match(s, kFloat)) return std::stod(s);
  return s;
}

// Strings that YAML 1.1 readers (kubectl, sigs.k8s.io/yaml) would take for booleans.
bool IsYaml11Bool(const std::string& s) {
  static const std::regex kBool("y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF");
  return std::regex_match(s, kBool);
}

absl::StatusOr<nlohmann::json> YamlToJson(const YAML::Node& node, const std::string& path) {
  auto where = [&]() {
    return Cat("line ", node.Mark().line + 1, path.empty() ? "" : Cat(" (", path, ")"));
  };
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Scalar: {
      const std::string& tag = node.Tag();
      if (tag == "?") return ResolvePlain(node.Scalar());
      if (tag == "!" || tag == "tag:yaml.org,2002:str") return node.Scalar();
      nlohmann::json resolved = ResolvePlain(node.Scalar());
      bool ok = (tag == "tag:yaml.org,2002:int" && resolved.is_number_integer()) ||
                (tag == "tag:yaml.org,2002:float" && resolved.is_number()) ||
                (tag == "tag:yaml.org,2002:bool" && resolved.is_boolean()) ||
                (tag == "tag:yaml.org,2002:null" && resolved.is_null());
      if (!ok) {
        return absl::InvalidArgumentError(
            Cat("yaml: ", where(), ": cannot read \"", node.Scalar(), "\" as ", tag));
      }
      return resolved;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      size_t i = 0;
      for (const YAML::Node& item : node) {
        SBL_ASSIGN_OR_RETURN(nlohmann::json v, YamlToJson(item, Cat(path, "[", i++, "]")));
        out.push_back(std::move(v));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!it->first.IsScalar()) {
          return absl::InvalidArgumentError(
              Cat("yaml: ", where(), ": mapping keys must be scalars"));
        }
        const std::string& key = it->first.Scalar();
        std::string child = path.empty() ? key : Cat(path, ".", key);
        if (out.contains(key)) {
          return absl::InvalidArgumentError(
              Cat("yaml: line ", it->first.Mark().line + 1, ": duplicate key \"", child, "\""));
        }
        SBL_ASSIGN_OR_RETURN(out[key], YamlToJson(it->second, child));
      }
      return out;
    }
  }
  return nullptr;
}

// ---- JSON → YAML -------------------------------------------------------------------------------

template <typename J>
void EmitYaml(YAML::Emitter& out, const J& j) {
  auto emit_string = [&](const std::string& s) {
    bool quote = s.empty() || !ResolvePlain(s).is_string() || IsYaml11Bool(s);
    if (quote) out << YAML::DoubleQuoted;
    out << s;
  };
  if (j.is_object()) {
    if (j.empty()) out << YAML::Flow;
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key;
      emit_string(it.key());
      out << YAML::Value;
      EmitYaml(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    if (j.empty()) out << YAML::Flow;
    out << YAML::BeginSeq;
    for (const auto& item : j) EmitYaml(out, item);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    emit_string(j.template get<std::string>());
  } else if (j.is_boolean()) {
    out << (j.template get<bool>() ? "true" : "false");
  } else if (j.is_number_unsigned()) {
    out << j.template get<uint64_t>();
  } else if (j.is_number_integer()) {
    out << j.template get<int64_t>();
  } else if (j.is_number_float()) {
    out << j.dump();
  } else {
    out << YAML::Null;
  }
}

template <typename J>
std::string EmitYamlDocument(const J& json) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  EmitYaml(out, json);
  std::string text = out.c_str();
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  return text;
}

// ---- message → Kubernetes-shaped JSON ----------------------------------------------------------

bool Is64Bit(const FieldDescriptor& f) {
  return f.cpp_type() == FieldDescriptor::CPPTYPE_INT64 ||
         f.cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
}

// protobuf's printer writes 64-bit integers as strings; Kubernetes writes numbers.
template <typename J>
J ShapeValue(const nlohmann::json& v, const FieldDescriptor& f);

template <typename J>
J ShapeMessage(const nlohmann::json& printed, const Descriptor& type) {
  if (!printed.is_object()) return J(printed);  // well-known types such as Timestamp
  J out = J::object();
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& f = *type.field(i);
    auto it = printed.find(f.json_name());
    if (it == printed.end()) continue;
    if (f.is_map()) {
      J map = J::object();
      for (const auto& [k, v] : it->items()) {
        map[k] = ShapeValue<J>(v, *f.message_type()->map_value());
      }
      out[f.json_name()] = std::move(map);
    } else if (f.is_repeated()) {
      J list = J::array();
      for (const auto& v : *it) list.push_back(ShapeValue<J>(v, f));
      out[f.json_name()] = std::move(list);
    } else {
      out[f.json_name()] = ShapeValue<J>(*it, f);
    }
  }
  return out;
}

template <typename J>
J ShapeValue(const nlohmann::json& v, const FieldDescriptor& f) {
  if (f.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return ShapeMessage<J>(v, *f.message_type());
  }
  if (Is64Bit(f) && v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (f.cpp_type() == FieldDescriptor::CPPTYPE_INT64) {
      int64_t n = 0;
      auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
      if (ec == std::errc() && ptr == s.data() + s.size()) return J(n);
    } else {
      uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
      if (ec == std::errc() && ptr == s.data() + s.size()) return J(n);
    }
  }
  return J(v);
}

absl::StatusOr<nlohmann::json> Printed(const Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;  // json_name, defaults omitted
  auto status = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        Cat("encode ", message.GetDescriptor()->name(), ": ", status.ToString()));
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InternalError(
        Cat("encode ", message.GetDescriptor()->name(), ": protobuf printed invalid JSON"));
  }
  return j;
}

template <typename J>
absl::StatusOr<J> Shaped(const Message& message) {
  SBL_ASSIGN_OR_RETURN(nlohmann::json printed, Printed(message));
  return ShapeMessage<J>(printed, *message.GetDescriptor());
}

// ---- JSON → message ----------------------------------------------------------------------------

std::vector<std::string> Render(const std::vector<FieldError>& errors) {
  std::vector<std::string> out;
  for (const FieldError& e : errors) out.push_back(e.ToString());
  return out;
}

absl::Status ParseChecked(const nlohmann::json& checked, Message& message,
                          std::string_view subject) {
  google::protobuf::util::JsonParseOptions options;
  auto status = google::protobuf::util::JsonStringToMessage(checked.dump(), &message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(Cat(subject, ": ", status.ToString()));
  }
  return absl::OkStatus();
}

std::string NameIn(const nlohmann::json& json) {
  auto meta = json.find("metadata");
  if (meta == json.end() || !meta->is_object()) return "";
  auto name = meta->find("name");
  return name != meta->end() && name->is_string() ? name->get<std::string>() : "";
}

// Reads apiVersion and kind; errors as field errors so the REST layer can report them as causes.
absl::StatusOr<Kind> Dispatch(const nlohmann::json& json) {
  std::vector<FieldError> errors;
  auto api_version = json.find("apiVersion");
  if (api_version == json.end() || api_version->is_null()) {
    errors.push_back(
        {"apiVersion", FieldErrorType::kRequired, nullptr, Cat("must be ", kApiVersion)});
  } else if (!api_version->is_string() || *api_version != kApiVersion) {
    std::string got = api_version->is_string() ? api_version->get<std::string>() : "";
    std::string detail = StartsWith(got, Cat(kGroup, "/"))
                             ? Cat("version not served; this API serves ", kApiVersion)
                             : Cat("group/version not served here; this API serves ", kApiVersion);
    errors.push_back({"apiVersion", FieldErrorType::kInvalid, *api_version, detail});
  }
  std::optional<Kind> kind;
  auto k = json.find("kind");
  if (k == json.end() || k->is_null()) {
    errors.push_back(
        {"kind", FieldErrorType::kRequired, nullptr, "must be \"Sandbox\" or \"SandboxSnapshot\""});
  } else if (k->is_string() && *k == KindName(Kind::kSandbox)) {
    kind = Kind::kSandbox;
  } else if (k->is_string() && *k == KindName(Kind::kSandboxSnapshot)) {
    kind = Kind::kSandboxSnapshot;
  } else {
    errors.push_back({"kind", FieldErrorType::kNotSupported, *k,
                      Cat("no such kind in ", kApiVersion,
                          "; supported values: \"Sandbox\", \"SandboxSnapshot\"")});
  }
  if (!errors.empty()) {
    std::string name = NameIn(json);
    return InvalidStatus(name.empty() ? "object" : Cat("object \"", name, "\""), errors);
  }
  return *kind;
}

}  // namespace

absl::StatusOr<std::vector<nlohmann::json>> ParseYamlDocuments(std::string_view text) {
  std::vector<YAML::Node> nodes;
  try {
    nodes = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        Cat("yaml: line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg));
  }
  std::vector<nlohmann::json> docs;
  for (size_t i = 0; i < nodes.size(); ++i) {
    absl::StatusOr<nlohmann::json> doc;
    try {
      doc = YamlToJson(nodes[i], "");
    } catch (const YAML::Exception& e) {
      doc = absl::InvalidArgumentError(Cat("yaml: ", e.what()));
    }
    if (!doc.ok()) return WithContext(doc.status(), Cat("document ", i + 1));
    if (doc->is_null()) continue;  // empty document, e.g. after a trailing ---
    docs.push_back(*std::move(doc));
  }
  return docs;
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(Cat("json: ", e.what()));
  }
}

absl::StatusOr<Decoded> DecodeObject(const nlohmann::json& json, const DecodeOptions& options) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        Cat("object: expected a mapping with apiVersion, kind, metadata and spec, got ",
            json.type_name()));
  }
  SBL_ASSIGN_OR_RETURN(Kind kind, Dispatch(json));
  std::vector<FieldError> errors, warnings;
  nlohmann::json checked =
      CheckStructure(json, DescriptorOf(kind), options.field_validation, &errors, &warnings);
  std::string name = NameIn(json);
  if (!errors.empty()) return InvalidStatus(kind, name, errors);
  Decoded out{
      kind == Kind::kSandbox ? Object(v1alpha1::Sandbox()) : Object(v1alpha1::SandboxSnapshot()),
      Render(warnings)};
  SBL_RETURN_IF_ERROR(ParseChecked(checked, MutableMessageOf(out.object),
                                   Cat(KindName(kind), ".", kGroup, " \"", name, "\"")));
  return out;
}

absl::Status DecodeMessage(const nlohmann::json& json, Message& message,
                           const DecodeOptions& options, std::vector<std::string>* warnings) {
  std::vector<FieldError> errors, dropped;
  nlohmann::json checked =
      CheckStructure(json, *message.GetDescriptor(), options.field_validation, &errors, &dropped);
  const std::string& subject = message.GetDescriptor()->name();
  if (!errors.empty()) return InvalidStatus(subject, errors);
  if (warnings != nullptr) {
    for (std::string& w : Render(dropped)) warnings->push_back(std::move(w));
  }
  message.Clear();
  return ParseChecked(checked, message, subject);
}

absl::StatusOr<std::vector<Decoded>> DecodeManifests(std::string_view text,
                                                     const DecodeOptions& options) {
  std::vector<nlohmann::json> docs;
  if (StartsWith(Trim(text), "{")) {
    SBL_ASSIGN_OR_RETURN(nlohmann::json doc, ParseJson(text));
    docs.push_back(std::move(doc));
  } else {
    SBL_ASSIGN_OR_RETURN(docs, ParseYamlDocuments(text));
  }
  std::vector<Decoded> out;
  for (size_t i = 0; i < docs.size(); ++i) {
    std::string where = docs.size() > 1 ? Cat("document ", i + 1) : "";
    auto fail = [&](const absl::Status& s) { return where.empty() ? s : WithContext(s, where); };
    const nlohmann::json& doc = docs[i];
    auto kind = doc.is_object() ? doc.find("kind") : doc.end();
    bool is_list = kind != doc.end() && kind->is_string() &&
                   EndsWith(kind->get<std::string>(), "List") && doc.contains("items");
    if (!is_list) {
      absl::StatusOr<Decoded> d = DecodeObject(doc, options);
      if (!d.ok()) return fail(d.status());
      out.push_back(*std::move(d));
      continue;
    }
    const nlohmann::json& items = doc["items"];
    if (!items.is_array()) return fail(absl::InvalidArgumentError("items: must be a list"));
    std::string list_kind = kind->get<std::string>();
    for (size_t j = 0; j < items.size(); ++j) {
      nlohmann::json item = items[j];
      // Typed lists may leave apiVersion/kind off their items.
      for (Kind k : {Kind::kSandbox, Kind::kSandboxSnapshot}) {
        if (list_kind == ListKindName(k) && item.is_object()) {
          if (!item.contains("apiVersion")) item["apiVersion"] = kApiVersion;
          if (!item.contains("kind")) item["kind"] = KindName(k);
        }
      }
      absl::StatusOr<Decoded> d = DecodeObject(item, options);
      if (!d.ok()) return fail(WithContext(d.status(), Cat("items[", j, "]")));
      out.push_back(*std::move(d));
    }
  }
  return out;
}

absl::StatusOr<nlohmann::json> ToJson(const Message& message) {
  return Shaped<nlohmann::json>(message);
}

absl::StatusOr<nlohmann::json> ToJson(const Object& object) { return ToJson(MessageOf(object)); }

absl::StatusOr<std::string> EncodeJson(const Message& message, int indent) {
  SBL_ASSIGN_OR_RETURN(nlohmann::ordered_json j, Shaped<nlohmann::ordered_json>(message));
  return j.dump(indent);
}

absl::StatusOr<std::string> EncodeYaml(const Message& message) {
  SBL_ASSIGN_OR_RETURN(nlohmann::ordered_json j, Shaped<nlohmann::ordered_json>(message));
  return EmitYamlDocument(j);
}

std::string EncodeYaml(const nlohmann::json& json) { return EmitYamlDocument(json); }
std::string EncodeYaml(const nlohmann::ordered_json& json) { return EmitYamlDocument(json); }

}  // namespace sandboxlet::api
