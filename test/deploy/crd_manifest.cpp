#include "test/deploy/crd_manifest.h"

#include "api/codec.h"
#include "api/openapi.h"
#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet::deploy {

const std::vector<api::Kind>& CrdKinds() {
  static const std::vector<api::Kind> kinds = {api::Kind::kSandbox, api::Kind::kSandboxSnapshot};
  return kinds;
}

std::string CrdFileName(api::Kind kind) {
  return Cat(api::ResourceName(kind), ".", api::kGroup, ".yaml");
}

std::string CrdManifest(api::Kind kind) {
  return Cat(
      "# CustomResourceDefinition of ", api::KindName(kind), " (", api::kApiVersion, ").\n",
      "# Generated from api/sandboxlet/v1alpha1/sandbox.proto by sandboxlet-crdgen: do not edit.\n",
      "# Regenerate deploy/crds/ and charts/sandboxlet/crds/ with\n",
      "#   ninja -C <build-dir> sandboxlet-crds\n",
      api::EncodeYaml(api::CustomResourceDefinition(kind)));
}

const std::vector<std::string>& CrdDirs() {
  static const std::vector<std::string> dirs = {"deploy/crds", "charts/sandboxlet/crds"};
  return dirs;
}

absl::Status WriteCrds(const std::string& dir) {
  SBL_RETURN_IF_ERROR(MakeDirs(dir));
  for (api::Kind kind : CrdKinds()) {
    std::string path = Cat(dir, "/", CrdFileName(kind));
    SBL_RETURN_IF_ERROR(Annotate(WriteFileAtomic(path, CrdManifest(kind)), Cat("write ", path)));
  }
  return absl::OkStatus();
}

}  // namespace sandboxlet::deploy
