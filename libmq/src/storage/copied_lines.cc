#include "storage/copied_lines.h"

#include <algorithm>
#include <cstring>
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
  // A zero byte is preallocated space to recovery: a line holding one would be cut at the next open.
  if (std::memchr(text.data(), '\0', text.size()) != nullptr)
    return Status::invalid_argument("copied lines hold a zero byte");
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
    const auto options = parse_record_options(line);
    if (!options) return bad_line(expected, "its options do not parse");
    const std::uint64_t last = header->batch_last.value_or(expected);
    if (in_batch) {
      if (last != batch_end) return bad_line(expected, "it leaves its batch before the batch's last line");
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
