#include "api/openapi.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstddef>
#include <memory>

#include "runtime/base/strings.h"
#include "sandboxlet/v1alpha1/field_options.pb.h"

namespace sandboxlet::api {

namespace internal {
// The .proto files with source info (comments), embedded at build time by
// api/embed_descriptor_set.cmake.
extern const char kDescriptorSet[];
extern const std::size_t kDescriptorSetSize;
}  // namespace internal

namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::SourceLocation;

// The compiled-in pool has no comments; this one is built from the embedded descriptor set.
const DescriptorPool& CommentPool() {
  static const DescriptorPool* pool = [] {
    auto* p = new DescriptorPool();
    google::protobuf::FileDescriptorSet set;
    if (set.ParseFromArray(internal::kDescriptorSet,
                           static_cast<int>(internal::kDescriptorSetSize))) {
      for (const auto& file : set.file()) p->BuildFile(file);  // dependencies come first
    }
    return p;
  }();
  return *pool;
}

std::string Flatten(const std::string& comment) {
  std::vector<std::string> lines;
  for (const std::string& line : Split(comment, '\n')) {
    std::string_view t = Trim(line);
    if (!t.empty()) lines.emplace_back(t);
  }
  return Join(lines, " ");
}

std::string MessageComment(const Descriptor& type) {
  const Descriptor* d = CommentPool().FindMessageTypeByName(type.full_name());
  SourceLocation loc;
  return d != nullptr && d->GetSourceLocation(&loc) ? Flatten(loc.leading_comments) : "";
}

std::string FieldComment(const FieldDescriptor& field) {
  const Descriptor* d = CommentPool().FindMessageTypeByName(field.containing_type()->full_name());
  const FieldDescriptor* f = d != nullptr ? d->FindFieldByName(field.name()) : nullptr;
  SourceLocation loc;
  return f != nullptr && f->GetSourceLocation(&loc) ? Flatten(loc.leading_comments) : "";
}

bool IsTimestamp(const Descriptor& type) {
  return type.full_name() == google::protobuf::Timestamp::descriptor()->full_name();
}

nlohmann::json MessageSchema(const Descriptor& type, bool crd_root);

// Schema of one value of the field (an element when the field is repeated).
nlohmann::json ValueSchema(const FieldDescriptor& f) {
  nlohmann::json s;
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (IsTimestamp(*f.message_type())) return {{"type", "string"}, {"format", "date-time"}};
      return MessageSchema(*f.message_type(), false);
    case FieldDescriptor::CPPTYPE_STRING:
      return {{"type", "string"}};
    case FieldDescriptor::CPPTYPE_BOOL:
      return {{"type", "boolean"}};
    case FieldDescriptor::CPPTYPE_ENUM: {
      nlohmann::json values = nlohmann::json::array();
      for (int i = 0; i < f.enum_type()->value_count(); ++i) {
        // The zero value means "not set" and is neither printed nor accepted.
        if (f.enum_type()->value(i)->number() != 0)
          values.push_back(f.enum_type()->value(i)->name());
      }
      return {{"type", "string"}, {"enum", values}};
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_UINT32:
      s = {{"type", "integer"}, {"format", "int32"}};
      break;
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT64:
      s = {{"type", "integer"}, {"format", "int64"}};
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return {{"type", "number"}};
  }
  const auto& o = f.options();
  if (o.HasExtension(v1alpha1::minimum)) s["minimum"] = o.GetExtension(v1alpha1::minimum);
  if (o.HasExtension(v1alpha1::maximum)) s["maximum"] = o.GetExtension(v1alpha1::maximum);
  return s;
}

nlohmann::json FieldSchema(const FieldDescriptor& f) {
  nlohmann::json s;
  if (f.is_map()) {
    s = {{"type", "object"}, {"additionalProperties", ValueSchema(*f.message_type()->map_value())}};
  } else if (f.is_repeated()) {
    s = {{"type", "array"}, {"items", ValueSchema(f)}};
  } else {
    s = ValueSchema(f);
  }
  std::string description = FieldComment(f);
  if (description.empty() && f.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f.is_map()) {
    description = MessageComment(*f.message_type());
  }
  if (!description.empty()) s["description"] = description;
  return s;
}

nlohmann::json MessageSchema(const Descriptor& type, bool crd_root) {
  nlohmann::json s = {{"type", "object"}};
  std::string description = MessageComment(type);
  if (!description.empty()) s["description"] = description;
  nlohmann::json properties = nlohmann::json::object();
  nlohmann::json required = nlohmann::json::array();
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& f = *type.field(i);
    if (crd_root && f.json_name() == "metadata") {
      // The API server owns ObjectMeta's schema; a CRD may only say it is an object.
      properties["metadata"] = {{"type", "object"}};
      continue;
    }
    properties[f.json_name()] = FieldSchema(f);
    if (f.options().GetExtension(v1alpha1::required)) required.push_back(f.json_name());
  }
  s["properties"] = std::move(properties);
  if (!required.empty()) s["required"] = std::move(required);
  return s;
}

