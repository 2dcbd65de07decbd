// The differential check of issue 10, defect 1: whatever POST /produce accepts must come back from
// the log after a restart. The input is a produce body; every message parse_produce_body accepts is
// written with append_record_line (as Partition::append does), and then
//  - RecordValidator::validate (recovery's check of each line) must accept every line, with its offset
//    and batch_last;
//  - parse_offset_prefix (the read path) must find the offset;
//  - produced_fields (dead-lettering) must give back the key and a valid payload;
//  - recover_log over the lines written to an in-memory log must keep every one of them.
#include <limits>
#include <vector>

#include "common/message_rules.h"
#include "fuzz_support.h"
#include "request_parsing.h"
#include "storage/log_recovery.h"
#include "storage/record_format.h"

namespace {

mq::detail::RecordValidator& validator() {
  static mq::detail::RecordValidator v;
  return v;
}

// Writes the batch at `base`, checks each line; returns the bytes written.
std::string write_and_check(const std::vector<mq::Message>& messages, std::uint64_t base,
                            std::int64_t timestamp) {
  std::string log;
  const std::uint64_t last = base + messages.size() - 1;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& message = messages[i];
    const std::uint64_t offset = base + i;
    const std::optional<std::uint64_t> batch_last =
        messages.size() > 1 ? std::optional<std::uint64_t>(last) : std::nullopt;
    std::string line;
    mq::detail::append_record_line(line, offset, timestamp, batch_last, message);
    FUZZ_CHECK(!line.empty() && line.back() == '\n', "a record ends with its newline");
    line.pop_back();
    FUZZ_CHECK(line.find('\n') == std::string::npos, "a record is one line");

    auto header = validator().validate(line);
    FUZZ_CHECK(header.has_value(), "recovery's validator accepts every record the write path accepted");
    FUZZ_CHECK(header->offset == offset, "the validator reads the offset written");
    FUZZ_CHECK(header->batch_last == batch_last, "the validator reads the batch_last written");
    FUZZ_CHECK(mq::detail::parse_offset_prefix(line) == offset, "the read path finds the offset");

    auto fields = validator().produced_fields(line);
    FUZZ_CHECK(fields.has_value(), "dead-lettering can read back an accepted record");
    FUZZ_CHECK(fields->key == message.key, "dead-lettering keeps the key");
    FUZZ_CHECK(mq::Payload::parse(fields->payload_json).ok(), "dead-lettering reads a valid payload");
    FUZZ_CHECK(fields->headers == message.headers, "dead-lettering keeps the headers");
    auto options = mq::detail::parse_record_options(line);
    FUZZ_CHECK(options && options->offset == offset && options->timestamp_ms == timestamp,
               "groups read the offset and time written");
    FUZZ_CHECK(options->dedup_id == message.dedup_id, "the dedup window reads the dedup_id written");
    const std::int64_t due = mq::detail::due_time(message, timestamp);
    FUZZ_CHECK(options->deliver_at_ms == (due > timestamp ? std::optional(due) : std::nullopt),
               "groups read the delivery time written");
    log += line;
    log += '\n';
  }
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto produce = mqd::parse_produce_body(mq::fuzzing::as_text(data, size));
  if (!produce.ok()) return 0;
  const auto& messages = produce->messages;
  // The append path's rules on keys and message options (check_payloads), which close the rest.
  for (const auto& m : messages) {
    if (!mq::detail::check_message_options(m, 1'700'000'000'000).ok()) return 0;
  }

  // Offsets and timestamps at both ends of their ranges.
  const std::uint64_t high_base = std::numeric_limits<std::uint64_t>::max() - messages.size();
  write_and_check(messages, high_base, std::numeric_limits<std::int64_t>::max());
  const std::string log = write_and_check(messages, 0, -1);

  // A restart finds every message: nothing cut, nothing reported.
  mq::fuzzing::MemoryFile log_file(log);
  mq::fuzzing::MemoryFile index_file;
  auto recovered =
      mq::detail::recover_log(log_file, index_file, "fuzz/partition-0.log", mq::RecoveryMode::kStrict, 64);
  FUZZ_CHECK(recovered.ok(), "recovery opens a log of accepted records");
  FUZZ_CHECK(recovered->end_position == log.size(), "recovery keeps every accepted record");
  FUZZ_CHECK(recovered->next_offset == messages.size(), "recovery counts every accepted record");
  FUZZ_CHECK(recovered->report.truncated_bytes == 0 && !recovered->report.intact_records_after_damage,
             "recovery reports no damage in a log of accepted records");
  FUZZ_CHECK(log_file.bytes() == log, "recovery leaves a good log as it was");
  return 0;
}
