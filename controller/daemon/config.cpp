#include "controller/daemon/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>

#include "api/codec.h"
#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::daemon {
namespace {

using Setter = std::function<absl::Status(DaemonConfig&, const std::string&)>;

struct FlagDef {
  FlagInfo info;
  Setter set;
};

absl::Status Bad(std::string_view flag, std::string_view value, std::string_view why) {
  return absl::InvalidArgumentError(Cat("--", flag, "=", value, ": ", why));
}

Setter AbsolutePath(std::string DaemonConfig::*field, std::string flag) {
  return [field, flag](DaemonConfig& c, const std::string& v) -> absl::Status {
    if (v.empty() || v[0] != '/') return Bad(flag, v, "must be an absolute path");
    c.*field = v;
    return absl::OkStatus();
  };
}

// Optional absolute path: empty turns the feature off.
Setter OptionalPath(std::string DaemonConfig::*field, std::string flag) {
  return [field, flag](DaemonConfig& c, const std::string& v) -> absl::Status {
    if (!v.empty() && v[0] != '/') return Bad(flag, v, "must be an absolute path (or empty)");
    c.*field = v;
    return absl::OkStatus();
  };
}

// host:port; empty turns the listener off.
Setter ListenAddress(std::string DaemonConfig::*field, std::string flag) {
  return [field, flag](DaemonConfig& c, const std::string& v) -> absl::Status {
    if (!v.empty()) {
      size_t colon = v.rfind(':');
      int port = 0;
      std::string_view p = colon == std::string::npos ? "" : std::string_view(v).substr(colon + 1);
      auto r = std::from_chars(p.data(), p.data() + p.size(), port);
      if (colon == std::string::npos || p.empty() || r.ec != std::errc() ||
          r.ptr != p.data() + p.size() || port < 0 || port > 65535) {
        return Bad(flag, v, "expected HOST:PORT, e.g. 127.0.0.1:9464 (or empty to disable)");
      }
    }
    c.*field = v;
    return absl::OkStatus();
  };
}

absl::StatusOr<int> ParseInt(std::string_view flag, const std::string& v, int lo, int hi) {
  int n = 0;
  auto r = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size()) {
    return Bad(flag, v, "not an integer");
  }
  if (n < lo || n > hi) return Bad(flag, v, Cat("must be between ", lo, " and ", hi));
  return n;
}

bool ValidCidr(std::string_view v) {
  std::vector<std::string> addr_len = Split(v, '/');
  if (addr_len.size() != 2) return false;
  std::vector<std::string> octets = Split(addr_len[0], '.');
  if (octets.size() != 4) return false;
  auto number = [](const std::string& s, int max) {
    int n = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), n);
    return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size() && n >= 0 && n <= max;
  };
  for (const std::string& o : octets) {
    if (!number(o, 255)) return false;
  }
  return number(addr_len[1], 32);
}

