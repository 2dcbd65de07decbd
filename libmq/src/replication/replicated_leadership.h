// The Broker's view of replicated partitions (groups/leadership.h), answered by a ReplicaManager:
// the Broker serves the partitions this broker leads and writes to them through the manager, so that
// an append is answered only once MIN_INSYNC_REPLICAS copies hold it (libmq/docs/replication.md R2).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>

#include "groups/leadership.h"
#include "replication/replica_manager.h"

namespace mq::replication {

// Thread-safe.
class ReplicatedLeadership final : public mq::detail::Leadership {
 public:
  // `replication_timeout`: how long an append waits for its followers before it is refused with
  // kUnavailable (stored here, maybe on some followers: not acknowledged).
  ReplicatedLeadership(ReplicaManagerOptions options, std::shared_ptr<EtcdClient> etcd,
                       std::shared_ptr<FetchTransport> transport,
                       std::chrono::milliseconds replication_timeout);
  ~ReplicatedLeadership() override;

  Status start(std::vector<mq::detail::ReplicatedTopic> topics, PartitionLookup lookup,
               mq::detail::GroupStateHost* groups) override;
  void stop() override { stop(false); }
  // With `hand_over`: gives up every leadership in etcd first (a clean shutdown; see
  // ReplicaManager::stop).
  void stop(bool hand_over);

  Status check_leading(const std::string& topic, std::uint32_t partition) const override;
  Result<AppendResult> append(const std::string& topic, std::uint32_t partition,
                              const std::function<Result<AppendResult>()>& append) override;
  Result<mq::detail::StateTicket> publish_state(const std::string& topic, std::uint32_t partition,
                                                mq::detail::GroupStateRecord record) override;
  Status confirm_state(const std::string& topic, std::uint32_t partition,
                       mq::detail::StateTicket ticket) override;
  Status state_writable(const std::string& topic, std::uint32_t partition) const override;

  // The manager once started (nullptr before start() and after stop()): for the fetch route and
  // for placement. Shared: a request holding it keeps it alive through a stop() on another thread.
  std::shared_ptr<ReplicaManager> manager() const;

 private:
  const ReplicaManagerOptions options_;
  const std::shared_ptr<EtcdClient> etcd_;
  const std::shared_ptr<FetchTransport> transport_;
  const std::chrono::milliseconds replication_timeout_;
  mutable std::mutex mutex_;
  std::shared_ptr<ReplicaManager> manager_;  // GUARDED_BY(mutex_)
};

}  // namespace mq::replication
