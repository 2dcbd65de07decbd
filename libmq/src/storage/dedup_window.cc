#include "storage/dedup_window.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <utility>

namespace mq::detail {

namespace {

constexpr std::size_t kMinSlots = 64;

}  // namespace

DedupWindow::StoredId::StoredId(std::string_view id) : size_(static_cast<std::uint32_t>(id.size())) {
  if (size_ <= kInlineBytes) {
    std::memcpy(inline_, id.data(), id.size());
  } else {
    heap_ = new char[id.size()];
    std::memcpy(heap_, id.data(), id.size());
  }
}

DedupWindow::StoredId::StoredId(StoredId&& other) noexcept : size_(other.size_) {
  if (size_ <= kInlineBytes) {
    std::memcpy(inline_, other.inline_, size_);
  } else {
    heap_ = std::exchange(other.heap_, nullptr);
    other.size_ = 0;
  }
}

DedupWindow::StoredId::~StoredId() {
  if (size_ > kInlineBytes) delete[] heap_;
}

DedupWindow::DedupWindow(std::chrono::milliseconds window) : window_ms_(window.count()), slots_(kMinSlots) {
  static_assert(sizeof(Entry) == 64, "an entry is one cache line");
}

DedupWindow::~DedupWindow() = default;

std::uint32_t DedupWindow::tag_of(std::string_view id) {
  return static_cast<std::uint32_t>(std::hash<std::string_view>{}(id)) | 0x8000'0000u;
}

std::uint64_t DedupWindow::entry_number(const Slot& slot) const {
  return first_entry_ + static_cast<std::uint32_t>(slot.entry - static_cast<std::uint32_t>(first_entry_));
}

std::size_t DedupWindow::probe(std::string_view id, std::uint32_t tag) const {
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = tag & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.tag == 0) return i;
    if (slot.tag == tag && entry(entry_number(slot)).id.view() == id) return i;
  }
}

std::optional<std::size_t> DedupWindow::slot_of(std::uint64_t number) const {
  const std::uint32_t tag = tag_of(entry(number).id.view());
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = tag & mask;; i = (i + 1) & mask) {
    if (slots_[i].tag == 0) return std::nullopt;
    if (slots_[i].tag == tag && slots_[i].entry == static_cast<std::uint32_t>(number)) return i;
  }
}

void DedupWindow::erase_slot(std::size_t hole) {
  // Backward-shift deletion (no tombstones): a later slot of the same run moves into the hole when
  // the hole lies on its probe path, that is between its home slot and where it is.
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t next = (hole + 1) & mask; slots_[next].tag != 0; next = (next + 1) & mask) {
    const std::size_t home = slots_[next].tag & mask;
    if (((next - home) & mask) >= ((next - hole) & mask)) {
      slots_[hole] = slots_[next];
      hole = next;
    }
  }
  slots_[hole] = Slot{};
  --indexed_;
}

void DedupWindow::resize_index(std::size_t slots) {
  std::vector<Slot> old(slots, Slot{});
  old.swap(slots_);
  const std::size_t old_mask = old.size() - 1;
  const std::size_t mask = slots_.size() - 1;
  // Moved in slot order from an empty slot on, so that no run of slots wraps around: their home
  // slots then come in nearly ascending order, and so do the slots they move to (in two streams,
  // when the index doubles). Writes go where the previous ones went instead of to a random cache
  // line each, which for an index larger than the cache made growing cost as much as the lookups.
  std::size_t start = 0;
  while (old[start].tag != 0) ++start;  // at most half full: there is one
  for (std::size_t n = 1; n <= old.size(); ++n) {
    const Slot& slot = old[(start + n) & old_mask];
    if (slot.tag == 0) continue;
    std::size_t i = slot.tag & mask;
    while (slots_[i].tag != 0) i = (i + 1) & mask;
    slots_[i] = slot;
  }
}

void DedupWindow::reserve(std::size_t more_ids) {
  if ((indexed_ + more_ids) * 2 <= slots_.size()) return;
  resize_index(std::bit_ceil((indexed_ + more_ids) * 2));
}

