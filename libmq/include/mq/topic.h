// A topic: a name, its partitions, and the key -> partition mapping.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mq/export.h"
#include "mq/log_store.h"
#include "mq/message.h"
#include "mq/options.h"
#include "mq/status.h"

namespace mq {

// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) of `bytes`, as a signed 32-bit value.
MQ_EXPORT std::int32_t murmur2(std::string_view bytes);

// The partition Kafka's default partitioner picks for `key`: (murmur2(key) & 0x7fffffff) % partitions.
MQ_EXPORT std::uint32_t partition_for_key(std::string_view key, std::uint32_t partitions);

// What picks a message's partition when none is given: its key, else its dedup_id (so that a retry
// of a keyless message lands where the first try did and is found to be a duplicate), else nothing
// (the producer picks one).
MQ_EXPORT std::optional<std::string_view> partition_key(const Message& message);
// The same for a batch: its first message's key, else the first dedup_id in it, else nothing.
MQ_EXPORT std::optional<std::string_view> partition_key(std::span<const Message> batch);

// Thread-safe. Holds the partitions this broker owns (replicated: keeps a copy of); the others are absent.
class MQ_EXPORT Topic {
 public:
  // Opens the owned partitions of `spec` in `store`. kInvalidArgument for an invalid name or zero
  // partitions, and when the disk holds more partitions than `spec` (their data would be orphaned).
  static Result<std::unique_ptr<Topic>> open(LogStore& store, const TopicSpec& spec, BrokerIdentity broker);

  const std::string& name() const { return name_; }
  std::uint32_t partition_count() const { return static_cast<std::uint32_t>(partitions_.size()); }
  // The owned partition numbers, ascending.
  std::vector<std::uint32_t> owned_partitions() const;
  // The partition, or nullptr when `index` is out of range or owned by another broker.
  Partition* partition(std::uint32_t index) const;
  // Where `key` goes (Kafka's default partitioner).
  std::uint32_t partition_for(std::string_view key) const {
    return partition_for_key(key, partition_count());
  }

 private:
  Topic(std::string name, std::vector<Partition*> partitions);
  std::string name_;
  std::vector<Partition*> partitions_;  // nullptr where not owned; immutable after open
};

}  // namespace mq
