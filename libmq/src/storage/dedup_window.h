// The deduplication window of one partition (API.md "Message options"): which Message::dedup_id
// values were stored within the last StoreOptions::dedup_window, and at which offset.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/mapped_memory.h"
#include "common/siphash.h"

namespace mq::detail {

// Not thread-safe: the partition's active segment uses it under its append lock. Memory is bounded
// by the ids stored within one window: each id is kept once, in arrival order, and dropped from
// the front once it is older than the window.
//
// Compact on purpose, since a busy partition remembers every id of its last two minutes:
// - An id is kept as its 128-bit SipHash under a key drawn at random for this window
//   (common/siphash.h), not as its bytes: an entry is 32 bytes whatever the id's length (up to
//   128 characters, 512 bytes), and comparing two is comparing two words. Two different ids are taken for the
//   same one only if their hashes collide: about n^2 / 2^129 for n ids in the window (10^-27 for a million),
//   and the key is secret, so that ids cannot be chosen to collide.
// - Entries sit in a ring in arrival order and the index is an open-addressing table of 8-byte
//   slots, both in memory mapped from the kernel (common/mapped_memory.h), with huge pages once
//   they are large. A new id costs one cache miss on the index and, while the window grows, a
//   share of a page's first touch; once the window reached its size, none.
// (A node-based map with a std::string per id cost 0.2 to 0.9 us per id, most of it malloc, free
// and first touches of memory: three times a plain append. Entries of 64 bytes holding the id in a
// std::deque still spent a fifth of a growing window's cost on first touches of 4 KiB pages.)
class DedupWindow {
 public:
  explicit DedupWindow(std::chrono::milliseconds window);
  // With a given hash key, for tests that need the same hashes every run.
  DedupWindow(std::chrono::milliseconds window, const SipKey& key);
  DedupWindow(const DedupWindow&) = delete;
  DedupWindow& operator=(const DedupWindow&) = delete;

  // The offset `id` was stored at, if that was at most one window before `now_ms`.
  std::optional<std::uint64_t> find(std::string_view id, std::int64_t now_ms);
  // `id` was stored at `offset` at `timestamp_ms` (offsets only grow from call to call).
  void remember(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms);
  // find(id, now_ms), and when it finds nothing remember(id, offset, now_ms): one hash lookup.
  std::optional<std::uint64_t> find_or_remember(std::string_view id, std::uint64_t offset,
                                                std::int64_t now_ms);

  // For a batch: the ids' hashes (hash_of), handed to prefetch() for all of them first and then to
  // find_or_remember() one by one, so that the batch's cache misses on the index overlap instead of
  // coming one after the other. reserve() first, so that the index does not move in between.
  Hash128 hash_of(std::string_view id) const { return siphash_2_4_128(id, key_); }
  // Room for `more_ids` new ids in both the index and the ring: the next `more_ids` calls of
  // remember or find_or_remember allocate nothing, so a batch is remembered whole or (when this
  // throws std::bad_alloc, as a refused mapping does) not at all. That holds while those calls
  // expire nothing (a shrink would take the room back): an append expires first, then passes the
  // same time to the whole batch. Every call that can throw leaves the window as it was.
  void reserve(std::size_t more_ids);
  void prefetch(const Hash128& hash) const;
  std::optional<std::uint64_t> find_or_remember(const Hash128& hash, std::uint64_t offset,
                                                std::int64_t now_ms);
  // Appends from `offset` on were dropped (a full disk): their ids are not stored.
  void forget_from(std::uint64_t offset);

  // Drops what is older than the window at `now_ms` (find does it too).
  void expire(std::int64_t now_ms);

  // How many distinct ids are in the window.
  std::size_t size() const { return indexed_; }
  // The bytes the window's ring and index take (for the figures README quotes). Both are powers of
  // two: 48 to 96 bytes an id once the window is large (a million: 48 MiB; 1.05 million: 96).
  std::size_t memory_bytes() const { return ring_.size() + index_.size(); }

  // For tests: growing past `bytes` of ring and index throws std::bad_alloc, as a refused mapping
  // does.
  void limit_memory_for_tests(std::size_t bytes) { memory_limit_ = bytes; }

 private:
  // 32 bytes: the ring's 2 MiB huge pages hold 65,536 of them.
  struct Entry {
    Hash128 hash;
    std::uint64_t offset;
    std::int64_t timestamp_ms;
  };
  // 8 bytes, so that a million ids cost 16 MiB of index at most: 32 bits of the id's hash (the top
  // one set, so that 0 means empty; the low ones pick the home slot) and the entry's number modulo
  // 2^32 (fewer than that many entries are ever in the window).
  struct Slot {
    std::uint32_t tag = 0;
    std::uint32_t entry = 0;
  };
  static std::uint32_t tag_of(const Hash128& hash) {
    return static_cast<std::uint32_t>(hash.low) | 0x8000'0000u;
  }

  // Entries are numbered in arrival order from 0; the ring holds those in [first_entry_, end_entry_).
  std::size_t entry_count() const { return end_entry_ - first_entry_; }
  Entry* ring() const { return static_cast<Entry*>(ring_.data()); }
  std::size_t ring_capacity() const { return ring_.size() / sizeof(Entry); }
  Entry& entry(std::uint64_t number) const { return ring()[number & (ring_capacity() - 1)]; }
  Slot* slots() const { return static_cast<Slot*>(index_.data()); }
  std::size_t slot_count() const { return index_.size() / sizeof(Slot); }
  std::uint64_t entry_number(const Slot& slot) const;
  // The slot that holds `hash`, or the empty slot where it would go.
  std::size_t probe(const Hash128& hash, std::uint32_t tag) const;
  // The slot that holds entry `number`, if it is indexed.
  std::optional<std::size_t> slot_of(std::uint64_t number) const;
  void erase_slot(std::size_t slot);
  void resize_index(std::size_t slots);
  void resize_ring(std::size_t capacity);
  // After expiry: gives back what a much smaller window no longer needs; never throws (a shrink
  // that cannot get its smaller mapping keeps the larger one).
  void shrink_if_sparse() noexcept;
  MappedMemory allocate(std::size_t bytes, std::size_t other_mapping_bytes) const;
  std::uint64_t push_entry(const Hash128& hash, std::uint64_t offset, std::int64_t timestamp_ms);

  const std::int64_t window_ms_;
  const SipKey key_;
  MappedMemory ring_;  // ring_capacity() entries, a power of two
  std::uint64_t first_entry_ = 0;
  std::uint64_t end_entry_ = 0;
  // Open addressing with linear probing, at most half full; a power of two.
  MappedMemory index_;  // slot_count() slots
  std::size_t indexed_ = 0;
  std::size_t memory_limit_ = SIZE_MAX;
};

}  // namespace mq::detail
