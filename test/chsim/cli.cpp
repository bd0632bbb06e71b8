#include "test/chsim/cli.h"

#include <charconv>
#include <string_view>

#include "runtime/base/errors.h"
#include "runtime/base/strings.h"
#include "test/chsim/chain.h"

namespace sandboxlet::chsim {
namespace {

constexpr const char* kTryHelp = "\nFor more information, try '--help'.\n";

absl::Status ClapError(const std::string& text) { return absl::InvalidArgumentError(text); }

bool ParseInt(std::string_view s, int* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && ptr == s.data() + s.size();
}

// Splits "a=1,b=[x,y],c" on commas outside brackets.
std::vector<std::string> SplitOptions(const std::string& value) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : value) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

// "net0@[3,4]" entries of net_fds=[...].
absl::StatusOr<std::vector<NetFds>> ParseNetFds(std::string value) {
  if (value.size() < 2 || value.front() != '[' || value.back() != ']') {
    return ChainError({"Error parsing --restore", Cat("invalid net_fds value \"", value, "\"")});
  }
  std::vector<NetFds> out;
  for (const std::string& entry : SplitOptions(value.substr(1, value.size() - 2))) {
    size_t at = entry.find('@');
    if (at == std::string::npos || at == 0) {
      return ChainError({"Error parsing --restore", Cat("invalid net_fds entry \"", entry, "\"")});
    }
    NetFds nf{entry.substr(0, at), {}};
    std::string list = entry.substr(at + 1);
    if (!list.empty() && list.front() == '[' && list.back() == ']') {
      list = list.substr(1, list.size() - 2);
    }
    for (const std::string& n : Split(list, ',')) {
      int fd = -1;
      if (!ParseInt(Trim(n), &fd) || fd < 0) {
        return ChainError({"Error parsing --restore", Cat("invalid fd \"", n, "\" in net_fds")});
      }
      nf.fds.push_back(fd);
    }
    out.push_back(std::move(nf));
  }
  return out;
}

}  // namespace

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const ChVersion& version) {
  CommandLine cl;
  struct ValueOption {
    const char* name;
    const char* value_name;
    std::optional<std::string>* target;
  };
  const ValueOption value_options[] = {
      {"--api-socket", "api-socket", &cl.api_socket},
      {"--log-file", "log-file", &cl.log_file},
      {"--event-monitor", "event-monitor", &cl.event_monitor},
      {"--seccomp", "seccomp", &cl.seccomp},
      {"--restore", "restore", &cl.restore},
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--version" || arg == "-V") {
      cl.print_version = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      cl.print_help = true;
      continue;
    }
    if (arg.size() >= 2 && arg[0] == '-' && arg[1] == 'v' &&
        arg.find_first_not_of('v', 1) == std::string::npos) {
      cl.verbosity += static_cast<int>(arg.size() - 1);
      continue;
    }
    if (arg == "--no-shutdown" && version.AtLeast(52)) {
      cl.no_shutdown = true;
      continue;
    }
    if (arg == "--landlock") {
      cl.landlock = true;
      continue;
    }
    bool matched = false;
    for (const ValueOption& opt : value_options) {
      std::string name(opt.name);
      std::optional<std::string> value;
      if (arg == name) {
        if (i + 1 >= args.size() || (StartsWith(args[i + 1], "--") && args[i + 1].size() > 2)) {
          return ClapError(Cat("error: a value is required for '", name, " <", opt.value_name,
                               ">' but none was supplied\n", kTryHelp));
        }
        value = args[++i];
      } else if (StartsWith(arg, name + "=")) {
        value = arg.substr(name.size() + 1);
      } else {
        continue;
      }
      if (opt.target->has_value()) {
        return ClapError(Cat("error: the argument '", name, " <", opt.value_name,
                             ">' cannot be used multiple times\n", kTryHelp));
      }
      *opt.target = *value;
      matched = true;
      break;
    }
    if (matched) continue;
    return ClapError(Cat("error: unexpected argument '", arg,
                         "' found\n\nUsage: cloud-hypervisor [OPTIONS]\n", kTryHelp));
  }
  return cl;
}

