// One consumer of a consumer group on one partition, and what it receives.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mq/export.h"
#include "mq/status.h"

namespace mq {

class ConsumerGroup;

// One delivery of one message to one subscription. Copyable.
struct Delivery {
  std::string id;  // opaque; hand it back to ack, nack or touch
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  std::uint32_t delivery = 0;  // 1 on the first delivery, counting up on each redelivery
  std::string record;          // the stored line: {"offset":..,"timestamp":..,["key":..,]"payload":..}
};

// One consumer in a group on one partition (ConsumerGroup::subscribe or Broker::subscribe). next()
// is for one thread at a time; the destructor (which must run before the Broker's) hands every
// message still in flight back to the group at once, so that other subscriptions get them without
// waiting for their timeouts.
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

  // The group this subscription consumes in.
  ConsumerGroup& group() const { return group_; }

 private:
  friend class ConsumerGroup;  // the only one that creates subscriptions
  Subscription(ConsumerGroup& group, std::uint64_t id) : group_(group), id_(id) {}
  ConsumerGroup& group_;
  std::uint64_t id_;
};

}  // namespace mq
