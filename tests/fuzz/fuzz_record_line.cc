// One log line as recovery and the read path see it: RecordValidator::validate, produced_fields and
// parse_offset_prefix on arbitrary bytes. A line the validator accepts must agree with the read
// path's offset, and dead-lettering it (produced_fields, written again by append_record_line as the
// broker does for <topic>-dlq) must give a line the validator accepts too.
#include <simdjson.h>

#include "fuzz_support.h"
#include "storage/record_format.h"

namespace {

mq::detail::RecordValidator& validator() {
  static mq::detail::RecordValidator v;
  return v;
}

// True when the line's last member is its one "payload".
bool payload_is_last(std::string_view line) {
  simdjson::padded_string padded(line);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(document) || document.get_object().get(object)) return false;
  std::string last;
  int payloads = 0;
  for (auto member : object) {
    std::string_view name;
    if (member.unescaped_key().get(name)) return false;
    last = std::string(name);
    payloads += name == "payload";
  }
  return last == "payload" && payloads == 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line = mq::fuzzing::as_text(data, size);
  auto header = validator().validate(line);
  const auto prefix = mq::detail::parse_offset_prefix(line);
  auto fields = validator().produced_fields(line);
  if (!header) return 0;

  FUZZ_CHECK(!header->batch_last || *header->batch_last >= header->offset,
             "batch_last is never before offset");
  FUZZ_CHECK(!prefix || *prefix == header->offset, "the read path and recovery read the same offset");
  auto again = validator().validate(line);
  FUZZ_CHECK(again && again->offset == header->offset && again->batch_last == header->batch_last,
             "validation does not depend on the previous line");
  FUZZ_CHECK(fields.has_value(), "a valid record has producer fields");
  // What groups read ahead of delivery (and dedup windows) agrees with recovery, for lines in the
  // grammar's order (log_format.md: "payload" last, as libmq writes them; fields after it are not
  // looked at by the options reader).
  auto options = mq::detail::parse_record_options(line);
  FUZZ_CHECK(options && options->offset == header->offset, "the record options reader reads a valid record");
  if (!payload_is_last(line)) return 0;
  FUZZ_CHECK(options->raw_key.has_value() == fields->key.has_value(), "both readers see the same key");
  if (fields->key) {
    std::string written;
    mq::detail::append_json_string(written, *fields->key);
    FUZZ_CHECK(*options->raw_key == written, "the raw key is the key as the writer escapes it");
  }

  // The dead letter of this record, as the broker writes it.
  auto payload = mq::Payload::parse(fields->payload_json);
  FUZZ_CHECK(payload.ok(), "a valid record's payload is valid JSON");
  if (fields->key) FUZZ_CHECK(mq::detail::is_valid_utf8(*fields->key), "a valid record's key is UTF-8");
  for (const auto& [name, value] : fields->headers) {
    FUZZ_CHECK(mq::detail::is_valid_utf8(name) && mq::detail::is_valid_utf8(value),
               "a valid record's headers are UTF-8");
  }
  mq::Message message{std::move(payload.value()), fields->key, std::nullopt, fields->headers};
  std::string dead_letter;
  mq::detail::append_record_line(dead_letter, 7, 1, std::nullopt, message);
  dead_letter.pop_back();
  auto dead_header = validator().validate(dead_letter);
  FUZZ_CHECK(dead_header && dead_header->offset == 7, "a dead letter of a valid record is a valid record");
  return 0;
}