nlohmann::json Column(std::string name, std::string type, std::string path, std::string description,
                      int priority = 0) {
  nlohmann::json c = {{"name", std::move(name)},
                      {"type", std::move(type)},
                      {"jsonPath", std::move(path)},
                      {"description", std::move(description)}};
  if (priority != 0) c["priority"] = priority;
  return c;
}

}  // namespace

nlohmann::json OpenApiSchema(Kind kind) { return MessageSchema(DescriptorOf(kind), true); }

nlohmann::json OpenApiSchemaOf(const Descriptor& type) { return MessageSchema(type, false); }

nlohmann::json CustomResourceDefinition(Kind kind) {
  nlohmann::json columns = nlohmann::json::array();
  if (kind == Kind::kSandbox) {
    // Same columns, in the same order, as the local REST API's tables (controller/rest/table.cpp).
    columns = {Column("Phase", "string", ".status.phase", "Lifecycle phase"),
               Column("IP", "string", ".status.network.ip", "Address on the node"),
               Column("vCPUs", "integer", ".spec.vcpus", "Virtual CPUs"),
               Column("Memory", "integer", ".spec.memoryMiB", "Guest memory in MiB"),
               Column("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
               Column("Template", "string", ".spec.template", "Base image", 1),
               Column("Node", "string", ".spec.nodeName", "Node running the sandbox", 1)};
  } else {
    columns = {Column("Sandbox", "string", ".spec.sandboxName", "Snapshotted sandbox"),
               Column("Phase", "string", ".status.phase", "Lifecycle phase"),
               Column("Size", "integer", ".status.sizeBytes", "Bytes on disk"),
               Column("Age", "date", ".metadata.creationTimestamp", "Time since creation")};
  }
  nlohmann::json version = {{"name", kVersion},
                            {"served", true},
                            {"storage", true},
                            {"schema", {{"openAPIV3Schema", OpenApiSchema(kind)}}},
                            {"subresources", {{"status", nlohmann::json::object()}}},
                            {"additionalPrinterColumns", columns}};
  if (kind == Kind::kSandbox) {
    // Each node's sandboxlet lists and watches only its own sandboxes with the field selector
    // spec.nodeName=<node>; the API server serves field selectors on custom resources only for the
    // fields declared here (Kubernetes 1.30+; older servers reject or drop the field).
    version["selectableFields"] = nlohmann::json::array({{{"jsonPath", ".spec.nodeName"}}});
  }
  return {{"apiVersion", "apiextensions.k8s.io/v1"},
          {"kind", "CustomResourceDefinition"},
          {"metadata", {{"name", Cat(ResourceName(kind), ".", kGroup)}}},
          {"spec",
           {{"group", kGroup},
            {"names",
             {{"kind", KindName(kind)},
              {"listKind", ListKindName(kind)},
              {"plural", ResourceName(kind)},
              {"singular", SingularName(kind)},
              {"shortNames", {ShortName(kind)}},
              // `kubectl get sandboxlet` lists both kinds.
              {"categories", {"sandboxlet"}}}},
            {"scope", "Namespaced"},
            {"versions", {version}}}}};
}

}  // namespace sandboxlet::api
