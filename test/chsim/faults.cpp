#include "test/chsim/faults.h"

#include <cerrno>
#include <charconv>

#include "runtime/base/errors.h"
#include "runtime/base/fs.h"
#include "runtime/base/strings.h"

namespace sandboxlet::chsim {
namespace {

struct KindName {
  const char* name;
  FaultKind kind;
  int args;       // words after the rule name
  bool numeric;   // the last word is the rule's value (ms or HTTP code)
  bool endpoint;  // the first word is an endpoint
};
constexpr KindName kKinds[] = {
    {"crash", FaultKind::kCrash, 1, false, true},
    {"hang", FaultKind::kHang, 1, false, true},
    {"delay", FaultKind::kDelay, 2, true, true},
    {"fail", FaultKind::kFail, 2, true, true},
    {"enospc", FaultKind::kEnospc, 1, false, true},
    {"garbage", FaultKind::kGarbage, 1, false, true},
    {"truncate", FaultKind::kTruncate, 1, false, true},
    {"oversize", FaultKind::kOversize, 1, false, true},
    {"close", FaultKind::kClose, 1, false, true},
    {"fail-start", FaultKind::kFailStart, 0, false, false},
    {"ignore-sigterm", FaultKind::kIgnoreSigterm, 0, false, false},
    {"record", FaultKind::kRecord, 1, false, false},
    {"agent-never-ready", FaultKind::kAgentNeverReady, 0, false, false},
    {"agent-slow", FaultKind::kAgentSlow, 1, true, false},
    {"agent-fail", FaultKind::kAgentFail, 1, true, false},
};

absl::StatusOr<FaultRule> ParseRule(std::string_view text) {
  std::vector<std::string> words;
  for (const std::string& w : Split(text, ' ')) {
    std::string_view t = Trim(w);
    if (!t.empty()) words.emplace_back(t);
  }
  for (const KindName& k : kKinds) {
    if (words[0] != k.name) continue;
    if (static_cast<int>(words.size()) != k.args + 1) {
      return absl::InvalidArgumentError(
          Cat("fault rule \"", text, "\": ", k.name, " takes ", k.args, " argument(s)"));
    }
    FaultRule rule{k.kind, "", 0, ""};
    if (k.kind == FaultKind::kRecord) {
      rule.path = words[1];
    } else if (k.endpoint) {
      rule.endpoint = words[1];
    }
    if (k.numeric) {
      const std::string& n = words[k.args];
      auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), rule.value);
      if (ec != std::errc() || ptr != n.data() + n.size() || rule.value < 0) {
        return absl::InvalidArgumentError(
            Cat("fault rule \"", text, "\": \"", n, "\" is not a non-negative integer"));
      }
      const bool code = k.kind == FaultKind::kFail || k.kind == FaultKind::kAgentFail;
      if (code && (rule.value < 100 || rule.value > 599)) {
        return absl::InvalidArgumentError(
            Cat("fault rule \"", text, "\": ", rule.value, " is not an HTTP status code"));
      }
    }
    return rule;
  }
  return absl::InvalidArgumentError(
      Cat("fault rule \"", text, "\": unknown rule \"", words[0], "\""));
}

}  // namespace

absl::StatusOr<FaultSet> FaultSet::Parse(std::string_view text, char separator) {
  FaultSet set;
  for (const std::string& piece : Split(text, separator)) {
    std::string_view line = piece;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = Trim(line);
    if (line.empty()) continue;
    SBL_ASSIGN_OR_RETURN(FaultRule rule, ParseRule(line));
    set.rules_.push_back(std::move(rule));
  }
  return set;
}

absl::StatusOr<FaultSet> FaultSet::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return FaultSet();
    return text.status();
  }
  absl::StatusOr<FaultSet> set = Parse(*text, '\n');
  if (!set.ok()) return Annotate(set.status(), path);
  return set;
}

void FaultSet::Append(const FaultSet& other) {
  rules_.insert(rules_.end(), other.rules_.begin(), other.rules_.end());
}

bool FaultSet::Has(FaultKind kind) const {
  for (const FaultRule& r : rules_) {
    if (r.kind == kind) return true;
  }
  return false;
}

const FaultRule* FaultSet::Find(FaultKind kind, const std::string& endpoint) const {
  for (const FaultRule& r : rules_) {
    if (r.kind == kind && (r.endpoint == "*" || r.endpoint == endpoint)) return &r;
  }
  return nullptr;
}

std::vector<FaultRule> FaultSet::OfKind(FaultKind kind) const {
  std::vector<FaultRule> out;
  for (const FaultRule& r : rules_) {
    if (r.kind == kind) out.push_back(r);
  }
  return out;
}

}  // namespace sandboxlet::chsim
