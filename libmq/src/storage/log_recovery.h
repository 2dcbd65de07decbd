// Opening a partition log: trusting what the index can vouch for, scanning only the tail after
// it, cutting a torn tail and bringing the index up to date (libmq/docs/log_format.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mq/file_system.h"
#include "mq/options.h"
#include "mq/partition.h"
#include "storage/offset_index.h"

namespace mq::detail {

struct RecoveredLog {
  std::uint64_t end_position = 0;                 // the log's size after recovery
  std::uint64_t next_offset = 0;                  // the offset the next appended message gets
  std::vector<IndexEntry> index;                  // starts with {first_offset, 0, kNoTimestamp}
  std::int64_t largest_timestamp = kNoTimestamp;  // of every message in the log
  bool index_written = false;                     // recovery wrote to the index file (unsynced)
  RecoveryReport report;
};

// Recovers the log in `log` (its path `log_path` for messages) with the help of `index`, which it
// rewrites or extends. kCorruption when `mode` is kStrict and intact records follow damage.
// With `fs`, bytes cut off that held intact records (damage in the middle, not a torn tail) are first
// copied to <log_path>.damaged-<offset>, so that an operator can still get at them.
// `first_offset` is the offset of the log's first record (a segment's first offset, 0 for a log
// that starts the partition): the index's implied first entry is (first_offset, byte 0).
Result<RecoveredLog> recover_log(File& log, File& index, const std::string& log_path, RecoveryMode mode,
                                 std::size_t index_interval_bytes, FileSystem* fs = nullptr,
                                 std::uint64_t first_offset = 0);

// Hands one line about what recovery did to options.recovery_log, or to stderr when none is set.
void write_recovery_line(const StoreOptions& options, const std::string& line);

}  // namespace mq::detail
