// ordering=key (API.md "Message options"): per key, the offsets of a group's tracked messages with
// that key, in offset order. Only the first of each key may be delivered; the others wait for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mq::detail {

// Not thread-safe: the group uses it under its lock.
//
// Each message is pushed once, when the group first reads it, and removed once, when it is done
// (acknowledged, dead-lettered, dropped by retention). push() finds the key's queue by its name
// and hands back a Ref to it, which the group keeps with the message: remove() goes straight to
// the queue, with no second hash of the key and no lookup (measured with 1,000 keys and 4
// consumers: the lookups by name in both calls, and a map node freed and made again whenever a
// key's queue emptied, were most of what ordering=key cost over ordering=none).
//
// A queue that empties stays in the map for its key's next message, when its key is at most
// kLongestKeptKey bytes (a longer one goes at once: keys may have 64 KiB). Once the empty ones are
// more than kKeptEmptyQueues and more than the keys with messages queued, they all go at once, so
// that each emptying pays for its share of the sweep. Empty queues therefore take at most
// max(kKeptEmptyQueues, keys in flight) nodes of about 100 bytes plus a key of at most 256.
class KeyQueues {
 private:
  struct Queue {
    const std::string* key = nullptr;    // the map's, in the same node
    std::vector<std::uint64_t> offsets;  // those before `head` are gone
    std::size_t head = 0;
    std::uint64_t front() const { return offsets[head]; }
    bool empty() const { return head == offsets.size(); }
  };

 public:
  // A key's queue, as push() found it, for the message pushed: valid until that message's remove()
  // (which voids it) or clear(). Using it after that is using freed memory: keep one per message.
  // A default Ref names no queue.
  class Ref {
   public:
    Ref() = default;
    explicit operator bool() const { return queue_ != nullptr; }

   private:
    friend class KeyQueues;
    explicit Ref(Queue* queue) : queue_(queue) {}
    Queue* queue_ = nullptr;
  };
  struct Pushed {
    Ref ref;     // for remove()
    bool first;  // the first of its key: it may be delivered now
  };

  KeyQueues() = default;
  // Not copyable: each queue points at its key in its own map node.
  KeyQueues(const KeyQueues&) = delete;
  KeyQueues& operator=(const KeyQueues&) = delete;

  // Queues `offset` (larger than any queued for `key` before) behind the others of its key.
  Pushed push(std::string_view key, std::uint64_t offset);

  // Takes `offset` out of the queue `queue` names (acknowledged, dead-lettered), and voids `queue`.
  // When it was the first and another waits behind it, that next one, which may be delivered now.
  std::optional<std::uint64_t> remove(Ref& queue, std::uint64_t offset);

  // Forgets every queue: every Ref is void.
  void clear();

  // Keys with at least one message queued.
  std::size_t keys() const { return queues_.size() - empty_queues_; }
  // Messages queued under `key`.
  std::size_t queued(std::string_view key) const;
  // Emptied queues kept for their key's next message.
  std::size_t empty_queues() const { return empty_queues_; }

  static constexpr std::size_t kKeptEmptyQueues = 1024;
  static constexpr std::size_t kLongestKeptKey = 256;
  // An emptied queue keeps its vector's room only up to this (one hot key may have had thousands
  // of messages waiting).
  static constexpr std::size_t kLargestKeptQueue = 64;

 private:
  // Lookups by std::string_view, without making a std::string of the key.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  // After `queue` emptied: keeps it for its key or erases it.
  void emptied(Queue& queue);

  std::unordered_map<std::string, Queue, Hash, std::equal_to<>> queues_;
  std::size_t empty_queues_ = 0;
};

}  // namespace mq::detail
