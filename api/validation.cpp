#include "api/validation.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <set>

#include "runtime/base/names.h"
#include "runtime/base/strings.h"
#include "sandboxlet/v1alpha1/field_options.pb.h"

namespace sandboxlet::api {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using v1alpha1::ObjectMeta;

constexpr char kPayloadUrl[] = "sandboxlet.dev/FieldErrors";
constexpr size_t kMaxAnnotationsBytes = 256 * 1024;
// The server appends this many characters to metadata.generateName.
constexpr size_t kGeneratedSuffixLength = 5;

std::string Child(std::string_view path, std::string_view name) {
  return path.empty() ? std::string(name) : Cat(path, ".", name);
}
std::string Index(std::string_view path, size_t i) { return Cat(path, "[", i, "]"); }
std::string Key(std::string_view path, std::string_view key) { return Cat(path, "[", key, "]"); }

FieldError Error(std::string path, FieldErrorType type, nlohmann::json value, std::string detail) {
  return FieldError{std::move(path), type, std::move(value), std::move(detail)};
}

// ---- "did you mean" --------------------------------------------------------------------------

// Field names compare without case and separators, so memory_mib and memoryMib find memoryMiB.
std::string Fold(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '_' || c == '-') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The declared field closest to `unknown`, or "" when none is close enough to be a likely typo.
std::string Suggest(std::string_view unknown, const Descriptor& type) {
  std::string folded = Fold(unknown);
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (int i = 0; i < type.field_count(); ++i) {
    const std::string& name = type.field(i)->json_name();
    std::string candidate = Fold(name);
    size_t d = EditDistance(folded, candidate);
    // A long enough prefix ("restart" for restartPolicy) counts as close.
    if (folded.size() >= 4 && StartsWith(candidate, folded)) d = std::min<size_t>(d, 1);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
  }
  size_t allowed = std::max<size_t>(2, folded.size() / 3);
  return best_distance <= allowed ? best : "";
}

const FieldDescriptor* FindByJsonName(const Descriptor& type, std::string_view name) {
  for (int i = 0; i < type.field_count(); ++i) {
    if (type.field(i)->json_name() == name) return type.field(i);
  }
  return nullptr;
}

// ---- structural check of raw JSON --------------------------------------------------------------

std::string_view JsonTypeName(const nlohmann::json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "a list";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  return "null";
}

std::string EnumValues(const google::protobuf::EnumDescriptor& e) {
  std::vector<std::string> names;
  for (int i = 0; i < e.value_count(); ++i) {
    if (e.value(i)->number() != 0) names.push_back(Cat("\"", e.value(i)->name(), "\""));
  }
  return Join(names, ", ");
}

class StructureChecker {
 public:
  StructureChecker(FieldValidation mode, std::vector<FieldError>* errors,
                   std::vector<FieldError>* warnings)
      : mode_(mode), errors_(errors), warnings_(warnings) {}

