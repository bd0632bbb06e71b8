#include "runtime/base/log.h"

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>

namespace sandboxlet::log {
namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};
std::atomic<Format> g_format{Format::kLogfmt};
std::atomic<std::FILE*> g_out{nullptr};
std::mutex g_write_mu;

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

void AppendLogfmtValue(std::string& out, std::string_view v) {
  bool quote = v.empty() || v.find_first_of(" =\"\t\n\\") != std::string_view::npos;
  if (!quote) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n')
      out.append("\\n");
    else if (c == '\t')
      out.append("\\t");
    else
      out.push_back(c);
  }
  out.push_back('"');
}

void AppendJsonString(std::string& out, std::string_view v) {
  out.push_back('"');
  for (unsigned char c : v) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\r':
        out.append("\\r");
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out.append(buf);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

}  // namespace

void Configure(Level min_level, Format format, std::FILE* out) {
  g_min_level = static_cast<int>(min_level);
  g_format = format;
  g_out = out;
}

bool ParseLevel(std::string_view s, Level* out) {
  if (s == "debug")
    *out = Level::kDebug;
  else if (s == "info")
    *out = Level::kInfo;
  else if (s == "warn" || s == "warning")
    *out = Level::kWarn;
  else if (s == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

bool ParseFormat(std::string_view s, Format* out) {
  if (s == "logfmt" || s == "text")
    *out = Format::kLogfmt;
  else if (s == "json")
    *out = Format::kJson;
  else
    return false;
  return true;
}

bool Enabled(Level level) { return static_cast<int>(level) >= g_min_level.load(); }

void Write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (!Enabled(level)) return;
  std::string line;
  line.reserve(128);
  if (g_format.load() == Format::kJson) {
    line.append("{\"ts\":\"")
        .append(Timestamp())
        .append("\",\"level\":\"")
        .append(LevelName(level));
    line.append("\",\"msg\":");
    AppendJsonString(line, msg);
    for (const Field& f : fields) {
      line.push_back(',');
      AppendJsonString(line, f.key);
      line.push_back(':');
      AppendJsonString(line, f.value);
    }
    line.append("}\n");
  } else {
    line.append("ts=")
        .append(Timestamp())
        .append(" level=")
        .append(LevelName(level))
        .append(" msg=");
    AppendLogfmtValue(line, msg);
    for (const Field& f : fields) {
      line.push_back(' ');
      line.append(f.key);
      line.push_back('=');
      AppendLogfmtValue(line, f.value);
    }
    line.push_back('\n');
  }
  std::FILE* out = g_out.load();
  if (out == nullptr) out = stderr;
  std::lock_guard<std::mutex> lock(g_write_mu);
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

}  // namespace sandboxlet::log
