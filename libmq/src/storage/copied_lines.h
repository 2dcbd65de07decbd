// Lines of another replica's log, checked before a follower stores them as they are
// (libmq/docs/replication.md "The data path: followers fetch").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mq/status.h"
#include "storage/offset_index.h"

namespace mq::detail {

struct CopiedLines {
  std::string text;  // the lines, each ending in '\n', exactly as received
  std::uint64_t first_offset = 0;
  std::uint64_t count = 0;  // lines (messages)
  std::int64_t largest_timestamp = kNoTimestamp;
  // Where each batch starts in `text`, with the largest timestamp of the lines before it in
  // `text` (kNoTimestamp for the first): what the index needs.
  struct BatchStart {
    std::uint64_t offset = 0;
    std::uint64_t position = 0;
    std::int64_t largest_timestamp_before = kNoTimestamp;
  };
  std::vector<BatchStart> batches;
  struct DedupId {
    std::string id;
    std::uint64_t offset = 0;
    std::int64_t timestamp_ms = 0;
  };
  std::vector<DedupId> dedup_ids;  // in offset order
};

// Checks `text` as lines a log may hold: every line a record recovery would accept (the same
// validation), offsets contiguous from `first_offset`, whole batches only (a line's batch_last
// names a later line of `text` or itself), no zero byte, a newline after the last line.
// kInvalidArgument naming the first line that is not so. Empty text is valid (no lines).
Result<CopiedLines> check_copied_lines(std::string text, std::uint64_t first_offset);

}  // namespace mq::detail
