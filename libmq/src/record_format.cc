#include "record_format.h"

#include <simdjson.h>
#include <charconv>

namespace mq::detail {

bool is_valid_utf8(std::string_view s) { return simdjson::validate_utf8(s.data(), s.size()); }

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
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
        if (u < 0x20) {
          out += "\\u00";
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 0xf]);
        } else {
          out.push_back(c);  // UTF-8 passes through unchanged
        }
    }
  }
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

struct RecordValidator::Parser {
  simdjson::dom::parser dom;
};

RecordValidator::RecordValidator() : parser_(std::make_unique<Parser>()) {}
RecordValidator::~RecordValidator() = default;

std::optional<RecordHeader> RecordValidator::validate(std::string_view line) {
  simdjson::dom::element root;
  if (parser_->dom.parse(line.data(), line.size()).get(root)) return std::nullopt;
  simdjson::dom::object object;
  if (root.get_object().get(object)) return std::nullopt;
  RecordHeader header;
  if (object["offset"].get_uint64().get(header.offset)) return std::nullopt;
  simdjson::dom::element field;
  if (object["timestamp"].get(field) || !field.is_number()) return std::nullopt;
  if (object["payload"].get(field)) return std::nullopt;
  if (!object["key"].get(field) && !field.is_string()) return std::nullopt;
  if (!object["batch_last"].get(field)) {
    std::uint64_t last = 0;
    if (field.get_uint64().get(last) || last < header.offset) return std::nullopt;
    header.batch_last = last;
  }
  return header;
}

std::optional<RecordValidator::ProducedFields> RecordValidator::produced_fields(std::string_view line) {
  simdjson::dom::element root;
  if (parser_->dom.parse(line.data(), line.size()).get(root)) return std::nullopt;
  simdjson::dom::element payload;
  if (root["payload"].get(payload)) return std::nullopt;
  ProducedFields fields{simdjson::minify(payload), std::nullopt};
  std::string_view key;
  if (!root["key"].get_string().get(key)) fields.key = std::string(key);
  return fields;
}

}  // namespace mq::detail