  nlohmann::json Message(const nlohmann::json& value, const Descriptor& type,
                         const std::string& path) {
    if (!value.is_object()) {
      errors_->push_back(Error(path.empty() ? "<root>" : path, FieldErrorType::kInvalid, value,
                               Cat("must be an object, not ", JsonTypeName(value))));
      return nlohmann::json::object();
    }
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, item] : value.items()) {
      std::string child = Child(path, key);
      const FieldDescriptor* field = FindByJsonName(type, key);
      if (field == nullptr) {
        Unknown(child, key, type, path);
        continue;
      }
      if (item.is_null()) continue;  // null means unset, as in Kubernetes
      nlohmann::json checked;
      if (Field(item, *field, child, &checked)) out[key] = std::move(checked);
    }
    return out;
  }

 private:
  void Unknown(const std::string& child, std::string_view key, const Descriptor& type,
               const std::string& path) {
    if (mode_ == FieldValidation::kIgnore) return;
    std::string suggestion = Suggest(key, type);
    FieldError e =
        Error(child, FieldErrorType::kUnknown, nullptr,
              suggestion.empty() ? "" : Cat("did you mean ", Child(path, suggestion), "?"));
    (mode_ == FieldValidation::kStrict ? errors_ : warnings_)->push_back(std::move(e));
  }

  // Checks one field's value; stores what protobuf should parse in *out. False drops the field.
  bool Field(const nlohmann::json& item, const FieldDescriptor& field, const std::string& path,
             nlohmann::json* out) {
    if (field.is_map()) {
      if (!item.is_object()) return TypeError(path, item, "must be an object");
      const FieldDescriptor& value_field = *field.message_type()->map_value();
      *out = nlohmann::json::object();
      for (const auto& [key, v] : item.items()) {
        nlohmann::json checked;
        if (Single(v, value_field, Key(path, key), &checked)) (*out)[key] = std::move(checked);
      }
      return true;
    }
    if (field.is_repeated()) {
      if (!item.is_array()) return TypeError(path, item, "must be a list");
      *out = nlohmann::json::array();
      for (size_t i = 0; i < item.size(); ++i) {
        nlohmann::json checked;
        if (item[i].is_null()) return TypeError(Index(path, i), item[i], "must not be null");
        if (Single(item[i], field, Index(path, i), &checked)) out->push_back(std::move(checked));
      }
      return true;
    }
    return Single(item, field, path, out);
  }

  bool Single(const nlohmann::json& item, const FieldDescriptor& field, const std::string& path,
              nlohmann::json* out) {
    switch (field.cpp_type()) {
      case FieldDescriptor::CPPTYPE_MESSAGE: {
        const Descriptor& type = *field.message_type();
        if (type.full_name() == google::protobuf::Timestamp::descriptor()->full_name()) {
          google::protobuf::Timestamp ts;
          if (!item.is_string() ||
              !google::protobuf::util::TimeUtil::FromString(item.get<std::string>(), &ts)) {
            return TypeError(path, item, "must be an RFC 3339 time such as 2024-05-01T12:00:00Z");
          }
          *out = item;
          return true;
        }
        *out = Message(item, type, path);
        return true;
      }
      case FieldDescriptor::CPPTYPE_STRING:
        if (!item.is_string()) return TypeError(path, item, "must be a string");
        *out = item;
        return true;
      case FieldDescriptor::CPPTYPE_BOOL:
        if (!item.is_boolean()) return TypeError(path, item, "must be a boolean");
        *out = item;
        return true;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto& e = *field.enum_type();
        const auto* v = item.is_string() ? e.FindValueByName(item.get<std::string>()) : nullptr;
        if (v == nullptr || v->number() == 0) {
          errors_->push_back(Error(path, FieldErrorType::kNotSupported, item,
                                   Cat("supported values: ", EnumValues(e))));
          return false;
        }
        *out = item;
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64:
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64:
        return Integer(item, field, path, out);
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT:
        if (!item.is_number()) return TypeError(path, item, "must be a number");
        *out = item;
        return true;
    }
    return TypeError(path, item, "has an unsupported type");
  }

  bool Integer(const nlohmann::json& item, const FieldDescriptor& field, const std::string& path,
               nlohmann::json* out) {
    if (!item.is_number_integer()) return TypeError(path, item, "must be an integer");
    bool is_signed = field.cpp_type() == FieldDescriptor::CPPTYPE_INT32 ||
                     field.cpp_type() == FieldDescriptor::CPPTYPE_INT64;
    bool is_32 = field.cpp_type() == FieldDescriptor::CPPTYPE_INT32 ||
                 field.cpp_type() == FieldDescriptor::CPPTYPE_UINT32;
    bool fits;
    if (item.is_number_unsigned()) {
      uint64_t v = item.get<uint64_t>();
      uint64_t max = is_32 ? (is_signed ? INT32_MAX : UINT32_MAX)
                           : (is_signed ? static_cast<uint64_t>(INT64_MAX) : UINT64_MAX);
      fits = v <= max;
    } else {
      int64_t v = item.get<int64_t>();
      fits = is_signed ? (!is_32 || (v >= INT32_MIN && v <= INT32_MAX)) : v >= 0;
    }
    if (!fits) {
      return TypeError(path, item,
                       Cat("must fit in a ", is_signed ? "signed " : "unsigned ",
                           is_32 ? "32" : "64", "-bit integer"));
    }
    *out = item;
    return true;
  }

  bool TypeError(const std::string& path, const nlohmann::json& item, std::string detail) {
    errors_->push_back(Error(path, FieldErrorType::kInvalid, item, std::move(detail)));
    return false;
  }

  FieldValidation mode_;
  std::vector<FieldError>* errors_;
  std::vector<FieldError>* warnings_;
};

