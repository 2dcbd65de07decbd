// What replicated brokers keep in etcd and the transactions that change it (libmq/docs/replication.md
// section 3): the keys and their values, where a partition's replicas are, and per partition the
// election, ISR change and step-down transactions. Stateless: every decision is etcd's compare.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mq/status.h"
#include "replication/etcd_client.h"
#include "replication/in_sync_tracker.h"

namespace mq::replication {

// The replicas of `partition`: brokers (partition + i) % broker_count, i < replication_factor; the
// first is the preferred leader.
std::vector<std::uint32_t> replicas_of(std::uint32_t partition, std::uint32_t broker_count,
                                       std::uint32_t replication_factor);

// <prefix>/partitions/<topic>/<partition>/state: the epoch, who leads it (-1: nobody yet), the ISR.
struct PartitionState {
  std::uint64_t epoch = 0;
  std::int64_t leader = -1;
  std::vector<ReplicaId> isr;
  bool operator==(const PartitionState&) const = default;
};
// <prefix>/partitions/<topic>/<partition>/leader, bound to the leader's lease.
struct LeaderValue {
  std::uint32_t broker = 0;
  std::uint64_t epoch = 0;
  bool operator==(const LeaderValue&) const = default;
};
// <prefix>/brokers/<index>, bound to the broker's lease.
struct BrokerValue {
  std::string url;
  std::string disk_id;
  bool operator==(const BrokerValue&) const = default;
};

std::string encode(const PartitionState& state);
std::string encode(const LeaderValue& leader);
std::string encode(const BrokerValue& broker);
// kCorruption for a value that is not what the key holds (another program's, or damaged).
Result<PartitionState> decode_partition_state(std::string_view json);
Result<LeaderValue> decode_leader(std::string_view json);
Result<BrokerValue> decode_broker(std::string_view json);

// The key names under one prefix (ETCD_PREFIX, "/mq").
class ClusterKeys {
 public:
  explicit ClusterKeys(std::string prefix);
  std::string cluster() const { return prefix_ + "/cluster"; }
  std::string brokers() const { return prefix_ + "/brokers/"; }
  std::string broker(std::uint32_t index) const { return brokers() + std::to_string(index); }
  std::string partitions() const { return prefix_ + "/partitions/"; }
  std::string state(std::string_view topic, std::uint32_t partition) const;
  std::string leader(std::string_view topic, std::uint32_t partition) const;

  // Which partition key `key` is (a key under partitions()); nullopt for any other.
  struct PartitionKey {
    std::string topic;
    std::uint32_t partition = 0;
    bool is_leader = false;  // the leader key, else the state key
  };
  std::optional<PartitionKey> parse_partition_key(std::string_view key) const;
  // The broker index of a key under brokers(); nullopt for any other.
  std::optional<std::uint32_t> parse_broker_key(std::string_view key) const;

 private:
  std::string prefix_;
};

// One partition's coordination, as seen from one broker. Thread-safe (the client is).
class PartitionCoordinator {
 public:
  PartitionCoordinator(EtcdClient& etcd, const ClusterKeys& keys, std::string topic, std::uint32_t partition);

  // The partition's two keys, read together.
  struct View {
    std::optional<PartitionState> state;
    std::int64_t state_mod_revision = 0;  // 0: no state key
    std::optional<LeaderValue> leader;
    std::int64_t leader_create_revision = 0;  // 0: no leader key
  };
  Result<View> read() const;

  // A new partition: creates its state (epoch 0, no leader, ISR of `first` alone) unless it exists.
  // Returns the view afterwards either way.
  Result<View> create_state(const ReplicaId& first) const;

  // The election (R1): when `seen` shows no leader and `me` in its ISR, takes epoch
  // seen.state->epoch + 1 with a leader key bound to `lease`, provided the state is still `seen`'s
  // and nobody took the leader key meanwhile. `won` says whether it did; `view` is the state after.
  struct Election {
    bool won = false;
    View view;
  };
  Result<Election> try_lead(const View& seen, const ReplicaId& me, std::int64_t lease) const;

  // The leader changes the ISR (its own entry stays first): only while its leader key is the one it
  // created (`my_leader_create_revision`) and the state is still `seen`'s. false when either moved.
  Result<bool> change_isr(const View& seen, std::int64_t my_leader_create_revision,
                          const std::vector<ReplicaId>& isr) const;

  // A leader leaving (shutdown): deletes its leader key if it is still the one it created, so that
  // another replica takes over without waiting for its lease.
  Status step_down(std::int64_t my_leader_create_revision) const;

 private:
  static Result<View> view_from(const std::vector<KeyValue>& state_kvs,
                                const std::vector<KeyValue>& leader_kvs);

  EtcdClient& etcd_;
  const std::string topic_;
  const std::uint32_t partition_;
  const std::string state_key_;
  const std::string leader_key_;
};

}  // namespace mq::replication
