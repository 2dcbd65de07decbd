// ordering=key (API.md "Message options"): per key, the offsets of a group's tracked messages with
// that key, in offset order. Only the first of each key may be delivered; the others wait for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace mq::detail {

// Not thread-safe: the group uses it under its lock.
//
// Most keys have one or two messages tracked at a time, so a key's queue comes and goes with
// almost every message. With a std::deque per key, a new key cost three allocations (the map
// node, the deque's map and its first block) and three frees when it emptied: with 1,000 keys,
// that churn was a fifth of a delivery's CPU time. Here a queue is a vector read from `head` on,
// and emptied nodes (with their vectors' room) are kept, up to kSpareNodes, for the next new key.
class KeyQueues {
 public:
  // Queues `offset` (larger than any queued for `key` before) behind the others of its key. True
  // when it is the first of its key: it may be delivered now.
  bool push(const std::string& key, std::uint64_t offset);

  // Takes `offset` out of `key`'s queue (acknowledged, dead-lettered). When it was the first and
  // another waits behind it, that next one, which may be delivered now.
  std::optional<std::uint64_t> remove(const std::string& key, std::uint64_t offset);

  void clear();

  // Keys with at least one message queued.
  std::size_t keys() const { return queues_.size(); }
  // Messages queued under `key`.
  std::size_t queued(const std::string& key) const;
  // Emptied queues kept for reuse (never more than kSpareNodes).
  std::size_t spare_nodes() const { return spare_.size(); }

  static constexpr std::size_t kSpareNodes = 64;
  // A spare node keeps its key's and its vector's room only up to these sizes (keys may have
  // 64 KiB; one hot key may have had thousands of messages waiting).
  static constexpr std::size_t kLongestSpareKey = 256;
  static constexpr std::size_t kLargestSpareQueue = 64;

 private:
  struct Queue {
    std::vector<std::uint64_t> offsets;  // those before `head` are gone
    std::size_t head = 0;
    std::uint64_t front() const { return offsets[head]; }
    bool empty() const { return head == offsets.size(); }
  };
  using Map = std::unordered_map<std::string, Queue>;
  Map queues_;
  std::vector<Map::node_type> spare_;
};

}  // namespace mq::detail
