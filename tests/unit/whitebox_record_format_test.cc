// The grammar of one log line (an internal part, libmq/docs/log_format.md): writing a record, the
// cheap offset prefix that reads check, and the full validation that recovery applies to each line.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/byte_scan.h"
#include "common/json_validation.h"
#include "mq/message.h"
#include "storage/record_format.h"

using mq::detail::append_json_string;
using mq::detail::append_record_line;
using mq::detail::is_valid_utf8;
using mq::detail::parse_offset_prefix;
using mq::detail::RecordHeader;
using mq::detail::RecordValidator;

namespace {

mq::Payload payload_of(std::string_view json) {
  auto parsed = mq::Payload::parse(json);
  REQUIRE_MESSAGE(parsed.ok(), parsed.status().to_string());
  return *parsed;
}

mq::Message message(std::string_view payload, std::optional<std::string> key = std::nullopt,
                    std::optional<std::string_view> source = std::nullopt) {
  mq::Message m{payload_of(payload), std::move(key)};
  if (source) m.source = payload_of(*source);
  return m;
}

// One record line as the writer makes it.
std::string line_of(std::uint64_t offset, std::int64_t timestamp, std::optional<std::uint64_t> batch_last,
                    const mq::Message& m) {
  std::string out;
  append_record_line(out, offset, timestamp, batch_last, m);
  return out;
}

// The line without its newline, as readers and recovery see it.
std::string without_newline(std::string line) {
  REQUIRE(line.ends_with('\n'));
  line.pop_back();
  return line;
}

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

// A payload nested `depth` levels deep: [[[...[1]...]]].
std::string nested_payload(std::size_t depth, std::string_view innermost = "1") {
  return std::string(depth, '[') + std::string(innermost) + std::string(depth, ']');
}

}  // namespace

TEST_CASE("A record line holds the documented fields in the documented order and ends in one newline") {
  CHECK(line_of(0, 1700000000000, std::nullopt, message(R"({"a":1})")) ==
        "{\"offset\":0,\"timestamp\":1700000000000,\"payload\":{\"a\":1}}\n");
  CHECK(line_of(7, 5, 9, message("[1,2]", "k", R"({"topic":"t","partition":0})")) ==
        "{\"offset\":7,\"timestamp\":5,\"batch_last\":9,\"key\":\"k\","
        "\"source\":{\"topic\":\"t\",\"partition\":0},\"payload\":[1,2]}\n");
  CHECK(line_of(3, 5, std::nullopt, message("null", "")) ==
        "{\"offset\":3,\"timestamp\":5,\"key\":\"\",\"payload\":null}\n");
  CHECK(line_of(3, 5, 3, message("true")) ==
        "{\"offset\":3,\"timestamp\":5,\"batch_last\":3,\"payload\":true}\n");

  // Extreme numbers are written with all their digits.
  constexpr auto kMaxOffset = std::numeric_limits<std::uint64_t>::max();
  constexpr auto kMinTime = std::numeric_limits<std::int64_t>::min();
  CHECK(line_of(kMaxOffset, kMinTime, kMaxOffset, message("0")) ==
        "{\"offset\":18446744073709551615,\"timestamp\":-9223372036854775808,"
        "\"batch_last\":18446744073709551615,\"payload\":0}\n");

  // A payload produced with whitespace and newlines is stored minified, its numbers' digits kept.
  const std::string pretty =
      line_of(1, 2, std::nullopt, message("{\n  \"n\": [1.50, 1e2,\n -0 ],\n \"s\": \"a b\"\n}"));
  CHECK(pretty == "{\"offset\":1,\"timestamp\":2,\"payload\":{\"n\":[1.50,1e2,-0],\"s\":\"a b\"}}\n");
  CHECK(pretty.find('\n') == pretty.size() - 1);
}

TEST_CASE("Record lines are appended after what the buffer already holds") {
  std::string out = "previous line\n";
  append_record_line(out, 1, 2, std::nullopt, message("1"));
  append_record_line(out, 2, 3, std::nullopt, message("2"));
  CHECK(out ==
        "previous "
        "line\n{\"offset\":1,\"timestamp\":2,\"payload\":1}\n{\"offset\":2,\"timestamp\":3,\"payload\":2}\n");

  std::string s = "x";
  append_json_string(s, "y");
  CHECK(s == "x\"y\"");
}

