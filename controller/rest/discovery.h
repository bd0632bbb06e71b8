// Discovery documents of the local REST API, in the shapes kubectl reads: `/version`, the legacy
// documents (`/api` APIVersions, `/api/v1` and `/apis/<g>/<v>` APIResourceList, `/apis`
// APIGroupList, `/apis/<g>` APIGroup) and aggregated discovery (`/api` and `/apis` as
// apidiscovery.k8s.io v2 or v2beta1 APIGroupDiscoveryList, chosen by the Accept header).
//
// /version reports a Kubernetes gitVersion because the kubectl dispatcher installed as
// /usr/bin/kubectl (Google Cloud SDK's) runs `kubectl.<major>.<minor>` from its own directory for
// the server's minor version, falling back to its built-in kubectl when that file is missing. We
// report kKubernetesCompatVersion, the newest kubectl minor tested against this server.
// Thread-safe: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sandboxlet::rest {

// The Kubernetes version this API presents itself as (see above).
inline constexpr std::string_view kKubernetesCompatVersion = "v1.33.1";

// The /version document: major/minor/gitVersion of kKubernetesCompatVersion, and the sandboxlet
// build in gitCommit-free fields (platform, goVersion "n/a").
nlohmann::json VersionInfo(std::string_view sandboxlet_version);

nlohmann::json LegacyApiVersions(std::string_view server_address);  // /api
nlohmann::json LegacyApiGroupList();                                // /apis
// /apis/<group>; nullopt for a group not served.
std::optional<nlohmann::json> LegacyApiGroup(std::string_view group);
// /api/v1 or /apis/<group>/<version>; nullopt for one not served.
std::optional<nlohmann::json> ApiResourceList(std::string_view group, std::string_view version);

// Which aggregated discovery an Accept header asks for: "v2", "v2beta1" or "" (legacy), by the
// order of the media types in it.
std::string AggregatedDiscoveryVersion(std::string_view accept);
// The Content-Type of an aggregated discovery response of `version`.
std::string AggregatedDiscoveryContentType(std::string_view version);
// APIGroupDiscoveryList for `/api` (core = true) or `/apis`.
nlohmann::json AggregatedDiscovery(bool core, std::string_view version);

}  // namespace sandboxlet::rest
