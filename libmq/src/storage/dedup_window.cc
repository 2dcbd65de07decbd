#include "storage/dedup_window.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <new>
#include <utility>

namespace mq::detail {

namespace {

// One 4 KiB page each: the smallest a mapping gets.
constexpr std::size_t kMinSlots = 512;
constexpr std::size_t kMinRing = 128;

// Past this, the ring or the index takes a whole huge page at once rather than growing through
// 512 KiB and 1 MiB mappings of 4 KiB pages: on the virtual machines measured, a 4 KiB page's first
// touch costs 12 to 15 us (8 populated, as MappedMemory does; a huge page's share of 4 KiB, about
// 0.3), and the ring's mappings from 4 KiB up to 1 MiB add up to 512 pages. The price is memory: growing past
// 8,192 ids, the ring takes 2 MiB; past 16,384, the index too (2.25 to 4 MiB up to 65,536 ids).
constexpr std::size_t kLargestSmallMapping = 256 << 10;

// How many elements of `element_bytes` (a power of two) a mapping made for `count` of them (a power
// of two) holds: `count`, or a whole huge page's worth when `count` would take more than
// kLargestSmallMapping but less than a huge page.
std::size_t mapped_count(std::size_t count, std::size_t element_bytes) {
  const std::size_t bytes = count * element_bytes;
  if (bytes > kLargestSmallMapping && bytes < MappedMemory::kHugePageBytes)
    return MappedMemory::kHugePageBytes / element_bytes;
  return count;
}

}  // namespace

DedupWindow::DedupWindow(std::chrono::milliseconds window) : DedupWindow(window, random_sip_key()) {}

DedupWindow::DedupWindow(std::chrono::milliseconds window, const SipKey& key)
    : window_ms_(window.count()), key_(key) {
  static_assert(sizeof(Entry) == 32, "a cache line holds two entries, a huge page 65,536");
  static_assert(sizeof(Slot) == 8);
}

std::uint64_t DedupWindow::entry_number(const Slot& slot) const {
  return first_entry_ + static_cast<std::uint32_t>(slot.entry - static_cast<std::uint32_t>(first_entry_));
}

std::size_t DedupWindow::probe(const Hash128& hash, std::uint32_t tag) const {
  const std::size_t mask = slot_count() - 1;
  const Slot* table = slots();
  for (std::size_t i = tag & mask;; i = (i + 1) & mask) {
    const Slot& slot = table[i];
    if (slot.tag == 0) return i;
    if (slot.tag == tag && entry(entry_number(slot)).hash == hash) return i;
  }
}

std::optional<std::size_t> DedupWindow::slot_of(std::uint64_t number) const {
  const std::uint32_t tag = tag_of(entry(number).hash);
  const std::size_t mask = slot_count() - 1;
  const Slot* table = slots();
  for (std::size_t i = tag & mask;; i = (i + 1) & mask) {
    if (table[i].tag == 0) return std::nullopt;
    if (table[i].tag == tag && table[i].entry == static_cast<std::uint32_t>(number)) return i;
  }
}

void DedupWindow::erase_slot(std::size_t hole) {
  // Backward-shift deletion (no tombstones): a later slot of the same run moves into the hole when
  // the hole lies on its probe path, that is between its home slot and where it is.
  const std::size_t mask = slot_count() - 1;
  Slot* table = slots();
  for (std::size_t next = (hole + 1) & mask; table[next].tag != 0; next = (next + 1) & mask) {
    const std::size_t home = table[next].tag & mask;
    if (((next - home) & mask) >= ((next - hole) & mask)) {
      table[hole] = table[next];
      hole = next;
    }
  }
  table[hole] = Slot{};
  --indexed_;
}

MappedMemory DedupWindow::allocate(std::size_t bytes, std::size_t other_mapping_bytes) const {
  if (bytes + other_mapping_bytes > memory_limit_) throw std::bad_alloc();
  return MappedMemory(bytes);
}

void DedupWindow::resize_index(std::size_t count) {
  // Allocated before anything changes: a refusal leaves the window as it was.
  const std::size_t old_count = slot_count();
  MappedMemory old = std::exchange(index_, allocate(count * sizeof(Slot), ring_.size()));  // zero: all empty
  if (old_count == 0) return;
  const auto* old_slots = static_cast<const Slot*>(old.data());
  const std::size_t old_mask = old_count - 1;
  const std::size_t mask = slot_count() - 1;
  Slot* table = slots();
  // Moved in slot order from an empty slot on, so that no run of slots wraps around: their home
  // slots then come in nearly ascending order, and so do the slots they move to (in two streams,
  // when the index doubles). Writes go where the previous ones went instead of to a random cache
  // line each, which for an index larger than the cache made growing cost as much as the lookups.
  std::size_t start = 0;
  while (old_slots[start].tag != 0) ++start;  // at most half full: there is one
  for (std::size_t n = 1; n <= old_count; ++n) {
    const Slot& slot = old_slots[(start + n) & old_mask];
    if (slot.tag == 0) continue;
    std::size_t i = slot.tag & mask;
    while (table[i].tag != 0) i = (i + 1) & mask;
    table[i] = slot;
  }
}

void DedupWindow::resize_ring(std::size_t capacity) {
  const std::size_t old_capacity = ring_capacity();
  MappedMemory old = std::exchange(ring_, allocate(capacity * sizeof(Entry), index_.size()));
  const auto* old_entries = static_cast<const Entry*>(old.data());
  for (std::uint64_t n = first_entry_; n < end_entry_; ++n) entry(n) = old_entries[n & (old_capacity - 1)];
}

void DedupWindow::reserve(std::size_t more_ids) {
  if ((indexed_ + more_ids) * 2 > slot_count()) {
    resize_index(mapped_count(std::max(kMinSlots, std::bit_ceil((indexed_ + more_ids) * 2)), sizeof(Slot)));
  }
  if (entry_count() + more_ids > ring_capacity()) {
    resize_ring(mapped_count(std::max(kMinRing, std::bit_ceil(entry_count() + more_ids)), sizeof(Entry)));
  }
}

void DedupWindow::prefetch(const Hash128& hash) const {
  if (slot_count() > 0) __builtin_prefetch(&slots()[tag_of(hash) & (slot_count() - 1)]);
}

std::uint64_t DedupWindow::push_entry(const Hash128& hash, std::uint64_t offset, std::int64_t timestamp_ms) {
  assert(entry_count() < ring_capacity());  // reserve() made room
  entry(end_entry_) = Entry{hash, offset, timestamp_ms};
  return end_entry_++;
}

std::optional<std::uint64_t> DedupWindow::find(std::string_view id, std::int64_t now_ms) {
  expire(now_ms);
  if (indexed_ == 0) return std::nullopt;
  const Hash128 hash = hash_of(id);
  const Slot& slot = slots()[probe(hash, tag_of(hash))];
  if (slot.tag == 0) return std::nullopt;
  return entry(entry_number(slot)).offset;
}

void DedupWindow::remember(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms) {
  reserve(1);
  const Hash128 hash = hash_of(id);
  const std::uint32_t tag = tag_of(hash);
  Slot& slot = slots()[probe(hash, tag)];
  // A later store of the same id (after its window passed, or recovery reading both) wins; the
  // older entry stays, unindexed, until it expires.
  const auto number = static_cast<std::uint32_t>(push_entry(hash, offset, timestamp_ms));
  if (slot.tag == 0) ++indexed_;
  slot = Slot{tag, number};
}

std::optional<std::uint64_t> DedupWindow::find_or_remember(std::string_view id, std::uint64_t offset,
                                                           std::int64_t now_ms) {
  return find_or_remember(hash_of(id), offset, now_ms);
}

std::optional<std::uint64_t> DedupWindow::find_or_remember(const Hash128& hash, std::uint64_t offset,
                                                           std::int64_t now_ms) {
  expire(now_ms);
  reserve(1);
  const std::uint32_t tag = tag_of(hash);
  Slot& slot = slots()[probe(hash, tag)];
  if (slot.tag != 0) return entry(entry_number(slot)).offset;  // what expire() left is within the window
  slot = Slot{tag, static_cast<std::uint32_t>(push_entry(hash, offset, now_ms))};
  ++indexed_;
  return std::nullopt;
}

void DedupWindow::expire(std::int64_t now_ms) {
  // Timestamps are taken a moment before offsets, so they may step back a little from one entry to
  // the next: an entry stays until every one before it expired, at most that moment longer.
  bool expired = false;
  while (entry_count() > 0 && entry(first_entry_).timestamp_ms < now_ms - window_ms_) {
    // Not indexed when a later store of its id replaced it.
    if (auto slot = slot_of(first_entry_)) erase_slot(*slot);
    ++first_entry_;
    expired = true;
  }
  if (expired) shrink_if_sparse();
}

void DedupWindow::shrink_if_sparse() noexcept {
  // After a burst, give back what a quieter window no longer needs (with room to grow again). Only
  // memory is at stake: an append (even one without ids, which expires too) must not fail for it.
  try {
    // (Only to a smaller mapping: rounded up to a huge page, the smaller size may be this one.)
    if (slot_count() > kMinSlots && indexed_ * 8 < slot_count()) {
      const std::size_t slots = mapped_count(std::max(kMinSlots, std::bit_ceil(indexed_ * 4)), sizeof(Slot));
      if (slots < slot_count()) resize_index(slots);
    }
    if (ring_capacity() > kMinRing && entry_count() * 8 < ring_capacity()) {
      const std::size_t capacity =
          mapped_count(std::max(kMinRing, std::bit_ceil(entry_count() * 4)), sizeof(Entry));
      if (capacity < ring_capacity()) resize_ring(capacity);
    }
  } catch (const std::bad_alloc&) {
    // Kept as large as it was; the next expiry tries again.
  }
}

void DedupWindow::forget_from(std::uint64_t offset) {
  bool dropped = false;
  while (entry_count() > 0 && entry(end_entry_ - 1).offset >= offset) {
    if (auto slot = slot_of(end_entry_ - 1)) erase_slot(*slot);
    --end_entry_;
    dropped = true;
  }
  if (!dropped) return;
  // An id whose newest store was dropped may have an older one still inside the window.
  for (std::uint64_t n = end_entry_; n-- > first_entry_;) {
    const Hash128& hash = entry(n).hash;
    const std::uint32_t tag = tag_of(hash);
    Slot& slot = slots()[probe(hash, tag)];
    if (slot.tag != 0) continue;
    slot = Slot{tag, static_cast<std::uint32_t>(n)};
    ++indexed_;  // no growth needed: the index held at least this many before
  }
}

}  // namespace mq::detail
