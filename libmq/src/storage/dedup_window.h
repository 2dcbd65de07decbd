// The deduplication window of one partition (API.md "Message options"): which Message::dedup_id
// values were stored within the last StoreOptions::dedup_window, and at which offset.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mq::detail {

// Not thread-safe: the partition's active segment uses it under its append lock. Memory is bounded
// by the ids stored within one window: each id is kept once, in arrival order, and dropped from
// the front once it is older than the window.
//
// Compact on purpose: an id of up to 40 bytes (a UUID, a ULID, a SHA-1 in hex) is kept inside its
// 64-byte entry, the entries sit in a deque of small blocks that the heap recycles as the window
// slides (nothing is copied as it grows), and the index is an open-addressing table of 8-byte
// slots. Remembering a new id then costs one cache miss and, once the window reached its size, no
// page fault. (A node-based map with a std::string per id cost 0.2 to 0.9 us per id, most of it
// malloc, free and first touches of memory: three times a plain append.)
class DedupWindow {
 public:
  explicit DedupWindow(std::chrono::milliseconds window);
  ~DedupWindow();

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
  static std::uint32_t hash_of(std::string_view id) { return tag_of(id); }
  void reserve(std::size_t more_ids);
  void prefetch(std::uint32_t hash) const;
  std::optional<std::uint64_t> find_or_remember(std::string_view id, std::uint32_t hash, std::uint64_t offset,
                                                std::int64_t now_ms);
  // Appends from `offset` on were dropped (a full disk): their ids are not stored.
  void forget_from(std::uint64_t offset);

  // Drops what is older than the window at `now_ms` (find does it too).
  void expire(std::int64_t now_ms);

  // How many distinct ids are in the window.
  std::size_t size() const { return indexed_; }
  // About how many bytes of memory the ids take (for the figures README quotes).
  std::size_t memory_bytes() const;

 private:
  // An id's bytes: inline up to kInlineBytes, else on the heap.
  class StoredId {
   public:
    static constexpr std::size_t kInlineBytes = 40;
    explicit StoredId(std::string_view id);
    StoredId(StoredId&& other) noexcept;
    StoredId(const StoredId&) = delete;
    StoredId& operator=(const StoredId&) = delete;
    StoredId& operator=(StoredId&&) = delete;
    ~StoredId();
    std::string_view view() const { return {size_ <= kInlineBytes ? inline_ : heap_, size_}; }
    std::size_t heap_bytes() const { return size_ <= kInlineBytes ? 0 : size_; }

   private:
    union {
      char inline_[kInlineBytes];
      char* heap_;
    };
    std::uint32_t size_;
  };
  // Entries are numbered in arrival order from 0; entries_ holds those from first_entry_ on.
  struct Entry {
    std::uint64_t offset;
    std::int64_t timestamp_ms;
    StoredId id;
  };
  // 8 bytes, so that a million ids cost 16 MiB of index at most: 32 bits of the id's hash (the top
  // one set, so that 0 means empty; the low ones pick the home slot) and the entry's number modulo
  // 2^32 (fewer than that many entries are ever in the window).
  struct Slot {
    std::uint32_t tag = 0;
    std::uint32_t entry = 0;
  };
  static std::uint32_t tag_of(std::string_view id);

  const Entry& entry(std::uint64_t number) const { return entries_[number - first_entry_]; }
  std::uint64_t entry_number(const Slot& slot) const;
  // The slot that holds `id`, or the empty slot where it would go.
  std::size_t probe(std::string_view id, std::uint32_t tag) const;
  // The slot that holds entry `number`, if it is indexed.
  std::optional<std::size_t> slot_of(std::uint64_t number) const;
  void erase_slot(std::size_t slot);
  void resize_index(std::size_t slots);
  std::uint64_t push_entry(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms);

  const std::int64_t window_ms_;
  std::deque<Entry> entries_;  // in arrival order
  std::uint64_t first_entry_ = 0;
  std::size_t heap_id_bytes_ = 0;  // of ids too long to be kept inline
  // Open addressing with linear probing, at most half full; a power of two.
  std::vector<Slot> slots_;
  std::size_t indexed_ = 0;
};

}  // namespace mq::detail
