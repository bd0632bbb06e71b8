#include "runtime/snapshot/meta.h"

#include <limits>

#include <nlohmann/json.hpp>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet {

namespace {

using OrderedJson = nlohmann::ordered_json;

absl::Status FieldError(std::string_view source, std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(Cat("rootfs meta ", source, ": field \"", field, "\" ", why));
}

absl::Status ReadString(const nlohmann::json& obj, std::string_view source, const char* field,
                        std::string* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string())
    return FieldError(source, field, Cat("must be a string, got ", it->type_name()));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadInt(const nlohmann::json& obj, std::string_view source, const char* field,
                     int* out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  // Go's decoder refuses 2.5 and 2.0 for an int field; so do we.
  if (it->is_number_unsigned()) {
    auto v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return FieldError(source, field, Cat("out of range: ", v));
    }
    *out = static_cast<int>(v);
    return absl::OkStatus();
  }
  if (it->is_number_integer()) {
    auto v = it->get<int64_t>();
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
      return FieldError(source, field, Cat("out of range: ", v));
    }
    *out = static_cast<int>(v);
    return absl::OkStatus();
  }
  return FieldError(source, field, Cat("must be an integer, got ", it->dump()));
}

}  // namespace

std::string MarshalRootfsMeta(const RootfsMeta& meta) {
  OrderedJson j = OrderedJson::object();
  j["base_template"] = meta.base_template;
  if (!meta.template_id.empty()) j["template_id"] = meta.template_id;
  if (meta.vcpus != 0) j["vcpus"] = meta.vcpus;
  if (meta.memory_mb != 0) j["memory_mb"] = meta.memory_mb;
  if (!meta.base_digest.empty()) j["base_digest"] = meta.base_digest;
  // Invalid UTF-8 in a string is replaced rather than throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<RootfsMeta> ParseRootfsMeta(std::string_view data, std::string_view source) {
  nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(Cat("rootfs meta ", source, ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        Cat("rootfs meta ", source, ": expected a JSON object, got ", j.type_name()));
  }
  RootfsMeta meta;
  SBL_RETURN_IF_ERROR(ReadString(j, source, "base_template", &meta.base_template));
  SBL_RETURN_IF_ERROR(ReadString(j, source, "template_id", &meta.template_id));
  SBL_RETURN_IF_ERROR(ReadInt(j, source, "vcpus", &meta.vcpus));
  SBL_RETURN_IF_ERROR(ReadInt(j, source, "memory_mb", &meta.memory_mb));
  SBL_RETURN_IF_ERROR(ReadString(j, source, "base_digest", &meta.base_digest));
  return meta;
}

absl::StatusOr<RootfsMeta> ReadRootfsMeta(const std::string& path) {
  absl::StatusOr<std::string> data = ReadFile(path);
  if (!data.ok()) return Annotate(data.status(), "read rootfs meta");
  return ParseRootfsMeta(*data, path);
}

absl::Status WriteRootfsMeta(const std::string& path, const RootfsMeta& meta) {
  return Annotate(WriteFileAtomic(path, MarshalRootfsMeta(meta), 0644), "write rootfs meta");
}

}  // namespace sandboxlet
