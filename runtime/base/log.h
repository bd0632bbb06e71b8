// Structured logging: one line per event, logfmt (default) or JSON, with key=value fields.
// Every line about an object carries its key, e.g. Info("vm started", {{"sandbox", "ns/name"}}).
// Thread-safe: lines from different threads never interleave.
#pragma once

#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>

#include "runtime/base/strings.h"

namespace sandboxlet::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class Format { kLogfmt, kJson };

struct Field {
  template <typename T>
  Field(std::string_view k, const T& v) : key(k), value(::sandboxlet::Cat(v)) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v) {}
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false") {}
  std::string_view key;
  std::string value;
};

// Sets the minimum level, the format and the destination (stderr by default).
void Configure(Level min_level, Format format, std::FILE* out = stderr);
// Parses "debug|info|warn|error" and "logfmt|json"; false if unknown.
bool ParseLevel(std::string_view s, Level* out);
bool ParseFormat(std::string_view s, Format* out);
bool Enabled(Level level);

void Write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

inline void Debug(std::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kDebug, msg, fields);
}
inline void Info(std::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kInfo, msg, fields);
}
inline void Warn(std::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kWarn, msg, fields);
}
inline void Error(std::string_view msg, std::initializer_list<Field> fields = {}) {
  Write(Level::kError, msg, fields);
}

}  // namespace sandboxlet::log