// ---- value checks driven by the .proto options -------------------------------------------------

bool IsSet(const Message& m, const FieldDescriptor& f) {
  const Reflection& r = *m.GetReflection();
  if (f.has_presence()) return r.HasField(m, &f);
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return !r.GetString(m, &f).empty();
    case FieldDescriptor::CPPTYPE_ENUM:
      return r.GetEnumValue(m, &f) != 0;
    case FieldDescriptor::CPPTYPE_INT32:
      return r.GetInt32(m, &f) != 0;
    case FieldDescriptor::CPPTYPE_INT64:
      return r.GetInt64(m, &f) != 0;
    case FieldDescriptor::CPPTYPE_UINT32:
      return r.GetUInt32(m, &f) != 0;
    case FieldDescriptor::CPPTYPE_UINT64:
      return r.GetUInt64(m, &f) != 0;
    case FieldDescriptor::CPPTYPE_BOOL:
      return r.GetBool(m, &f);
    default:
      return true;
  }
}

std::string RangeText(const FieldDescriptor& f) {
  const auto& o = f.options();
  bool has_min = o.HasExtension(v1alpha1::minimum), has_max = o.HasExtension(v1alpha1::maximum);
  int64_t min = o.GetExtension(v1alpha1::minimum), max = o.GetExtension(v1alpha1::maximum);
  if (has_min && has_max) return Cat("must be between ", min, " and ", max);
  if (has_min) return Cat("must be greater than or equal to ", min);
  return Cat("must be less than or equal to ", max);
}

void CheckValues(const Message& m, const std::string& path, std::vector<FieldError>* errors) {
  const Descriptor& type = *m.GetDescriptor();
  const Reflection& r = *m.GetReflection();
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& f = *type.field(i);
    std::string child = Child(path, f.json_name());
    bool required = f.options().GetExtension(v1alpha1::required);
    if (f.is_map()) continue;  // labels and annotations have their own rules
    if (f.is_repeated()) {
      if (f.cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
      for (int j = 0; j < r.FieldSize(m, &f); ++j) {
        CheckValues(r.GetRepeatedMessage(m, &f, j), Index(child, j), errors);
      }
      continue;
    }
    if (!IsSet(m, f)) {
      if (required) errors->push_back(Error(child, FieldErrorType::kRequired, nullptr, ""));
      continue;
    }
    switch (f.cpp_type()) {
      case FieldDescriptor::CPPTYPE_MESSAGE:
        if (f.message_type() != google::protobuf::Timestamp::descriptor()) {
          CheckValues(r.GetMessage(m, &f), child, errors);
        }
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        int v = r.GetEnumValue(m, &f);
        if (f.enum_type()->FindValueByNumber(v) == nullptr) {
          errors->push_back(Error(child, FieldErrorType::kNotSupported, v,
                                  Cat("supported values: ", EnumValues(*f.enum_type()))));
        }
        break;
      }
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t v =
            f.cpp_type() == FieldDescriptor::CPPTYPE_INT32 ? r.GetInt32(m, &f) : r.GetInt64(m, &f);
        const auto& o = f.options();
        if ((o.HasExtension(v1alpha1::minimum) && v < o.GetExtension(v1alpha1::minimum)) ||
            (o.HasExtension(v1alpha1::maximum) && v > o.GetExtension(v1alpha1::maximum))) {
          errors->push_back(Error(child, FieldErrorType::kInvalid, v, RangeText(f)));
        }
        break;
      }
      default:
        break;
    }
  }
}

