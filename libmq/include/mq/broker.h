// The Broker: the whole API of the queue, the one mqd serves over HTTP. It owns the store, the
// topics, the consumer groups, the one timer of visibility timeouts, dead-lettering and partition
// ownership.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mq/clock.h"
#include "mq/consumer_group.h"
#include "mq/export.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/status.h"
#include "mq/subscription.h"

namespace mq {
namespace detail {
class Leadership;
}

struct TopicInfo {
  std::string name;
  std::uint32_t partitions = 0;
  std::vector<std::uint32_t> owned;  // replicated: those it leads now
};

struct PartitionStats {
  std::uint32_t partition = 0;
  std::uint64_t next_offset = 0;        // also the number of messages ever produced to it
  std::uint64_t log_start_offset = 0;   // the first offset still stored (retention deletes below it)
  std::uint64_t segments = 1;           // sealed segments plus the active one
  std::uint64_t retention_deleted = 0;  // messages retention deleted (since start)
  std::uint64_t log_bytes = 0;          // every segment
  std::vector<GroupStats> groups;       // sorted by name
};

struct TopicStats {
  std::string name;
  std::vector<PartitionStats> partitions;  // the owned ones
};

// Where Broker::read starts: an offset (nullopt: the log start), or the first message whose
// timestamp is at least timestamp_ms. Not both.
struct ReadFrom {
  std::optional<std::uint64_t> offset;
  std::optional<std::int64_t> timestamp_ms;
};

// The most messages one read without a group returns (Queue::read, mqd's GET /messages limit).
inline constexpr std::size_t kMaxReadLimit = 1000;

// Messages read without a group (GET /messages).
struct PartitionRead {
  std::uint64_t log_start_offset = 0;
  std::uint64_t next_offset = 0;
  struct Record {
    std::string id;
    std::uint64_t offset = 0;
    std::string line;  // the stored record: {"offset":..,"timestamp":..,["key":..,]"payload":..}
  };
  std::vector<Record> messages;  // in offset order
};

// Thread-safe. Every call naming a partition fails with kNotFound for an unknown topic or a
// partition beyond the topic's count, kNotOwned (carrying the owner's index) for a partition of
// another broker, and kInvalidArgument for an invalid group name.
class MQ_EXPORT Broker {
 public:
  // Opens the store and every configured topic (and the dead-letter topics found on disk) and the
  // consumer groups found on disk. `clock` nullptr means the steady clock with a timer thread; with
  // any other clock no timer thread runs and the caller drives timeouts with fire_due_timers().
  static Result<std::unique_ptr<Broker>> open(Config config, std::shared_ptr<Clock> clock = nullptr);
  // The same with replicated partitions (libmq/docs/replication.md; mqd's ETCD_ENDPOINTS):
  // `leadership` (libmq's replication layer) says which of the kept copies this broker leads; it
  // serves those and writes through `leadership`. Started by open, stopped by the destructor.
  static Result<std::unique_ptr<Broker>> open(Config config, std::shared_ptr<Clock> clock,
                                              std::shared_ptr<detail::Leadership> leadership);
  // Stops (see shutdown()); every Subscription must be destroyed first.
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Appends `messages` atomically to one partition of `topic`: `partition` if given, else the one
  // the first message's key maps to, else the owned partitions in turn. Durable per FSYNC on return.
  // (The argument order of Queue::produce.)
  Result<ProduceResult> produce(std::string_view topic, std::span<const Message> messages,
                                std::optional<std::uint32_t> partition = std::nullopt);

  // Up to `limit` messages from max(from, log start) in offset order, changing nothing (no group,
  // no delivery count). Empty past the end. kInvalidArgument for both an offset and a timestamp,
  // and for a limit outside [1, kMaxReadLimit].
  Result<PartitionRead> read(std::string_view topic, std::uint32_t partition, const ReadFrom& from,
                             std::size_t limit);

  // The consumer group `name` on the partition, created there (starting at `from`) if it does not
  // exist yet. Owned by the broker; valid until it is destroyed.
  Result<ConsumerGroup*> group(std::string_view topic, std::uint32_t partition, std::string_view name,
                               StartPosition from = StartPosition::kEarliest);

  // The calls below are those of ConsumerGroup, by name: what mqd serves.

  // group(topic, partition, group, options.from)->subscribe(options); kShuttingDown once stopping.
  Result<std::unique_ptr<Subscription>> subscribe(std::string_view topic, std::uint32_t partition,
                                                  std::string_view group, const SubscribeOptions& options);
  // ConsumerGroup::ack. Creates the group (at the earliest message) only when every id is valid.
  Result<std::size_t> ack(std::string_view topic, std::uint32_t partition, std::string_view group,
                          std::span<const std::string> ids);
  // ConsumerGroup::nack and touch. They never create a group: kConflict when it does not exist
  // (nothing of it is in flight).
  Status nack(std::string_view topic, std::uint32_t partition, std::string_view group, std::string_view id,
              std::chrono::milliseconds delay = {});
  Status touch(std::string_view topic, std::uint32_t partition, std::string_view group, std::string_view id);

  // ConsumerGroup::seek; creates the group if needed.
  Result<std::uint64_t> seek(std::string_view topic, std::uint32_t partition, std::string_view group,
                             const SeekTarget& target);

  // POST /redrive: appends the dead letters of `partition` of the dead-letter topic `topic`
  // ("<T>-dlq") from its redrive position on, at most `limit` of them (nullopt: all), to their
  // source topic and partition, with their payload, key and headers (each at a new offset there),
  // and moves the position past them, durably: a dead letter goes back at most once, across
  // restarts and concurrent calls. Messages produced to the dead-letter topic by hand (no source)
  // are stepped over. Returns how many went back. kInvalidArgument when `topic` is not a
  // dead-letter topic of a configured topic.
  Result<std::uint64_t> redrive(std::string_view topic, std::uint32_t partition,
                                std::optional<std::uint64_t> limit = std::nullopt);
  // DELETE /group: removes group `group` from every partition of `topic` this broker owns (its
  // position, acknowledgements, in-flight and delayed messages), durably; its subscriptions end
  // (Subscription::next fails with kNotFound). Returns false when the group had no state here. A
  // ConsumerGroup* taken before stays valid but refuses every call with kNotFound; a later group()
  // or subscribe() of that name starts a new group (where StartPosition says).
  Result<bool> delete_group(std::string_view topic, std::string_view group);
  std::vector<TopicInfo> topics() const;
  // Statistics of every topic, or of `topic` alone (kNotFound when unknown).
  Result<std::vector<TopicStats>> stats(std::optional<std::string_view> topic = std::nullopt) const;
  const Config& config() const;

  // Ends every wait in Subscription::next (which then fails with kShuttingDown) and refuses new
  // subscriptions; appends and acks still work so that pending ones complete. Idempotent.
  void shutdown();
  // With a hand-driven clock: runs every timeout and delay that is due at clock->now().
  void fire_due_timers();
  // Applies retention (Config::retention and each topic's settings) to every owned partition now,
  // as the timer does every RetentionOptions::check_interval; returns the messages deleted.
  Result<std::uint64_t> apply_retention();

 private:
  struct State;
  explicit Broker(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mq
