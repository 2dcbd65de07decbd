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

// One change of a group's state on a partition (libmq/docs/replication.md section 7): `record` is an
// acknowledgement journal record's payload (log_format.md "Consumer groups on disk"), kRemovedRecord
// included, as the leader wrote it to the group's journal.
struct GroupStateRecord {
  std::string group;
  std::string record;
  bool operator==(const GroupStateRecord&) const = default;
};

// The `group` of a dead-letter partition's redrive position, whose `record` is {"position":N}
// (log_format.md "Redrive positions"): not a valid group name, so no group can have it.
inline constexpr std::string_view kRedrivePositionName = "~redrive";

// A record handed to the replicas: confirmed once the in-sync replicas hold it (the leader epoch
// it was published in, and its place in that epoch's sequence).
struct StateTicket {
  std::uint64_t epoch = 0;
  std::uint64_t version = 0;
};

// The groups layer's side of replicating group state, implemented by the Broker. Thread-safe.
class GroupStateHost {
 public:
  virtual ~GroupStateHost() = default;
  // The leader: every group of the partition as one progress record each (progress_record).
  virtual Result<std::vector<GroupStateRecord>> state_snapshot(const std::string& topic,
                                                               std::uint32_t partition) = 0;
  // A follower: applies its leader's records to the groups' journals here, durably (per FSYNC),
  // in order; with `replace`, `records` are a snapshot, and groups it does not name are removed.
  // Groups this broker had open from when it led the partition are closed first (their streams end).
  virtual Status apply_state(const std::string& topic, std::uint32_t partition, bool replace,
                             const std::vector<GroupStateRecord>& records) = 0;
};

// Thread-safe.
class Leadership {
 public:
  using PartitionLookup =
      std::function<Result<Partition*>(const std::string& topic, std::uint32_t partition)>;
  virtual ~Leadership() = default;

  // Called once by Broker::open when every copy is open: `lookup` finds the copies of `topics`
  // this broker keeps, `groups` their groups' state (both valid until stop()).
  virtual Status start(std::vector<ReplicatedTopic> topics, PartitionLookup lookup,
                       GroupStateHost* groups) = 0;
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

  // Group state (replication.md section 7). `publish` hands a record, already durable here and
  // applied, to the followers; the caller publishes a group's records in the order it applied them
  // (under the group's journal lock). kNotOwned / kUnavailable when this broker does not lead now.
  virtual Result<StateTicket> publish_state(const std::string& topic, std::uint32_t partition,
                                            GroupStateRecord record) = 0;
  // Waits until the in-sync replicas hold the record (and every one published before it); fails
  // when this broker stopped leading since, too few replicas are in sync, or it timed out.
  virtual Status confirm_state(const std::string& topic, std::uint32_t partition, StateTicket ticket) = 0;
  // OK when a change of group state made now could be confirmed: this broker leads the partition
  // with a valid lease and enough replicas in sync. Else the refusal (nothing is done then).
  virtual Status state_writable(const std::string& topic, std::uint32_t partition) const = 0;
};

}  // namespace mq::detail