// ---- names, labels, metadata -------------------------------------------------------------------

constexpr std::string_view kLabelRule =
    "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending "
    "with a letter or digit";
constexpr std::string_view kSubdomainRule =
    "must be a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123 labels "
    "(lowercase letters, digits or '-', each starting and ending with a letter or digit)";

// Checks a name against the label (≤ 63) or subdomain (≤ 253) rule.
void CheckDnsName(std::string_view value, bool label, const std::string& path,
                  std::vector<FieldError>* errors) {
  size_t max = label ? 63 : 253;
  if (value.size() > max) {
    errors->push_back(Error(path, FieldErrorType::kTooLong, std::string(value),
                            Cat("may not be more than ", max, " characters")));
    return;
  }
  if (label ? !IsDns1123Label(value) : !IsDns1123Subdomain(value)) {
    errors->push_back(Error(path, FieldErrorType::kInvalid, std::string(value),
                            std::string(label ? kLabelRule : kSubdomainRule)));
  }
}

bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// The name part of a label key and a label value: ≤ 63 of [A-Za-z0-9-_.], alphanumeric ends.
bool IsQualifiedNamePart(std::string_view s) {
  if (s.empty() || s.size() > 63 || !IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsAlnum(c) || c == '-' || c == '_' || c == '.'; });
}

// A label/annotation key or finalizer: [prefix/]name, prefix a DNS-1123 subdomain.
std::string QualifiedNameProblem(std::string_view key) {
  std::string_view name = key;
  size_t slash = key.find('/');
  if (slash != std::string_view::npos) {
    std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (!IsDns1123Subdomain(prefix)) {
      return "the prefix before '/' must be a DNS-1123 subdomain (e.g. example.com)";
    }
  }
  if (!IsQualifiedNamePart(name)) {
    return "must be an optional DNS subdomain prefix and '/', then at most 63 letters, digits, "
           "'-', '_' or '.', starting and ending with a letter or digit (e.g. example.com/my-key)";
  }
  return "";
}

void CheckMap(const google::protobuf::Map<std::string, std::string>& map, bool label_values,
              const std::string& path, std::vector<FieldError>* errors) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : map) keys.push_back(k);
  std::sort(keys.begin(), keys.end());  // report in a stable order
  size_t total = 0;
  for (const std::string& k : keys) {
    const std::string& v = map.at(k);
    total += k.size() + v.size();
    std::string problem = QualifiedNameProblem(k);
    if (!problem.empty()) {
      errors->push_back(Error(path, FieldErrorType::kInvalid, k, std::move(problem)));
    }
    if (label_values && !v.empty() && !IsQualifiedNamePart(v)) {
      errors->push_back(Error(Key(path, k), FieldErrorType::kInvalid, v,
                              "a label value must be empty or at most 63 letters, digits, '-', "
                              "'_' or '.', starting and ending with a letter or digit"));
    }
  }
  if (!label_values && total > kMaxAnnotationsBytes) {
    errors->push_back(Error(path, FieldErrorType::kTooLong, nullptr,
                            Cat("may not be more than ", kMaxAnnotationsBytes, " bytes in total")));
  }
}

