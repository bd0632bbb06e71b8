// The checked-in CustomResourceDefinition files (deploy/crds/, charts/sandboxlet/crds/): their
// names and exact text, rendered from the protobuf schema by api::CustomResourceDefinition. The
// generator (sandboxlet-crdgen) writes them; deploy_test fails when the checked-in copies differ.
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "api/object.h"

namespace sandboxlet::deploy {

// The kinds that get a CRD, in file order.
const std::vector<api::Kind>& CrdKinds();

// "sandboxes.sandboxlet.dev.yaml": the CRD's metadata.name plus ".yaml".
std::string CrdFileName(api::Kind kind);

// The whole file: a header comment saying where it comes from and how to regenerate it, then the
// CRD as one YAML document.
std::string CrdManifest(api::Kind kind);

// The directories, relative to the repository root, that hold a copy of every CRD file.
const std::vector<std::string>& CrdDirs();

// Writes every CRD file into `dir` (created if missing). Errors name the file.
absl::Status WriteCrds(const std::string& dir);

}  // namespace sandboxlet::deploy
