// One log line as recovery and the read path see it: RecordValidator::validate, produced_fields and
// parse_offset_prefix on arbitrary bytes. A line the validator accepts must agree with the read
// path's offset, and dead-lettering it (produced_fields, written again by append_record_line as the
// broker does for <topic>-dlq) must give a line the validator accepts too.
#include "fuzz_support.h"
#include "storage/record_format.h"

namespace {

mq::detail::RecordValidator& validator() {
  static mq::detail::RecordValidator v;
  return v;
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
