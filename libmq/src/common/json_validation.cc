#include "common/json_validation.h"

#include <simdjson.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

namespace mq::detail {
namespace {

using nlohmann::json;

// Walks a document with nlohmann's iterative SAX parser (no recursion, so no stack to overflow),
// refusing nesting beyond max_depth and recording the top level of an object.
class SlowWalker final : public nlohmann::json_sax<json> {
 public:
  explicit SlowWalker(std::size_t max_depth) : max_depth_(max_depth) {}

  bool null() override { return scalar(std::monostate{}); }
  bool boolean(bool) override { return scalar(std::monostate{}); }
  bool number_integer(number_integer_t v) override { return scalar(static_cast<std::int64_t>(v)); }
  bool number_unsigned(number_unsigned_t v) override { return scalar(static_cast<std::uint64_t>(v)); }
  bool number_float(number_float_t v, const string_t&) override { return scalar(static_cast<double>(v)); }
  bool string(string_t& v) override { return scalar(std::move(v)); }
  bool binary(binary_t&) override { return false; }  // JSON text has no binary values
  bool start_object(std::size_t) override { return open(/*object=*/true); }
  bool start_array(std::size_t) override { return open(/*object=*/false); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (depth_ == 1) {
      // The first of duplicate keys counts, as with simdjson and the record's offset prefix.
      current_is_first_ = fields_.try_emplace(k).second;
      current_key_ = k;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

  bool root_is_object() const { return root_is_object_; }
  std::map<std::string, TopLevelValue, std::less<>>& fields() { return fields_; }

 private:
  bool open(bool object) {
    if (depth_ == 0) root_is_object_ = object;
    return ++depth_ <= max_depth_;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool scalar(TopLevelValue value) {
    if (depth_ == 1 && root_is_object_ && current_is_first_) fields_[current_key_] = std::move(value);
    return true;
  }

  const std::size_t max_depth_;
  std::size_t depth_ = 0;
  bool root_is_object_ = false;
  std::string current_key_;
  bool current_is_first_ = false;
  std::map<std::string, TopLevelValue, std::less<>> fields_;
};

// True when `t` is exactly one number of JSON's grammar.
bool is_json_number(std::string_view t) {
  auto digits = [&](std::size_t& i) {
    const std::size_t start = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i > start;
  };
  std::size_t i = 0;
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (!digits(i)) {
    return false;
  }
  if (i < t.size() && t[i] == '.' && !digits(++i)) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digits(i)) return false;
  }
  return i == t.size();
}

// JSON numbers have no size limit, but nlohmann refuses those beyond a double (an integer of 400
// digits, 1e400): each such number (valid by JSON's grammar) is replaced by 0.5 for the walk. Its
// text is what gets stored, untouched; only the validation sees the 0.5, a fraction so that a field
// that must be an integer (a record's offset or batch_last) refuses it as it would the real number.
std::string tame_huge_numbers(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < text.size()) {
        out.push_back(text[i + 1]);
        i += 2;
        continue;
      }
      in_string = c != '"';
      ++i;
      continue;
    }
    if (c == '"') in_string = true;
    if (c != '-' && (c < '0' || c > '9')) {
      out.push_back(c);
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < text.size() && std::string_view("0123456789+-.eE").find(text[end]) != std::string_view::npos)
      ++end;
    const std::string token(text.substr(i, end - i));
    const double value = std::strtod(token.c_str(), nullptr);
    out += is_json_number(token) && !std::isfinite(value) ? std::string("0.5") : token;
    i = end;
  }
  return out;
}

bool walk_slowly(std::string_view text, SlowWalker& walker) {
  const std::string tamed = tame_huge_numbers(text);
  return json::sax_parse(tamed.begin(), tamed.end(), &walker, json::input_format_t::json, /*strict=*/true);
}

}  // namespace

std::optional<std::map<std::string, TopLevelValue, std::less<>>> parse_top_level_slowly(
    std::string_view text, std::size_t max_depth) {
  SlowWalker walker(max_depth);
  if (!walk_slowly(text, walker) || !walker.root_is_object()) return std::nullopt;
  return std::move(walker.fields());
}

bool is_unrepresentable_number_error(int error) {
  return static_cast<simdjson::error_code>(error) == simdjson::NUMBER_ERROR;
}

struct JsonValidator::Parser {
  simdjson::dom::parser dom;
};

JsonValidator::JsonValidator(std::size_t max_depth)
    : parser_(std::make_unique<Parser>()), max_depth_(max_depth) {
  // The depth limit is fixed at allocation; later parses grow the capacity and keep it.
  // A failed allocation is reported again by the first parse.
  const auto allocated = parser_->dom.allocate(4096, max_depth);
  static_cast<void>(allocated);
}

JsonValidator::~JsonValidator() = default;

Status JsonValidator::check(std::string_view text, std::string_view what) {
  // A raw NUL byte is never valid JSON (not whitespace, and escaped inside strings), but simdjson
  // 3.0 ends a number at the top level on one and ignores the rest: "1\0garbage" would pass as 1,
  // be stored whole, and cut the log when recovery reads it back inside its record.
  if (text.find('\0') != std::string_view::npos) {
    return Status::invalid_argument(std::string(what) + " is not valid JSON: it holds a NUL byte");
  }
  simdjson::dom::element root;
  const auto error = parser_->dom.parse(text.data(), text.size()).get(root);
  if (!error) return {};
  if (is_unrepresentable_number_error(error)) {
    SlowWalker walker(max_depth_);
    if (walk_slowly(text, walker)) return {};
  }
  return Status::invalid_argument(std::string(what) + " is not valid JSON" +
                                  (error == simdjson::DEPTH_ERROR
                                       ? " (nested deeper than " + std::to_string(max_depth_) + " levels)"
                                       : std::string(": ") + simdjson::error_message(error)));
}

}  // namespace mq::detail
