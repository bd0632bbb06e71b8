#include "runtime/ch/version.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "runtime/base/command.h"
#include "runtime/base/strings.h"

namespace sandboxlet::ch {
namespace {

constexpr std::string_view kPrefix = "cloud-hypervisor v";

// Shortens program output for an error message and makes control characters visible.
std::string Quote(std::string_view s) {
  constexpr std::size_t kMax = 200;
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += '?';
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (s.size() > kMax) out += Cat("... (", s.size(), " bytes)");
  return out;
}

// Reads 1-9 decimal digits at the front of `s`, advancing it.
bool TakeNumber(std::string_view& s, int* out) {
  std::size_t n = 0;
  while (n < s.size() && std::isdigit(static_cast<unsigned char>(s[n]))) ++n;
  if (n == 0 || n > 9) return false;
  std::from_chars(s.data(), s.data() + n, *out);
  s.remove_prefix(n);
  return true;
}

}  // namespace

ChVersion ChVersion::Of(int major, int minor, int patch) {
  ChVersion v;
  v.major = major;
  v.minor = minor;
  v.patch = patch;
  v.raw = Cat("cloud-hypervisor v", major, ".", minor, ".", patch);
  return v;
}

std::string ChVersion::ToString() const { return Cat("v", major, ".", minor, ".", patch, suffix); }

absl::StatusOr<ChVersion> ParseChVersion(std::string_view version_output) {
  // The first non-empty line (CONTRACT §2); CRLF tolerated.
  std::string_view rest = version_output;
  std::string_view line;
  while (!rest.empty()) {
    std::size_t nl = rest.find('\n');
    std::string_view l = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    l = Trim(l);
    if (!l.empty()) {
      line = l;
      break;
    }
  }
  if (line.empty()) {
    return absl::InvalidArgumentError("CH version: empty --version output");
  }
  auto bad = [&] {
    return absl::InvalidArgumentError(Cat(
        "CH version: expected \"cloud-hypervisor v<major>.<minor>[.<patch>]\", got ", Quote(line)));
  };
  if (!StartsWith(line, kPrefix)) return bad();
  std::string_view s = line.substr(kPrefix.size());
  ChVersion v;
  // `^cloud-hypervisor v(\d+)\.(\d+)(?:\.(\d+))?(.*)$` (CONTRACT §2).
  if (!TakeNumber(s, &v.major)) return bad();
  if (s.empty() || s.front() != '.') return bad();
  s.remove_prefix(1);
  if (!TakeNumber(s, &v.minor)) return bad();
  if (s.size() >= 2 && s.front() == '.' && std::isdigit(static_cast<unsigned char>(s[1]))) {
    s.remove_prefix(1);
    if (!TakeNumber(s, &v.patch)) return bad();
  }
  v.suffix = std::string(s);
  v.raw = std::string(line);
  return v;
}

absl::StatusOr<ChVersion> DetectChVersion(const std::string& vmm_bin,
                                          std::chrono::milliseconds timeout) {
  const std::string what = Cat("VMM binary ", vmm_bin);
  if (vmm_bin.empty()) {
    return absl::InvalidArgumentError(
        "VMM binary: empty path; pass --vmm-bin=<path to cloud-hypervisor>");
  }
  if (vmm_bin.find('/') != std::string::npos) {
    struct stat st;
    if (::stat(vmm_bin.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT || err == ENOTDIR) {
        return absl::NotFoundError(Cat(what, " not found; install Cloud Hypervisor there or pass ",
                                       "--vmm-bin=<path to cloud-hypervisor>"));
      }
      return absl::PermissionDeniedError(Cat(what, ": ", std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          Cat(what, " is not a regular file; pass --vmm-bin=<path to cloud-hypervisor>"));
    }
    if (::access(vmm_bin.c_str(), X_OK) != 0) {
      return absl::PermissionDeniedError(Cat(what, " is not executable (chmod +x it)"));
    }
  }
  CommandOptions options;
  options.timeout = timeout;
  absl::StatusOr<CommandResult> run = RunCommand({vmm_bin, "--version"}, options);
  if (!run.ok()) {
    switch (run.status().code()) {
      case absl::StatusCode::kNotFound:
        return absl::NotFoundError(Cat(what, " not found on PATH; install Cloud Hypervisor or ",
                                       "pass --vmm-bin=<path to cloud-hypervisor>"));
      case absl::StatusCode::kDeadlineExceeded:
        return absl::DeadlineExceededError(Cat(what, ": `--version` did not finish within ",
                                               timeout.count(), " ms; is it Cloud Hypervisor?"));
      default:
        return absl::Status(run.status().code(),
                            Cat(what, ": cannot run --version: ", run.status().message()));
    }
  }
  if (!run->ok()) {
    std::string why = run->term_signal ? Cat("killed by signal ", run->term_signal)
                                       : Cat("exit ", run->exit_code);
    return absl::InvalidArgumentError(Cat(what, " is not Cloud Hypervisor: `--version` failed (",
                                          why, "): ", Quote(Trim(run->err))));
  }
  absl::StatusOr<ChVersion> v = ParseChVersion(run->out);
  if (!v.ok()) {
    return absl::InvalidArgumentError(
        Cat(what, " is not Cloud Hypervisor: ", v.status().message()));
  }
  return v;
}

}  // namespace sandboxlet::ch
