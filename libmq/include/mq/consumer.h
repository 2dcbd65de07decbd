// Consuming: a Subscription is one consumer of a consumer group on one partition.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mq/export.h"
#include "mq/status.h"

namespace mq {

class ConsumerGroup;

// Where a group that does not exist yet on a partition starts. Ignored for an existing group.
enum class StartPosition {
  kEarliest,  // with the first message of the partition
  kLatest,    // after the last message: the backlog counts as already consumed
};

struct SubscribeOptions {
  // Time a delivered message may stay unacknowledged before it is delivered again; nullopt takes
  // the broker's GroupOptions::visibility_timeout.
  std::optional<std::chrono::milliseconds> visibility_timeout;
  // Unacknowledged messages this subscription may hold before next() stops handing out more.
  std::size_t max_inflight = 100;
  StartPosition from = StartPosition::kEarliest;
};

// One delivery of one message to one subscription. Copyable.
struct Delivery {
  std::string id;  // opaque; hand it back to ack, nack or touch
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  std::uint32_t delivery = 0;  // 1 on the first delivery, counting up on each redelivery
  std::string record;          // the stored line: {"offset":..,"timestamp":..,["key":..,]"payload":..}
};

// One consumer in a group on one partition. next() is for one thread at a time; the destructor
// (which must run before the Broker's) hands every message still in flight back to the group at
// once, so that other subscriptions get them without waiting for their timeouts.
class MQ_EXPORT Subscription {
 public:
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Waits up to `timeout` (event-driven) for deliverable messages and takes up to `max_messages`,
  // fewer when the subscription's max_inflight would be exceeded. Redeliveries come before new
  // messages, otherwise offset order. Empty after the timeout; kShuttingDown once the broker stops.
  Result<std::vector<Delivery>> next(std::size_t max_messages, std::chrono::milliseconds timeout);

  // Messages delivered to this subscription and not yet acknowledged, nacked or timed out.
  std::size_t inflight() const;

  // Ends a next() that is waiting (it returns what is deliverable, possibly nothing) and makes every
  // later next() return without waiting. Thread-safe: for stopping a thread that consumes.
  void cancel_waits();

 private:
  friend class Broker;
  Subscription(ConsumerGroup* group, std::uint64_t id) : group_(group), id_(id) {}
  ConsumerGroup* group_;
  std::uint64_t id_;
};

// The state of one group on one partition, as /stats and /metrics show it.
struct GroupStats {
  std::string group;
  std::uint64_t committed_offset = 0;  // every offset below it is acknowledged
  std::uint64_t inflight = 0;          // delivered, not yet acknowledged, not yet timed out
  std::uint64_t lag = 0;               // the partition's next offset minus committed_offset
  std::uint64_t delivered = 0;         // deliveries, redeliveries included (since start)
  std::uint64_t acked = 0;             // messages acknowledged (since start)
  std::uint64_t redelivered = 0;       // deliveries after the first (since start)
  std::uint64_t dead_lettered = 0;     // messages moved to the dead-letter topic (since start)
};

}  // namespace mq