TEST_CASE("A key is escaped as JSON requires and nothing else is") {
  CHECK(json_string("") == "\"\"");
  CHECK(json_string("plain key-1.2_3") == "\"plain key-1.2_3\"");
  CHECK(json_string("\"") == R"("\"")");
  CHECK(json_string("\\") == R"("\\")");
  CHECK(json_string("\n") == R"("\n")");
  CHECK(json_string("\r") == R"("\r")");
  CHECK(json_string("\t") == R"("\t")");
  CHECK(json_string("\b") == R"("\b")");
  CHECK(json_string("\f") == R"("\f")");
  CHECK(json_string(std::string_view("\0", 1)) == R"("\u0000")");
  CHECK(json_string("\x01") == R"("\u0001")");
  CHECK(json_string("\x0b") == R"("\u000b")");
  CHECK(json_string("\x1f") == R"("\u001f")");
  CHECK(json_string(" ") == "\" \"");
  CHECK(json_string("\x7f") == "\"\x7f\"");  // DEL may stand in a JSON string as it is
  CHECK(json_string("/") == "\"/\"");
  CHECK(json_string("a\"b\\c\nd") == R"("a\"b\\c\nd")");
  // UTF-8 passes through unchanged, not as \u escapes.
  CHECK(json_string("é € 😀 中文") == "\"é € 😀 中文\"");
}

TEST_CASE("Escapes are found a word at a time wherever they stand in a long string") {
  // append_json_string scans eight bytes a step (common/byte_scan.h): an escape in any of a word's
  // eight places, in the tail after the last whole word, or beside UTF-8 bytes must still be found.
  auto escaped_byte_by_byte = [](std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (u < 0x20) {
        static constexpr std::string_view kShort = "btn?fr";  // \b \t \n, (\v has none), \f \r
        if (u >= 8 && u <= 13 && u != 11) {
          out += '\\';
          out += kShort[u - 8];
        } else {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\u%04x", u);
          out += hex;
        }
      } else {
        out += c;
      }
    }
    return out + "\"";
  };
  const std::string special = std::string("\"\\\n\x01\x1f", 5) + std::string(1, '\0');
  for (std::size_t length = 1; length <= 40; ++length) {
    for (std::size_t at = 0; at < length; ++at) {
      for (char c : special) {
        for (char filler : {'a', '\xc3', '\x7f', ' '}) {
          std::string s(length, filler);
          s[at] = c;
          CAPTURE(length);
          CAPTURE(at);
          CAPTURE(static_cast<int>(c));
          REQUIRE(json_string(s) == escaped_byte_by_byte(s));
          // Two of them, the second in a later word.
          if (at + 9 < length) {
            s[at + 9] = '"';
            REQUIRE(json_string(s) == escaped_byte_by_byte(s));
          }
        }
      }
    }
    const std::string plain(length, 'x');
    REQUIRE(json_string(plain) == "\"" + plain + "\"");
  }
  // Bytes just beside the ones that need an escape need none.
  for (int c = 0; c < 256; ++c) {
    const std::string s = std::string(11, 'a') + static_cast<char>(c) + std::string(4, 'b');
    CAPTURE(c);
    REQUIRE(json_string(s) == escaped_byte_by_byte(s));
  }
}

TEST_CASE("all_ascii finds a byte from 0x80 up in any place of a word and in the tail") {
  CHECK(mq::detail::all_ascii(""));
  for (std::size_t length = 1; length <= 40; ++length) {
    std::string s(length, '\x7f');
    CHECK(mq::detail::all_ascii(s));
    for (std::size_t at = 0; at < length; ++at) {
      for (char high : {'\x80', '\xc3', '\xff'}) {
        std::string t = s;
        t[at] = high;
        CAPTURE(length);
        CAPTURE(at);
        REQUIRE_FALSE(mq::detail::all_ascii(t));
      }
    }
  }
}

