// The kubeconfig that `sandboxlet kubeconfig` prints: one cluster, user and context, all named
// "sandboxlet", pointing kubectl at the node's local REST API.
// Thread-safe: pure function.
#pragma once

#include <string>

namespace sandboxlet::rest {

// `server_url` as ApiServer::url(); `token` = the bearer token ("" for none); `ca_pem` = the PEM
// of the CA (or self-signed certificate) that signed the server's certificate ("" for none:
// plain HTTP, or a system-trusted certificate).
std::string Kubeconfig(const std::string& server_url, const std::string& token = "",
                       const std::string& ca_pem = "");

}  // namespace sandboxlet::rest