void CheckMetadata(const ObjectMeta& meta, bool label_names, std::vector<FieldError>* errors) {
  if (meta.name().empty()) {
    if (meta.generate_name().empty()) {
      errors->push_back(Error("metadata.name", FieldErrorType::kRequired, nullptr,
                              "name or generateName is required"));
    }
  } else {
    CheckDnsName(meta.name(), label_names, "metadata.name", errors);
  }
  if (!meta.generate_name().empty()) {
    // The server appends random [a-z0-9] characters: the result must be a valid name.
    std::vector<FieldError> sub;
    CheckDnsName(Cat(meta.generate_name(), std::string(kGeneratedSuffixLength, 'a')), label_names,
                 "metadata.generateName", &sub);
    if (!sub.empty()) {
      errors->push_back(Error("metadata.generateName", FieldErrorType::kInvalid,
                              meta.generate_name(),
                              Cat("with ", kGeneratedSuffixLength,
                                  " generated characters appended it ", sub[0].detail)));
    }
  }
  if (meta.namespace_().empty()) {
    errors->push_back(Error("metadata.namespace", FieldErrorType::kRequired, nullptr, ""));
  } else {
    CheckDnsName(meta.namespace_(), /*label=*/true, "metadata.namespace", errors);
  }
  CheckMap(meta.labels(), /*label_values=*/true, "metadata.labels", errors);
  CheckMap(meta.annotations(), /*label_values=*/false, "metadata.annotations", errors);
  std::set<std::string> seen;
  for (int i = 0; i < meta.finalizers_size(); ++i) {
    const std::string& f = meta.finalizers(i);
    std::string path = Index("metadata.finalizers", i);
    std::string problem = QualifiedNameProblem(f);
    if (!problem.empty()) {
      errors->push_back(Error(path, FieldErrorType::kInvalid, f, std::move(problem)));
    } else if (!seen.insert(f).second) {
      errors->push_back(Error(path, FieldErrorType::kDuplicate, f, ""));
    }
  }
}

void CheckTypeMeta(std::string_view api_version, std::string_view kind, Kind want,
                   std::vector<FieldError>* errors) {
  if (api_version != kApiVersion) {
    errors->push_back(Error("apiVersion", FieldErrorType::kInvalid, std::string(api_version),
                            Cat("must be ", kApiVersion)));
  }
  if (kind != KindName(want)) {
    errors->push_back(Error("kind", FieldErrorType::kInvalid, std::string(kind),
                            Cat("must be ", KindName(want))));
  }
}

bool IsCIdentifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s.front()))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '_'; });
}

}  // namespace

// ---- public ------------------------------------------------------------------------------------

std::string_view CauseReason(FieldErrorType type) {
  switch (type) {
    case FieldErrorType::kRequired:
      return "FieldValueRequired";
    case FieldErrorType::kInvalid:
      return "FieldValueInvalid";
    case FieldErrorType::kNotSupported:
      return "FieldValueNotSupported";
    case FieldErrorType::kDuplicate:
      return "FieldValueDuplicate";
    case FieldErrorType::kTooLong:
      return "FieldValueTooLong";
    case FieldErrorType::kForbidden:
      return "FieldValueForbidden";
    case FieldErrorType::kUnknown:
      return "FieldValueUnknown";
  }
  return "FieldValueInvalid";
}

std::string FieldError::ToString() const {
  auto with_detail = [&](std::string head) {
    return detail.empty() ? head : Cat(head, ": ", detail);
  };
  switch (type) {
    case FieldErrorType::kRequired:
      return with_detail(Cat(path, ": Required value"));
    case FieldErrorType::kInvalid:
      return with_detail(Cat(path, ": Invalid value: ", value.dump()));
    case FieldErrorType::kNotSupported:
      return with_detail(Cat(path, ": Unsupported value: ", value.dump()));
    case FieldErrorType::kDuplicate:
      return with_detail(Cat(path, ": Duplicate value: ", value.dump()));
    case FieldErrorType::kTooLong:
      return with_detail(Cat(path, ": Too long"));
    case FieldErrorType::kForbidden:
      return with_detail(Cat(path, ": Forbidden"));
    case FieldErrorType::kUnknown:
      return detail.empty() ? Cat(path, ": unknown field") : Cat(path, ": unknown field; ", detail);
  }
  return Cat(path, ": ", detail);
}

absl::StatusOr<FieldValidation> ParseFieldValidation(std::string_view text) {
  std::string t = Fold(text);
  if (t.empty() || t == "strict") return FieldValidation::kStrict;
  if (t == "warn") return FieldValidation::kWarn;
  if (t == "ignore") return FieldValidation::kIgnore;
  return absl::InvalidArgumentError(
      Cat("fieldValidation \"", text, "\": must be one of Strict, Warn, Ignore"));
}

