// The sparse index beside each log (partition-<N>.index): entries (offset, byte position of that
// record's line, largest timestamp before it), each at the start of a batch, about
// StoreOptions::index_interval_bytes apart. It finds a message by offset and by time.
// It is only a shortcut: everything in it can be rebuilt from the log, so it is never fsync'ed on
// the append path and never trusted without checks (format: libmq/docs/log_format.md).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mq::detail {

// IndexEntry::timestamp when no message precedes the entry.
inline constexpr std::int64_t kNoTimestamp = std::numeric_limits<std::int64_t>::min();

struct IndexEntry {
  std::uint64_t offset = 0;
  std::uint64_t position = 0;
  // The largest timestamp of the log's messages before `offset` (a running maximum, so entries
  // stay sorted by it when the clock steps back); kNoTimestamp when there are none.
  std::int64_t timestamp = kNoTimestamp;
};

inline constexpr std::string_view kIndexMagic = "mqidx02\n";  // 8 bytes
inline constexpr std::size_t kIndexEntryBytes = 32;  // offset, position, timestamp, check (64 bits LE each)

// The file header: the magic bytes.
void encode_index_header(std::string& out);
void encode_index_entry(std::string& out, IndexEntry entry);

// Decodes a whole index file. nullopt when the header is wrong or an entry fails its check, is not
// strictly after the previous one in both offset and position, or has a smaller timestamp (the
// index must be rebuilt).
// A partial entry at the end (a torn write) is ignored.
std::optional<std::vector<IndexEntry>> decode_index(std::string_view bytes);

// The last entry whose offset is <= `offset`; `entries` is sorted and starts with {first offset, 0},
// and `offset` is at least that first offset.
IndexEntry floor_entry(const std::vector<IndexEntry>& entries, std::uint64_t offset);

// Where to start looking for the first message with a timestamp of at least `timestamp_ms`: the
// last entry whose timestamp is below it (every message before that entry is older). `entries`
// as for floor_entry.
IndexEntry time_floor_entry(const std::vector<IndexEntry>& entries, std::int64_t timestamp_ms);

}  // namespace mq::detail
