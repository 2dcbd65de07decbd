// Opening a damaged partition log: recover_log over an in-memory log and index. The input is
//   byte 0: bit 0 strict recovery; bits 1-2 the index: 0 none, 1 every k-th batch start of the log as
//           the log's writer would have indexed it (k = byte 1), 2 entries chosen by the input (with
//           valid checks, so recovery must check them against the log), 3 raw index bytes;
//   byte 1: with index 1, k; with 2 and 3, how many input bytes go to the index (after byte 2);
//   byte 2: the index interval (bytes) for new entries (at least 1, as LogStore makes it);
//   then the index bytes (index 2, 3) and the log.
// Invariants: the log is only ever cut, at a line end; everything from the last trusted index entry
// to the end is complete, valid, contiguous records (from offset 0 when there is no index); the
// index entries returned point at their records; intact records cut off are reported (and refused in
// strict mode); recovering the recovered log again changes nothing.
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "storage/log_recovery.h"
#include "storage/offset_index.h"
#include "storage/record_format.h"

namespace {

using mq::detail::IndexEntry;
using mq::fuzzing::MemoryFile;

struct Line {
  std::uint64_t position;
  std::string_view text;
};

std::vector<Line> complete_lines(std::string_view log) {
  std::vector<Line> lines;
  std::uint64_t position = 0;
  for (std::size_t newline; (newline = log.find('\n', position)) != std::string_view::npos;) {
    lines.push_back({position, log.substr(position, newline - position)});
    position = newline + 1;
  }
  return lines;
}

// The index the writer would have kept: every k-th batch start of the good records at the start of
// the log (contiguous offsets from 0, whole batches), at its offset.
std::string writer_index(std::string_view log, std::size_t k) {
  std::string index;
  mq::detail::encode_index_header(index);
  mq::detail::RecordValidator validator;
  std::size_t n = 0;
  std::uint64_t expected = 0;
  std::optional<std::uint64_t> open_batch_last;
  std::int64_t largest_timestamp = mq::detail::kNoTimestamp;
  for (const auto& line : complete_lines(log)) {
    auto header = validator.validate(line.text);
    if (!header || header->offset != expected) break;
    if (open_batch_last && header->batch_last != open_batch_last) break;
    const bool starts_batch = !open_batch_last;
    if (starts_batch && header->batch_last && *header->batch_last > header->offset)
      open_batch_last = header->batch_last;
    if (starts_batch && line.position > 0 && ++n % k == 0) {
      mq::detail::encode_index_entry(index, {header->offset, line.position, largest_timestamp});
    }
    if (auto t = mq::detail::parse_timestamp_prefix(line.text))
      largest_timestamp = std::max(largest_timestamp, *t);
    if (open_batch_last && header->offset == *open_batch_last) open_batch_last.reset();
    ++expected;
  }
  return index;
}

// Entries (offset, position) from pairs of input bytes, increasing, with valid checks (and
// timestamps that need not match the log: recovery does not check them, they only shorten scans).
std::string chosen_index(std::string_view bytes) {
  std::string index;
  mq::detail::encode_index_header(index);
  IndexEntry entry;
  for (std::size_t i = 0; i + 1 < bytes.size(); i += 2) {
    entry.offset += 1 + static_cast<unsigned char>(bytes[i]) % 8;
    entry.position += 1 + static_cast<unsigned char>(bytes[i + 1]);
    entry.timestamp = static_cast<std::int64_t>(entry.offset);
    mq::detail::encode_index_entry(index, entry);
  }
  return index;
}

// The records from `from` to `end`: complete lines, valid, contiguous offsets from `first`, every
// batch whole. The offset after the last, or the first thing wrong.
struct Records {
  std::uint64_t next = 0;
  const char* wrong = nullptr;
};
Records read_records(std::string_view log, std::uint64_t from, std::uint64_t end, std::uint64_t first,
                     mq::detail::RecordValidator& validator) {
  Records records{first, nullptr};
  std::optional<std::uint64_t> open_batch_last;
  for (const auto& line : complete_lines(log.substr(0, end))) {
    if (line.position < from) continue;
    auto header = validator.validate(line.text);
    if (!header) return {records.next, "every line kept is a valid record"};
    if (header->offset != records.next) return {records.next, "offsets kept are contiguous"};
    if (open_batch_last) {
      if (header->batch_last != open_batch_last)
        return {records.next, "a batch's records name its last offset"};
    } else if (header->batch_last && *header->batch_last > header->offset) {
      open_batch_last = header->batch_last;
    }
    if (open_batch_last && header->offset == *open_batch_last) open_batch_last.reset();
    ++records.next;
  }
  if (open_batch_last) return {records.next, "no batch is kept in part"};
  return records;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const bool strict = data[0] & 1;
  const int index_kind = (data[0] >> 1) & 3;
  const std::size_t index_interval = std::max<std::size_t>(1, data[2]);  // LogStore never passes 0
  std::string_view rest = mq::fuzzing::as_text(data + 3, size - 3);
  std::string index_bytes;
  if (index_kind == 2 || index_kind == 3) {
    const std::size_t n = std::min<std::size_t>(data[1], rest.size());
    index_bytes = index_kind == 2 ? chosen_index(rest.substr(0, n)) : std::string(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  const std::string original(rest);
  if (index_kind == 1) index_bytes = writer_index(original, std::max<std::size_t>(1, data[1]));

  MemoryFile log(original);
  MemoryFile index(index_bytes);
  const auto mode = strict ? mq::RecoveryMode::kStrict : mq::RecoveryMode::kTolerateTornTail;
  auto recovered = mq::detail::recover_log(log, index, "fuzz/partition-0.log", mode, index_interval);
  mq::detail::RecordValidator validator;

  // What was cut, complete records that would have been kept after it: any such record must be reported.
  if (!recovered.ok()) {
    FUZZ_CHECK(strict && recovered.status().code() == mq::ErrorCode::kCorruption,
               "recovery from memory fails only in strict mode, for damage followed by intact records");
    FUZZ_CHECK(log.bytes() == original, "a refused log is left as it was");
    return 0;
  }
  const auto& r = recovered.value();
  FUZZ_CHECK(r.end_position <= original.size(), "recovery ends within the log");
  FUZZ_CHECK(log.bytes() == original.substr(0, r.end_position), "the log is only cut, at end_position");
  FUZZ_CHECK(r.end_position == 0 || original[r.end_position - 1] == '\n', "the log is cut at a line end");
  // Zeros at the very end are preallocated space, cut without being reported.
  const auto last_byte = original.find_last_not_of('\0');
  const std::size_t records_end = last_byte == std::string::npos ? 0 : last_byte + 1;
  FUZZ_CHECK(r.end_position <= records_end, "recovery ends before the trailing zeros");
  FUZZ_CHECK(r.report.truncated_bytes == records_end - r.end_position,
             "the report says how much was cut, trailing zeros aside");
  if (strict) FUZZ_CHECK(!r.report.intact_records_after_damage, "strict recovery never drops intact records");

  // The index: starts at {0, 0}; strictly increasing; entries point at their records. Recovery
  // checks the last entry it keeps against the log and trusts the ones before it: only an index the
  // writer kept (or none) has every entry right.
  FUZZ_CHECK(!r.index.empty() && r.index.front().offset == 0 && r.index.front().position == 0,
             "the index starts at {0, 0}");
  for (std::size_t i = 1; i < r.index.size(); ++i) {
    const IndexEntry e = r.index[i];
    FUZZ_CHECK(e.offset > r.index[i - 1].offset && e.position > r.index[i - 1].position,
               "index entries increase");
    if (index_kind >= 2 && i + 1 < r.index.size()) continue;
    FUZZ_CHECK(e.position <= r.end_position, "index entries point into the recovered log");
    FUZZ_CHECK(original[e.position - 1] == '\n', "an index entry points at a line start");
    // An entry at the very end names the record the next append writes there (a batch cut whole
    // where an entry pointed at its start): right as soon as that record is written.
    if (e.position == r.end_position) {
      FUZZ_CHECK(e.offset == r.next_offset, "an entry at the end names the next offset");
      continue;
    }
    const auto newline = original.find('\n', e.position);
    auto header = validator.validate(std::string_view(original).substr(e.position, newline - e.position));
    FUZZ_CHECK(header && header->offset == e.offset, "an index entry points at the record with its offset");
  }

  // The index file holds what was returned.
  auto decoded = mq::detail::decode_index(index.bytes());
  FUZZ_CHECK(decoded.has_value(), "the index written by recovery decodes");
  FUZZ_CHECK(decoded->size() + 1 == r.index.size(), "the index written holds the entries returned");
  for (std::size_t i = 0; i < decoded->size(); ++i) {
    FUZZ_CHECK((*decoded)[i].offset == r.index[i + 1].offset &&
                   (*decoded)[i].position == r.index[i + 1].position &&
                   (*decoded)[i].timestamp == r.index[i + 1].timestamp,
               "the index written holds the entries returned");
  }

  // From the last entry on, every record was checked; without a trusted entry, from the start.
  const IndexEntry last = r.index.back();
  const Records tail = read_records(original, last.position, r.end_position, last.offset, validator);
  FUZZ_CHECK(tail.wrong == nullptr, tail.wrong);
  FUZZ_CHECK(tail.next == r.next_offset, "next_offset follows the last record kept");

  // What the index vouches for is trusted without being read again (start-up must not re-read whole
  // logs). When the log before the last entry contradicts it (damage there, or an index that is not
  // this log's), recovery's promises cover only the tail: stop here. An index the writer kept, or
  // none, never contradicts the log.
  const Records whole = read_records(original, 0, r.end_position, 0, validator);
  const bool consistent = whole.wrong == nullptr && whole.next == r.next_offset;
  FUZZ_CHECK(consistent || index_kind >= 2,
             "with the writer's index, or none, the whole log is good records");
  if (!consistent) return 0;

  // The time index: with the writer's index or none, each entry's timestamp is the largest of the
  // records before it, and largest_timestamp that of them all.
  if (index_kind <= 1) {
    std::int64_t largest = mq::detail::kNoTimestamp;
    std::size_t next_entry = 1;
    for (const auto& line : complete_lines(std::string_view(original).substr(0, r.end_position))) {
      if (next_entry < r.index.size() && r.index[next_entry].position == line.position) {
        FUZZ_CHECK(r.index[next_entry].timestamp == largest, "an entry's timestamp is the largest before it");
        ++next_entry;
      }
      if (auto t = mq::detail::parse_timestamp_prefix(line.text)) largest = std::max(largest, *t);
    }
    FUZZ_CHECK(r.largest_timestamp == largest, "largest_timestamp is the largest of the records kept");
  }

  // Past the cut: first what a crash mid-write leaves (the complete records of a batch whose last
  // record is missing), then the damaged line; a complete, valid record after that damage, at or
  // beyond next_offset, is an intact record lost to the cut and must be reported.
  if (r.end_position < original.size()) {
    bool damaged = false, intact_after = false;
    std::uint64_t expected = r.next_offset;
    std::optional<std::uint64_t> batch_last;
    for (const auto& line : complete_lines(original)) {
      if (line.position < r.end_position) continue;
      auto header = validator.validate(line.text);
      if (damaged) {
        intact_after = intact_after || (header && header->offset >= r.next_offset);
        continue;
      }
      const bool continues_batch =
          header && header->offset == expected &&
          (expected == r.next_offset ? header->batch_last && *header->batch_last > header->offset
                                     : header->batch_last == batch_last);
      FUZZ_CHECK(!continues_batch || !batch_last || header->offset < *batch_last,
                 "a whole batch after end_position would have been kept");
      if (!continues_batch) {
        damaged = true;
        continue;
      }
      batch_last = header->batch_last;
      ++expected;
    }
    FUZZ_CHECK(!intact_after || r.report.intact_records_after_damage, "intact records cut off are reported");
  }

  // Recovering again changes nothing.
  auto again = mq::detail::recover_log(log, index, "fuzz/partition-0.log", mode, index_interval);
  FUZZ_CHECK(again.ok(), "a recovered log opens again");
  FUZZ_CHECK(again->end_position == r.end_position && again->next_offset == r.next_offset,
             "a recovered log recovers to itself");
  FUZZ_CHECK(again->report.truncated_bytes == 0 && !again->report.index_rebuilt,
             "a recovered log has no damage");
  FUZZ_CHECK(log.bytes() == original.substr(0, r.end_position), "recovering again cuts nothing");
  FUZZ_CHECK(mq::detail::decode_index(index.bytes()).has_value(), "the index written again decodes");
  return 0;
}
