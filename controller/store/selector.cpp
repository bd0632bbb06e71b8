#include "controller/store/selector.h"

#include <charconv>
#include <cstdint>

#include "runtime/base/names.h"
#include "runtime/base/strings.h"

namespace sandboxlet::store {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// The "name" part of a qualified name and a label value share one shape:
// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63 characters.
bool IsQualifiedNamePart(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!IsAlnum(s.front()) || !IsAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// A small lexer over the label selector text. Identifiers are runs of characters that are not
// whitespace or one of the operator/punctuation characters.
class SelectorLexer {
 public:
  enum class Kind {
    kEnd,
    kIdent,
    kComma,
    kOpenParen,
    kCloseParen,
    kEq,
    kDoubleEq,
    kNotEq,
    kBang,
    kGt,
    kLt
  };
  struct Token {
    Kind kind;
    std::string text;
    size_t offset;
  };

  explicit SelectorLexer(std::string_view text) : text_(text) {}

  Token Peek() {
    size_t save = pos_;
    Token t = Next();
    pos_ = save;
    return t;
  }

  Token Next() {
    while (pos_ < text_.size() && IsSpace(text_[pos_])) ++pos_;
    size_t start = pos_;
    if (pos_ >= text_.size()) return {Kind::kEnd, "", start};
    char c = text_[pos_];
    auto one = [&](Kind k) {
      ++pos_;
      return Token{k, std::string(1, c), start};
    };
    switch (c) {
      case ',':
        return one(Kind::kComma);
      case '(':
        return one(Kind::kOpenParen);
      case ')':
        return one(Kind::kCloseParen);
      case '>':
        return one(Kind::kGt);
      case '<':
        return one(Kind::kLt);
      case '=':
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '=') {
          pos_ += 2;
          return {Kind::kDoubleEq, "==", start};
        }
        return one(Kind::kEq);
      case '!':
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '=') {
          pos_ += 2;
          return {Kind::kNotEq, "!=", start};
        }
        return one(Kind::kBang);
      default:
        break;
    }
    while (pos_ < text_.size() && !IsSpace(text_[pos_]) && !IsPunct(text_[pos_])) ++pos_;
    return {Kind::kIdent, std::string(text_.substr(start, pos_ - start)), start};
  }

 private:
  static bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  static bool IsPunct(char c) {
    return c == ',' || c == '(' || c == ')' || c == '=' || c == '!' || c == '<' || c == '>';
  }

  std::string_view text_;
  size_t pos_ = 0;
};

const char* OpText(LabelSelector::Op op) {
  switch (op) {
    case LabelSelector::Op::kEquals:
      return "=";
    case LabelSelector::Op::kNotEquals:
      return "!=";
    case LabelSelector::Op::kIn:
      return " in ";
    case LabelSelector::Op::kNotIn:
      return " notin ";
    case LabelSelector::Op::kGreaterThan:
      return ">";
    case LabelSelector::Op::kLessThan:
      return "<";
    case LabelSelector::Op::kExists:
    case LabelSelector::Op::kDoesNotExist:
      return "";
  }
  return "";
}

}  // namespace

