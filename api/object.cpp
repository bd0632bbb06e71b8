#include "api/object.h"

#include <cctype>

#include "runtime/base/strings.h"

namespace sandboxlet::api {

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view KindName(Kind kind) {
  return kind == Kind::kSandbox ? "Sandbox" : "SandboxSnapshot";
}

std::string_view ListKindName(Kind kind) {
  return kind == Kind::kSandbox ? "SandboxList" : "SandboxSnapshotList";
}

std::string_view ResourceName(Kind kind) {
  return kind == Kind::kSandbox ? "sandboxes" : "sandboxsnapshots";
}

std::string_view SingularName(Kind kind) {
  return kind == Kind::kSandbox ? "sandbox" : "sandboxsnapshot";
}

std::string_view ShortName(Kind kind) { return kind == Kind::kSandbox ? "sbx" : "sbxsnap"; }

absl::StatusOr<Kind> ParseKind(std::string_view name) {
  std::string n = Lower(name);
  std::string suffix = Cat(".", kGroup);
  if (EndsWith(n, suffix)) n.resize(n.size() - suffix.size());
  for (Kind kind : {Kind::kSandbox, Kind::kSandboxSnapshot}) {
    if (n == Lower(KindName(kind)) || n == ResourceName(kind) || n == SingularName(kind) ||
        n == ShortName(kind)) {
      return kind;
    }
  }
  return absl::InvalidArgumentError(
      Cat("unknown kind \"", name, "\" in ", kApiVersion,
          "; known: Sandbox (sandboxes, sbx), SandboxSnapshot (sandboxsnapshots, sbxsnap)"));
}

const google::protobuf::Descriptor& DescriptorOf(Kind kind) {
  return kind == Kind::kSandbox ? *v1alpha1::Sandbox::descriptor()
                                : *v1alpha1::SandboxSnapshot::descriptor();
}

Kind KindOf(const Object& object) {
  return std::holds_alternative<v1alpha1::Sandbox>(object) ? Kind::kSandbox
                                                           : Kind::kSandboxSnapshot;
}

const google::protobuf::Message& MessageOf(const Object& object) {
  return std::visit([](const auto& m) -> const google::protobuf::Message& { return m; }, object);
}

google::protobuf::Message& MutableMessageOf(Object& object) {
  return std::visit([](auto& m) -> google::protobuf::Message& { return m; }, object);
}

const v1alpha1::ObjectMeta& MetadataOf(const Object& object) {
  return std::visit([](const auto& m) -> const v1alpha1::ObjectMeta& { return m.metadata(); },
                    object);
}

v1alpha1::ObjectMeta& MutableMetadataOf(Object& object) {
  return std::visit([](auto& m) -> v1alpha1::ObjectMeta& { return *m.mutable_metadata(); }, object);
}

std::string KeyOf(const Object& object) {
  const v1alpha1::ObjectMeta& meta = MetadataOf(object);
  return Cat(meta.namespace_(), "/", meta.name());
}

v1alpha1::Object ToProto(const Object& object) {
  v1alpha1::Object out;
  if (const auto* sandbox = std::get_if<v1alpha1::Sandbox>(&object)) {
    *out.mutable_sandbox() = *sandbox;
  } else {
    *out.mutable_snapshot() = std::get<v1alpha1::SandboxSnapshot>(object);
  }
  return out;
}

absl::StatusOr<Object> FromProto(const v1alpha1::Object& object) {
  switch (object.object_case()) {
    case v1alpha1::Object::kSandbox:
      return Object(object.sandbox());
    case v1alpha1::Object::kSnapshot:
      return Object(object.snapshot());
    case v1alpha1::Object::OBJECT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("object: neither sandbox nor snapshot is set");
}

}  // namespace sandboxlet::api