TEST_CASE(
    "Every byte of a key survives the record line: JSON readers, the validator and produced_fields agree") {
  std::string key;
  for (int c = 0; c < 0x80; ++c) key.push_back(static_cast<char>(c));
  key += "é😀";
  const std::string line = line_of(4, 1, std::nullopt, message("{}", key));
  // One line, and no raw control character in it: each one is escaped.
  REQUIRE(line.ends_with('\n'));
  for (std::size_t i = 0; i + 1 < line.size(); ++i) {
    CAPTURE(i);
    CHECK(static_cast<unsigned char>(line[i]) >= 0x20);
  }
  const auto parsed = nlohmann::json::parse(line);
  CHECK(parsed["key"].get<std::string>() == key);
  CHECK(parsed["offset"] == 4);

  RecordValidator validator;
  const auto header = validator.validate(without_newline(line));
  REQUIRE(header.has_value());
  CHECK(header->offset == 4);
  const auto fields = validator.produced_fields(without_newline(line));
  REQUIRE(fields.has_value());
  REQUIRE(fields->key.has_value());
  CHECK(*fields->key == key);
}

TEST_CASE("is_valid_utf8 accepts UTF-8 and refuses what a JSON string may not hold") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("plain ASCII"));
  CHECK(is_valid_utf8(std::string_view("nul \0 inside", 12)));
  CHECK(is_valid_utf8("\xC3\xA9"));          // é
  CHECK(is_valid_utf8("\xE2\x82\xAC"));      // €
  CHECK(is_valid_utf8("\xF0\x9F\x98\x80"));  // 😀
  CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
  CHECK(is_valid_utf8("\xEF\xBB\xBF"));      // a BOM is a code point like any other

  CHECK_FALSE(is_valid_utf8("\x80"));              // a continuation byte alone
  CHECK_FALSE(is_valid_utf8("\xC3"));              // a sequence cut short
  CHECK_FALSE(is_valid_utf8("abc\xE2\x82"));       // cut short at the end
  CHECK_FALSE(is_valid_utf8("\xC3("));             // a bad continuation
  CHECK_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong "/"
  CHECK_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong, three bytes
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));      // a UTF-16 surrogate
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // beyond U+10FFFF
  CHECK_FALSE(is_valid_utf8("\xFF"));              // never in UTF-8
  CHECK_FALSE(is_valid_utf8("\xFE\xFF"));          // a UTF-16 BOM
  CHECK_FALSE(is_valid_utf8("valid \xC3\xA9 then \xFF"));
}

TEST_CASE("The offset prefix of every line the writer writes is its offset") {
  const std::vector<std::string> lines = {
      line_of(0, 1, std::nullopt, message("1")),
      line_of(12, 1, 14, message("1", "k")),
      line_of(123456789, -5, std::nullopt, message(R"({"offset":99})", std::nullopt, R"({"offset":98})")),
      line_of(std::numeric_limits<std::uint64_t>::max(), 1, std::nullopt, message("1")),
  };
  const std::vector<std::uint64_t> offsets = {0, 12, 123456789, std::numeric_limits<std::uint64_t>::max()};
  for (std::size_t i = 0; i < lines.size(); ++i) {
    CAPTURE(lines[i]);
    CHECK(parse_offset_prefix(lines[i]) == offsets[i]);
    CHECK(parse_offset_prefix(without_newline(lines[i])) == offsets[i]);
  }
  // Only the prefix is looked at (reads check it cheaply; recovery validates the whole line).
  CHECK(parse_offset_prefix(R"({"offset":5,)") == 5u);
  CHECK(parse_offset_prefix(R"({"offset":5,garbage)") == 5u);
}