nlohmann::json CheckStructure(const nlohmann::json& value, const Descriptor& type,
                              FieldValidation mode, std::vector<FieldError>* errors,
                              std::vector<FieldError>* warnings, std::string_view path) {
  StructureChecker checker(mode, errors, warnings);
  return checker.Message(value, type, std::string(path));
}

void SetDefaults(v1alpha1::Sandbox& sandbox) {
  if (sandbox.api_version().empty()) sandbox.set_api_version(std::string(kApiVersion));
  if (sandbox.kind().empty()) sandbox.set_kind(std::string(KindName(Kind::kSandbox)));
  if (sandbox.metadata().namespace_().empty())
    sandbox.mutable_metadata()->set_namespace_("default");
  v1alpha1::SandboxSpec& spec = *sandbox.mutable_spec();
  if (spec.restore_from().empty()) {
    if (!spec.has_vcpus()) spec.set_vcpus(1);
    if (!spec.has_memory_mib()) spec.set_memory_mib(512);
  }
  if (spec.power() == v1alpha1::SandboxSpec::PowerUnset)
    spec.set_power(v1alpha1::SandboxSpec::Running);
  if (spec.restart_policy() == v1alpha1::SandboxSpec::RestartPolicyUnset) {
    spec.set_restart_policy(v1alpha1::SandboxSpec::Always);
  }
  v1alpha1::SandboxNetwork& network = *spec.mutable_network();
  if (!network.has_enabled()) network.set_enabled(true);
  if (!network.has_egress()) network.set_egress(network.enabled());
}

void SetDefaults(v1alpha1::SandboxSnapshot& snapshot) {
  if (snapshot.api_version().empty()) snapshot.set_api_version(std::string(kApiVersion));
  if (snapshot.kind().empty()) snapshot.set_kind(std::string(KindName(Kind::kSandboxSnapshot)));
  if (snapshot.metadata().namespace_().empty()) {
    snapshot.mutable_metadata()->set_namespace_("default");
  }
}

void SetDefaults(Object& object) {
  std::visit([](auto& m) { SetDefaults(m); }, object);
}

std::vector<FieldError> Validate(const v1alpha1::Sandbox& sandbox, const ValidationLimits& limits) {
  std::vector<FieldError> errors;
  CheckTypeMeta(sandbox.api_version(), sandbox.kind(), Kind::kSandbox, &errors);
  CheckMetadata(sandbox.metadata(), /*label_names=*/true, &errors);
  CheckValues(sandbox, "", &errors);
  const v1alpha1::SandboxSpec& spec = sandbox.spec();
  if (spec.template_().empty() && spec.restore_from().empty()) {
    errors.push_back(Error("spec.template", FieldErrorType::kRequired, nullptr,
                           "one of spec.template or spec.restoreFrom is required"));
  }
  if (!spec.template_().empty()) {
    CheckDnsName(spec.template_(), /*label=*/false, "spec.template", &errors);
  }
  if (!spec.restore_from().empty()) {
    CheckDnsName(spec.restore_from(), /*label=*/false, "spec.restoreFrom", &errors);
  }
  if (!spec.node_name().empty()) {
    CheckDnsName(spec.node_name(), /*label=*/false, "spec.nodeName", &errors);
  }
  const auto* vcpus_field = v1alpha1::SandboxSpec::descriptor()->FindFieldByName("vcpus");
  int64_t schema_max = vcpus_field->options().GetExtension(v1alpha1::maximum);
  if (spec.has_vcpus() && spec.vcpus() > limits.max_vcpus && spec.vcpus() <= schema_max) {
    errors.push_back(
        Error("spec.vcpus", FieldErrorType::kInvalid, spec.vcpus(),
              Cat("must be at most ", limits.max_vcpus, ", the CPUs this node offers")));
  }
  if (spec.has_network() && spec.network().has_enabled() && !spec.network().enabled() &&
      spec.network().egress()) {
    errors.push_back(Error("spec.network.egress", FieldErrorType::kForbidden, nullptr,
                           "egress requires spec.network.enabled"));
  }
  std::set<std::string> env_names;
  for (int i = 0; i < spec.env_size(); ++i) {
    const std::string& name = spec.env(i).name();
    std::string path = Cat(Index("spec.env", i), ".name");
    if (name.empty()) continue;  // reported as Required by CheckValues
    if (!IsCIdentifier(name)) {
      errors.push_back(Error(path, FieldErrorType::kInvalid, name,
                             "must be a C identifier: letters, digits and '_', not starting "
                             "with a digit (e.g. MY_VAR)"));
    } else if (!env_names.insert(name).second) {
      errors.push_back(Error(path, FieldErrorType::kDuplicate, name, ""));
    }
  }
  return errors;
}

