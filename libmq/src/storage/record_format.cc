#include "storage/record_format.h"

#include <simdjson.h>

#include <charconv>
#include <limits>

#include "common/byte_scan.h"
#include "common/json_validation.h"

namespace mq::detail {

bool is_valid_utf8(std::string_view s) { return simdjson::validate_utf8(s.data(), s.size()); }

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  // Most strings (header names and values, keys, ids) need no escape: copy the runs between
  // escapes whole, found a word at a time.
  std::size_t run = 0;
  for (std::size_t i = find_json_escape(s); i < s.size(); i = find_json_escape(s, run)) {
    const auto u = static_cast<unsigned char>(s[i]);
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (u) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out.push_back(kHex[u >> 4]);
        out.push_back(kHex[u & 0xf]);
    }
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

namespace {
void append_number(std::string& out, std::int64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, end);
}
void append_number(std::string& out, std::uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, end);
}
constexpr std::string_view kOffsetPrefix = R"({"offset":)";
}  // namespace

void append_json_headers(std::string& out, const std::vector<std::pair<std::string, std::string>>& headers) {
  out += '{';
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, headers[i].first);
    out += ':';
    append_json_string(out, headers[i].second);
  }
  out += '}';
}

std::int64_t due_time(const Message& message, std::int64_t timestamp_ms) {
  if (message.delay && message.delay->count() > 0) {
    // The message was stored up to a millisecond after `timestamp_ms` (a whole millisecond, cut
    // down): one more, so that a delay is never cut short. Saturating: a clock at the end of time
    // must not wrap around to a time long past.
    const std::int64_t delay = message.delay->count() + 1;
    return timestamp_ms > std::numeric_limits<std::int64_t>::max() - delay
               ? std::numeric_limits<std::int64_t>::max()
               : timestamp_ms + delay;
  }
  if (message.deliver_at_ms) return *message.deliver_at_ms;
  return timestamp_ms;
}

void append_record_line(std::string& out, std::uint64_t offset, std::int64_t timestamp_ms,
                        std::optional<std::uint64_t> batch_last, const Message& message) {
  out += kOffsetPrefix;
  append_number(out, offset);
  out += R"(,"timestamp":)";
  append_number(out, timestamp_ms);
  if (batch_last) {
    out += R"(,"batch_last":)";
    append_number(out, *batch_last);
  }
  if (message.key) {
    out += R"(,"key":)";
    append_json_string(out, *message.key);
  }
  if (!message.headers.empty()) {
    out += R"(,"headers":)";
    append_json_headers(out, message.headers);
  }
  if (auto due = due_time(message, timestamp_ms); due > timestamp_ms) {
    out += R"(,"deliver_at":)";
    append_number(out, due);
  }
  if (message.dedup_id) {
    out += R"(,"dedup_id":)";
    append_json_string(out, *message.dedup_id);
  }
  if (message.source) {
    out += R"(,"source":)";
    out += message.source->json();
  }
  out += R"(,"payload":)";
  out += message.payload.json();
  out += "}\n";
}

std::optional<std::uint64_t> parse_offset_prefix(std::string_view line) {
  if (!line.starts_with(kOffsetPrefix)) return std::nullopt;
  line.remove_prefix(kOffsetPrefix.size());
  std::uint64_t offset = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), offset);
  if (ec != std::errc() || end == line.data() || end == line.data() + line.size() || *end != ',') {
    return std::nullopt;
  }
  return offset;
}

std::optional<std::int64_t> parse_timestamp_prefix(std::string_view line) {
  constexpr std::string_view kTimestamp = "\"timestamp\":";
  const auto comma = line.find(',');
  if (!parse_offset_prefix(line) || comma == std::string_view::npos) return std::nullopt;
  line.remove_prefix(comma + 1);
  if (!line.starts_with(kTimestamp)) return std::nullopt;
  line.remove_prefix(kTimestamp.size());
  std::int64_t timestamp = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), timestamp);
  if (ec != std::errc() || end == line.data() || end == line.data() + line.size() ||
      (*end != ',' && *end != '}'))
    return std::nullopt;
  return timestamp;
}

namespace {

// Reads the record's prefix as append_record_line writes it, field by field in its order, up to
// "source" or "payload"; false for anything else (the caller then parses the whole line).
class PrefixScanner {
 public:
  PrefixScanner(std::string_view line, DedupIdField dedup_id) : rest_(line), dedup_id_(dedup_id) {}