TEST_CASE("A line that does not start as the writer writes it has no offset prefix") {
  const std::vector<std::string_view> bad = {
      "",
      "{",
      R"({"offset")",
      R"({"offset":)",
      R"({"offset":,)",
      R"({"offset":12)",   // no comma: the line ends there
      R"({"offset":12})",  // a record without timestamp and payload
      R"({"offset":12 ,)",
      R"({"offset": 12,)",
      R"({ "offset":12,)",
      R"({"offset":-1,)",
      R"({"offset":+1,)",
      R"({"offset":1.5,)",
      R"({"offset":1e3,)",
      R"({"offset":"1",)",
      R"({"offset":18446744073709551616,)",  // beyond 64 bits
      R"({"Offset":1,)",
      R"({"timestamp":1,"offset":1,)",
      R"( {"offset":1,)",
      R"(x{"offset":1,)",
      std::string_view("\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 14),  // a zeroed block
  };
  for (auto line : bad) {
    CAPTURE(line);
    CHECK_FALSE(parse_offset_prefix(line).has_value());
  }
}

TEST_CASE("The validator accepts every line the writer writes and reports its offset and batch end") {
  RecordValidator validator;
  struct Case {
    std::string line;
    std::uint64_t offset;
    std::optional<std::uint64_t> batch_last;
  };
  const std::vector<Case> cases = {
      {line_of(0, 1700000000000, std::nullopt, message(R"({"a":[1,{"b":null}]})")), 0, std::nullopt},
      {line_of(5, 1, 7, message("\"text\"", "key")), 5, 7},
      {line_of(7, 1, 7, message("[]")), 7, 7},  // the last line of its batch
      {line_of(9, -1, std::nullopt, message("false", "", R"({"topic":"t","partition":1,"offset":2})")), 9,
       std::nullopt},
      {line_of(10, 0, 12, message("-12.5e-3", "k\"\n\\")), 10, 12},
      {line_of(std::numeric_limits<std::uint64_t>::max(), 1, std::numeric_limits<std::uint64_t>::max(),
               message("null")),
       std::numeric_limits<std::uint64_t>::max(), std::numeric_limits<std::uint64_t>::max()},
  };
  for (const auto& c : cases) {
    CAPTURE(c.line);
    const auto header = validator.validate(without_newline(c.line));
    REQUIRE(header.has_value());
    CHECK(header->offset == c.offset);
    CHECK(header->batch_last == c.batch_last);
  }
}

TEST_CASE("The validator reads any JSON form of a record: other field orders, unknown fields, spaces") {
  RecordValidator validator;
  auto header =
      validator.validate(R"({"payload":{"x":1},"batch_last":4,"future":[1,2],"timestamp":1,"offset":3})");
  REQUIRE(header.has_value());
  CHECK(header->offset == 3);
  CHECK(header->batch_last == 4u);

  header = validator.validate(R"( { "offset" : 2 , "timestamp" : 1.5 , "key" : "k" , "payload" : "p" } )");
  REQUIRE(header.has_value());
  CHECK(header->offset == 2);
  CHECK_FALSE(header->batch_last.has_value());

  // Any number is a timestamp: negative, fractional, with an exponent.
  CHECK(validator.validate(R"({"offset":1,"timestamp":-1,"payload":1})").has_value());
  CHECK(validator.validate(R"({"offset":1,"timestamp":1e3,"payload":1})").has_value());

  // Of duplicate fields, the first counts (like the offset prefix).
  header = validator.validate(R"({"offset":3,"timestamp":1,"offset":4,"payload":1})");
  REQUIRE(header.has_value());
  CHECK(header->offset == 3);
}

TEST_CASE("The validator refuses damaged lines") {
  RecordValidator validator;
  const std::string good = without_newline(line_of(5, 1700000000000, 6, message(R"({"a":"b"})", "key")));
  REQUIRE(validator.validate(good).has_value());

  const std::vector<std::string> bad = {
      "",
      " ",
      "{",
      "}",
      "{}",
      "null",
      "5",
      "\"string\"",
      R"([{"offset":0,"timestamp":1,"payload":1}])",
      good + "x",                      // trailing garbage
      good + good,                     // two records on one line (a lost newline)
      good + std::string(8, '\0'),     // a zeroed block after the record
      std::string(good.size(), '\0'),  // a zeroed block instead of it
      good.substr(0, 20) + '\0' + good.substr(21),
      // The offset: missing, negative, fractional, a string, null, beyond 64 bits.
      R"({"timestamp":1,"payload":1})",
      R"({"offset":-1,"timestamp":1,"payload":1})",
      R"({"offset":1.5,"timestamp":1,"payload":1})",
      R"({"offset":"1","timestamp":1,"payload":1})",
      R"({"offset":null,"timestamp":1,"payload":1})",
      R"({"offset":18446744073709551616,"timestamp":1,"payload":1})",
      // The timestamp: missing or not a number.
      R"({"offset":1,"payload":1})",
      R"({"offset":1,"timestamp":"1","payload":1})",
      R"({"offset":1,"timestamp":null,"payload":1})",
      R"({"offset":1,"timestamp":true,"payload":1})",
      R"({"offset":1,"timestamp":[1],"payload":1})",
      // The payload: missing.
      R"({"offset":1,"timestamp":1})",
      R"({"offset":1,"timestamp":1,"Payload":1})",
      // The key: not a string, or not UTF-8, or with a raw control character.
      R"({"offset":1,"timestamp":1,"key":1,"payload":1})",
      R"({"offset":1,"timestamp":1,"key":null,"payload":1})",
      R"({"offset":1,"timestamp":1,"key":["k"],"payload":1})",
      "{\"offset\":1,\"timestamp\":1,\"key\":\"\xC3\",\"payload\":1}",
      "{\"offset\":1,\"timestamp\":1,\"key\":\"a\nb\",\"payload\":1}",
      // batch_last: before the offset, negative, not an integer.
      R"({"offset":5,"timestamp":1,"batch_last":4,"payload":1})",
      R"({"offset":5,"timestamp":1,"batch_last":-6,"payload":1})",
      R"({"offset":5,"timestamp":1,"batch_last":"6","payload":1})",
      R"({"offset":5,"timestamp":1,"batch_last":6.0,"payload":1})",
      R"({"offset":5,"timestamp":1,"batch_last":null,"payload":1})",
      // The payload is not JSON.
      R"({"offset":1,"timestamp":1,"payload":nul})",
      R"({"offset":1,"timestamp":1,"payload":[1,]})",
      R"({"offset":1,"timestamp":1,"payload":"unterminated})",
  };
  for (const auto& line : bad) {
    CAPTURE(line);
    CHECK_FALSE(validator.validate(line).has_value());
  }
  // A torn write: every proper prefix of a record is refused.
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK_FALSE(validator.validate(std::string_view(good).substr(0, n)).has_value());
  }
  // A refused line leaves the validator usable.
  CHECK(validator.validate(good).has_value());
}