absl::Status ValidateLabelKey(std::string_view key, std::string_view field) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat(field, ": Invalid value: \"", key, "\": ", why));
  };
  std::string_view name = key;
  size_t slash = key.find('/');
  if (slash != std::string_view::npos) {
    std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (!IsDns1123Subdomain(prefix)) {
      return bad(
          "prefix part must be a lowercase RFC 1123 subdomain (lowercase alphanumerics, '-' and "
          "'.', at most 253 characters)");
    }
  }
  if (!IsQualifiedNamePart(name)) {
    return bad(
        "name part must be at most 63 characters of alphanumerics, '-', '_' or '.', starting and "
        "ending with an alphanumeric");
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelValue(std::string_view value, std::string_view field) {
  if (value.empty() || IsQualifiedNamePart(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      Cat(field, ": Invalid value: \"", value,
          "\": a label value must be empty or at most 63 characters of alphanumerics, '-', '_' "
          "or '.', starting and ending with an alphanumeric"));
}

absl::StatusOr<LabelSelector> LabelSelector::Parse(std::string_view text) {
  using Kind = SelectorLexer::Kind;
  SelectorLexer lex(text);
  LabelSelector selector;
  auto fail = [&](size_t offset, std::string_view what) {
    return absl::InvalidArgumentError(
        Cat("label selector \"", text, "\": ", what, " at offset ", offset));
  };
  auto check_key = [&](const SelectorLexer::Token& t) -> absl::Status {
    absl::Status st = ValidateLabelKey(t.text, "key");
    if (!st.ok()) {
      return absl::InvalidArgumentError(Cat("label selector \"", text, "\": ", st.message()));
    }
    return absl::OkStatus();
  };
  auto check_value = [&](const std::string& v) -> absl::Status {
    absl::Status st = ValidateLabelValue(v, "value");
    if (!st.ok()) {
      return absl::InvalidArgumentError(Cat("label selector \"", text, "\": ", st.message()));
    }
    return absl::OkStatus();
  };

  if (lex.Peek().kind == Kind::kEnd) return selector;
  while (true) {
    Requirement req;
    SelectorLexer::Token t = lex.Next();
    if (t.kind == Kind::kBang) {
      SelectorLexer::Token key = lex.Next();
      if (key.kind != Kind::kIdent) return fail(key.offset, "expected a label key after '!'");
      if (absl::Status st = check_key(key); !st.ok()) return st;
      req.key = key.text;
      req.op = Op::kDoesNotExist;
    } else if (t.kind == Kind::kIdent) {
      if (absl::Status st = check_key(t); !st.ok()) return st;
      req.key = t.text;
      SelectorLexer::Token op = lex.Peek();
      switch (op.kind) {
        case Kind::kEnd:
        case Kind::kComma:
          req.op = Op::kExists;
          break;
        case Kind::kEq:
        case Kind::kDoubleEq:
        case Kind::kNotEq:
        case Kind::kGt:
        case Kind::kLt: {
          lex.Next();
          req.op = op.kind == Kind::kNotEq ? Op::kNotEquals
                   : op.kind == Kind::kGt  ? Op::kGreaterThan
                   : op.kind == Kind::kLt  ? Op::kLessThan
                                           : Op::kEquals;
          // An empty value is allowed for = and != ("a=" selects a="").
          SelectorLexer::Token v = lex.Peek();
          std::string value;
          if (v.kind == Kind::kIdent) {
            lex.Next();
            value = v.text;
          } else if (v.kind != Kind::kEnd && v.kind != Kind::kComma) {
            return fail(v.offset, Cat("expected a value after '", op.text, "'"));
          }
          if (req.op == Op::kGreaterThan || req.op == Op::kLessThan) {
            int64_t n;
            if (!ParseInt(value, &n)) {
              return fail(v.offset, Cat("the value after '", op.text, "' must be an integer"));
            }
          } else if (absl::Status st = check_value(value); !st.ok()) {
            return st;
          }
          req.values.push_back(std::move(value));
          break;
        }
        case Kind::kIdent: {
          if (op.text != "in" && op.text != "notin") {
            return fail(op.offset, Cat("expected an operator (=, ==, !=, in, notin, >, <), got \"",
                                       op.text, "\""));
          }
          lex.Next();
          req.op = op.text == "in" ? Op::kIn : Op::kNotIn;
          SelectorLexer::Token open = lex.Next();
          if (open.kind != Kind::kOpenParen) {
            return fail(open.offset, Cat("expected '(' after '", op.text, "'"));
          }
          while (true) {
            SelectorLexer::Token v = lex.Next();
            std::string value;
            if (v.kind == Kind::kIdent) {
              value = v.text;
              v = lex.Next();
            } else if (v.kind == Kind::kCloseParen && req.values.empty()) {
              return fail(v.offset, Cat("the value set of '", op.text, "' must not be empty"));
            }
            if (absl::Status st = check_value(value); !st.ok()) return st;
            req.values.push_back(std::move(value));
            if (v.kind == Kind::kCloseParen) break;
            if (v.kind != Kind::kComma) return fail(v.offset, "expected ',' or ')'");
          }
          break;
        }
        default:
          return fail(op.offset, Cat("unexpected \"", op.text, "\" after key \"", t.text, "\""));
      }
    } else {
      return fail(t.offset, t.kind == Kind::kEnd
                                ? "expected a requirement after ','"
                                : Cat("expected a label key or '!', got \"", t.text, "\""));
    }
    selector.requirements_.push_back(std::move(req));
    SelectorLexer::Token sep = lex.Next();
    if (sep.kind == Kind::kEnd) break;
    if (sep.kind != Kind::kComma) {
      return fail(sep.offset, Cat("expected ',' between requirements, got \"", sep.text, "\""));
    }
  }
  return selector;
}

bool LabelSelector::Matches(const nlohmann::json& labels) const {
  for (const Requirement& req : requirements_) {
    const std::string* value = nullptr;
    if (labels.is_object()) {
      auto it = labels.find(req.key);
      if (it != labels.end() && it->is_string()) value = it->get_ptr<const std::string*>();
    }
    switch (req.op) {
      case Op::kExists:
        if (value == nullptr) return false;
        break;
      case Op::kDoesNotExist:
        if (value != nullptr) return false;
        break;
      case Op::kEquals:
        if (value == nullptr || *value != req.values[0]) return false;
        break;
      case Op::kNotEquals:
        if (value != nullptr && *value == req.values[0]) return false;
        break;
      case Op::kIn: {
        if (value == nullptr) return false;
        bool found = false;
        for (const std::string& v : req.values) found = found || v == *value;
        if (!found) return false;
        break;
      }
      case Op::kNotIn:
        if (value != nullptr) {
          for (const std::string& v : req.values) {
            if (v == *value) return false;
          }
        }
        break;
      case Op::kGreaterThan:
      case Op::kLessThan: {
        int64_t have, want;
        if (value == nullptr || !ParseInt(*value, &have) || !ParseInt(req.values[0], &want)) {
          return false;
        }
        if (req.op == Op::kGreaterThan ? !(have > want) : !(have < want)) return false;
        break;
      }
    }
  }
  return true;
}

bool LabelSelector::MatchesObject(const nlohmann::json& object) const {
  if (requirements_.empty()) return true;
  static const nlohmann::json kNoLabels;
  if (!object.is_object()) return Matches(kNoLabels);
  auto meta = object.find("metadata");
  if (meta == object.end() || !meta->is_object()) return Matches(kNoLabels);
  auto labels = meta->find("labels");
  return Matches(labels == meta->end() ? kNoLabels : *labels);
}

std::string LabelSelector::ToString() const {
  std::vector<std::string> parts;
  for (const Requirement& req : requirements_) {
    switch (req.op) {
      case Op::kExists:
        parts.push_back(req.key);
        break;
      case Op::kDoesNotExist:
        parts.push_back(Cat("!", req.key));
        break;
      case Op::kIn:
      case Op::kNotIn:
        parts.push_back(Cat(req.key, OpText(req.op), "(", Join(req.values, ","), ")"));
        break;
      default:
        parts.push_back(Cat(req.key, OpText(req.op), req.values[0]));
    }
  }
  return Join(parts, ",");
}

absl::StatusOr<FieldSelector> FieldSelector::Parse(std::string_view text) {
  FieldSelector selector;
  auto fail = [&](size_t offset, std::string_view what) {
    return absl::InvalidArgumentError(
        Cat("field selector \"", text, "\": ", what, " at offset ", offset));
  };
  if (Trim(text).empty()) return selector;
  size_t pos = 0;
  while (true) {
    // One requirement: everything up to an unescaped ','.
    size_t start = pos;
    std::string lhs, rhs;
    bool in_value = false, escaped = false;
    Requirement req;
    size_t op_offset = 0;
    for (; pos < text.size(); ++pos) {
      char c = text[pos];
      if (escaped) {
        (in_value ? rhs : lhs).push_back(c);
        escaped = false;
        continue;
      }
      if (c == '\\') {
        escaped = true;
        continue;
      }
      if (c == ',') break;
      if (!in_value && (c == '=' || c == '!')) {
        op_offset = pos;
        if (c == '!') {
          if (pos + 1 >= text.size() || text[pos + 1] != '=') return fail(pos, "expected '!='");
          req.equals = false;
          ++pos;
        } else {
          req.equals = true;
          if (pos + 1 < text.size() && text[pos + 1] == '=') ++pos;
        }
        in_value = true;
        continue;
      }
      (in_value ? rhs : lhs).push_back(c);
    }
    if (escaped) return fail(pos, "dangling '\\'");
    if (!in_value) {
      return fail(start,
                  "expected a requirement of the form field=value, field==value or "
                  "field!=value");
    }
    std::string field(Trim(lhs));
    if (field.empty()) return fail(op_offset, "expected a field name before the operator");
    req.field = field;
    req.path = Split(field, '.');
    for (const std::string& part : req.path) {
      if (part.empty()) return fail(start, Cat("invalid field path \"", field, "\""));
    }
    req.value = std::string(Trim(rhs));
    selector.requirements_.push_back(std::move(req));
    if (pos >= text.size()) break;
    ++pos;  // the ','
  }
  return selector;
}

bool FieldSelector::Matches(const nlohmann::json& object) const {
  for (const Requirement& req : requirements_) {
    const nlohmann::json* node = &object;
    for (const std::string& part : req.path) {
      if (!node->is_object()) {
        node = nullptr;
        break;
      }
      auto it = node->find(part);
      if (it == node->end()) {
        node = nullptr;
        break;
      }
      node = &*it;
    }
    std::string have;
    if (node != nullptr && !node->is_null()) {
      have = node->is_string() ? node->get<std::string>() : node->dump();
    }
    if ((have == req.value) != req.equals) return false;
  }
  return true;
}

}  // namespace sandboxlet::store