std::vector<FieldError> Validate(const v1alpha1::SandboxSnapshot& snapshot) {
  std::vector<FieldError> errors;
  CheckTypeMeta(snapshot.api_version(), snapshot.kind(), Kind::kSandboxSnapshot, &errors);
  CheckMetadata(snapshot.metadata(), /*label_names=*/false, &errors);
  CheckValues(snapshot, "", &errors);
  if (!snapshot.spec().sandbox_name().empty()) {
    CheckDnsName(snapshot.spec().sandbox_name(), /*label=*/true, "spec.sandboxName", &errors);
  }
  return errors;
}

std::vector<FieldError> Validate(const Object& object, const ValidationLimits& limits) {
  if (const auto* sandbox = std::get_if<v1alpha1::Sandbox>(&object)) {
    return Validate(*sandbox, limits);
  }
  return Validate(std::get<v1alpha1::SandboxSnapshot>(object));
}

std::string InvalidMessage(Kind kind, std::string_view name,
                           const std::vector<FieldError>& errors) {
  return std::string(InvalidStatus(kind, name, errors).message());
}

absl::Status InvalidStatus(Kind kind, std::string_view name,
                           const std::vector<FieldError>& errors) {
  return InvalidStatus(Cat(KindName(kind), ".", kGroup, " \"", name, "\""), errors);
}

absl::Status InvalidStatus(std::string_view subject, const std::vector<FieldError>& errors) {
  std::vector<std::string> parts;
  for (const FieldError& e : errors) parts.push_back(e.ToString());
  std::string list = parts.size() == 1 ? parts[0] : Cat("[", Join(parts, ", "), "]");
  absl::Status status = absl::InvalidArgumentError(Cat(subject, " is invalid: ", list));
  nlohmann::json payload = nlohmann::json::array();
  for (const FieldError& e : errors) {
    payload.push_back({{"path", e.path},
                       {"reason", CauseReason(e.type)},
                       {"value", e.value},
                       {"detail", e.detail}});
  }
  status.SetPayload(kPayloadUrl, absl::Cord(payload.dump()));
  return status;
}

std::vector<FieldError> FieldErrorsOf(const absl::Status& status) {
  std::vector<FieldError> out;
  absl::optional<absl::Cord> payload = status.GetPayload(kPayloadUrl);
  if (!payload.has_value()) return out;
  nlohmann::json j =
      nlohmann::json::parse(std::string(*payload), nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return out;
  for (const auto& e : j) {
    if (!e.is_object()) continue;
    FieldError fe;
    fe.path = e.value("path", "");
    std::string reason = e.value("reason", "");
    for (FieldErrorType t :
         {FieldErrorType::kRequired, FieldErrorType::kInvalid, FieldErrorType::kNotSupported,
          FieldErrorType::kDuplicate, FieldErrorType::kTooLong, FieldErrorType::kForbidden,
          FieldErrorType::kUnknown}) {
      if (CauseReason(t) == reason) fe.type = t;
    }
    fe.value = e.contains("value") ? e["value"] : nlohmann::json();
    fe.detail = e.value("detail", "");
    out.push_back(std::move(fe));
  }
  return out;
}

absl::Status ValidateObject(const Object& object, const ValidationLimits& limits) {
  std::vector<FieldError> errors = Validate(object, limits);
  if (errors.empty()) return absl::OkStatus();
  return InvalidStatus(KindOf(object), MetadataOf(object).name(), errors);
}

}  // namespace sandboxlet::api