TEST_CASE("A payload with numbers beyond 64 bits or beyond a double is validated with the same rules") {
  RecordValidator validator;
  const std::string big = "123456789012345678901234567890";
  const std::string huge_exponent = "1e400";
  const std::string many_digits(400, '9');
  for (const std::string& number : {big, huge_exponent, many_digits, "-" + big}) {
    CAPTURE(number);
    const std::string payload = "{\"n\":" + number + "}";
    // As the writer writes it.
    const std::string line = without_newline(line_of(8, 1, 9, message(payload, "k")));
    auto header = validator.validate(line);
    REQUIRE(header.has_value());
    CHECK(header->offset == 8);
    CHECK(header->batch_last == 9u);
    header = validator.validate(without_newline(line_of(8, 1, std::nullopt, message(payload))));
    REQUIRE(header.has_value());
    CHECK_FALSE(header->batch_last.has_value());

    // And what the fast path refuses, the slow one refuses too.
    const std::vector<std::string> bad = {
        R"({"timestamp":1,"payload":)" + payload + "}",
        R"({"offset":-8,"timestamp":1,"payload":)" + payload + "}",
        R"({"offset":8.5,"timestamp":1,"payload":)" + payload + "}",
        R"({"offset":"8","timestamp":1,"payload":)" + payload + "}",
        R"({"offset":8,"payload":)" + payload + "}",
        R"({"offset":8,"timestamp":"1","payload":)" + payload + "}",
        R"({"offset":8,"timestamp":1,"key":5,"payload":)" + payload + "}",
        R"({"offset":8,"timestamp":1,"key":null,"payload":)" + payload + "}",
        R"({"offset":8,"timestamp":1,"batch_last":7,"payload":)" + payload + "}",
        R"({"offset":8,"timestamp":1,"batch_last":"9","payload":)" + payload + "}",
        R"({"offset":8,"timestamp":1,"big":)" + number + "}",  // no payload
        line + "x",
        line + line,
        line.substr(0, line.size() - 1),
        "[" + line + "]",
        payload,  // an object without the fields
    };
    for (const auto& b : bad) {
      CAPTURE(b);
      CHECK_FALSE(validator.validate(b).has_value());
    }
  }
  // A number beyond 64 bits (but within a double) is no offset or batch end either.
  for (const std::string number : {"123456789012345678901234567890", "-123456789012345678901234567890"}) {
    CAPTURE(number);
    CHECK_FALSE(validator.validate("{\"offset\":" + number + ",\"timestamp\":1,\"payload\":1}").has_value());
    CHECK_FALSE(
        validator.validate("{\"offset\":1,\"timestamp\":1,\"batch_last\":" + number + ",\"payload\":1}")
            .has_value());
  }
}

