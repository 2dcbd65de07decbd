#include "storage/dedup_window.h"

namespace mq::detail {

std::optional<std::uint64_t> DedupWindow::find(std::string_view id, std::int64_t now_ms) {
  expire(now_ms);
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  return it->second->offset;
}

void DedupWindow::remember(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms) {
  const Stored& stored = stored_.emplace_back(Stored{std::string(id), offset, timestamp_ms});
  // A later store of the same id (after its window passed, or recovery reading both) wins. The
  // entry is replaced whole, so that its key always views the string of the Stored it names (the
  // older one goes away first at expiry).
  index_.erase(std::string_view(stored.id));
  index_.emplace(std::string_view(stored.id), &stored);
}

std::optional<std::uint64_t> DedupWindow::find_or_remember(std::string_view id, std::uint64_t offset,
                                                           std::int64_t now_ms) {
  expire(now_ms);
  const Stored& stored = stored_.emplace_back(Stored{std::string(id), offset, now_ms});
  auto [it, inserted] = index_.try_emplace(std::string_view(stored.id), &stored);
  if (inserted) return std::nullopt;
  stored_.pop_back();  // what expire() left is within the window: a duplicate
  return it->second->offset;
}

void DedupWindow::expire(std::int64_t now_ms) {
  // Timestamps are taken a moment before offsets, so they may step back a little from one entry to
  // the next: an entry stays until every one before it expired, at most that moment longer.
  while (!stored_.empty() && stored_.front().timestamp_ms < now_ms - window_ms_) {
    const Stored& oldest = stored_.front();
    if (auto it = index_.find(oldest.id); it != index_.end() && it->second == &oldest) index_.erase(it);
    stored_.pop_front();
  }
}

void DedupWindow::forget_from(std::uint64_t offset) {
  while (!stored_.empty() && stored_.back().offset >= offset) {
    const Stored& newest = stored_.back();
    if (auto it = index_.find(newest.id); it != index_.end() && it->second == &newest) index_.erase(it);
    stored_.pop_back();
  }
  // An id whose newest store was dropped may have an older one still inside the window.
  for (auto it = stored_.rbegin(); it != stored_.rend(); ++it)
    index_.try_emplace(std::string_view(it->id), &*it);
}

std::size_t DedupWindow::memory_bytes() const {
  std::size_t bytes = stored_.size() * sizeof(Stored) +
                      index_.size() * (sizeof(std::string_view) + sizeof(void*) * 3) +
                      index_.bucket_count() * sizeof(void*);
  for (const Stored& s : stored_) {
    if (s.id.capacity() > 15) bytes += s.id.capacity() + 1;
  }
  return bytes;
}

}  // namespace mq::detail