  bool scan(RecordOptions& out) {
    if (!literal(kOffsetPrefix) || !number(out.offset) || !literal(R"(,"timestamp":)") ||
        !number(out.timestamp_ms))
      return false;
    std::uint64_t batch_last = 0;
    if (literal(R"(,"batch_last":)") && !number(batch_last)) return false;
    if (literal(R"(,"key":)")) {
      auto key = string();
      // With escapes, the text may not be the writer's (\/ for /): the parser makes it so.
      if (!key || key->find('\\') != std::string_view::npos) return false;
      out.raw_key = std::string(*key);
    }
    if (literal(R"(,"headers":{)") && !skip_headers()) return false;
    if (literal(R"(,"deliver_at":)")) {
      std::int64_t due = 0;
      if (!number(due)) return false;
      out.deliver_at_ms = due;
    }
    if (literal(R"(,"dedup_id":)")) {
      auto id = string();
      if (!id) return false;
      if (dedup_id_ == DedupIdField::kRead) {
        if (id->find('\\') != std::string_view::npos) return false;  // escapes: the parser unescapes
        out.dedup_id = std::string(id->substr(1, id->size() - 2));
      }
    }
    return rest_.starts_with(R"(,"source":)") || rest_.starts_with(R"(,"payload":)");
  }

 private:
  bool literal(std::string_view text) {
    if (!rest_.starts_with(text)) return false;
    rest_.remove_prefix(text.size());
    return true;
  }
  template <typename T>
  bool number(T& value) {
    auto [end, ec] = std::from_chars(rest_.data(), rest_.data() + rest_.size(), value);
    if (ec != std::errc() || end == rest_.data()) return false;
    rest_.remove_prefix(static_cast<std::size_t>(end - rest_.data()));
    return true;
  }
  // A JSON string with its quotes, as written. Its end is found a word at a time: header values and
  // dedup ids are most of a record's bytes before the payload, and every group reads every record.
  std::optional<std::string_view> string() {
    if (rest_.empty() || rest_[0] != '"') return std::nullopt;
    for (std::size_t i = find_json_escape(rest_, 1); i < rest_.size(); i = find_json_escape(rest_, i)) {
      if (rest_[i] == '\\') {
        i += 2;
      } else if (rest_[i] == '"') {
        const std::string_view text = rest_.substr(0, i + 1);
        rest_.remove_prefix(i + 1);
        return text;
      } else {
        ++i;  // a raw control character: not JSON, which the parser after this scanner will say
      }
    }
    return std::nullopt;
  }
  bool skip_headers() {
    if (literal("}")) return true;
    while (true) {
      if (!string() || !literal(":") || !string()) return false;
      if (literal("}")) return true;
      if (!literal(",")) return false;
    }
  }
  std::string_view rest_;
  const DedupIdField dedup_id_;
};

}  // namespace