TEST_CASE("Payloads nested as deep as the write path accepts are valid records") {
  RecordValidator validator;
  // kMaxPayloadDepth arrays, the innermost empty (a scalar inside counts as one more level).
  const std::string deep = nested_payload(mq::detail::kMaxPayloadDepth, "");
  const std::string line = without_newline(line_of(1, 1, std::nullopt, message(deep)));
  CHECK(validator.validate(line).has_value());
  // The slow path (a number beyond 64 bits at the bottom) has the same depth.
  const std::string deep_big =
      nested_payload(mq::detail::kMaxPayloadDepth - 1, "123456789012345678901234567890");
  const std::string big_line = without_newline(line_of(2, 1, std::nullopt, message(deep_big)));
  CHECK(validator.validate(big_line).has_value());
  // Far deeper than any accepted payload: damage.
  const std::string too_deep = nested_payload(4 * mq::detail::kMaxPayloadDepth);
  CHECK_FALSE(validator.validate(R"({"offset":1,"timestamp":1,"payload":)" + too_deep + "}").has_value());
  CHECK_FALSE(
      validator
          .validate(R"({"offset":1,"timestamp":1,"payload":)" +
                    nested_payload(4 * mq::detail::kMaxPayloadDepth, "123456789012345678901234567890") + "}")
          .has_value());
}

TEST_CASE("produced_fields gives back the payload, key and source as they were produced") {
  RecordValidator validator;
  auto fields =
      validator.produced_fields(without_newline(line_of(1, 2, std::nullopt, message(R"({"a":[1,2]})"))));
  REQUIRE(fields.has_value());
  CHECK(fields->payload_json == R"({"a":[1,2]})");
  CHECK_FALSE(fields->key.has_value());
  CHECK_FALSE(fields->source_json.has_value());

  const std::string source = R"({"topic":"t","partition":2,"offset":3,"group":"g","deliveries":5})";
  fields = validator.produced_fields(
      without_newline(line_of(4, 2, 6, message("\"p\"", std::string("k\"\\\n\t\0x", 7), source))));
  REQUIRE(fields.has_value());
  CHECK(fields->payload_json == "\"p\"");
  CHECK(fields->key == std::string("k\"\\\n\t\0x", 7));
  CHECK(fields->source_json == source);

  // Numbers keep their digits, even those no 64-bit integer or double holds.
  const std::string digits = R"({"a":1.50,"b":1e400,"c":123456789012345678901234567890,"d":-0,"e":1E+2})";
  fields = validator.produced_fields(without_newline(line_of(1, 2, std::nullopt, message(digits))));
  REQUIRE(fields.has_value());
  CHECK(fields->payload_json == digits);
  for (const std::string scalar : {"null", "true", "0", "\"s\"", "[]", "{}"}) {
    fields = validator.produced_fields(without_newline(line_of(1, 2, std::nullopt, message(scalar))));
    REQUIRE(fields.has_value());
    CHECK(fields->payload_json == scalar);
  }

  // Escapes another writer may have used are decoded.
  fields =
      validator.produced_fields(R"({"offset":1,"timestamp":1,"key":"\u00e9\ud83d\ude00\/","payload":1})");
  REQUIRE(fields.has_value());
  CHECK(fields->key == "é😀/");
  // The order of fields does not matter.
  fields = validator.produced_fields(R"({"payload":[true],"key":"k","offset":1,"timestamp":1})");
  REQUIRE(fields.has_value());
  CHECK(fields->payload_json == "[true]");
  CHECK(fields->key == "k");
}