const std::vector<FlagDef>& FlagDefs() {
  static const std::vector<FlagDef>* defs = new std::vector<FlagDef>{
      {{"config", "FILE", "",
        "YAML file with any of these settings (keys are the flag names); "
        "flags override it"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (v.empty()) return Bad("config", v, "needs a file name");
         c.config_file = v;
         return absl::OkStatus();
       }},
      {{"state-dir", "DIR", "/var/lib/sandboxlet",
        "durable state: the object store, VM directories, snapshots, volumes"},
       AbsolutePath(&DaemonConfig::state_dir, "state-dir")},
      {{"run-dir", "DIR", "/run/sandboxlet", "runtime files: PID/lock file, sockets"},
       AbsolutePath(&DaemonConfig::run_dir, "run-dir")},
      {{"vmm-bin", "PATH", "cloud-hypervisor",
        "the Cloud Hypervisor binary (a bare name is looked up on PATH)"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (v.empty()) return Bad("vmm-bin", v, "needs a program name or path");
         c.vmm_bin = v;
         return absl::OkStatus();
       }},
      {{"kernel", "PATH", "<state-dir>/kernel/vmlinux", "guest kernel booted by every sandbox"},
       AbsolutePath(&DaemonConfig::kernel, "kernel")},
      {{"templates-dir", "DIR", "<state-dir>/templates",
        "base images: a template is <dir>/<name>/rootfs.ext4"},
       AbsolutePath(&DaemonConfig::templates_dir, "templates-dir")},
      {{"manifests", "DIR", "off",
        "apply every *.yaml|*.yml|*.json file of this directory and follow its changes, e.g. "
        "/etc/sandboxlet/manifests"},
       OptionalPath(&DaemonConfig::manifests, "manifests")},
      {{"grpc-socket", "PATH", "<run-dir>/sandboxlet.sock",
        "unix socket (mode 0600) of the gRPC SandboxService used by `sandboxlet ctl`"},
       AbsolutePath(&DaemonConfig::grpc_socket, "grpc-socket")},
      {{"api-listen", "HOST:PORT", "127.0.0.1:6443",
        "kube-style REST API for kubectl (empty disables it)"},
       ListenAddress(&DaemonConfig::api_listen, "api-listen")},
      {{"metrics-listen", "HOST:PORT", "127.0.0.1:9464",
        "/metrics, /healthz and /readyz (empty disables them)"},
       ListenAddress(&DaemonConfig::metrics_listen, "metrics-listen")},
      {{"api-token-file", "FILE", "none",
        "bearer token (first line) the REST API requires; needed when --api-listen is not "
        "loopback"},
       OptionalPath(&DaemonConfig::api_token_file, "api-token-file")},
      {{"api-tls-cert-file", "FILE", "none",
        "PEM certificate: the REST API speaks TLS (needed when --api-listen is not loopback)"},
       OptionalPath(&DaemonConfig::api_tls_cert_file, "api-tls-cert-file")},
      {{"api-tls-key-file", "FILE", "none", "PEM private key of --api-tls-cert-file"},
       OptionalPath(&DaemonConfig::api_tls_key_file, "api-tls-key-file")},
      {{"node-name", "NAME", "<hostname>", "this node's name (spec.nodeName of its sandboxes)"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (!IsDns1123Subdomain(v)) {
           return Bad("node-name", v, "must be a lowercase DNS-1123 subdomain");
         }
         c.node_name = v;
         return absl::OkStatus();
       }},
      {{"network-cidr", "CIDR", "10.200.0.0/16", "host addresses handed to sandboxes"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (!ValidCidr(v))
           return Bad("network-cidr", v, "expected an IPv4 CIDR like 10.200.0.0/16");
         c.network_cidr = v;
         return absl::OkStatus();
       }},
      {{"network-prefix", "NAME", "sbl",
        "prefix of the network namespaces, veths and nft table sandboxlet owns (1-8 of "
        "[a-z0-9], starting with a letter); two daemons on one host need different ones"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         bool ok = !v.empty() && v.size() <= 8 && v[0] >= 'a' && v[0] <= 'z' &&
                   v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789") == std::string::npos;
         if (!ok)
           return Bad("network-prefix", v, "expected 1-8 of [a-z0-9], starting with a letter");
         c.network_prefix = v;
         return absl::OkStatus();
       }},
      {{"volume-backend", "NAME", "auto",
        "root disk copy-on-write: auto (devicemapper when available), devicemapper or file"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (v != "auto" && v != "devicemapper" && v != "file") {
           return Bad("volume-backend", v, "expected auto, devicemapper or file");
         }
         c.volume_backend = v;
         return absl::OkStatus();
       }},
      {{"vmm-cgroups", "MODE", "auto",
        "auto: every VMM in a cgroup of its own, so VMs survive a restart of sandboxlet's unit or "
        "pod (cgroup v1 or v2, detected); off: VMMs stay in sandboxlet's cgroup"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (v != "auto" && v != "off") return Bad("vmm-cgroups", v, "expected auto or off");
         c.vmm_cgroups = v;
         return absl::OkStatus();
       }},
      {{"vmm-cgroup-parent", "NAME", "sandboxlet",
        "cgroup directory (in each hierarchy) holding the VMMs' cgroups; one per sandboxlet "
        "instance"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (absl::Status s = ValidatePathComponent(v, "--vmm-cgroup-parent"); !s.ok()) {
           return Bad("vmm-cgroup-parent", v, std::string(s.message()));
         }
         c.vmm_cgroup_parent = v;
         return absl::OkStatus();
       }},
      {{"guest-agent", "BOOL", "false",
        "ask each guest's agent (GET /health) before reporting a sandbox Ready, and quiesce it "
        "before snapshots (needs the sandbox network)"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (v != "true" && v != "false") return Bad("guest-agent", v, "expected true or false");
         c.guest_agent = v == "true";
         return absl::OkStatus();
       }},
      {{"guest-agent-port", "PORT", "49983", "TCP port of the guest agent inside each sandbox"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         SBL_ASSIGN_OR_RETURN(c.guest_agent_port, ParseInt("guest-agent-port", v, 1, 65535));
         return absl::OkStatus();
       }},
      {{"workers", "N", "4", "reconcile workers"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         SBL_ASSIGN_OR_RETURN(c.workers, ParseInt("workers", v, 1, 256));
         return absl::OkStatus();
       }},
      {{"resync", "DURATION", "5m", "period at which every object is reconciled again"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         absl::StatusOr<std::chrono::milliseconds> d = ParseDuration(v);
         if (!d.ok()) return Bad("resync", v, std::string(d.status().message()));
         if (*d < std::chrono::seconds(1)) return Bad("resync", v, "must be at least 1s");
         c.resync = std::chrono::duration_cast<std::chrono::seconds>(*d);
         return absl::OkStatus();
       }},
      {{"log-level", "LEVEL", "info", "debug, info, warn or error"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (!log::ParseLevel(v, &c.log_level)) {
           return Bad("log-level", v, "expected debug, info, warn or error");
         }
         return absl::OkStatus();
       }},
      {{"log-format", "FORMAT", "logfmt", "logfmt or json"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         if (!log::ParseFormat(v, &c.log_format)) {
           return Bad("log-format", v, "expected logfmt or json");
         }
         return absl::OkStatus();
       }},
      {{"max-vcpus", "N", "<online CPUs>", "most vCPUs one sandbox may ask for on this node"},
       [](DaemonConfig& c, const std::string& v) -> absl::Status {
         SBL_ASSIGN_OR_RETURN(c.max_vcpus, ParseInt("max-vcpus", v, 1, 256));
         return absl::OkStatus();
       }},
  };
  return *defs;
}