void DedupWindow::prefetch(std::uint32_t hash) const {
  __builtin_prefetch(&slots_[hash & (slots_.size() - 1)]);
}

std::uint64_t DedupWindow::push_entry(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms) {
  entries_.push_back(Entry{offset, timestamp_ms, StoredId(id)});
  heap_id_bytes_ += entries_.back().id.heap_bytes();
  return first_entry_ + entries_.size() - 1;
}

std::optional<std::uint64_t> DedupWindow::find(std::string_view id, std::int64_t now_ms) {
  expire(now_ms);
  const Slot& slot = slots_[probe(id, tag_of(id))];
  if (slot.tag == 0) return std::nullopt;
  return entry(entry_number(slot)).offset;
}

void DedupWindow::remember(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms) {
  reserve(1);
  const std::uint32_t tag = tag_of(id);
  Slot& slot = slots_[probe(id, tag)];
  // A later store of the same id (after its window passed, or recovery reading both) wins; the
  // older entry stays, unindexed, until it expires.
  if (slot.tag == 0) ++indexed_;
  slot = Slot{tag, static_cast<std::uint32_t>(push_entry(id, offset, timestamp_ms))};
}

std::optional<std::uint64_t> DedupWindow::find_or_remember(std::string_view id, std::uint64_t offset,
                                                           std::int64_t now_ms) {
  return find_or_remember(id, tag_of(id), offset, now_ms);
}

std::optional<std::uint64_t> DedupWindow::find_or_remember(std::string_view id, std::uint32_t tag,
                                                           std::uint64_t offset, std::int64_t now_ms) {
  expire(now_ms);
  reserve(1);
  Slot& slot = slots_[probe(id, tag)];
  if (slot.tag != 0) return entry(entry_number(slot)).offset;  // what expire() left is within the window
  ++indexed_;
  slot = Slot{tag, static_cast<std::uint32_t>(push_entry(id, offset, now_ms))};
  return std::nullopt;
}

void DedupWindow::expire(std::int64_t now_ms) {
  // Timestamps are taken a moment before offsets, so they may step back a little from one entry to
  // the next: an entry stays until every one before it expired, at most that moment longer.
  bool expired = false;
  while (!entries_.empty() && entries_.front().timestamp_ms < now_ms - window_ms_) {
    // Not indexed when a later store of its id replaced it.
    if (auto slot = slot_of(first_entry_)) erase_slot(*slot);
    heap_id_bytes_ -= entries_.front().id.heap_bytes();
    entries_.pop_front();
    ++first_entry_;
    expired = true;
  }
  // After a burst, give back the index a quieter window no longer needs (with room to grow again).
  if (expired && slots_.size() > kMinSlots && indexed_ * 8 < slots_.size()) {
    resize_index(std::max(kMinSlots, std::bit_ceil(indexed_ * 4)));
  }
}

void DedupWindow::forget_from(std::uint64_t offset) {
  bool dropped = false;
  while (!entries_.empty() && entries_.back().offset >= offset) {
    if (auto slot = slot_of(first_entry_ + entries_.size() - 1)) erase_slot(*slot);
    heap_id_bytes_ -= entries_.back().id.heap_bytes();
    entries_.pop_back();
    dropped = true;
  }
  if (!dropped) return;
  // An id whose newest store was dropped may have an older one still inside the window.
  for (std::uint64_t n = first_entry_ + entries_.size(); n-- > first_entry_;) {
    const std::string_view id = entry(n).id.view();
    const std::uint32_t tag = tag_of(id);
    Slot& slot = slots_[probe(id, tag)];
    if (slot.tag != 0) continue;
    slot = Slot{tag, static_cast<std::uint32_t>(n)};
    ++indexed_;  // no growth needed: the index held at least this many before
  }
}

std::size_t DedupWindow::memory_bytes() const {
  return entries_.size() * sizeof(Entry) + heap_id_bytes_ + slots_.capacity() * sizeof(Slot);
}

}  // namespace mq::detail