namespace {
// A token without the blanks after it.
std::string_view trimmed(std::string_view text) {
  while (!text.empty() &&
         (text.back() == ' ' || text.back() == '\t' || text.back() == '\n' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}
}  // namespace

std::optional<RecordOptions> parse_record_options(std::string_view line, DedupIdField dedup_id) {
  RecordOptions out;
  if (PrefixScanner(line, dedup_id).scan(out)) return out;
  // Written some other way (or a dedup id with escapes): the fields wherever they are.
  simdjson::padded_string padded(line);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(document) || document.get_object().get(object)) return std::nullopt;
  out = {};
  bool has_offset = false;
  bool has_timestamp = false;
  for (auto member : object) {
    std::string_view name;
    simdjson::ondemand::value value;
    if (member.unescaped_key().get(name) || member.value().get(value)) return std::nullopt;
    // The first of duplicate names counts, as in RecordValidator (both of its paths).
    if (name == "offset" && !has_offset) {
      // As recovery reads it: an unsigned whole number, "-0" included.
      std::string_view text = trimmed(value.raw_json_token());
      if (text.starts_with("-") && text.find_first_not_of('0', 1) == std::string_view::npos &&
          text.size() > 1) {
        out.offset = 0;
      } else if (auto [at, ec] = std::from_chars(text.data(), text.data() + text.size(), out.offset);
                 ec != std::errc() || at != text.data() + text.size()) {
        return std::nullopt;
      }
      has_offset = true;
    } else if (name == "timestamp" && !has_timestamp) {
      has_timestamp = true;
      // Any number recovery accepts (beyond 64 bits too), clamped to what a timestamp holds.
      const std::string_view text = trimmed(value.raw_json_token());
      const char* end = text.data() + text.size();
      if (auto [at, ec] = std::from_chars(text.data(), end, out.timestamp_ms);
          ec != std::errc() || at != end) {
        double ms = 0;
        auto [dat, dec] = std::from_chars(text.data(), end, ms);
        if (dec == std::errc::result_out_of_range)
          ms = text.starts_with('-') ? -1e300 : 1e300;
        else if (dec != std::errc())
          return std::nullopt;
        out.timestamp_ms = ms >= 9.2e18    ? std::numeric_limits<std::int64_t>::max()
                           : ms <= -9.2e18 ? std::numeric_limits<std::int64_t>::min()
                                           : static_cast<std::int64_t>(ms);
      }
    } else if (name == "key" && !out.raw_key) {
      std::string_view key;
      if (value.get_string().get(key)) return std::nullopt;
      append_json_string(out.raw_key.emplace(), key);  // as the writer would have written it
    } else if (name == "deliver_at" && !out.deliver_at_ms) {
      std::int64_t due = 0;
      if (value.get_int64().get(due)) return std::nullopt;
      out.deliver_at_ms = due;
    } else if (name == "dedup_id" && !out.dedup_id && dedup_id == DedupIdField::kRead) {
      std::string_view id;
      if (value.get_string().get(id)) return std::nullopt;
      out.dedup_id = std::string(id);
    }
  }
  if (!has_offset) return std::nullopt;
  return out;
}

struct RecordValidator::Parser {
  Parser() {
    // Deep enough for any record the write path accepts (json_validation.h).
    const auto allocated = dom.allocate(4096, kMaxDocumentDepth);
    static_cast<void>(allocated);  // a failed allocation is reported again by the first parse
  }
  simdjson::dom::parser dom;
  simdjson::ondemand::parser ondemand;
};

RecordValidator::RecordValidator() : parser_(std::make_unique<Parser>()) {}
RecordValidator::~RecordValidator() = default;

namespace {

// True when the line's first "headers" member is an object of strings.
bool first_headers_are_strings(std::string_view line) {
  simdjson::padded_string padded(line);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(document) || document.get_object().get(object)) return false;
  for (auto member : object) {
    std::string_view name;
    simdjson::ondemand::value value;
    if (member.unescaped_key().get(name) || member.value().get(value)) return false;
    if (name != "headers") continue;
    simdjson::ondemand::object headers;
    if (value.get_object().get(headers)) return false;
    for (auto header : headers) {
      std::string_view text;
      if (header.value().get_string().get(text)) return false;
    }
    return true;
  }
  return false;
}

// The header fields of a record that only the slow parser could read (a number beyond 64 bits in
// the payload): the same checks as the fast path below.
std::optional<RecordHeader> validate_slowly(std::string_view line) {
  auto fields = parse_top_level_slowly(line, kMaxDocumentDepth);
  if (!fields) return std::nullopt;
  auto field = [&](std::string_view name) -> const TopLevelValue* {
    auto it = fields->find(name);
    return it == fields->end() ? nullptr : &it->second;
  };
  auto unsigned_field = [&](std::string_view name) -> std::optional<std::uint64_t> {
    const TopLevelValue* v = field(name);
    if (v == nullptr) return std::nullopt;
    if (const auto* u = std::get_if<std::uint64_t>(v)) return *u;
    return std::nullopt;
  };
  RecordHeader header;
  auto offset = unsigned_field("offset");
  if (!offset) return std::nullopt;
  header.offset = *offset;
  const TopLevelValue* timestamp = field("timestamp");
  if (timestamp == nullptr ||
      !(std::holds_alternative<std::uint64_t>(*timestamp) ||
        std::holds_alternative<std::int64_t>(*timestamp) || std::holds_alternative<double>(*timestamp))) {
    return std::nullopt;
  }
  if (field("payload") == nullptr) return std::nullopt;
  if (const TopLevelValue* key = field("key"); key != nullptr && !std::holds_alternative<std::string>(*key)) {
    return std::nullopt;
  }
  // The slow parser does not look inside containers: the headers (the first of that name, as on
  // the fast path) are checked by the on-demand parser, which reads numbers beyond 64 bits
  // elsewhere in the line without complaint.
  if (field("headers") != nullptr && !first_headers_are_strings(line)) return std::nullopt;
  if (const TopLevelValue* due = field("deliver_at"); due != nullptr) {
    // What the fast path's is_int64() accepts: a whole number within int64.
    const auto* u = std::get_if<std::uint64_t>(due);
    if (!std::holds_alternative<std::int64_t>(*due) && !(u && *u <= INT64_MAX)) return std::nullopt;
  }
  if (const TopLevelValue* id = field("dedup_id");
      id != nullptr && !std::holds_alternative<std::string>(*id)) {
    return std::nullopt;
  }
  if (field("batch_last") != nullptr) {
    auto last = unsigned_field("batch_last");
    if (!last || *last < header.offset) return std::nullopt;
    header.batch_last = *last;
  }
  return header;
}

}  // namespace

