// Who leads each partition when partitions are replicated (libmq/docs/replication.md). Without
// one, a Broker owns partition p when p % BROKER_COUNT == BROKER_INDEX, for good. With one (mqd
// passes the replication layer's), it keeps a copy of every partition it is a replica of, serves
// only those it leads now, and writes to them through it, so that an append is answered once
// enough replicas hold it. The groups layer knows this interface, not replication.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mq/partition.h"
#include "mq/status.h"

namespace mq::detail {

struct ReplicatedTopic {
  std::string name;
  std::uint32_t partitions = 0;
};

// Thread-safe.
class Leadership {
 public:
  using PartitionLookup =
      std::function<Result<Partition*>(const std::string& topic, std::uint32_t partition)>;
  virtual ~Leadership() = default;

  // Called once by Broker::open when every copy is open: `lookup` finds the copies of `topics`
  // this broker keeps (valid until stop()).
  virtual Status start(std::vector<ReplicatedTopic> topics, PartitionLookup lookup) = 0;
  // Ends every use of the copies; Broker's destructor calls it before they close. Idempotent.
  virtual void stop() = 0;

  // OK when this broker leads the partition now; else kNotOwned naming the leader (when one is
  // known) or kUnavailable (none elected yet).
  virtual Status check_leading(const std::string& topic, std::uint32_t partition) const = 0;
  // Runs `append` (which stores a write in the partition's copy here) as its leader, then waits
  // until the write is on enough in-sync replicas (a duplicate: until its original is). Refuses
  // before storing anything when this broker does not lead or too few replicas are in sync.
  virtual Result<AppendResult> append(const std::string& topic, std::uint32_t partition,
                                      const std::function<Result<AppendResult>()>& append) = 0;
};

}  // namespace mq::detail
