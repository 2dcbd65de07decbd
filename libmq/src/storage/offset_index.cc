#include "storage/offset_index.h"

#include <algorithm>
#include <cstring>

namespace mq::detail {
namespace {

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// A 64-bit mix of the entry (splitmix64 finaliser): a flipped bit or a zeroed block fails the check.
std::uint64_t entry_check(IndexEntry e) {
  std::uint64_t x = e.offset * 0x9e3779b97f4a7c15ull ^ (e.position + 0x6a09e667f3bcc909ull) ^
                    (static_cast<std::uint64_t>(e.timestamp) * 0xc2b2ae3d27d4eb4full);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

void encode_index_header(std::string& out) { out.append(kIndexMagic); }

void encode_index_entry(std::string& out, IndexEntry entry) {
  put_u64(out, entry.offset);
  put_u64(out, entry.position);
  put_u64(out, static_cast<std::uint64_t>(entry.timestamp));
  put_u64(out, entry_check(entry));
}

std::optional<std::vector<IndexEntry>> decode_index(std::string_view bytes) {
  if (!bytes.starts_with(kIndexMagic)) return std::nullopt;
  bytes.remove_prefix(kIndexMagic.size());
  std::vector<IndexEntry> entries;
  entries.reserve(bytes.size() / kIndexEntryBytes);
  IndexEntry previous;
  for (; bytes.size() >= kIndexEntryBytes; bytes.remove_prefix(kIndexEntryBytes)) {
    const IndexEntry entry{get_u64(bytes.data()), get_u64(bytes.data() + 8),
                           static_cast<std::int64_t>(get_u64(bytes.data() + 16))};
    if (get_u64(bytes.data() + 24) != entry_check(entry)) return std::nullopt;
    if (entry.offset <= previous.offset || entry.position <= previous.position ||
        entry.timestamp < previous.timestamp) {
      return std::nullopt;
    }
    entries.push_back(entry);
    previous = entry;
  }
  return entries;
}

IndexEntry floor_entry(const std::vector<IndexEntry>& entries, std::uint64_t offset) {
  auto it = std::upper_bound(entries.begin(), entries.end(), offset,
                             [](std::uint64_t o, const IndexEntry& e) { return o < e.offset; });
  return it == entries.begin() ? IndexEntry{} : *std::prev(it);
}

IndexEntry time_floor_entry(const std::vector<IndexEntry>& entries, std::int64_t timestamp_ms) {
  auto it = std::partition_point(entries.begin(), entries.end(),
                                 [timestamp_ms](const IndexEntry& e) { return e.timestamp < timestamp_ms; });
  // The implied first entry has kNoTimestamp, below any timestamp but kNoTimestamp itself.
  if (it == entries.begin()) return entries.empty() ? IndexEntry{} : entries.front();
  return *std::prev(it);
}

}  // namespace mq::detail