absl::StatusOr<EndpointSpec> ParseEndpointSpec(const std::string& option,
                                               const std::string& value) {
  EndpointSpec spec;
  const std::string context = Cat("Error parsing --", option);
  if (value.find('=') == std::string::npos) {
    spec.path = value;  // a bare path
  } else {
    for (const std::string& kv : SplitOptions(value)) {
      size_t eq = kv.find('=');
      std::string key = kv.substr(0, eq);
      std::string val = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (key == "path") {
        spec.path = val;
      } else if (key == "fd") {
        if (!ParseInt(val, &spec.fd) || spec.fd < 0) {
          return ChainError({context, Cat("invalid fd \"", val, "\"")});
        }
      } else {
        return ChainError({context, Cat("unknown option: ", key)});
      }
    }
  }
  if (spec.path.empty() == (spec.fd < 0)) {
    return ChainError({context, "exactly one of path= and fd= is required"});
  }
  return spec;
}

absl::StatusOr<RestoreSpec> ParseRestoreSpec(const std::string& value, const ChVersion& version) {
  RestoreSpec spec;
  bool have_source = false;
  for (const std::string& kv : SplitOptions(value)) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    std::string val = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (key == "source_url") {
      spec.source_url = val;
      have_source = true;
    } else if (key == "prefault") {
      if (val != "on" && val != "off" && val != "true" && val != "false") {
        return ChainError({"Error parsing --restore", Cat("invalid prefault value \"", val, "\"")});
      }
      spec.prefault = val == "on" || val == "true";
    } else if (key == "memory_restore_mode" && version.AtLeast(52)) {
      if (val == "copy") {
        spec.memory_restore_mode = "Copy";
      } else if (val == "ondemand") {
        spec.memory_restore_mode = "OnDemand";
      } else {
        return ChainError(
            {"Error parsing --restore", Cat("invalid memory_restore_mode \"", val, "\"")});
      }
    } else if (key == "resume" && version.AtLeast(52)) {
      if (val != "true" && val != "false") {
        return ChainError({"Error parsing --restore", Cat("invalid resume value \"", val, "\"")});
      }
      spec.resume = val == "true";
    } else if (key == "net_fds") {
      SBL_ASSIGN_OR_RETURN(spec.net_fds, ParseNetFds(val));
    } else {
      return ChainError({"Error parsing --restore", Cat("unknown option: ", key)});
    }
  }
  if (!have_source) {
    return ChainError({"Error parsing --restore", "missing option: source_url"});
  }
  return spec;
}

absl::Status ValidateSeccomp(const std::string& value) {
  if (value == "true" || value == "false" || value == "log") return absl::OkStatus();
  return ChainError({"Error parsing --seccomp", Cat("invalid value \"", value, "\"")});
}

std::string VersionText(const ChVersion& version, int verbosity) {
  std::string out = Cat("cloud-hypervisor ", version.BuildVersion(), "\n");
  if (version.major >= 53) out += "Migration Protocol Versions: 0\n";
  if (verbosity > 0) out += "Enabled features: [\"kvm\"]\n";
  return out;
}

std::string HelpText(const ChVersion& version) {
  std::string out =
      Cat("Launch a cloud-hypervisor VMM (simulated ", version.BuildVersion(),
          ").\n\nUsage: cloud-hypervisor [OPTIONS]\n\nOptions:\n"
          "      --api-socket <api-socket>        path=<path>|fd=<fd>\n"
          "      --event-monitor <event-monitor>  path=<path>|fd=<fd>\n"
          "      --log-file <log-file>            Log file\n"
          "      --restore <restore>              source_url=file:///dir[,prefault=on|off]\n"
          "      --seccomp <seccomp>              true|false|log\n"
          "  -v...                                Verbosity (repeat)\n");
  if (version.AtLeast(52))
    out += "      --no-shutdown                    Keep the VMM on guest exit\n";
  out +=
      "  -h, --help                           Print help\n  -V, --version                        "
      "Print version\n";
  return out;
}

}  // namespace sandboxlet::chsim
