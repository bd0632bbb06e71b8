#include "runtime/base/names.h"

#include "runtime/base/strings.h"

namespace sandboxlet {

static bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool IsDns1123Label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!IsAlnumLower(s.front()) || !IsAlnumLower(s.back())) return false;
  for (char c : s) {
    if (!IsAlnumLower(c) && c != '-') return false;
  }
  return true;
}

bool IsDns1123Subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (!IsDns1123Label(label)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

absl::Status ValidatePathComponent(std::string_view component, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat(what, " \"", component, "\": ", why));
  };
  if (component.empty()) return bad("must not be empty");
  if (component.size() > 255) return bad("longer than 255 bytes");
  if (component == "." || component == "..") return bad("must not be \".\" or \"..\"");
  for (char c : component) {
    if (c == '/') return bad("must not contain '/'");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return bad("must not contain control characters");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JoinUnder(const std::string& base, std::string_view component,
                                      std::string_view what) {
  absl::Status st = ValidatePathComponent(component, what);
  if (!st.ok()) return st;
  if (!base.empty() && base.back() == '/') return Cat(base, component);
  return Cat(base, "/", component);
}

}  // namespace sandboxlet