const FlagDef* FindFlag(std::string_view name) {
  for (const FlagDef& def : FlagDefs()) {
    if (def.info.name == name) return &def;
  }
  return nullptr;
}

std::vector<std::string> FlagNames() {
  std::vector<std::string> names;
  for (const FlagDef& def : FlagDefs()) names.push_back(def.info.name);
  return names;
}

std::string DidYouMean(std::string_view name, std::string_view prefix) {
  std::string s = Suggest(name, FlagNames());
  return s.empty() ? "" : Cat("; did you mean ", prefix, s, "?");
}

// Turns the YAML file into name → value pairs, in file order.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadConfigFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(Cat("config file ", path, ": ", text.status().message()));
  }
  absl::StatusOr<std::vector<nlohmann::json>> docs = api::ParseYamlDocuments(*text);
  if (!docs.ok()) {
    return absl::InvalidArgumentError(Cat("config file ", path, ": ", docs.status().message()));
  }
  std::vector<std::pair<std::string, std::string>> out;
  if (docs->empty()) return out;
  if (docs->size() > 1 || !(*docs)[0].is_object()) {
    return absl::InvalidArgumentError(
        Cat("config file ", path, ": expected one YAML mapping of setting: value"));
  }
  for (const auto& [key, value] : (*docs)[0].items()) {
    if (key == "config") {
      return absl::InvalidArgumentError(
          Cat("config file ", path, ": key \"config\" is only valid as a flag"));
    }
    if (FindFlag(key) == nullptr) {
      return absl::InvalidArgumentError(
          Cat("config file ", path, ": unknown key \"", key, "\"", DidYouMean(key, "")));
    }
    std::string v;
    if (value.is_string()) {
      v = value.get<std::string>();
    } else if (value.is_number() || value.is_boolean()) {
      v = value.dump();
    } else if (value.is_null()) {
      v = "";
    } else {
      return absl::InvalidArgumentError(
          Cat("config file ", path, ": ", key, ": expected a single value, got ", value.dump()));
    }
    out.emplace_back(key, std::move(v));
  }
  return out;
}

std::string Hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  std::string name(buf);
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  return name;
}

}  // namespace

const std::vector<FlagInfo>& Flags() {
  static const std::vector<FlagInfo>* infos = [] {
    auto* v = new std::vector<FlagInfo>;
    for (const FlagDef& def : FlagDefs()) v->push_back(def.info);
    return v;
  }();
  return *infos;
}

std::string FlagsUsage() {
  std::string out;
  for (const FlagInfo& f : Flags()) {
    std::string head = Cat("  --", f.name, "=", f.value_name);
    out += head;
    out += std::string(head.size() < 32 ? 32 - head.size() : 1, ' ');
    out += f.help;
    if (!f.default_value.empty()) out += Cat(" (default ", f.default_value, ")");
    out += "\n";
  }
  return out;
}

std::string Suggest(std::string_view name, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const std::string& k : known) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(k.size() + 1);
    for (size_t j = 0; j <= k.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= name.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= k.size(); ++j) {
        size_t up = row[j];
        size_t cost = name[i - 1] == k[j - 1] ? 0 : 1;
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + cost});
        diag = up;
      }
    }
    size_t d = row[k.size()];
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  // Close enough to be a typo: a third of the name's length, at least 2 edits.
  size_t limit = std::max<size_t>(2, name.size() / 3);
  return best_distance <= limit ? best : "";
}

