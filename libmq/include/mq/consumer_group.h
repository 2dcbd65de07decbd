// Consumer groups: every group gets every message of a partition; the subscriptions of one group
// share them. A ConsumerGroup is the state of one group on one partition, reached from the Broker.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mq/export.h"
#include "mq/status.h"
#include "mq/subscription.h"

namespace mq {

namespace detail {
class GroupState;
}

// Where a group that does not exist yet on a partition starts. Ignored for an existing group.
enum class StartPosition {
  kEarliest,  // with the first message of the partition
  kLatest,    // after the last message: the backlog counts as already consumed
};

// Which messages of a group on a partition wait for others (API.md "Message options").
enum class Ordering {
  kNone,  // none: competing consumers get any message that is due
  // kKey: a message is not delivered while an earlier message with the same key is in flight,
  // waiting for redelivery or delayed and not yet due, for the group on that partition: each key's
  // messages are processed one at a time in offset order, different keys in parallel (as SQS FIFO
  // message groups). Messages without a key are not held back.
  kKey,
};
// "none" or "key".
MQ_EXPORT std::string_view to_string(Ordering ordering);

// How one subscription consumes (ConsumeOptions, the Queue's, adds what a whole topic needs).
struct SubscribeOptions {
  // Time a delivered message may stay unacknowledged before it is delivered again; nullopt takes
  // the server's default (the Broker's GroupOptions::visibility_timeout, mqd's
  // VISIBILITY_TIMEOUT_MS, RedisQueueOptions::visibility_timeout).
  std::optional<std::chrono::milliseconds> visibility_timeout;
  // Unacknowledged messages this subscription may hold before delivery pauses (>= 1).
  std::size_t max_inflight = 100;
  // Where a group that does not exist yet starts.
  StartPosition from = StartPosition::kEarliest;
  // The group's ordering. It is fixed, durably, when the group comes into being on a partition
  // (nullopt then means kNone); for an existing group nullopt joins it as it is, and another
  // ordering than the group's is refused with kConflict.
  std::optional<Ordering> ordering = std::nullopt;
};

// Where ConsumerGroup::seek moves a group: exactly one of an offset, the first message whose
// timestamp is at least timestamp_ms, or a position.
struct SeekTarget {
  enum class Position { kEarliest, kLatest };  // the log start, the next offset
  std::optional<std::uint64_t> offset;
  std::optional<std::int64_t> timestamp_ms;
  std::optional<Position> position;
};

// The state of one group on one partition, as /stats and /metrics show it.
struct GroupStats {
  std::string group;
  std::uint64_t committed_offset = 0;  // every offset below it is acknowledged
  std::uint64_t inflight = 0;          // delivered, not yet acknowledged, not yet timed out
  // The partition's next offset minus committed_offset. A delayed message not yet due counts in
  // it (the committed offset cannot pass a message until it is acknowledged) and in `delayed`.
  std::uint64_t lag = 0;
  std::uint64_t delivered = 0;      // deliveries, redeliveries included (since start)
  std::uint64_t acked = 0;          // messages acknowledged (since start)
  std::uint64_t redelivered = 0;    // deliveries after the first (since start)
  std::uint64_t dead_lettered = 0;  // messages moved to the dead-letter topic (since start)
  std::uint64_t delayed = 0;        // delayed messages (deliver_at) waiting for their time
  Ordering ordering = Ordering::kNone;
};

// One group on one partition: which messages are in flight with which subscription, which wait to
// be delivered again, and what is acknowledged (durably). Thread-safe. Owned by the Broker
// (Broker::group) and valid until the Broker is destroyed.
class MQ_EXPORT ConsumerGroup {
 public:
  ~ConsumerGroup();
  ConsumerGroup(const ConsumerGroup&) = delete;
  ConsumerGroup& operator=(const ConsumerGroup&) = delete;

  const std::string& topic() const;
  std::uint32_t partition() const;
  const std::string& name() const;

  // A new consumer in this group. kInvalidArgument for max_inflight 0 or a visibility timeout
  // below 1 ms; kConflict for an `options.ordering` other than the group's; kShuttingDown once the
  // broker stops. `options.from` is ignored: the group exists.
  Result<std::unique_ptr<Subscription>> subscribe(const SubscribeOptions& options = {});

  // Acknowledges the messages `ids` durably before returning and returns how many were not
  // acknowledged before. kNotFound (and nothing acknowledged) if an id names no message of the
  // partition. Acknowledging a message that is not in flight is allowed: it is never delivered again.
  Result<std::size_t> ack(std::span<const std::string> ids);
  // Gives an in-flight message back now, or after `delay`; kConflict when it is not in flight.
  Status nack(std::string_view id, std::chrono::milliseconds delay = {});
  // Restarts an in-flight message's visibility timeout; kConflict when it is not in flight.
  Status touch(std::string_view id);

  GroupStats stats() const;
  Ordering ordering() const;

  // Replays or skips (POST /seek): the group's committed offset becomes the target, clamped to the
  // partition's [log start, next offset]; every message below counts as acknowledged, every one
  // from it on is delivered again in offset order with delivery counts from 1, and nothing is in
  // flight any more. Durable before it returns. Returns the new committed offset.
  Result<std::uint64_t> seek(const SeekTarget& target);

 private:
  friend class Broker;        // creates groups and reaches their state
  friend class Subscription;  // takes its deliveries from the state
  explicit ConsumerGroup(std::unique_ptr<detail::GroupState> state);
  std::unique_ptr<detail::GroupState> state_;
};

}  // namespace mq