TEST_CASE("produced_fields refuses a line without a payload or with a key that is no string") {
  RecordValidator validator;
  for (const std::string_view line : {
           "",
           "not json",
           "[1]",
           "\"payload\"",
           R"({"offset":1,"timestamp":1})",
           R"({"offset":1,"timestamp":1,"key":"k"})",
           R"({"offset":1,"timestamp":1,"key":5,"payload":1})",
           R"({"offset":1,"timestamp":1,"key":null,"payload":1})",
       }) {
    CAPTURE(line);
    CHECK_FALSE(validator.produced_fields(line).has_value());
  }
  // Still usable afterwards.
  CHECK(validator.produced_fields(R"({"offset":1,"timestamp":1,"payload":1})").has_value());
}

// The slow path walks a line with each number beyond a double replaced: an offset (or batch_last)
// written as such a number must not read as that replacement.
TEST_CASE("An offset beyond a double is no offset") {
  RecordValidator validator;
  CHECK_FALSE(validator.validate(R"({"offset":1e400,"timestamp":1,"payload":1})").has_value());
  CHECK_FALSE(validator.validate("{\"offset\":" + std::string(400, '9') + ",\"timestamp\":1,\"payload\":1}")
                  .has_value());
  CHECK_FALSE(validator.validate(R"({"offset":0,"timestamp":1,"batch_last":1e400,"payload":1})").has_value());
}

// Found by fuzz_record_line: a number beyond 64 bits sends the validator down its slow path, where
// the first of two "key" fields counted while produced_fields took the last, so a line recovery
// accepted had no producer fields and could not be dead-lettered.
TEST_CASE("Of duplicate fields the first counts for produced_fields too, on both paths of the validator") {
  RecordValidator validator;
  for (const std::string& big : {std::string("1"), std::string(30, '2')}) {
    const std::string line =
        R"({"offset":0,"timestamp":1,"payload":)" + big + R"(,"key":"","key":2345,"payload":[],"offset":9})";
    CAPTURE(line);
    const auto header = validator.validate(line);
    REQUIRE(header.has_value());
    CHECK(header->offset == 0);
    const auto fields = validator.produced_fields(line);
    REQUIRE(fields.has_value());
    CHECK(fields->key == "");
    CHECK(fields->payload_json == big);
  }
}

TEST_CASE("Headers are written after the key, read back in order by produced_fields, and validated") {
  mq::Message m = message(R"({"n":1})", std::string("k"));
  m.headers = {{"trace-id", "abc"}, {"b.x_1", "line\nbreak \"q\" \xc3\xa9"}};
  const std::string line = without_newline(line_of(4, 5, std::nullopt, m));
  CHECK(
      line ==
      R"({"offset":4,"timestamp":5,"key":"k","headers":{"trace-id":"abc","b.x_1":"line\nbreak \"q\" é"},"payload":{"n":1}})");
  RecordValidator validator;
  REQUIRE(validator.validate(line).has_value());
  const auto fields = validator.produced_fields(line);
  REQUIRE(fields.has_value());
  CHECK(fields->headers == m.headers);
  CHECK(fields->key == std::optional<std::string>("k"));
  // A line without headers (every log written before them) has none.
  const auto plain = validator.produced_fields(without_newline(line_of(1, 2, std::nullopt, message("1"))));
  REQUIRE(plain.has_value());
  CHECK(plain->headers.empty());
  // What the writer never writes is damage: headers that are not an object of strings.
  for (const std::string_view bad : {R"({"offset":1,"timestamp":2,"headers":[],"payload":1})",
                                     R"({"offset":1,"timestamp":2,"headers":"h","payload":1})",
                                     R"({"offset":1,"timestamp":2,"headers":{"a":1},"payload":1})",
                                     R"({"offset":1,"timestamp":2,"headers":{"a":null},"payload":1})"}) {
    CAPTURE(bad);
    CHECK_FALSE(validator.validate(bad).has_value());
  }
  CHECK(validator.validate(R"({"offset":1,"timestamp":2,"headers":{},"payload":1})").has_value());
}
