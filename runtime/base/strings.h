// String assembly for messages. Debian's abseil is built with its own absl::string_view (not
// std::string_view), so absl::StrCat does not take std::string_view: use Cat() in this project.
// Thread-safe: pure functions.
#pragma once

#include <charconv>
#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"

namespace sandboxlet {

namespace internal_strings {
inline void AppendOne(std::string& out, std::string_view s) { out.append(s); }
inline void AppendOne(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void AppendOne(std::string& out, const char* s) { out.append(s ? s : "(null)"); }
inline void AppendOne(std::string& out, const std::string& s) { out.append(s); }
inline void AppendOne(std::string& out, char c) { out.push_back(c); }
inline void AppendOne(std::string& out, bool b) { out.append(b ? "true" : "false"); }
template <typename T>
requires(std::is_arithmetic_v<T> && !std::same_as<T, bool> &&
         !std::same_as<T, char>) void AppendOne(std::string& out, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    out.append(std::to_string(v));
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, r.ptr);
  }
}
}  // namespace internal_strings

// Cat("snapshot ", key, ": exit ", 3) → "snapshot default/x: exit 3".
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (internal_strings::AppendOne(out, args), ...);
  return out;
}

// Joins parts with sep.
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
// Splits on a single character; empty pieces are kept.
std::vector<std::string> Split(std::string_view s, char sep);
// Removes leading and trailing ASCII whitespace.
std::string_view Trim(std::string_view s);
bool StartsWith(std::string_view s, std::string_view prefix);
bool EndsWith(std::string_view s, std::string_view suffix);

}  // namespace sandboxlet