std::optional<RecordHeader> RecordValidator::validate(std::string_view line) {
  simdjson::dom::element root;
  if (const auto error = parser_->dom.parse(line.data(), line.size()).get(root)) {
    // The write path accepts numbers simdjson cannot represent (json_validation.h); so must we.
    if (is_unrepresentable_number_error(error)) return validate_slowly(line);
    return std::nullopt;
  }
  simdjson::dom::object object;
  if (root.get_object().get(object)) return std::nullopt;
  RecordHeader header;
  if (object["offset"].get_uint64().get(header.offset)) return std::nullopt;
  simdjson::dom::element field;
  if (object["timestamp"].get(field) || !field.is_number()) return std::nullopt;
  if (object["payload"].get(field)) return std::nullopt;
  if (!object["key"].get(field) && !field.is_string()) return std::nullopt;
  if (!object["headers"].get(field)) {
    simdjson::dom::object headers;
    if (field.get_object().get(headers)) return std::nullopt;
    for (auto member : headers) {
      if (!member.value.is_string()) return std::nullopt;
    }
  }
  if (!object["deliver_at"].get(field) && !field.is_int64()) return std::nullopt;
  if (!object["dedup_id"].get(field) && !field.is_string()) return std::nullopt;
  if (!object["batch_last"].get(field)) {
    std::uint64_t last = 0;
    if (field.get_uint64().get(last) || last < header.offset) return std::nullopt;
    header.batch_last = last;
  }
  return header;
}

std::optional<RecordValidator::ProducedFields> RecordValidator::produced_fields(std::string_view line) {
  // On demand, so that a payload's numbers are copied as text, never converted: this works for
  // numbers beyond 64 bits too.
  simdjson::padded_string padded(line);
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser_->ondemand.iterate(padded).get(document) || document.get_object().get(object))
    return std::nullopt;
  ProducedFields fields;
  bool has_payload = false;
  bool has_source = false;
  bool has_key = false;
  bool has_headers = false;
  for (auto member : object) {
    std::string_view name;
    simdjson::ondemand::value value;
    if (member.unescaped_key().get(name) || member.value().get(value)) return std::nullopt;
    // The first of duplicate keys counts, as in validate() (both of its paths): a later one is
    // skipped unread, so the fields agree with what recovery accepted.
    if ((name == "payload" && !has_payload) || (name == "source" && !has_source)) {
      std::string_view raw;
      if (simdjson::to_json_string(value).get(raw)) return std::nullopt;
      (name == "payload" ? fields.payload_json : fields.source_json.emplace()) = std::string(raw);
      (name == "payload" ? has_payload : has_source) = true;
    } else if (name == "key" && !has_key) {
      std::string_view key;
      if (value.get_string().get(key)) return std::nullopt;
      fields.key = std::string(key);
      has_key = true;
    } else if (name == "headers" && !has_headers) {
      simdjson::ondemand::object headers;
      if (value.get_object().get(headers)) return std::nullopt;
      for (auto header : headers) {
        std::string_view header_name;
        std::string_view header_value;
        if (header.unescaped_key().get(header_name) || header.value().get_string().get(header_value))
          return std::nullopt;
        fields.headers.emplace_back(header_name, header_value);
      }
      has_headers = true;
    }
  }
  if (!has_payload) return std::nullopt;
  return fields;
}

}  // namespace mq::detail
