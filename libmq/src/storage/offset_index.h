// The sparse offset index beside each log (partition-<N>.index): entries (offset, byte position of
// that record's line), each at the start of a batch, about StoreOptions::index_interval_bytes apart.
// It is only a shortcut: everything in it can be rebuilt from the log, so it is never fsync'ed on
// the append path and never trusted without checks (format: libmq/docs/log_format.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mq::detail {

struct IndexEntry {
  std::uint64_t offset = 0;
  std::uint64_t position = 0;
};

inline constexpr std::string_view kIndexMagic = "mqidx01\n";  // 8 bytes
inline constexpr std::size_t kIndexEntryBytes = 24;           // offset, position, check (u64 LE each)

// The file header: the magic bytes.
void encode_index_header(std::string& out);
void encode_index_entry(std::string& out, IndexEntry entry);

// Decodes a whole index file. nullopt when the header is wrong or an entry fails its check or is
// not strictly after the previous one in both offset and position (the index must be rebuilt).
// A partial entry at the end (a torn write) is ignored.
std::optional<std::vector<IndexEntry>> decode_index(std::string_view bytes);

// The last entry whose offset is <= `offset`; `entries` is sorted and starts with {first offset, 0},
// and `offset` is at least that first offset.
IndexEntry floor_entry(const std::vector<IndexEntry>& entries, std::uint64_t offset);

}  // namespace mq::detail
