// The deduplication window of one partition (API.md "Message options"): which Message::dedup_id
// values were stored within the last StoreOptions::dedup_window, and at which offset.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mq::detail {

// Not thread-safe: the partition's active segment uses it under its append lock. Memory is bounded
// by the ids stored within one window: each id is kept once, in arrival order, and dropped from
// the front once it is older than the window.
class DedupWindow {
 public:
  explicit DedupWindow(std::chrono::milliseconds window) : window_ms_(window.count()) {}

  // The offset `id` was stored at, if that was at most one window before `now_ms`.
  std::optional<std::uint64_t> find(std::string_view id, std::int64_t now_ms);
  // `id` was stored at `offset` at `timestamp_ms` (offsets only grow from call to call).
  void remember(std::string_view id, std::uint64_t offset, std::int64_t timestamp_ms);
  // find(id, now_ms), and when it finds nothing remember(id, offset, now_ms): one hash lookup.
  std::optional<std::uint64_t> find_or_remember(std::string_view id, std::uint64_t offset,
                                                std::int64_t now_ms);
  // Appends from `offset` on were dropped (a full disk): their ids are not stored.
  void forget_from(std::uint64_t offset);

  // Drops what is older than the window at `now_ms` (find does it too).
  void expire(std::int64_t now_ms);

  std::size_t size() const { return index_.size(); }
  // About how many bytes of memory the ids take (for the figures README quotes).
  std::size_t memory_bytes() const;

 private:
  struct Stored {
    std::string id;
    std::uint64_t offset;
    std::int64_t timestamp_ms;
  };
  const std::int64_t window_ms_;
  // In arrival order; a deque's elements stay in place as it grows and shrinks at its ends, so the
  // index below can point into them.
  std::deque<Stored> stored_;
  std::unordered_map<std::string_view, const Stored*> index_;
};

}  // namespace mq::detail
