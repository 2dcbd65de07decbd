#include "storage/copied_lines.h"

#include <algorithm>
#include <utility>

#include "storage/record_format.h"

namespace mq::detail {
namespace {

Status bad_line(std::uint64_t offset, const std::string& why) {
  return Status::invalid_argument("copied line for offset " + std::to_string(offset) + ": " + why);
}

}  // namespace

Result<CopiedLines> check_copied_lines(std::string text, std::uint64_t first_offset) {
  CopiedLines copied;
  copied.first_offset = first_offset;
  if (text.empty()) return copied;
  if (text.back() != '\n') return bad_line(first_offset, "the last line has no newline");
  // No control byte but the newlines: a zero is preallocated space to recovery (a line holding one
  // would be cut at the next open), and libmq writes no other (minified JSON escapes them; a raw
  // CR would end a line of an event stream).
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 && byte != '\n')
      return Status::invalid_argument("copied lines hold a control byte at " + std::to_string(i));
  }
  RecordValidator validator;
  std::uint64_t expected = first_offset;
  bool in_batch = false;        // a batch of several lines is under way
  std::uint64_t batch_end = 0;  // its batch_last
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    const std::size_t line_end = text.find('\n', line_start);
    const std::string_view line(text.data() + line_start, line_end - line_start);
    const auto header = validator.validate(line);
    if (!header) return bad_line(expected, "not a valid record");
    if (header->offset != expected)
      return bad_line(expected, "it says offset " + std::to_string(header->offset));
    // Reads find a line by the prefix libmq writes ({"offset":N,"timestamp":T,...}): a valid
    // record in another shape would be stored and then be unreadable.
    if (parse_offset_prefix(line) != expected || !parse_timestamp_prefix(line))
      return bad_line(expected, "it does not start as libmq writes records");
    const auto options = parse_record_options(line);
    if (!options) return bad_line(expected, "its options do not parse");
    const std::uint64_t last = header->batch_last.value_or(expected);
    if (in_batch) {
      // As recovery checks it: every line of a batch of several names the batch's last line.
      if (!header->batch_last || last != batch_end)
        return bad_line(expected, "it leaves its batch before the batch's last line");
    } else {
      copied.batches.push_back({expected, line_start, copied.largest_timestamp});
      batch_end = last;
    }
    in_batch = expected != batch_end;
    copied.largest_timestamp = std::max(copied.largest_timestamp, options->timestamp_ms);
    if (options->dedup_id)
      copied.dedup_ids.push_back({std::move(*options->dedup_id), expected, options->timestamp_ms});
    ++expected;
    line_start = line_end + 1;
  }
  if (in_batch) return bad_line(batch_end, "the batch's last line is missing (batches are copied whole)");
  copied.count = expected - first_offset;
  copied.text = std::move(text);
  return copied;
}

}  // namespace mq::detail
