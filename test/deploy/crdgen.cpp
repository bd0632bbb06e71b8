// sandboxlet-crdgen: prints the CustomResourceDefinitions of the sandboxlet.dev API, generated from
// the protobuf schema, or writes them into a source tree's deploy/crds/ and
// charts/sandboxlet/crds/.
//
//   sandboxlet-crdgen                    CRDs as one YAML stream on stdout
//   sandboxlet-crdgen --write-to ROOT    rewrite ROOT/deploy/crds/*.yaml,
//   ROOT/charts/sandboxlet/crds/*.yaml
#include <cstdio>
#include <iostream>
#include <string>

#include "test/deploy/crd_manifest.h"

int main(int argc, char** argv) {
  using namespace sandboxlet;
  std::string root;
  if (argc == 3 && std::string(argv[1]) == "--write-to") {
    root = argv[2];
  } else if (argc != 1) {
    std::cerr << "usage: sandboxlet-crdgen [--write-to SOURCE_ROOT]\n";
    return 2;
  }
  if (root.empty()) {
    bool first = true;
    for (api::Kind kind : deploy::CrdKinds()) {
      if (!first) std::cout << "---\n";
      first = false;
      std::cout << deploy::CrdManifest(kind);
    }
    return std::cout.flush() ? 0 : 1;
  }
  for (const std::string& dir : deploy::CrdDirs()) {
    absl::Status s = deploy::WriteCrds(root + "/" + dir);
    if (!s.ok()) {
      std::cerr << "sandboxlet-crdgen: " << s.message() << "\n";
      return 1;
    }
    std::cout << "wrote " << root << "/" << dir << "/\n";
  }
  return 0;
}