absl::StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  std::string_view s = Trim(text);
  if (s.empty()) return absl::InvalidArgumentError("empty duration");
  bool bare = s.find_first_not_of("0123456789") == std::string_view::npos;
  if (bare) {
    int64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size(), n);
    return std::chrono::milliseconds(n * 1000);
  }
  std::chrono::milliseconds total{0};
  while (!s.empty()) {
    int64_t n = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), n);
    if (r.ec != std::errc() || n < 0) {
      return absl::InvalidArgumentError(
          Cat("duration \"", text, "\": expected a number followed by ms, s, m or h"));
    }
    s.remove_prefix(r.ptr - s.data());
    int64_t unit_ms = 0;
    if (StartsWith(s, "ms")) {
      unit_ms = 1;
      s.remove_prefix(2);
    } else if (StartsWith(s, "s")) {
      unit_ms = 1000;
      s.remove_prefix(1);
    } else if (StartsWith(s, "m")) {
      unit_ms = 60 * 1000;
      s.remove_prefix(1);
    } else if (StartsWith(s, "h")) {
      unit_ms = 3600 * 1000;
      s.remove_prefix(1);
    } else {
      return absl::InvalidArgumentError(
          Cat("duration \"", text, "\": expected a unit ms, s, m or h after ", n));
    }
    total += std::chrono::milliseconds(n * unit_ms);
  }
  return total;
}

absl::StatusOr<DaemonConfig> ParseConfig(const std::vector<std::string>& args) {
  // Flags first into name → value, so that the file can be read before they are applied.
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!StartsWith(arg, "--") || arg.size() == 2) {
      return absl::InvalidArgumentError(
          Cat("unexpected argument \"", arg, "\": flags are written --name=value"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (FindFlag(name) == nullptr) {
      return absl::InvalidArgumentError(Cat("unknown flag --", name, DidYouMean(name, "--"),
                                            " (sandboxlet --help lists the flags)"));
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(Cat("flag --", name, " needs a value"));
      }
      value = args[++i];
    }
    flags.emplace_back(std::move(name), std::move(value));
  }

  DaemonConfig config;
  for (const auto& [name, value] : flags) {
    if (name == "config") SBL_RETURN_IF_ERROR(FindFlag(name)->set(config, value));
  }
  if (!config.config_file.empty()) {
    SBL_ASSIGN_OR_RETURN(auto settings, ReadConfigFile(config.config_file));
    for (const auto& [name, value] : settings) {
      absl::Status s = FindFlag(name)->set(config, value);
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            Cat("config file ", config.config_file, ": ", s.message()));
      }
    }
  }
  for (const auto& [name, value] : flags) {
    if (name != "config") SBL_RETURN_IF_ERROR(FindFlag(name)->set(config, value));
  }

  if (config.kernel.empty()) config.kernel = config.state_dir + "/kernel/vmlinux";
  if (config.templates_dir.empty()) config.templates_dir = config.state_dir + "/templates";
  if (config.grpc_socket.empty()) config.grpc_socket = config.run_dir + "/sandboxlet.sock";
  if (config.node_name.empty()) config.node_name = Hostname();
  if (config.max_vcpus == 0) {
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    config.max_vcpus = static_cast<int>(std::clamp<long>(n, 1, 256));
  }
  return config;
}

absl::StatusOr<std::string> CheckVmmBin(const std::string& vmm_bin) {
  const std::string fix =
      "install cloud-hypervisor (https://github.com/cloud-hypervisor/cloud-hypervisor/releases) "
      "or pass --vmm-bin=/path/to/cloud-hypervisor";
  auto executable = [](const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
  };
  if (vmm_bin.find('/') != std::string::npos) {
    if (executable(vmm_bin)) return vmm_bin;
    std::string why = PathExists(vmm_bin) ? "is not an executable file" : "does not exist";
    return absl::FailedPreconditionError(Cat("vmm binary ", vmm_bin, " ", why, ": ", fix));
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& dir : Split(path, ':')) {
    std::string candidate = Cat(dir.empty() ? "." : dir, "/", vmm_bin);
    if (executable(candidate)) return candidate;
  }
  return absl::FailedPreconditionError(
      Cat("vmm binary \"", vmm_bin, "\" not found on PATH (", path, "): ", fix));
}

}  // namespace sandboxlet::daemon
