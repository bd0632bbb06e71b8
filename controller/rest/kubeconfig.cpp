#include "controller/rest/kubeconfig.h"

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "runtime/base/strings.h"

namespace sandboxlet::rest {

std::string Kubeconfig(const std::string& server_url, const std::string& token,
                       const std::string& ca_pem) {
  // Values are written as JSON strings, which YAML reads as double-quoted scalars.
  auto q = [](const std::string& s) { return nlohmann::json(s).dump(); };
  std::string out = Cat("apiVersion: v1\n", "kind: Config\n", "clusters:\n", "- name: sandboxlet\n",
                        "  cluster:\n", "    server: ", q(server_url), "\n");
  if (!ca_pem.empty()) {
    out += Cat("    certificate-authority-data: ", q(absl::Base64Escape(ca_pem)), "\n");
  }
  out += Cat("users:\n", "- name: sandboxlet\n", "  user:", token.empty() ? " {}\n" : "\n");
  if (!token.empty()) out += Cat("    token: ", q(token), "\n");
  out += Cat("contexts:\n", "- name: sandboxlet\n", "  context:\n", "    cluster: sandboxlet\n",
             "    user: sandboxlet\n", "    namespace: default\n", "current-context: sandboxlet\n",
             "preferences: {}\n");
  return out;
}

}  // namespace sandboxlet::rest
