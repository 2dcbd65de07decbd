// What libmq's own layers may do with public classes that their users may not (leveldb's
// WriteBatchInternal pattern): the public headers name these classes as friends and nothing more.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mq/message.h"
#include "mq/partition.h"
#include "storage/partition_log.h"
#include "storage/segmented_log.h"

namespace mq::detail {

// Filling a ReadBatch (PartitionLog::read).
class ReadBatchInternal {
 public:
  static std::string& buffer(ReadBatch& batch) { return batch.buffer_; }
  static std::vector<StoredMessage>& messages(ReadBatch& batch) { return batch.messages_; }
  static void set_next_offset(ReadBatch& batch, std::uint64_t offset) { batch.next_offset_ = offset; }
};

// Wrapping text as a Payload without minifying or validating it: for text libmq wrote itself
// (dead letters' sources, the ack journal's records) and for tests and benchmarks that must store
// exact bytes. Invalid text would be stored as is; only a raw newline is refused (by
// Partition::append).
class PayloadInternal {
 public:
  static Payload from_minified_json(std::string json) { return Payload(std::move(json)); }
};

// The append-listener hook of a partition (consumer groups wake their waiting consumers with it).
class PartitionInternal {
 public:
  // Calls `on_append` after every append that made messages visible, from the appending thread and
  // with no lock of the partition held, until remove_append_listener(id) returns (which waits for a
  // call under way). `on_append` must be quick and must not append to this partition.
  static std::uint64_t add_append_listener(Partition& partition, std::function<void()> on_append) {
    return partition.log_->add_append_listener(std::move(on_append));
  }
  static void remove_append_listener(Partition& partition, std::uint64_t id) {
    partition.log_->remove_append_listener(id);
  }
};

}  // namespace mq::detail
