#include "test/chsim/version.h"

#include <charconv>
#include <string_view>

#include "runtime/base/strings.h"

namespace sandboxlet::chsim {
namespace {

// Accepts "53", "v53", "53.0", "v53.0.0".
bool ParseMajor(std::string_view s, int* out) {
  if (!s.empty() && s.front() == 'v') s.remove_prefix(1);
  size_t dot = s.find('.');
  std::string_view digits = s.substr(0, dot);
  if (digits.empty()) return false;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *out);
  return ec == std::errc() && ptr == digits.data() + digits.size();
}

}  // namespace

std::string ChVersion::BuildVersion() const { return Cat("v", major, ".0"); }
std::string ChVersion::CrateVersion() const { return Cat(major, ".0.0"); }

absl::StatusOr<ChVersion> SelectVersion(const char* argv0, const char* env_value) {
  int major = 53;
  if (env_value != nullptr && *env_value != '\0') {
    if (!ParseMajor(env_value, &major)) {
      return absl::InvalidArgumentError(
          Cat("CHSIM_VERSION=\"", env_value, "\": not a Cloud Hypervisor major version"));
    }
  } else if (argv0 != nullptr) {
    std::string_view name(argv0);
    if (size_t slash = name.rfind('/'); slash != std::string_view::npos) {
      name.remove_prefix(slash + 1);
    }
    size_t dash = name.rfind("-v");
    int parsed = 0;
    if (dash != std::string_view::npos && ParseMajor(name.substr(dash + 2), &parsed)) {
      major = parsed;
    }
  }
  if (major < 30) {
    return absl::InvalidArgumentError(
        Cat("Cloud Hypervisor v", major, " is older than v30, which the simulator cannot mimic"));
  }
  ChVersion v;
  v.major = major;
  v.behaviour = major >= 53 ? 53 : major >= 52 ? 52 : 48;
  return v;
}

}  // namespace sandboxlet::chsim
