// The kinds of the sandboxlet.dev/v1alpha1 API and a value holding an object of either kind, with
// the names by which clients (kubectl, `sandboxlet ctl`) refer to them.
// Thread-safe: pure functions over immutable tables.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "sandboxlet/v1alpha1/sandbox.pb.h"

namespace sandboxlet::api {

inline constexpr std::string_view kGroup = "sandboxlet.dev";
inline constexpr std::string_view kVersion = "v1alpha1";
inline constexpr std::string_view kApiVersion = "sandboxlet.dev/v1alpha1";

enum class Kind { kSandbox, kSandboxSnapshot };

// "Sandbox" / "SandboxSnapshot".
std::string_view KindName(Kind kind);
// "SandboxList" / "SandboxSnapshotList".
std::string_view ListKindName(Kind kind);
// Plural resource name in URLs: "sandboxes" / "sandboxsnapshots".
std::string_view ResourceName(Kind kind);
// Singular resource name: "sandbox" / "sandboxsnapshot".
std::string_view SingularName(Kind kind);
// kubectl short name: "sbx" / "sbxsnap".
std::string_view ShortName(Kind kind);

// Resolves what a user types to name a kind: the kind ("Sandbox"), the plural or singular
// resource ("sandboxes", "sandbox"), the short name ("sbx"), case-insensitively, optionally
// qualified by the group ("sandboxes.sandboxlet.dev"). InvalidArgument for anything else.
absl::StatusOr<Kind> ParseKind(std::string_view name);

// The message type of a kind.
const google::protobuf::Descriptor& DescriptorOf(Kind kind);

// An object of either kind, as decoded from a manifest or read from the store.
using Object = std::variant<v1alpha1::Sandbox, v1alpha1::SandboxSnapshot>;

Kind KindOf(const Object& object);
const google::protobuf::Message& MessageOf(const Object& object);
google::protobuf::Message& MutableMessageOf(Object& object);
const v1alpha1::ObjectMeta& MetadataOf(const Object& object);
v1alpha1::ObjectMeta& MutableMetadataOf(Object& object);
// "namespace/name", the key under which the store and the workqueue know the object.
std::string KeyOf(const Object& object);

// Conversions to and from the gRPC service's Object oneof. FromProto fails when it is empty.
v1alpha1::Object ToProto(const Object& object);
absl::StatusOr<Object> FromProto(const v1alpha1::Object& object);

}  // namespace sandboxlet::api
