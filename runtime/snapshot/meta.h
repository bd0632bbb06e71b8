// rootfs.meta: which base image a snapshot's rootfs (rootfs.ext4 or the CoW diff rootfs.cow) was
// made against, and the VM shape needed to bring the snapshot back. The JSON is the Go
// predecessor's (seeds/snapshot-local-go.txt): `base_template` always written; `template_id`,
// `vcpus`, `memory_mb` omitted when empty/zero; unknown fields are ignored on read, so files
// written by either implementation read in both. `base_digest` is new and omitted when empty
// (the Go reader ignores it). Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sandboxlet {

struct RootfsMeta {
  std::string base_template;
  std::string template_id;
  int vcpus = 0;
  int memory_mb = 0;
  // Identity of the base image the CoW diff applies to; filled by the volume layer.
  std::string base_digest;

  bool operator==(const RootfsMeta&) const = default;
};

// Compact JSON in the Go field order, e.g.
// {"base_template":"ubuntu","template_id":"t1","vcpus":2,"memory_mb":512}.
std::string MarshalRootfsMeta(const RootfsMeta& meta);

// Parses rootfs.meta content; `source` (usually the file path) names the file in errors.
// Not an object, invalid JSON, or a field of the wrong type (e.g. a fractional or out-of-range
// vcpus) is InvalidArgument. JSON null leaves a field at its zero value, as Go's decoder does.
absl::StatusOr<RootfsMeta> ParseRootfsMeta(std::string_view data, std::string_view source);

// Reads/writes a rootfs.meta file; writing is atomic (temp file, fsync, rename).
absl::StatusOr<RootfsMeta> ReadRootfsMeta(const std::string& path);
absl::Status WriteRootfsMeta(const std::string& path, const RootfsMeta& meta);

}  // namespace sandboxlet
